"""The benchmark run: sample a guidance x scale x seed grid, save every batch, then score each cell.

Samples are written batch by batch under the run directory (bench.runner.run_dir), keyed by each cell's
hash and the global sample index (bench.runner.sampling), so an interrupted run resumes where it stopped
and ends with the same results as an uninterrupted one. Metrics are computed from the saved samples;
independent shard jobs are merged and scored by bench.runner.shards.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from bench.runner import calibration
from bench.runner.applicability import applicable_guidance, applicable_metrics, check_compatible
from bench.runner.calibration import check_calibration
from bench.runner.config import BenchConfig
from bench.runner.distributed import Shard, init_from_env, local_device
from bench.runner.failure import loading
from bench.runner.lock import release
from bench.runner.preflight import preflight
from bench.runner.run_dir import agree_on_run_id, check_keeps_samples, config_json, prepare_output, write_manifest
from bench.runner.sampling import DTYPES, no_work, peak_memory_mb, reset_peak_memory, sample_cell, save_throughput
from bench.runner.scoring import check_scorers, score_cells
from bench.prompts.readers import PromptSet
from bench.runner.store import Cell, Expected, SampleStore, write_atomic
from bench.stats.analysis import write_analysis
from bench.stats.bootstrap import DEFAULT_B
from bench.tasks import Task, make_task
from guidance.accelerate import checked_device
from guidance.bundle import ModelBundle
from guidance.guiders import Guidance, make_guidance
from guidance.models import load_bundle
from guidance.checkpoints import CheckpointError

def load_model(spec: str, device: torch.device, sampler: str | None = None) -> ModelBundle:
    """The --model bundle; a library's error while loading it becomes one line naming the model."""
    try:
        with loading("--model", spec, "check that the folder holds the model's files as saved (docs/diffusers.md)"):
            return load_bundle(spec, device, sampler)
    except CheckpointError as err:
        raise ValueError(f"--model {spec}: {err}") from None


def run_benchmark(cfg: BenchConfig, progress: bool = True, shard: Shard | None = None) -> Path:
    """Run (or resume) a benchmark; returns the run directory holding results.csv and manifest.json.

    Under torchrun every process samples its share of the batches and metrics sync across the
    group; with an independent `shard` (K of N jobs) this process only samples, and
    `merge_shards` scores the run once all jobs are done.
    """
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
    check_scorers(cfg.scoring(), device)
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
        store = task.store(run_dir, cell)
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
    scored = {item.method.name: score_cells(replace(cfg.scoring(), metrics=metrics), item.task, run_dir / item.dir,
                                            [item.cell], device, False, Shard()).per_sample for item in items}
    table = calibration.comparison(items, pd.read_csv(run_dir / "per_sample.csv"), scored,
                                   calibration.per_image_columns(cfg), DEFAULT_B)
    calibration.write(run_dir, table, {"cpu_s_run": round(cpu - started_cpu, 1),
                                       "cpu_s_calibration": round(time.process_time() - cpu, 1),
                                       "wall_s_calibration": round(time.time() - wall, 1),
                                       "calibrated_cells": len(items), "images": n * len(items)})
    note(f"calibrated comparison: {run_dir / calibration.CALIBRATED_FILE}")


def finish_run(cfg: BenchConfig, task: Task, run_dir: Path, cells: list[Cell], bundle: ModelBundle, device: torch.device,
               shard: Shard, wall: float | None, n: int, progress: bool, processes: int) -> Path:
    scores = score_cells(cfg.scoring(), task, run_dir, cells, device, progress, shard)
    if shard.is_main:
        scores.results.to_csv(run_dir / "results.csv", index=False)
        scores.per_sample.to_csv(run_dir / "per_sample.csv", index=False)
        write_atomic(run_dir / "evaluators.json", json.dumps(scores.evaluators, indent=2))
        write_analysis(run_dir)  # summary.csv and the paired tables, also without the HTML report
        write_manifest(cfg, run_dir, bundle, device, wall, n, processes)
    shard.barrier()
    return run_dir


