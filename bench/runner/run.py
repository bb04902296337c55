"""The benchmark run: sample a guidance x scale x seed grid, save every batch, then score each cell.

Samples are written batch by batch under the run directory, keyed by each cell's hash and the
global sample index, so an interrupted run resumes where it stopped and ends with the same results
as an uninterrupted one. Metrics are computed from the saved samples.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import time
from dataclasses import fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch

from bench.runner import calibration
from bench.runner.applicability import applicable_guidance, check_compatible
from bench.runner.calibration import check_calibration
from bench.runner.config import BenchConfig, misfit_fields
from bench.runner.distributed import Shard, init_from_env, local_device
from bench.runner.failure import loading, note_run_dir, one_line
from bench.runner.lock import hold, release
from bench.runner.preflight import preflight
from bench.runner.scoring import applicable_metrics, check_scorers, score_cells, scorer_label
from bench.prompts.readers import PromptSet
from bench.runner.store import EFFECTIVE_SCALE, Cell, Expected, SampleStore, write_atomic
from bench.stats.analysis import write_analysis
from bench.stats.bootstrap import DEFAULT_B
from bench.tasks import Task, make_task
from guidance.accelerate import autocast_context, checked_device
from guidance.bundle import ModelBundle
from guidance.effective_scale import EffectiveScaleLog
from guidance.guiders import Guidance, make_guidance
from guidance.models import load_bundle
from guidance.protocols import Conditions
from guidance.checkpoints import CheckpointError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_run_id(cfg: BenchConfig) -> str:
    """Time stamp and methods: up to three named, more counted (a name for --guidance all stays short)."""
    methods = "-".join(cfg.guidance) if len(cfg.guidance) <= 3 else f"{len(cfg.guidance)}-methods"
    return f"{datetime.now():%Y%m%d-%H%M%S}-{methods}"


def prepare_output(cfg: BenchConfig, shard: Shard = Shard()) -> Path:
    """Create and probe the run directory before any sampling, and hold its lock (bench.runner.lock) for this
    process's launch and shard until the process ends: a second run on the same directory is refused."""
    run_id = cfg.run_id or default_run_id(cfg)
    run_dir = Path(cfg.out) / run_id
    try:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: torchrun ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output directory {run_dir} is not writable ({err.strerror}); choose another with --out") from err
    hold(run_dir, shard)
    note_run_dir(run_dir)
    return run_dir


def config_json(data: dict[str, Any]) -> str:
    """config.json's text: strict JSON (a NaN or infinity is refused, never written as invalid JSON)."""
    try:
        return json.dumps(data, indent=2, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"the run's settings hold a non-finite number ({err}); give finite values") from None


def load_model(spec: str, device: torch.device, sampler: str | None = None) -> ModelBundle:
    """The --model bundle; a library's error while loading it becomes one line naming the model."""
    try:
        with loading("--model", spec, "check that the folder holds the model's files as saved (docs/diffusers.md)"):
            return load_bundle(spec, device, sampler)
    except CheckpointError as err:
        raise ValueError(f"--model {spec}: {err}") from None


def check_keeps_samples(run_dir: Path, cfg: BenchConfig) -> None:
    """Refuse a command that would replace the samples a run directory holds: the same --run-id with
    other sampling settings (or other weights) would redraw every cell over the old files. Everything
    else may change on a resume (prompts, their number, scales, seeds, batch size, device, speed-ups),
    and a directory that holds no samples yet (a run killed before its first batch) takes any settings."""
    samples = run_dir / "samples"
    if not (run_dir / "config.json").exists() or not samples.is_dir() or not any(samples.iterdir()):
        return
    before = load_run_config(run_dir)
    was_set, now_set = before.sample_settings(), cfg.sample_settings()
    changed = [f for f in cfg.SAMPLE_FIELDS if was_set[f] is not None and was_set[f] != now_set[f]]
    if not changed:
        return
    if changed == ["model_fingerprint"]:
        raise ValueError(f"{run_dir} holds samples of other weights (fingerprint {before.model_fingerprint}, now "
                         f"{cfg.model_fingerprint}): restore those weights, or sample afresh under a new --run-id")
    was = ", ".join(f"--{f} {was_set[f]}" for f in changed if f != "model_fingerprint")
    now = ", ".join(f"--{f} {now_set[f]}" for f in changed if f != "model_fingerprint")
    raise ValueError(f"{run_dir} holds samples made with {was}; this command's {now} would replace them: use a "
                     f"new --run-id (or --out), or repeat {was}")


