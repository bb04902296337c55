"""The committed reference files (bench.zoo.reference) equal what the renderer gives, and the benchmarks
read them without the emoji fonts or Unicode data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bench.zoo import cascade
from bench.zoo import editing
from bench.runner.config import BenchConfig
from bench.evaluators.reference import Reference, default_source, embed, made_by
from guidance.sources.zoo_source import EVALUATORS

ZOO_CLIP_REFERENCE = EVALUATORS.reference_clip_features
from bench.runner.scoring import feature_net, net_names, run_reference_source
from guidance.zoo import emoji_data
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_model

FONTS = Path(emoji_data.EMOJI_TEST_PATH).is_file() and Path(emoji_data.NOTO_FONT_PATH).is_file()
needs_fonts = pytest.mark.skipif(not FONTS, reason="emoji fonts or Unicode data missing (apt-get install "
                                                   "fonts-noto-color-emoji unicode-data): nothing to compare with")
# Features are compared at 1e-4 of their largest magnitude: recomputed on an AMD EPYC (AVX-512) at 1 thread,
# and at 2 with ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS all at AVX2 or all at
# their lowest (default, SSE41, SSE4_2), they moved by at most 1.3e-6 of it (0 at 1 thread).
FEATURE_RTOL = 1e-4
EVERY = 10  # re-embed every 10th image: the network's side of the check; the checksums cover the images


def checksum_of(path: Path) -> str:
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {})["dataset_checksum"]


def close(found: torch.Tensor, committed: torch.Tensor) -> None:
    assert found.shape == committed.shape
    scale = committed.abs().max()
    assert (found - committed).abs().max() <= FEATURE_RTOL * scale, "committed features differ from the renders'"


@needs_fonts
@pytest.mark.parametrize("path,size", [(ZOO_CLIP_REFERENCE, 32), (cascade.REFERENCE_64, 64), (editing.EDIT_SOURCES, 32)])
def test_made_from_the_rendered_dataset(path: Path, size: int) -> None:
    assert checksum_of(path) == build_emoji_dataset(size, progress=False).checksum


@needs_fonts
def test_edit_sources_equal_the_renders() -> None:
    images, identity = editing.rendered_sources()
    committed = load_file(str(editing.EDIT_SOURCES))
    assert np.array_equal(committed["images"].numpy(), images)
    assert np.array_equal(committed["identity"].numpy(), identity)


@needs_fonts
def test_clip_features_equal_the_renders() -> None:
    """Every EVERY-th image re-embedded (the checksum test above covers every image)."""
    net = feature_net("clip", BenchConfig.from_preset("quick").scoring(), torch.device("cpu"))
    assert made_by(ZOO_CLIP_REFERENCE) == net.fingerprint()
    images = torch.from_numpy(build_emoji_dataset(32, progress=False).images[::EVERY]).permute(0, 3, 1, 2)
    close(embed(net, iter([images]), torch.device("cpu")), Reference.load(ZOO_CLIP_REFERENCE).features[::EVERY])


@needs_fonts
def test_cascade_features_equal_the_renders() -> None:
    classifier = load_model(ZOO_DIR / cascade.FEATURES_FILE, "eval_classifier", torch.device("cpu"))
    images = torch.from_numpy(build_emoji_dataset(64, progress=False).images[::EVERY]).permute(0, 3, 1, 2)
    images = images.float().div(127.5).sub(1)
    with torch.no_grad():
        found = classifier.features(images)
    close(found, cascade.committed_features(ZOO_DIR / cascade.FEATURES_FILE)[::EVERY])


@pytest.fixture
def no_fonts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a fresh pip install: no Unicode data, no Noto font, an empty cache."""
    monkeypatch.setattr(emoji_data, "EMOJI_TEST_PATH", str(tmp_path / "missing" / "emoji-test.txt"))
    monkeypatch.setattr(emoji_data, "NOTO_FONT_PATH", str(tmp_path / "missing" / "NotoColorEmoji.ttf"))
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))


def test_main_job_reference_needs_no_fonts(no_fonts: None) -> None:
    cfg = BenchConfig.from_preset("quick").scoring()
    assert "clip" in net_names(cfg)  # CMMD is on by default
    source = run_reference_source(cfg)
    assert set(source.files) == {"domain", "clip"}
    source.check(net_names(cfg))  # would render (and fail here) for a network without committed features


def test_other_clip_renders(no_fonts: None) -> None:
    """The committed CMMD features serve only the CLIP they were made with."""
    source = default_source("clip:another-network")
    assert "clip" not in source.files
    with pytest.raises(ValueError, match="reference images of zoo:emoji-32px cannot be read"):
        source.check(["clip"])


def test_edit_and_cascade_need_no_fonts(no_fonts: None) -> None:
    assert len(editing.edit_sources(3).images) == 3
    assert cascade.committed_features(ZOO_DIR / cascade.FEATURES_FILE) is not None


def test_cascade_features_of_other_weights_are_not_used(tmp_path: Path) -> None:
    other = tmp_path / "eval_classifier_64.safetensors"
    other.write_bytes(b"other weights")
    assert cascade.committed_features(other) is None
