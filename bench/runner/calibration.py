"""The calibrated comparison (GA-Eval, "Guidance Matters", arXiv:2602.22570): each method cell against plain
CFG run at the method's own effective scale and number of model evaluations, on the same prompts and noise.

For every cell of a method other than CFG, each sample i has its effective CFG scale e_i (the trajectory
mean of guidance.effective_scale's eq_cfg, stored beside the samples). Plain CFG then redraws sample i at
scale e_i (per sample, as GA-Eval's per-prompt rerun), from the same global sample index and so the same
initial noise (guidance.rng), with steps x the method's NFE ratio (network passes per image of the
method over CFG's at the run's steps, rounded to the nearest step; GA-Eval truncates). The calibrated
samples live under `calibrated/<method cell>/`, each a small run directory of its own (samples, throughput),
so the run's own cells, tables and figures are untouched. The comparison (bench.stats.winrate) is
written to calibrated.csv: per method, scale and per-image metric, the mean difference and the win rate of
the method with paired bootstrap intervals over prompts and Holm-adjusted p-values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.runner.config import BenchConfig
from bench.evaluators.registry import higher_is_better, selected
from bench.prompts.readers import PromptSet
from bench.stats.bootstrap import holm
from bench.stats.winrate import PAIR_KEYS, paired_comparison
from bench.runner.store import Cell, Expected, SampleStore, write_atomic
from bench.tasks import Task
from guidance.bundle import ModelBundle
from guidance.effective_scale import EFFECTIVE_SCALE, trajectory_mean
from guidance.guiders import make_guidance
from guidance.guiders.cfg import ClassifierFreeGuidance, PerSampleCFG

CALIBRATED_DIR = "calibrated"
CALIBRATED_FILE = "calibrated.csv"
TIMING_FILE = "calibration.json"
BASE = "cfg"  # the method every other is calibrated against
COLUMNS = ["guidance", "scale", "metric", "effective_scale", "effective_scale_sd", "calibrated_scale_measured",
           "nfe_ratio", "steps", "cfg_steps", "method_mean", "cfg_mean", "diff", "diff_lo", "diff_hi", "diff_p",
           "diff_p_holm", "win_rate", "win_lo", "win_hi", "win_p", "win_p_holm", "better", "n", "n_prompts",
           "n_seed_sets", "filled"]


@dataclass
class Calibrated:
    """One method cell and its calibrated CFG rerun."""

    method: Cell
    cell: Cell  # plain CFG at the mean of the per-sample scales (the name; each sample has its own)
    scales: np.ndarray  # per global sample index: the CFG scale it is redrawn at
    filled: int  # samples without an effective scale of their own, given the cell's mean
    method_steps: int
    steps: int  # the calibrated CFG's
    nfe_ratio: float
    task: Task  # the run's task at `steps`, keyed by the calibration

    @property
    def dir(self) -> Path:
        return Path(CALIBRATED_DIR) / self.method.name


def calibrated_task(task: Task, steps: int, key: dict) -> Task:
    """A copy of the run's (prepared) task that samples `steps` steps and adds `key` to its samples' key: the
    same class with `task_key` extended (a subclass made here, since any registered task may be calibrated),
    sharing the models the task loaded in `prepare`."""
    base = type(task)

    class CalibratedTask(base):  # type: ignore[misc, valid-type]
        def task_key(self, cell: Cell) -> dict | None:
            return {**(base.task_key(self, cell) or {}), **key}

    out = copy.copy(task)
    out.__class__ = CalibratedTask
    out.cfg = replace(task.cfg, steps=steps)
    return out


def per_sample_scales(store: SampleStore) -> np.ndarray | None:
    """Each sample's effective scale (trajectory mean) from a merged cell, or None where none was recorded."""
    per_step = store.load_extras().get(EFFECTIVE_SCALE)
    return None if per_step is None else trajectory_mean(torch.from_numpy(per_step)).numpy()


def plan(cfg: BenchConfig, task: Task, bundle: ModelBundle, run_dir: Path, cells: list[Cell],
         note: Callable[[str], None] = print) -> list[Calibrated]:
    """The calibrated rerun of every method cell that recorded an effective scale (`note` says which not)."""
    out = []
    for cell in cells:
        if cell.guidance == BASE:
            continue
        scales = per_sample_scales(task.store(run_dir, cell))
        finite = None if scales is None else np.isfinite(scales)
        if finite is None or not finite.any():
            note(f"note: --calibrate skips {cell.name}: {cell.guidance} has no conditional/unconditional pair to "
                 f"measure an effective CFG scale from")
            continue
        filled = int((~finite).sum())
        scales = np.where(finite, scales, scales[finite].mean())
        method = make_guidance(cell.guidance, cell.scale, bundle.guiding_models(), **cfg.guidance_options(cell.guidance))
        passes = task.cost(bundle, cell, method, False).network_passes
        cfg_passes = task.cost(bundle, cell, ClassifierFreeGuidance(2.0), False).network_passes
        ratio = passes / cfg_passes if cfg_passes else 1.0
        steps = max(1, round(cfg.steps * ratio))
        digest = hashlib.sha256(np.ascontiguousarray(scales, dtype=np.float64).tobytes()).hexdigest()[:16]
        key = {"calibrated_to": cell.name, "calibrated_scales": digest}
        mean = float(np.mean(scales))
        out.append(Calibrated(cell, Cell(BASE, round(mean, 4), cell.seed_set, cell.seed, cell.variant), scales, filled,
                              cfg.steps, steps, ratio, calibrated_task(task, steps, key)))
    return out