def reset_peak_memory(device: torch.device) -> None:
    """Start a cell's peak-memory window, so each cell reports its own peak, not the run's so far:
    CUDA's allocator peak, or on Linux the process's peak RSS (VmHWM, reset through clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the figure stays the process peak


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def conditions(bundle: ModelBundle, expected: Expected, indices: list[int]) -> Conditions:
    """The batch's conditions, from the captions, labels and negative prompts its global sample indices
    ask for (encoded once per batch: every step of the trajectory reuses them)."""
    labels = expected.labels[indices]
    negatives = [str(t) or None for t in expected.negatives[indices]]
    return bundle.conditions([str(t) for t in expected.texts[indices]],
                             torch.from_numpy(labels) if (labels >= 0).all() else None,
                             negatives if any(negatives) else None)


def batches(todo: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(todo), size):
        yield todo[start:start + size]


def no_work() -> dict[str, Any]:
    """A timing with nothing in it: what a process that sampled no batch of a cell records."""
    return {"images": 0, "seconds": 0.0, "network_passes": 0.0, "guide_passes": 0.0, "backward_passes": 0.0,
            "intervals": []}  # wall-clock [start, end] of each batch: jobs' timings merge by their overlap


def sample_cell(cfg: BenchConfig, task: Task, bundle: ModelBundle, cell: Cell, guidance: Guidance, store: SampleStore,
                expected: Expected, device: torch.device, progress, shard: Shard,
                record: Callable[[dict[str, Any]], None]) -> None:
    """Sample this shard's missing batches of one cell (the task samples each batch). `record` gets each
    batch's own time and work (for throughput) right after the batch is saved, so a killed run keeps the
    timing of every batch it kept (its resume then reports s/img over all the cell's batches)."""
    finished = store.finished_indices(expected)
    # per image over every model evaluation (NFE; Heun: two per step): exact for interval guidance; a batch
    # with a negative prompt runs CFG's second branch at every evaluation, s = 1 included
    costs = {negative: task.cost(bundle, cell, guidance, negative) for negative in (False, True)}
    dtype = DTYPES[cfg.dtype]
    autocast = autocast_context(device, dtype)
    # batches are numbered over the whole cell, so shard ownership and batch members never depend on
    # what other processes or earlier (killed) runs already saved
    for number, batch in enumerate(batches(list(range(len(expected))), cfg.batch_size)):
        idx = [i for i in batch if i not in finished]
        if not idx or not shard.owns(number):
            continue
        cond = conditions(bundle, expected, idx)
        cost = costs[cond.negative is not None]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, started_at = time.perf_counter(), time.time()  # the interval's length comes from perf_counter
        batch_guidance = guidance.for_samples(idx)
        batch_guidance.scale_log = log = EffectiveScaleLog()  # read from the branches it runs anyway: no extra pass
        with autocast, torch.no_grad():  # gradient guidance turns gradients on for its guide alone
            batch = task.sample_batch(bundle, cell, batch_guidance, cond, idx, [str(t) for t in expected.texts[idx]],
                                      device)
        batch_guidance.scale_log = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        work = {"images": len(idx), "seconds": elapsed, "network_passes": cost.network_passes * len(idx),
                "guide_passes": cost.guide_passes * len(idx), "backward_passes": cost.backward_passes * len(idx),
                "intervals": [[started_at, started_at + elapsed]]}
        per_step = log.per_sample(len(idx))
        extras = batch.extras if per_step is None else {**batch.extras, EFFECTIVE_SCALE: per_step.numpy()}
        store.write_batch(idx, batch.images, expected, extras)
        if cfg.save_latents and batch.latents is not None:
            store.write_latents(idx, batch.latents, cell.seed)
        record(work)
        progress.update(len(idx))


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict[str, str]:
    import open_clip
    import torchmetrics

    return {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}


def run_benchmark(cfg: BenchConfig, progress: bool = True, shard: Shard | None = None) -> Path:
    """Run (or resume) a benchmark; returns the run directory holding results.csv and manifest.json.

    Under torchrun every process samples its share of the batches and metrics sync across the
    group; with an independent `shard` (K of N jobs) this process only samples, and
    `merge_shards` scores the run once all jobs are done.
    """
    from tqdm.auto import tqdm

    started, started_cpu = time.time(), time.process_time()
    preflight(cfg)
    task = make_task(cfg)
    task.validate()
    shard = shard or init_from_env(cfg.device)
    progress = progress and shard.is_main
    cfg = agree_on_run_id(cfg, shard)
    run_dir = prepare_output(cfg, shard)  # locked before the models load: a second process is refused at once
    prompts = task.prompt_set()
    if progress and cfg.prompt_limit is not None and len(prompts) == cfg.prompt_limit:
        print(f"prompts: the first {cfg.prompt_limit} of {prompts.name} (--prompt-limit N or all to change)")
    device = checked_device(local_device(cfg.device))
    bundle = load_model(cfg.model, device, cfg.sampler)
    cfg = applicable_guidance(cfg, prompts, bundle, note=print if progress else lambda _: None)
    cfg = applicable_metrics(cfg, bundle.domain, note=print if progress else lambda _: None, task=cfg.task)
    check_compatible(cfg, prompts, bundle)
    check_calibration(cfg, shard.world)
    check_scorers(cfg, device)
    task.prepare(bundle, device)
    bundle.accelerate(cfg.acceleration(), device, DTYPES[cfg.dtype])
    cfg = replace(cfg, model_fingerprint=bundle.fingerprint())
    task.cfg = cfg  # the settings as resolved against the model (--guidance all, the metrics that apply)
    check_keeps_samples(run_dir, cfg)
    if shard.is_main or not shard.launched:  # every independent shard job: any of them may start first
        write_atomic(run_dir / "config.json", config_json(cfg.to_dict()))
    n = len(prompts) * cfg.samples_per_prompt
    cells = task.cells()
    bar = tqdm(total=n * len(cells), desc="sampling", unit="img", disable=not progress, dynamic_ncols=True)
    for cell in cells:
        expected = task.expected(cell, prompts)
        store = SampleStore.of(cfg, run_dir, cell, task.task_key(cell))
        if store.done(expected):
            bar.update(n)
            continue
        if progress and store.under_another_key():
            bar.write(f"{cell.name}: samples saved under another key (an earlier version, other weights or "
                      f"sampler settings) are not reused: sampling afresh")
        guidance = make_guidance(cell.guidance, cell.scale, bundle.guiding_models(),
                                 **cfg.guidance_options(cell.guidance))
        bar.set_postfix_str(cell.name)
        reset_peak_memory(device)

        def record(work: dict[str, Any], cell: Cell = cell, store: SampleStore = store) -> None:
            save_throughput(run_dir, cell, {**work, "peak_mem_mb": peak_memory_mb(device)}, store.cell_hash, shard)

        sample_cell(cfg, task, bundle, cell, guidance, store, expected, device, bar, shard, record)
        record(no_work())  # a process that owned no batch still reports (an empty timing), with its peak
        shard.barrier()
        if shard.launched or shard.world == 1:
            if shard.is_main:
                store.merge(expected)
            shard.barrier()
    bar.close()
    if not shard.launched and shard.world > 1:
        print(f"shard {shard.rank}/{shard.world} sampled; when every shard is done: python -m bench merge {run_dir}")
        release(run_dir)
        return run_dir
    finish_run(cfg, task, run_dir, cells, bundle, device, shard, time.time() - started, n, progress, shard.world)
    if cfg.calibrate:
        calibrate_run(cfg, task, run_dir, cells, bundle, device, prompts, progress, started_cpu)
    release(run_dir)
    return run_dir


def calibrate_run(cfg: BenchConfig, task: Task, run_dir: Path, cells: list[Cell], bundle: ModelBundle,
                  device: torch.device, prompts: PromptSet, progress: bool, started_cpu: float) -> None:
    """--calibrate (bench.runner.calibration): sample plain CFG at each method cell's effective scale and NFE, score
    it with the run's per-image metrics, write calibrated.csv, and the CPU time it took beside the run's."""
    from tqdm.auto import tqdm

    cpu, wall = time.process_time(), time.time()
    note = print if progress else lambda _: None
    items = calibration.plan(cfg, task, bundle, run_dir, cells, note)
    n = len(prompts) * cfg.samples_per_prompt
    bar = tqdm(total=n * len(items), desc="calibrated cfg", unit="img", disable=not progress, dynamic_ncols=True)

    def sample(cal_cfg: BenchConfig, cal_task: Task, cell: Cell, guidance: Guidance, store: SampleStore,
               expected: Expected, where: Path) -> None:
        bar.set_postfix_str(cell.name)

        def record(work: dict[str, Any]) -> None:
            save_throughput(where, cell, {**work, "peak_mem_mb": peak_memory_mb(device)}, store.cell_hash)

        sample_cell(cal_cfg, cal_task, bundle, cell, guidance, store, expected, device, bar, Shard(), record)

    calibration.sample_all(items, run_dir, prompts, sample, bar.update)
    bar.close()
    metrics = calibration.per_image_metrics(cfg)
    scored = {item.method.name: score_cells(replace(item.task.cfg, metrics=metrics), run_dir / item.dir, [item.cell],
                                            device, False, Shard(), item.task).per_sample for item in items}
    table = calibration.comparison(items, pd.read_csv(run_dir / "per_sample.csv"), scored,
                                   calibration.per_image_columns(cfg), DEFAULT_B)
    calibration.write(run_dir, table, {"cpu_s_run": round(cpu - started_cpu, 1),
                                       "cpu_s_calibration": round(time.process_time() - cpu, 1),
                                       "wall_s_calibration": round(time.time() - wall, 1),
                                       "calibrated_cells": len(items), "images": n * len(items)})
    note(f"calibrated comparison: {run_dir / calibration.CALIBRATED_FILE}")


def finish_run(cfg: BenchConfig, task: Task, run_dir: Path, cells: list[Cell], bundle: ModelBundle, device: torch.device,
               shard: Shard, wall: float | None, n: int, progress: bool, processes: int) -> Path:
    scores = score_cells(cfg, run_dir, cells, device, progress, shard, task)
    if shard.is_main:
        scores.results.to_csv(run_dir / "results.csv", index=False)
        scores.per_sample.to_csv(run_dir / "per_sample.csv", index=False)
        write_atomic(run_dir / "evaluators.json", json.dumps(scores.evaluators, indent=2))
        write_analysis(run_dir)  # summary.csv and the paired tables, also without the HTML report
        write_manifest(cfg, run_dir, bundle, device, wall, n, processes)
    shard.barrier()
    return run_dir


def load_run_config(run_dir: Path) -> BenchConfig:
    """The settings a run directory was made with (its config.json), or a one-line error naming the fix."""
    path = run_dir / "config.json"
    if not run_dir.is_dir() or not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.json); pass the directory the --shard jobs "
                         f"wrote into (--out/--run-id)")
    try:
        data = json.loads(path.read_text(), parse_constant=refuse_constant)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON ({one_line(err)[:120]}); restore it (every shard job writes the "
                         f"same file)") from None
    known = {f.name for f in fields(BenchConfig)}
    unknown = sorted(set(data) - known) if isinstance(data, dict) else ["(not an object)"]
    if unknown:
        raise ValueError(f"{path} has keys this version does not know: {unknown}; it comes from another version of "
                         f"the suite or was edited: merge with that version, or remove them")
    misfits = misfit_fields(data)
    if misfits:
        raise ValueError(f"{path}: {', '.join(misfits)} hold(s) values of the wrong type ({json.dumps(data[misfits[0]])[:60]}); "
                         f"restore the file (every shard job writes the same one)")
    return BenchConfig(**data)


