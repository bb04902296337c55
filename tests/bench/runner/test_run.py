"""End-to-end bench runs on a tiny configuration, resume after a kill, and clear errors on bad input."""

from __future__ import annotations

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

from bench.report.html import build_report
from bench.runner.cli import main as cli_main
from bench.runner.config import BenchConfig
from bench.runner.run import run_benchmark
from tests.paths import ROOT

TINY = dict(prompt_limit=4, seeds=[0, 1], steps=3, batch_size=4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = BenchConfig.from_preset("tiny", guidance=["cfg", "classifier", "clip", "none"],
                                  scales={"cfg": [1.0, 4.0], "classifier": [5.0], "clip": [5.0], "none": [0.0]},
                                  out=str(out), run_id="e2e", **TINY)
    return run_benchmark(cfg, progress=False)


@pytest.mark.slow
def test_end_to_end_tiny_run_writes_results_manifest_and_samples(tiny_run):
    results = pd.read_csv(tiny_run / "results.csv")
    assert len(results) == 5 * 2  # (cfg x2, classifier, clip, none) x 2 seed sets
    assert len(pd.read_csv(tiny_run / "summary.csv")) == 5  # written with or without the HTML report
    for col in ("fid", "kid_mean", "clip_score", "acc_identity", "acc_subgroup", "acc_group", "img_per_s",
                "network_passes_per_img", "backward_passes_per_img", "peak_mem_mb"):
        assert results[col].notna().all(), col
    passes = results.groupby(["guidance", "scale"])["network_passes_per_img"].first()
    assert passes[("cfg", 1.0)] == 3 and passes[("cfg", 4.0)] == 6 and passes[("none", 0.0)] == 3
    backward = results.groupby("guidance")["backward_passes_per_img"].first()
    assert backward["classifier"] == 3 and backward["clip"] == 3 and backward["cfg"] == 0
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    for key in ("config", "config_hash", "versions", "models", "device", "git_commit", "seeds", "wall_time_s"):
        assert key in manifest
    assert manifest["clip_scorer"] == "zoo:eval_clip"
    with np.load(tiny_run / "samples" / "cfg_s4_seed1.npz") as data:
        assert data["images"].shape == (4, 32, 32, 3) and data["images"].dtype == np.uint8
        assert list(data["indices"]) == [0, 1, 2, 3]


@pytest.mark.slow
def test_cfg_at_scale_one_equals_unguided(tiny_run):
    with np.load(tiny_run / "samples" / "cfg_s1_seed0.npz") as a, np.load(tiny_run / "samples" / "none_s0_seed0.npz") as b:
        assert np.array_equal(a["images"], b["images"])


@pytest.mark.slow
def test_rerun_reuses_finished_samples(tiny_run):
    before = {p.name: p.stat().st_mtime_ns for p in (tiny_run / "samples").glob("*.npz")}
    cfg = BenchConfig(**{**json.loads((tiny_run / "config.json").read_text())})
    run_benchmark(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (tiny_run / "samples").glob("*.npz")}
    assert before == after


@pytest.mark.slow
def test_new_weights_under_the_same_model_are_never_mixed_with_the_old_samples(tiny_run, tmp_path, monkeypatch):
    """Samples of other weights are not reused; nor are they replaced, since the old weights may be gone
    and those samples are the record of the old model (did a change make samples worse?): the rerun is
    refused, naming both fingerprints, and a new --run-id samples afresh."""
    import shutil

    from guidance.zoo.load import Zoo

    copy = tmp_path / "e2e"
    shutil.copytree(tiny_run, copy)
    cfg = BenchConfig(**json.loads((copy / "config.json").read_text()))
    assert cfg.model_fingerprint, "the run must record which weights made its samples"
    cfg.out, cfg.scales = str(tmp_path), {"none": [0.0]}
    cfg.guidance = ["none"]
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "samples").glob("none_*.npz")}
    monkeypatch.setattr(Zoo, "fingerprint", lambda self: "0123456789abcdef")
    with pytest.raises(ValueError, match=f"samples of other weights \\(fingerprint {cfg.model_fingerprint}, now "
                                         f"0123456789abcdef\\): restore those weights, or sample afresh under a new "
                                         f"--run-id"):
        run_benchmark(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "samples").glob("none_*.npz")}
    assert after == before
    assert json.loads((copy / "config.json").read_text())["model_fingerprint"] == cfg.model_fingerprint
    fresh = run_benchmark(cfg.with_overrides(run_id="retrained"), progress=False)
    assert json.loads((fresh / "config.json").read_text())["model_fingerprint"] == "0123456789abcdef"
    assert {p.name for p in (fresh / "samples").glob("none_*.npz")} == set(before)