SampleFn = Callable[[BenchConfig, Task, Cell, PerSampleCFG, SampleStore, Expected, Path], None]


def sample_all(items: list[Calibrated], run_dir: Path, prompts: PromptSet, sample: SampleFn,
               done: Callable[[int], None] = lambda n: None) -> None:
    """Sample every calibrated cell not yet complete (`sample`: the runner's loop over a cell's batches;
    `done(n)` is told the size of each cell found complete, for the progress bar)."""
    for item in items:
        where = run_dir / item.dir
        (where / "samples").mkdir(parents=True, exist_ok=True)
        expected = item.task.expected(item.cell, prompts)
        store = item.task.store(where, item.cell)
        if store.done(expected):
            done(len(expected))
            continue
        sample(item.task.cfg, item.task, item.cell, PerSampleCFG(item.scales.tolist()), store, expected, where)
        store.merge(expected)


def per_image_metrics(cfg: BenchConfig) -> list[str]:
    """The run's per-image metrics (by name): what the calibrated CFG is scored with."""
    return [m.name for m in selected(cfg.metrics, "per_image")]


def per_image_columns(cfg: BenchConfig) -> list[str]:
    """Their per_sample.csv columns (accuracy: acc_identity, acc_subgroup, acc_group): what images are paired on."""
    return [c for m in selected(cfg.metrics, "per_image") for c in m.columns]


def check_calibration(cfg: BenchConfig, processes: int) -> None:
    """Refuse, before sampling, a --calibrate that could compare nothing (one line naming the fix)."""
    if not cfg.calibrate:
        return
    if processes > 1:
        raise ValueError("--calibrate runs in one process; run it without torchrun or --shard (or calibrate a merged "
                         "run by rerunning it with --calibrate and the same --run-id)")
    if all(g == BASE for g in cfg.guidance):
        raise ValueError(f"--calibrate compares methods with plain CFG at their effective scale; add a method other "
                         f"than {BASE} to --guidance")
    if not per_image_metrics(cfg):
        raise ValueError(f"--calibrate pairs images on per-image metrics, and --metrics {','.join(cfg.metrics)} has "
                         f"none; add clip_score (or accuracy with labelled prompts)")


def comparison(items: list[Calibrated], method_rows: pd.DataFrame, calibrated_rows: dict[str, pd.DataFrame],
               metrics: list[str], resamples: int, confidence: float = 0.95) -> pd.DataFrame:
    """calibrated.csv: per method and scale (seed sets pooled) and per-image metric, method versus its
    calibrated CFG, paired by seed set and sample index; Holm over each metric's rows, separately for the
    difference and the win rate."""
    groups: dict[tuple[str, float], list[Calibrated]] = {}
    for item in items:
        groups.setdefault((item.method.arm, item.method.scale), []).append(item)
    rows = []
    for (arm, scale), members in groups.items():
        mine = method_rows[(method_rows["guidance"] == arm) & np.isclose(method_rows["scale"], scale)]
        mine = mine[mine["seed_set"].isin([m.method.seed_set for m in members])]
        theirs = pd.concat([calibrated_rows[m.method.name] for m in members], ignore_index=True)
        joined = mine.merge(theirs, on=[*PAIR_KEYS, "prompt_index"], suffixes=("", "_cfg"))
        scales = np.concatenate([m.scales for m in members])
        for metric in metrics:
            if metric not in joined.columns or f"{metric}_cfg" not in joined.columns:
                continue
            up = higher_is_better(metric)
            stat = paired_comparison(joined[metric].to_numpy(), joined[f"{metric}_cfg"].to_numpy(),
                                     joined["prompt_index"].to_numpy(), up, resamples, confidence=confidence)
            measured = joined.get(f"{EFFECTIVE_SCALE}_cfg")
            rows.append({"guidance": arm, "scale": scale, "metric": metric, "effective_scale": float(scales.mean()),
                         "effective_scale_sd": float(scales.std(ddof=1)) if len(scales) > 1 else math.nan,
                         "calibrated_scale_measured": float(measured.mean()) if measured is not None else math.nan,
                         "nfe_ratio": members[0].nfe_ratio, "steps": members[0].method_steps,
                         "cfg_steps": members[0].steps, "method_mean": stat["a_mean"], "cfg_mean": stat["b_mean"],
                         "diff": stat["diff"], "diff_lo": stat["diff_lo"], "diff_hi": stat["diff_hi"],
                         "diff_p": stat["diff_p"], "win_rate": stat["win_rate"], "win_lo": stat["win_lo"],
                         "win_hi": stat["win_hi"], "win_p": stat["win_p"], "n": stat["n"], "n_prompts": stat["n_prompts"],
                         "n_seed_sets": len(members), "filled": sum(m.filled for m in members)})
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table
    for _, idx in table.groupby("metric", sort=False).groups.items():
        table.loc[idx, "diff_p_holm"] = holm(table.loc[idx, "diff_p"].to_numpy(float))
        table.loc[idx, "win_p_holm"] = holm(table.loc[idx, "win_p"].to_numpy(float))
    significant = table["win_p_holm"] < 1.0 - confidence
    table["better"] = np.where(significant, np.where(table["win_rate"] > 0.5, "method", "calibrated cfg"), "")
    return table[COLUMNS]


def write(run_dir: Path, table: pd.DataFrame, timing: dict) -> None:
    table.to_csv(run_dir / CALIBRATED_FILE, index=False)
    write_atomic(run_dir / TIMING_FILE, json.dumps(timing, indent=2))
