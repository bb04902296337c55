"""Independent shard jobs (`--shard K/N`): each samples its share into one run directory; `python -m bench
merge RUN_DIR` checks that every sample is there, merges the batches and scores the run once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from bench.runner.distributed import Shard
from bench.runner.run import finish_run, load_model
from bench.runner.run_dir import check_keeps_samples, load_run_config
from bench.tasks import make_task


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
        store = task.store(run_dir, cell)
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