@pytest.mark.slow
def test_batch_size_does_not_change_samples(tmp_path):
    """Per-sample noise is batch-independent; the network may still round differently per batch shape
    (oneDNN convolutions, the fused attention kernel), so the real UNet agrees to one 8-bit level on a
    small share of pixels (the analytic model is bit-identical: tests/guidance/test_diffusion.py)."""
    kwargs = dict(guidance=["cfg"], scales={"cfg": [3.0]}, out=str(tmp_path), prompt_limit=5, seeds=[0], steps=3,
                  metrics=["accuracy"])
    a = run_benchmark(BenchConfig.from_preset("tiny", run_id="a", batch_size=5, **kwargs), progress=False)
    b = run_benchmark(BenchConfig.from_preset("tiny", run_id="b", batch_size=2, **kwargs), progress=False)
    with np.load(a / "samples" / "cfg_s3_seed0.npz") as x, np.load(b / "samples" / "cfg_s3_seed0.npz") as y:
        diff = np.abs(x["images"].astype(int) - y["images"].astype(int))
    # measured: 0.14-0.22% of pixels one level apart (depends on the weights); wrong noise moves most pixels a lot
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-2, (diff.max(), (diff > 0).mean())


@pytest.mark.slow
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    """kill -9 a real run mid-way; the rerun finishes without redoing saved batches and equals a clean run."""
    args = ["--preset", "tiny", "--guidance", "cfg", "--scales", "1,3", "--prompt-limit", "6", "--seeds", "0",
            "--steps", "6", "--batch-size", "2", "--metrics", "fid,accuracy", "--out", str(tmp_path), "--no-report"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *args, "--run-id", "killed"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = tmp_path / "killed" / "samples"
    deadline = time.time() + 240
    while time.time() < deadline and not list(samples.glob("*.parts/*.npz")):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = {p.name: p.stat().st_mtime_ns for p in samples.glob("*.parts/*.npz")}
    assert saved, "the run was killed before it saved a batch"
    assert not (tmp_path / "killed" / "results.csv").exists()
    assert cli_main(["run", *args, "--run-id", "killed"]) == 0
    assert cli_main(["run", *args, "--run-id", "clean"]) == 0
    killed = pd.read_csv(tmp_path / "killed" / "results.csv")
    clean = pd.read_csv(tmp_path / "clean" / "results.csv")
    pd.testing.assert_series_equal(killed["fid"], clean["fid"])
    pd.testing.assert_series_equal(killed["acc_identity"], clean["acc_identity"])
    for name in ("cfg_s1_seed0.npz", "cfg_s3_seed0.npz"):
        with np.load(samples / name) as x, np.load(tmp_path / "clean" / "samples" / name) as y:
            np.testing.assert_array_equal(x["images"], y["images"])


@pytest.mark.parametrize("argv,message", [
    (["--guidance", "cfgg"], "unknown guidance ['cfgg']; valid: none, cfg, classifier, clip"),
    (["--prompts", "nope"], "nope"),
    (["--model", "/nonexistent/zoo"], "model directory not found"),
    (["--metrics", "fid,ssim"], "unknown metric(s) ['ssim']"),
    (["--scales", "1,nan"], "out of range"),
    (["--scales", "-2"], "out of range"),
    (["--steps", "0"], "--steps 0 is out of range"),
    (["--steps", "5000"], "--steps 5000 is out of range"),
    (["--fid-inception-weights", "/nope/inception.pth"], "file not found"),
    (["--clip-model", "ViT-B-32"], "needs --clip-pretrained"),
    (["--seeds", "0,1,0"], "--seeds repeats [0]"),
    (["--prompt-limit", "0"], "--prompt-limit 0 is out of range; use a positive count or 'all'"),
    (["--clip-model", "ViT-B-99", "--clip-pretrained", str(ROOT / "README.md")], "--clip-model ViT-B-99 --clip-pretrained"),
    (["--fid-inception-weights", str(ROOT / "README.md")], "not a plain tensor state dict"),
    (["--preset", "tiny", "--device", "cuda:0"], "CUDA"),
    (["--preset", "tiny", "--device", "cdua", "--cuda-graphs"], "--device 'cdua' is not a device; use cpu, cuda or cuda:N"),
    (["--scales", "cfg:1,3"], "bad --scales 'cfg:1,3'; use '1,3,6' for every method or 'cfg=1,3,6;clip=1,5'"),
    (["--scales", ","], "bad --scales ','"),
    (["--scales", "3,3.0"], "scale(s) [3.0] for 'cfg' given twice"),
    (["--scales", "cfg=1;cfg=3"], "gives 'cfg' twice"),
    (["--scales", "cfg="], "--scales for 'cfg' '' lists no numbers"),
    (["--seeds", "a,b"], "bad --seeds 'a,b': seeds are whole numbers"),
    (["--seeds", "1.5,2.7"], "bad --seeds '1.5,2.7': seeds are whole numbers"),
    (["--run-id", "../elsewhere"], "--run-id '../elsewhere' is not a plain directory name"),
    (["--run-id", "a/b"], "--run-id 'a/b' is not a plain directory name"),
    (["--nproc", "2", "--shard", "0/2"], "--nproc and --shard both split the samples"),
    (["--clip-pretrained", str(ROOT / "README.md")], "needs --clip-model NAME"),
    (["--score-with-guiding-clip", "--clip-model", "ViT-B-32", "--clip-pretrained", str(ROOT / "README.md")],
     "--score-with-guiding-clip scores with the guiding CLIP"),
    (["--preset", "tiny", "--prompt-limit", "1", "--samples-per-prompt", "1"], "FID and KID need at least 2 samples"),
    (["--calibrate"], "--calibrate compares methods with plain CFG"),
    (["--calibrate", "--guidance", "cfg,apg", "--metrics", "fid"], "--calibrate pairs images on per-image metrics"),
])
def test_bad_input_gets_one_clear_line(argv, message, capsys, tmp_path):
    import torch

    if "cuda:0" in argv and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli_main(["run", *argv, "--out", str(tmp_path), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err
    assert not list(tmp_path.glob("*/samples/*.npz")), "nothing may be sampled before validation"


def test_classifier_guidance_on_prompts_without_labels_is_refused(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\na cat\n")
    assert cli_main(["run", "--guidance", "classifier", "--prompts", str(prompts), "--out", str(tmp_path)]) == 2
    assert "cannot run on prompt set" in capsys.readouterr().err


def test_unwritable_output_fails_before_sampling(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli_main(["run", "--preset", "tiny", "--out", str(blocker / "sub"), "--no-report"]) == 2
    assert "not writable" in capsys.readouterr().err


def test_prompt_limit_all_uses_every_prompt_whatever_the_preset():
    import argparse

    from bench.runner.cli import add_run_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    assert config_from_args(parser.parse_args(["--prompt-limit", "all"])).prompt_limit is None
    assert config_from_args(parser.parse_args(["--prompt-limit", "5"])).prompt_limit == 5
    assert config_from_args(parser.parse_args([])).prompt_limit == 20  # the quick preset's


def test_guidance_list_prints_every_method(capsys):
    assert cli_main(["run", "--guidance", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("none", "cfg", "classifier", "clip"))


@pytest.mark.slow(seconds=40)
def test_two_processes_give_the_same_images_and_fid_as_one(tmp_path):
    """torchrun with 2 gloo processes shards batches; images match, FID agrees to 1e-6 and KID to 1e-5."""
    common = ["--preset", "tiny", "--guidance", "cfg", "--scales", "3", "--prompt-limit", "6", "--seeds", "0,1",
              "--steps", "3", "--batch-size", "2", "--out", str(tmp_path), "--no-report"]
    # torchrun gives each process one thread; the reference run uses one too, since oneDNN's
    # rounding depends on the thread count
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for run_id, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run([sys.executable, "-m", "bench", "run", *common, "--run-id", run_id, *extra],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower() and "elastic" not in line]
        assert done.returncode == 0, "\n".join(errors[:20]) or done.stderr[-2000:]
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    two = pd.read_csv(tmp_path / "two" / "results.csv")
    np.testing.assert_allclose(two["fid"], one["fid"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(two["clip_score"], one["clip_score"], rtol=1e-6)
    np.testing.assert_allclose(two["kid_mean"], one["kid_mean"], rtol=1e-5)  # rank 0 alone holds the reference
    np.testing.assert_array_equal(two["acc_subgroup"], one["acc_subgroup"])
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2
    for seed in (0, 1):
        with np.load(tmp_path / "one" / "samples" / f"cfg_s3_seed{seed}.npz") as a, \
                np.load(tmp_path / "two" / "samples" / f"cfg_s3_seed{seed}.npz") as b:
            np.testing.assert_array_equal(a["images"], b["images"])


@pytest.mark.slow
def test_independent_shard_jobs_merge_offline(tmp_path, capsys):
    common = ["--preset", "tiny", "--guidance", "cfg", "--scales", "3", "--prompt-limit", "5", "--seeds", "0",
              "--steps", "3", "--batch-size", "2", "--out", str(tmp_path), "--no-report", "--metrics", "fid,accuracy"]
    assert cli_main(["run", *common, "--run-id", "ref"]) == 0
    assert cli_main(["run", *common, "--run-id", "sharded", "--shard", "0/2"]) == 0
    assert not (tmp_path / "sharded" / "results.csv").exists()
    assert cli_main(["merge", str(tmp_path / "sharded"), "--no-report"]) == 2  # shard 1 missing: clear error
    assert cli_main(["run", *common, "--run-id", "sharded", "--shard", "1/2"]) == 0
    config = tmp_path / "sharded" / "config.json"
    original = config.read_text()
    config.write_text(json.dumps({**json.loads(original), "steps": 4}))  # as if the jobs had another sample key
    assert cli_main(["merge", str(tmp_path / "sharded"), "--no-report"]) == 2
    assert "saved under another key" in capsys.readouterr().err
    config.write_text(original)
    assert cli_main(["merge", str(tmp_path / "sharded"), "--no-report"]) == 0
    ref = pd.read_csv(tmp_path / "ref" / "results.csv")
    merged = pd.read_csv(tmp_path / "sharded" / "results.csv")
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["wall_time_s"] is None  # two jobs; their wall time is unknown
    np.testing.assert_allclose(merged["fid"], ref["fid"], rtol=1e-9)
    # the jobs ran one after the other: the merged img/s is one job's pace (images over the summed sampling
    # time), not the doubled figure of jobs that ran at once
    jobs = [json.loads((tmp_path / "sharded" / f"throughput.rank{k}.json").read_text())["cfg_s3_seed0"] for k in (0, 1)]
    assert all(job["intervals"] for job in jobs)
    seconds = sum(iv[1] - iv[0] for job in jobs for iv in job["intervals"])
    assert merged["img_per_s"].iloc[0] == pytest.approx(5 / seconds, rel=1e-6)


def test_each_cell_gets_its_own_peak_memory_window():
    """The peak of an earlier, larger cell must not carry over into the next cell's figure."""
    import torch

    from bench.runner.sampling import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del big
    before = peak_memory_mb(cpu)
    reset_peak_memory(cpu)
    if peak_memory_mb(cpu) == before:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert peak_memory_mb(cpu) < before - 200


def _throughput(run_dir: Path, cell: str) -> dict:
    return json.loads((run_dir / "throughput.rank0.json").read_text())[cell]


@pytest.mark.slow
def test_resume_checks_each_samples_prompt(tmp_path):
    """An edited prompt file resamples exactly the samples whose prompt changed; a larger
    --prompt-limit keeps the samples already made; a batch file cut short by a kill is ignored."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("red apple\nrocket\ngrinning face\nflag: Japan\n")
    common = ["--preset", "tiny", "--guidance", "none", "--seeds", "0", "--steps", "2", "--batch-size", "2",
              "--prompts", str(prompts), "--metrics", "clip_score", "--out", str(tmp_path), "--no-report",
              "--run-id", "r"]
    samples = tmp_path / "r" / "samples"
    assert cli_main(["run", *common, "--prompt-limit", "2"]) == 0
    with np.load(samples / "none_s0_seed0.npz") as data:
        first = data["images"].copy()
    assert _throughput(tmp_path / "r", "none_s0_seed0")["images"] == 2

    assert cli_main(["run", *common, "--prompt-limit", "4"]) == 0
    with np.load(samples / "none_s0_seed0.npz") as data:
        np.testing.assert_array_equal(data["images"][:2], first)  # reused, not redrawn
        assert list(data["prompts"]) == ["red apple", "rocket", "grinning face", "flag: Japan"]
        four = data["images"].copy()
    assert _throughput(tmp_path / "r", "none_s0_seed0")["images"] == 4  # 2 earlier + 2 now, not 4 redone

    prompts.write_text("red apple\nrocket\nsmiling cat\nflag: Japan\n")
    cell_hash = _throughput(tmp_path / "r", "none_s0_seed0")["cell_hash"]
    stale = samples / f"none_s0_seed0.{cell_hash}.parts"  # a kill mid-write leaves a partial file
    stale.mkdir()
    (stale / "2-3.tmp.npz").write_bytes(b"cut short")  # as versions before 2026-11-26 named them
    (stale / ".2-3.npz.partial").write_bytes(b"cut short")
    assert cli_main(["run", *common, "--prompt-limit", "4"]) == 0
    with np.load(samples / "none_s0_seed0.npz") as data:
        assert list(data["prompts"]) == ["red apple", "rocket", "smiling cat", "flag: Japan"]
        changed = [i for i in range(4) if not np.array_equal(data["images"][i], four[i])]
    assert changed == [2]
    assert _throughput(tmp_path / "r", "none_s0_seed0")["images"] == 5 and not stale.exists()


def test_a_resume_with_nothing_left_to_sample_keeps_the_timings(tmp_path):
    from bench.runner.sampling import save_throughput
    from bench.runner.store import Cell

    cell = Cell("cfg", 3.0, 0, 0)
    work = {"images": 8, "seconds": 27.0, "network_passes": 160.0, "guide_passes": 0.0, "backward_passes": 0.0,
            "peak_mem_mb": 900.0}
    save_throughput(tmp_path, cell, work, "abc")
    save_throughput(tmp_path, cell, {**{k: 0 for k in work}, "peak_mem_mb": 1000.0}, "abc")
    assert _throughput(tmp_path, cell.name) == {**work, "peak_mem_mb": 1000.0, "cell_hash": "abc"}
    save_throughput(tmp_path, cell, {**work, "images": 4}, "new")  # other samples: the old timing no longer applies
    assert _throughput(tmp_path, cell.name)["images"] == 4


def test_labels_out_of_range_are_refused_before_sampling(tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,label\nsmile,3\nfrown,99999\n")
    for extra in (["--guidance", "classifier"], ["--guidance", "cfg", "--metrics", "accuracy"]):
        argv = ["run", "--preset", "tiny", "--prompts", str(prompts), "--out", str(tmp_path), "--no-report", *extra]
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "label 99999 of 'frown' is out of range 0..1869" in err and err.count("\n") == 0, err
    assert not list(tmp_path.glob("*/samples/*"))  # the run directory is made (and locked) first; nothing sampled
    # a set with a blank label is not scored for accuracy, so its labels are not held to the table's range
    prompts.write_text("prompt,label\nsmile,3\nwink,\nfrown,99999\n")
    from bench.runner.config import BenchConfig
    from bench.runner.applicability import check_compatible
    from bench.runner.store import load_prompt_set
    from guidance.models import load_bundle

    cfg = BenchConfig.from_preset("tiny", prompts=str(prompts), metrics=["clip_score", "accuracy"])
    check_compatible(cfg, load_prompt_set(cfg), load_bundle("emoji"))


def test_nproc_takes_a_count_of_one_or_more(capsys):
    with pytest.raises(SystemExit):
        cli_main(["run", "--nproc", "0"])
    assert "argument --nproc: 0 is not a count of 1 or more" in capsys.readouterr().err


def test_a_run_directory_keeps_its_samples_when_a_command_changes_their_settings(tmp_path, capsys):
    """The same --run-id with other sampler settings would redraw every cell over the old files: refused,
    naming the settings; the files stay as they were."""
    from bench.runner.config import BenchConfig

    run = tmp_path / "r"
    (run / "samples").mkdir(parents=True)
    made = BenchConfig.from_preset("tiny", steps=4, out=str(tmp_path), run_id="r")
    (run / "config.json").write_text(json.dumps(made.to_dict()))
    (run / "samples" / "cfg_s3_seed0.npz").write_bytes(b"earlier samples")
    argv = ["run", "--preset", "tiny", "--out", str(tmp_path), "--run-id", "r", "--no-report"]
    assert cli_main([*argv, "--steps", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds samples made with --steps 4; this command's --steps 5 would replace them" in err, err
    assert (run / "samples" / "cfg_s3_seed0.npz").read_bytes() == b"earlier samples"
    assert json.loads((run / "config.json").read_text())["steps"] == 4
    from bench.runner.run_dir import check_keeps_samples

    check_keeps_samples(run, made.with_overrides(batch_size=3, prompt_limit=2, seeds=[5]))  # free to change
    (run / "samples" / "cfg_s3_seed0.npz").unlink()
    check_keeps_samples(run, made.with_overrides(steps=5))  # killed before its first batch: nothing to keep
    (run / "samples" / "cfg_s3_seed0.npz").write_bytes(b"earlier samples")
    with pytest.raises(ValueError, match="made with --sampler ddim; this command's --sampler ddpm"):
        check_keeps_samples(run, made.with_overrides(sampler="ddpm"))


@pytest.mark.parametrize("content, message", [
    (None, "is not a run directory (no config.json)"),
    ("{bad", "is not valid JSON"),
    ('{"zzz": 1}', "has keys this version does not know: ['zzz']"),
])
def test_merge_names_what_is_wrong_with_the_run_directory(tmp_path, capsys, content, message):
    run = tmp_path / "r"
    run.mkdir()
    if content is not None:
        (run / "config.json").write_text(content)
    assert cli_main(["merge", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err


def test_a_killed_cell_keeps_the_timing_of_the_batches_it_saved(tmp_path, monkeypatch):
    """Each batch's time is recorded as soon as the batch is saved: a kill in batch 2 keeps batch 1's timing,
    and the resume reports the cell over all its images (4 in 2 batches), not only the resumed ones."""
    from bench.runner.config import BenchConfig
    from bench.runner.run import run_benchmark
    from bench.runner.store import SampleStore

    cfg = BenchConfig.from_preset("tiny", guidance=["none"], scales={"none": [0.0]}, prompt_limit=4, seeds=[0],
                                  steps=2, batch_size=2, metrics=["clip_score"], out=str(tmp_path), run_id="k")
    write = SampleStore.write_batch
    calls = []

    def killed_in_batch_two(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(self, *args, **kwargs)

    monkeypatch.setattr(SampleStore, "write_batch", killed_in_batch_two)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg, progress=False)
    timing = _throughput(tmp_path / "k", "none_s0_seed0")
    assert timing["images"] == 2 and len(timing["intervals"]) == 1 and timing["seconds"] > 0
    monkeypatch.setattr(SampleStore, "write_batch", write)
    run_benchmark(cfg, progress=False)
    timing = _throughput(tmp_path / "k", "none_s0_seed0")
    assert timing["images"] == 4 and len(timing["intervals"]) == 2


def test_every_shard_job_records_the_settings_and_later_jobs_must_match(tmp_path, capsys):
    """Any job of an array may start first, so each writes config.json (atomically); a later job with other
    sampler settings is refused before it samples over the first job's batches."""
    common = ["--preset", "tiny", "--guidance", "none", "--scales", "0", "--prompt-limit", "4", "--seeds", "0",
              "--batch-size", "2", "--out", str(tmp_path), "--no-report", "--run-id", "arr", "--metrics", "clip_score"]
    assert cli_main(["run", *common, "--steps", "2", "--shard", "1/2"]) == 0
    assert json.loads((tmp_path / "arr" / "config.json").read_text())["steps"] == 2
    assert not list((tmp_path / "arr").glob(".config.json.*"))  # the atomic write leaves no partial file
    assert cli_main(["run", *common, "--steps", "3", "--shard", "0/2"]) == 2
    assert "holds samples made with --steps 2; this command's --steps 3" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrated_run_records_effective_scales_and_compares_with_cfg_at_them(tmp_path):
    """--calibrate end to end: CFG's effective scale is its scale, PAG alone's is 1 + s, and PAG's calibrated
    CFG (at 4, the same noise) redraws the run's own CFG 4 samples; calibrated.csv pairs every image."""
    cfg = BenchConfig.from_preset("tiny", guidance=["cfg", "apg", "pag"], scales={"cfg": [4.0], "apg": [6.0], "pag": [3.0]},
                                  metrics=["clip_score", "accuracy"], calibrate=True, out=str(tmp_path), run_id="cal",
                                  **TINY)
    run = run_benchmark(cfg, progress=False)
    per_sample = pd.read_csv(run / "per_sample.csv")
    scale = per_sample.groupby("guidance")["effective_scale"]
    assert np.allclose(scale.min()[["cfg", "pag"]], [4.0, 4.0], rtol=1e-5)  # float32 predictions: 1e-5 relative
    assert np.allclose(scale.max()[["cfg", "pag"]], [4.0, 4.0], rtol=1e-5)
    summary = pd.read_csv(run / "summary.csv").set_index("guidance")
    assert summary.loc["cfg", "effective_scale_n"] == 8 and summary.loc["apg", "effective_scale"] > 0
    table = pd.read_csv(run / "calibrated.csv")
    assert set(table["guidance"]) == {"apg", "pag"}
    assert set(table["metric"]) == {"clip_score", "acc_identity", "acc_subgroup", "acc_group"}
    assert (table["n"] == 8).all() and (table["n_prompts"] == 4).all() and (table["nfe_ratio"] == 1.0).all()
    assert np.allclose(table["calibrated_scale_measured"], table["effective_scale"], rtol=1e-5)
    assert ((table["win_lo"] <= table["win_rate"]) & (table["win_rate"] <= table["win_hi"])).all()
    assert table["win_p_holm"].between(0, 1).all() and (table["win_p_holm"] >= table["win_p"]).all()
    for seed_set in (0, 1):
        with np.load(run / "samples" / f"cfg_s4_seed{seed_set}.npz") as plain, \
                np.load(run / "calibrated" / f"pag_s3_seed{seed_set}" / "samples" / f"cfg_s4_seed{seed_set}.npz") as cal:
            gap = np.abs(plain["images"].astype(int) - cal["images"].astype(int))
            assert gap.max() <= 1  # the same noise and scale up to float rounding of 1 + s
    timing = json.loads((run / "calibration.json").read_text())
    assert timing["calibrated_cells"] == 4 and timing["cpu_s_calibration"] > 0
    index = build_report([run])
    assert "Calibrated comparison" in index.read_text() and "effective CFG scale" in index.read_text()
