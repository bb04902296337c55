"""Statistics over seed sets: Student-t intervals, per-cell summaries, Pareto front, ranking.

A benchmark cell (guidance, scale) is sampled with several independent seed sets; the spread
between seed sets is an error bar every metric has (FID of one set of 64 images varies a lot), so
every quality metric is reported as a mean with a Student-t interval over seed sets, never as a
bare number. With few seed sets that interval is wide; per-image metrics get tighter, paired
intervals from the prompt bootstrap (bench/stats/bootstrap.py, bench/stats/analysis.py). Methods are
then compared on the FID-vs-CLIP trade-off, since guidance scale trades sample diversity (FID)
against prompt alignment (CLIP score) and no single scale is "the" result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats as _sps

from bench.evaluators.registry import quality_columns

__all__ = [
    "THROUGHPUT_METRICS",
    "quality_metrics",
    "mean_ci",
    "summarize",
    "pareto_front",
    "rank_methods",
]

THROUGHPUT_METRICS = (
    "img_per_s",
    "s_per_img",
    "network_passes_per_img",
    "guide_passes_per_img",
    "backward_passes_per_img",
    "peak_mem_mb",
)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval over seed sets, since there are only a handful of them.

    NaNs (metric not computed for a seed set) are ignored. With one value the mean is kept but
    the interval is (nan, nan): one seed set says nothing about the spread.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    arr = np.asarray(list(values), dtype=float)
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if n == 1:
        return mean, math.nan, math.nan
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    half = float(_sps.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * sem
    return mean, mean - half, mean + half


def quality_metrics(results: pd.DataFrame) -> list[str]:
    """The declared quality columns (bench.evaluators.registry) a results table holds, in their order."""
    return [m for m in quality_columns() if m in results.columns]


def _group_keys(frame: pd.DataFrame) -> list[str]:
    """Cells are (guidance, scale), per run when several runs are compared."""
    return (["run"] if "run" in frame.columns else []) + ["guidance", "scale"]


def _summarize_cell(cell: pd.DataFrame, metrics: list[str], confidence: float) -> dict[str, object]:
    """One summary row from the seed-set rows of one cell."""
    row: dict[str, object] = {}
    for m in metrics:
        values = cell[m] if m in cell.columns else []
        row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean_ci(values, confidence)
    row["n_seed_sets"] = int(cell["seed_set"].nunique()) if "seed_set" in cell.columns else len(cell)
    note = ""
    if "n_samples" in cell.columns and cell["n_samples"].notna().any():
        ns = sorted({int(v) for v in cell["n_samples"].dropna()})
        row["n_samples"] = ns[0]
        if len(ns) > 1:
            note = f"n_samples differs between seed sets ({', '.join(map(str, ns))}); min kept"
    else:
        row["n_samples"] = math.nan
    # a metric that failed (NaN) in some seed sets has its interval over fewer values than "seed sets" says
    partial = [f"{m} over {int(pd.to_numeric(cell[m], errors='coerce').notna().sum())} of {len(cell)} seed sets"
               for m in metrics if m in cell.columns
               and 0 < pd.to_numeric(cell[m], errors="coerce").notna().sum() < len(cell)]
    row["n_samples_note"] = "; ".join([note, *partial] if note else partial)
    for m in THROUGHPUT_METRICS:
        row[m] = float(pd.to_numeric(cell[m], errors="coerce").mean()) if m in cell.columns else math.nan
    return row


def summarize(results: pd.DataFrame, confidence: float = 0.95, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per (run,) guidance, scale: metric means with CIs over seed sets, n, and mean throughput. `metrics`:
    the columns summarised (default: the declared quality columns the results hold, so a metric the run did
    not compute has no column)."""
    metrics = quality_metrics(results) if metrics is None else metrics
    keys = _group_keys(results)
    missing = [k for k in keys if k not in results.columns]
    if missing:
        raise ValueError(f"results lack the column(s) {missing}; expected the tidy results.csv layout")
    rows = []
    for key, cell in results.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **_summarize_cell(cell, metrics, confidence)})
    columns = keys + [c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi")]
    columns += ["n_seed_sets", "n_samples", "n_samples_note", *THROUGHPUT_METRICS]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def pareto_front(summary: pd.DataFrame, x: str = "clip_score", y: str = "fid") -> pd.Series:
    """Which rows no other row beats on both axes (higher ``x`` and lower ``y`` are better).

    Rows with NaN in ``x`` or ``y`` are never on the front. Identical points are both kept.
    """
    xs = summary[x].to_numpy(dtype=float)
    ys = summary[y].to_numpy(dtype=float)
    valid = ~(np.isnan(xs) | np.isnan(ys))
    front = np.zeros(len(summary), dtype=bool)
    for i in np.flatnonzero(valid):
        other = valid.copy()
        other[i] = False
        dominated = other & (xs >= xs[i]) & (ys <= ys[i]) & ((xs > xs[i]) | (ys < ys[i]))
        front[i] = not dominated.any()
    return pd.Series(front, index=summary.index, name="on_front")


def _normalised(values: pd.Series) -> pd.Series:
    """Min-max scale to [0, 1] so FID and CLIP units weigh equally in the ranking distance."""
    lo, hi = values.min(), values.max()
    span = hi - lo
    return (values - lo) / span if span > 0 else values * 0.0


def rank_methods(summary: pd.DataFrame, x: str = "clip_score", y: str = "fid") -> pd.DataFrame:
    """Per guidance (and run), its best scale and a rank, from the FID-vs-CLIP trade-off.

    Each guidance's candidate scales are its own Pareto points; the best is the one closest to
    the ideal corner (best CLIP and best FID seen in the whole table, both min-max normalised),
    because any single-metric choice would reward one side of the trade-off only. ``on_front``
    says whether that point is also on the front over all methods, i.e. not beaten by another
    method at any scale. Rank 1 is the guidance whose best point is nearest the ideal.
    """
    keys = [k for k in ("run", "guidance") if k in summary.columns]
    data = summary.reset_index(drop=True)
    data = data.assign(**{c: math.nan for c in (x, y) if c not in data.columns})  # not computed: no trade-off
    global_front = pareto_front(data, x, y)
    valid = data[x].notna() & data[y].notna()
    dist = pd.Series(np.nan, index=data.index)
    if valid.any():
        nx = 1.0 - _normalised(data.loc[valid, x])  # 0 = best CLIP
        ny = _normalised(data.loc[valid, y])  # 0 = best FID
        dist[valid] = np.hypot(nx, ny)
    rows = []
    for key, group in data.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        own_front = pareto_front(group, x, y)
        candidates = group[own_front]
        row: dict[str, object] = dict(zip(keys, key))
        if candidates.empty:
            row.update({"best_scale": math.nan, y: math.nan, x: math.nan, "on_front": False,
                        "s_per_img": math.nan, "distance": math.nan})
        else:
            best = dist[candidates.index].idxmin()
            row.update({
                "best_scale": float(data.at[best, "scale"]),
                y: float(data.at[best, y]),
                x: float(data.at[best, x]),
                "on_front": bool(global_front[best]),
                "s_per_img": float(data.at[best, "s_per_img"]) if "s_per_img" in data.columns else math.nan,
                "distance": float(dist[best]),
            })
        rows.append(row)
    columns = keys + ["best_scale", y, x, "on_front", "s_per_img", "distance"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["distance"], na_position="last", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table
