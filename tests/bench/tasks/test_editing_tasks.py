"""End-to-end inpainting (--task inpaint) and cascade (--task cascade) runs through the runner on tiny
random-weight models: scores, the HTML report's task rows, resume after kill -9, and the CLI's one-line
refusals of bad editing input."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.runner.cli import main as cli_main
from bench.runner.cli import cascade_alias
from bench.runner.config import task_name
from bench.runner.config import BenchConfig
from bench.report.html import build_report
from bench.runner.run import run_benchmark
from bench.zoo.editing import edit_sources
from guidance.zoo import emoji_data
from guidance.zoo.conditioned import ConditionedUNet
from guidance.zoo.encoders import EncoderConfig, EvalClassifier
from guidance.zoo.load import ZOO_DIR, load_model
from guidance.checkpoints import save_model
from guidance.zoo.unet import TextUNet, UNetConfig
from tests.paths import ROOT

needs_dataset = pytest.mark.skipif(not (os.path.isfile(emoji_data.EMOJI_TEST_PATH)
                                        and os.path.isfile(emoji_data.NOTO_FONT_PATH)),
                                   reason="the emoji dataset needs unicode-data and fonts-noto-color-emoji")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    """unet, inpaint_unet, upsampler and eval_classifier_64 at toy sizes, with the zoo's caption vocabulary."""
    root = tmp_path_factory.mktemp("zoo")
    committed = load_model(ZOO_DIR / "unet.safetensors", "unet")
    extra = {"schedule": "cosine", "num_timesteps": 1000, "p_uncond": 0.15}
    torch.manual_seed(0)
    cfg = UNetConfig(channels=16, text_width=32, text_layers=1, vocab_size=committed.config.vocab_size,
                     dropout=0.0, extra=extra)
    base = TextUNet(cfg)
    base.vocab.copy_(committed.vocab)
    base.null_tokens.copy_(committed.null_tokens)
    save_model(base, root / "unet.safetensors", "unet", cfg.to_dict())
    inpainter = ConditionedUNet.from_base(base, 4)
    save_model(inpainter, root / "inpaint_unet.safetensors", "conditioned_unet", inpainter.config.to_dict())
    up_cfg = UNetConfig(image_size=64, channels=8, channel_mult=(1, 2), attention_resolutions=(32,), text_width=16,
                        text_layers=1, vocab_size=committed.config.vocab_size, dropout=0.0,
                        extra={**extra, "cond_channels": 3, "noise_aug": True, "aug_levels": 250, "low_resolution": 32})
    upsampler = ConditionedUNet(up_cfg)
    upsampler.vocab.copy_(committed.vocab)
    upsampler.null_tokens.copy_(committed.null_tokens)
    save_model(upsampler, root / "upsampler.safetensors", "conditioned_unet", up_cfg.to_dict())
    enc = EncoderConfig(image_size=64, channels=8, blocks=1, features=32)
    save_model(EvalClassifier(enc), root / "eval_classifier_64.safetensors", "eval_classifier", enc.to_dict())
    return root


def test_edit_sources_pair_each_emoji_with_another_of_its_subgroup():
    sources = edit_sources(6)
    assert sources.images.shape == (6, 3, 32, 32)
    assert all(a != b for a, b in zip(sources.captions["source"], sources.captions["edit"]))
    assert torch.equal(edit_sources(6).images, sources.images)  # deterministic


def tiny(zoo: Path, out: Path, run_id: str, **overrides) -> BenchConfig:
    values = dict(guidance=["cfg"], scales={"cfg": [3.0]}, prompt_limit=3, seeds=[0], steps=3, batch_size=4,
                  model=str(zoo), out=str(out), run_id=run_id, bootstrap=20) | overrides
    return BenchConfig.from_preset("tiny", **values)


@pytest.mark.slow
def test_tiny_editing_run(tiny_zoo, tmp_path):
    cfg = tiny(tiny_zoo, tmp_path, "edit", task="inpaint", masks=["center", "strokes"],
               inpaint_methods=["model", "replace", "repaint"], edit_captions=["edit"], repaint=[1, 2])
    run_dir = run_benchmark(cfg, progress=False)
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 3 * 2
    assert set(results["guidance"]) == {f"cfg+{m}+{k}+edit" for m in ("model", "replace", "repaint")
                                        for k in ("center", "strokes")}
    assert (results["psnr_known"] == 100).all()  # every method keeps the known region exactly
    for col in ("seam", "seam_boot_lo", "seam_gap", "fid", "kid_mean", "clip_score", "acc_identity", "s_per_img"):
        assert results[col].notna().all(), col
    passes = results.groupby("inpaint_method")["network_passes_per_img"].first()
    assert passes["repaint"] == 10 and passes["replace"] == passes["model"] == 6  # CFG: two passes per evaluation
    per_sample = pd.read_csv(run_dir / "per_sample.csv")
    assert len(per_sample) == 6 * 3 and (per_sample["psnr_known"] == 100).all()
    assert (run_dir / "summary.csv").exists()
    page = (build_report([run_dir]).read_text())
    assert "rows: source, mask (grey), result" in page and "cfg+repaint+center+edit" in page
    again = run_benchmark(cfg, progress=False)  # resumes: nothing resampled, same scores
    pd.testing.assert_frame_equal(pd.read_csv(again / "results.csv").drop(columns=["s_per_img", "img_per_s"]),
                                  results.drop(columns=["s_per_img", "img_per_s"]))