def refuse_constant(name: str) -> float:
    """json's hook for NaN and Infinity, which strict JSON (and config.json) never holds."""
    raise ValueError(f"{name} is not valid JSON")


def merge_shards(run_dir: Path, progress: bool = True) -> Path:
    """Merge the batches that independent shard jobs wrote into one run directory, then score it."""
    cfg = load_run_config(Path(run_dir))
    cfg.run_id, cfg.out = Path(run_dir).name, str(Path(run_dir).parent)
    cfg.scales = {g: list(v) for g, v in cfg.scales.items()}
    task = make_task(cfg)
    prompts = task.prompt_set()
    n = len(prompts) * cfg.samples_per_prompt
    device = torch.device(cfg.device if cfg.device == "cpu" or torch.cuda.is_available() else "cpu")
    bundle = load_model(cfg.model, device, cfg.sampler)
    check_keeps_samples(Path(run_dir), replace(cfg, model_fingerprint=bundle.fingerprint()))
    cells = task.cells()
    for cell in cells:
        expected = task.expected(cell, prompts)
        store = SampleStore.of(cfg, run_dir, cell, task.task_key(cell))
        if store.done(expected):
            continue
        missing = sorted(set(range(n)) - store.finished_indices(expected))
        if missing and store.under_another_key() and len(missing) == n:
            raise ValueError(f"{cell.name}: its samples were saved under another key (an earlier version of the "
                             f"suite, other weights or sampler settings) and are not reused; rerun every shard job")
        if missing:
            raise ValueError(f"{cell.name}: samples {missing[:5]}... are missing; run the remaining shard jobs "
                             f"(same command with their --shard K/N) before merging")
        store.merge(expected)
    # independent jobs: their wall time is not known here (they may have run at once or in turn)
    jobs = len(list(Path(run_dir).glob("throughput.rank*.json"))) or 1
    return finish_run(cfg, task, Path(run_dir), cells, bundle, device, Shard(), None, n, progress, jobs)


