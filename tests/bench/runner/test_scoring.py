"""Scoring with evaluators chosen in the config: a COCO captions reference end to end, the reference cache
across runs, and bad evaluator input refused in one line before any sampling."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

import bench.evaluators.reference as reference_module
from bench.runner.cli import main as cli_main
from bench.runner.config import BenchConfig
from bench.runner.run import run_benchmark
from bench.stats import THROUGHPUT_METRICS
from tests.paths import ROOT



def _coco(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO captions json and its image folder: 5 images of mixed sizes, one caption each."""
    images = tmp_path / "val2017"
    images.mkdir()
    colours = [(250, 200, 0), (0, 120, 255), (30, 200, 60), (240, 240, 240), (200, 30, 30)]
    captions = ["a yellow face", "a blue heart", "a green apple", "a white cloud", "a red rocket"]
    doc = {"images": [], "annotations": []}
    for i, (colour, caption) in enumerate(zip(colours, captions)):
        name = f"{i:012d}.jpg"
        Image.new("RGB", (64 + 16 * i, 48), colour).save(images / name)
        doc["images"].append({"id": i, "file_name": name})
        doc["annotations"].append({"image_id": i, "id": 100 + i, "caption": caption})
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(doc))
    return path, images


@pytest.mark.slow
def test_coco_captions_and_images_as_the_reference_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    captions, images = _coco(tmp_path)
    cfg = BenchConfig.from_preset("tiny", guidance=["cfg"], scales={"cfg": [3.0]}, prompts=str(captions),
                                  prompt_limit=3, samples_per_prompt=2, seeds=[0], steps=2, batch_size=4,
                                  metrics=["fid", "kid", "clip_score", "cmmd", "prdc", "diversity"],
                                  features=["domain", "clip"], reference=str(captions), reference_images=str(images),
                                  bootstrap=20, out=str(tmp_path), run_id="coco")
    run = run_benchmark(cfg, progress=False)
    row = pd.read_csv(run / "results.csv").iloc[0]
    for col in ("fid", "kid_mean", "fid_clip", "precision", "recall_clip", "cmmd", "cmmd_boot_lo", "cmmd_boot_hi",
                "fid_boot_hi", "diversity", "clip_score"):
        assert pd.notna(row[col]), col
    per = pd.read_csv(run / "per_sample.csv")
    assert len(per) == 6 and list(per["prompt_index"]) == [0, 0, 1, 1, 2, 2] and "image_id" in per
    assert "acc_identity" not in per  # COCO prompts have no labels
    described = json.loads((run / "evaluators.json").read_text())
    assert described["reference"].startswith("coco:") and set(described["feature_nets"]) == {"domain", "clip"}
    calls = []
    monkeypatch.setattr(reference_module, "embed", lambda *a: calls.append(a) or torch.zeros(0))
    again = run_benchmark(dataclasses.replace(cfg, run_id="coco2"), progress=False)
    assert not calls, "the second run must read the cached reference features"
    quality = [c for c in row.index if c not in THROUGHPUT_METRICS]
    pd.testing.assert_series_equal(pd.read_csv(again / "results.csv").iloc[0][quality], row[quality])


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "open_clip.safetensors"
    path.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"w\":{\"dtype\":\"F32\",\"shape\":[4]")
    return path


@pytest.mark.parametrize("argv,message", [
    (["--reference", "{empty}"], "holds no images"),
    (["--reference", "/nope/ref"], "--reference /nope/ref: not found"),
    (["--features", "dinov2"], "--dinov2-weights is not set"),
    (["--features", "dinov2", "--dinov2-weights", "/nope/dino.pth"], "--dinov2-weights /nope/dino.pth: file not found"),
    (["--features", "inception"], "--features inception needs --fid-inception-weights"),
    (["--features", "vgg"], "unknown feature network(s) ['vgg']"),
    (["--metrics", "cmmd,fd"], "unknown metric(s) ['fd']"),
    (["--bootstrap", "-1"], "--bootstrap -1 is out of range"),
    (["--clip-model", "hf-hub:laion/CLIP-ViT-B-32", "--clip-pretrained", str(ROOT / "README.md")],
     "nothing is downloaded; pass a local file"),
    (["--clip-model", "ViT-B-32", "--clip-pretrained", "laion2b_s34b_b79k"], "nothing is downloaded; pass a local file"),
    (["--clip-model", "ViT-B-32", "--clip-pretrained", "{truncated}"], "not a readable .safetensors"),
])
def test_bad_evaluator_input_gets_one_line_before_sampling(argv, message, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    argv = [a.format(empty=tmp_path / "empty", truncated=_truncated(tmp_path)) for a in argv]
    assert cli_main(["run", "--preset", "tiny", *argv, "--out", str(tmp_path), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err
    assert not list(tmp_path.glob("*/samples/*")), "nothing may be sampled before validation"


def test_an_unreadable_weights_file_is_named_as_unreadable_not_missing(tmp_path, capsys, monkeypatch):
    import os

    weights = tmp_path / "dino.safetensors"
    weights.write_bytes(b"x")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == weights else real_access(p, mode))
    argv = ["run", "--preset", "tiny", "--features", "dinov2", "--dinov2-weights", str(weights), "--out", str(tmp_path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "permission denied" in err and "chmod" in err and err.count("\n") == 0, err


def test_a_features_file_reference_of_another_network_is_refused_before_sampling(tmp_path, capsys):
    """The committed zoo statistics are the domain network's: as --reference they serve --features domain
    alone, and a run that also needs CLIP embeddings (cmmd) is told to pass images instead."""
    zoo = ROOT / "guidance" / "zoo" / "weights" / "reference_features.safetensors"
    argv = ["run", "--preset", "tiny", "--reference", str(zoo), "--out", str(tmp_path), "--no-report"]
    assert cli_main([*argv, "--metrics", "fid,cmmd"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds features of domain, and this run needs domain, clip" in err and err.count("\n") == 0, err
    assert not list(tmp_path.glob("*/samples/*"))


def test_zoo_reference_images_that_cannot_be_rendered_fail_before_sampling(tmp_path, capsys, monkeypatch):
    """A zoo reference without committed features for the run's network (here CMMD's CLIP, its committed
    file taken away) needs the rendered emoji images: without the emoji font the run stops before sampling,
    naming the way out."""
    def no_font(*args, **kwargs):
        raise FileNotFoundError("Noto Color Emoji font not found at /usr/share/fonts/x.ttf; install it")

    broken = dataclasses.replace(reference_module.domain_evaluators(), real_images=no_font, real_images_checksum=no_font,
                                 reference_clip_features=tmp_path / "missing.safetensors")
    monkeypatch.setattr(reference_module, "domain_evaluators", lambda domain=None: broken)
    assert cli_main(["run", "--preset", "tiny", "--out", str(tmp_path), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Noto Color Emoji font not found" in err and "--features domain without cmmd" in err, err
    assert err.count("\n") == 0 and not list(tmp_path.glob("*/samples/*"))
    assert cli_main(["run", "--preset", "tiny", "--metrics", "fid", "--out", str(tmp_path), "--run-id", "ok",
                     "--prompt-limit", "2", "--seeds", "0", "--steps", "1", "--no-report"]) == 0  # domain: committed
