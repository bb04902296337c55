"""Sampling one cell: the batches this process owns and has not saved yet, each saved as it finishes,
with its time and work (network, guide and backward passes) and the cell's peak memory, for throughput."""

from __future__ import annotations

import json
import re
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from bench.runner.config import BenchConfig
from bench.runner.distributed import Shard
from bench.runner.store import Cell, Expected, SampleStore, write_atomic
from bench.tasks import Task
from guidance.accelerate import autocast_context
from guidance.bundle import ModelBundle
from guidance.effective_scale import EFFECTIVE_SCALE, EffectiveScaleLog
from guidance.guiders import Guidance
from guidance.protocols import Conditions

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