def agree_on_run_id(cfg: BenchConfig, shard: Shard) -> BenchConfig:
    """All processes of a torchrun group write into the directory that rank 0 names."""
    if cfg.run_id is None and shard.launched:
        import torch.distributed as dist

        name = [default_run_id(cfg) if shard.is_main else None]
        dist.broadcast_object_list(name, src=0)
        cfg = cfg.with_overrides(run_id=name[0])
    if cfg.run_id is None and shard.world > 1:
        raise ValueError("independent shard jobs must share a run directory: pass the same --run-id to every job")
    return cfg


def save_throughput(run_dir: Path, cell: Cell, spent: dict[str, float], cell_hash: str, shard: Shard = Shard()) -> None:
    """Timing of the sampling that actually ran, one file per process (merged when scoring).

    A resumed cell adds its work to what earlier (killed) runs of the same key recorded, so a resume
    that had nothing left to sample keeps the timings instead of zeroing them.
    """
    path = run_dir / f"throughput.rank{shard.rank}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    before = data.get(cell.name)
    if before is not None and before.get("cell_hash") == cell_hash:
        peak = max(before.get("peak_mem_mb", 0.0), spent.get("peak_mem_mb", 0.0))
        # a timing of sampled images from before intervals were recorded has none: the merged one then
        # has none either (Throughput falls back to the slowest process); an empty list is a timing
        older = "intervals" not in before and before.get("images", 0) > 0
        intervals = None if older else before.get("intervals", []) + spent.get("intervals", [])
        spent = {k: before.get(k, 0.0) + v for k, v in spent.items() if k != "intervals"}
        spent |= {"peak_mem_mb": peak} | ({} if intervals is None else {"intervals": intervals})
    data[cell.name] = {**spent, "cell_hash": cell_hash}
    write_atomic(path, json.dumps(data, indent=1))


def write_manifest(cfg: BenchConfig, run_dir: Path, bundle: ModelBundle, device: torch.device, wall: float | None, n: int,
                   processes: int = 1) -> None:
    manifest = {
        "run_id": run_dir.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "versions": versions(),
        "models": bundle.checksums(), "model_dir": bundle.source, "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "seeds": cfg.seeds, "samples_per_cell": n, "processes": processes,
        "acceleration": cfg.acceleration().describe(device, DTYPES[cfg.dtype]), "wall_time_s": None if wall is None else round(wall, 1), "clip_scorer": scorer_label(cfg),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