@pytest.mark.slow
@needs_dataset
def test_tiny_cascade_run(tiny_zoo, tmp_path):
    cfg = tiny(tiny_zoo, tmp_path, "cascade", task="cascade", steps=2, upsample_steps=2, upsample_aug=20)
    run_dir = run_benchmark(cfg, progress=False)
    results = pd.read_csv(run_dir / "results.csv")
    assert list(results["stage"]) == ["upsampler", "bicubic"]
    for col in ("fid", "kid_mean", "consistency_psnr", "clip_score", "acc_identity"):
        assert results[col].notna().all(), col
    passes = results.set_index("stage")["network_passes_per_img"]
    assert passes["upsampler"] - passes["bicubic"] == 2  # unguided upsampler: one pass per step
    with np.load(run_dir / "samples" / "cfg+upsampler_s3_seed0.npz") as up, \
            np.load(run_dir / "samples" / "cfg+bicubic_s3_seed0.npz") as bi:
        assert up["images"].shape[1:] == (64, 64, 3)
        assert np.array_equal(up["extra_low_res"], bi["extra_low_res"])  # both stages upsample the same base samples
    assert "rows: base 32 px (nearest), output, bicubic" in build_report([run_dir]).read_text()
    with pytest.raises(ValueError, match="outside the upsampler's training range"):
        run_benchmark(cfg.with_overrides(run_id="bad", upsample_aug=400), progress=False)


@pytest.mark.slow
@needs_dataset
@pytest.mark.parametrize("task, flags", [
    ("inpaint", ["--inpaint-methods", "replace", "--masks", "center", "--edit-captions", "source"]),
    ("cascade", ["--upsample-steps", "2", "--upsample-aug", "20"]),
])
def test_task_resumes_after_kill_9(task, flags, tiny_zoo, tmp_path):
    """Kill the run once its first batch is on disk; the same command then finishes it, reusing that batch
    (the throughput file counts every image once), and writes the HTML report."""
    argv = ["run", "--task", task, "--preset", "tiny", "--model", str(tiny_zoo), "--guidance", "cfg", "--scales", "3",
            "--prompt-limit", "4", "--seeds", "0", "--steps", "4", "--batch-size", "1", "--metrics", "clip_score",
            "--out", str(tmp_path), "--run-id", "killed", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = tmp_path / "killed" / "samples"
    deadline = time.time() + 300
    while not list(samples.glob("*.parts/*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = list(samples.glob("*.parts/*.npz"))
    assert kept, "the run wrote no batch before it was killed"
    assert not (tmp_path / "killed" / "results.csv").exists()
    assert cli_main(argv) == 0
    run_dir = tmp_path / "killed"
    assert len(pd.read_csv(run_dir / "results.csv")) == (1 if task == "inpaint" else 2)
    timings = json.loads((run_dir / "throughput.rank0.json").read_text())
    assert all(t["images"] <= 4 for t in timings.values())  # nothing sampled twice
    assert (run_dir / "report" / "index.html").exists() or list(run_dir.glob("**/*.html"))


def test_cascade_flag_reads_as_task_cascade(capsys):
    overrides: dict = {}
    cascade_alias(argparse.Namespace(cascade=True), overrides)
    assert overrides["task"] == "cascade"
    assert "replaced by --task cascade" in capsys.readouterr().err
    assert task_name("generate") == "text-to-image"


@pytest.mark.parametrize("argv, message", [
    (["--task", "inpaint", "--masks", "center,circle"], "unknown mask kind"),
    (["--task", "inpaint", "--inpaint-methods", "paste"], "unknown inpainting method"),
    (["--task", "inpaint", "--repaint", "5"], "bad --repaint '5'"),
    (["--task", "inpaint", "--mask-file", "MISSING.png"], "--mask-file MISSING.png: not found"),
    (["--task", "inpaint", "--cascade"], "--cascade is replaced by --task cascade"),
])
def test_bad_editing_input_gets_one_clear_line(argv, message, capsys, tmp_path):
    code = cli_main(["run", "--preset", "tiny", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err
