"""Paired win rate and mean difference of any per-image metric between two sets of images made from the
same prompts and noise (two cells of a run, or a method and its calibrated CFG rerun).

Win rate (GA-Eval's "winning rate", "Guidance Matters", arXiv:2602.22570) is the share of pairs in
which a's image scores better than b's in the metric's direction; a tie counts one half (GA-Eval counts
ties as losses), so 0.5 means no preference. Intervals and p-values are the paired cluster bootstrap of
bench/stats/bootstrap.py: prompts are resampled (each prompt a cluster: all its seed sets and samples
go together), the same draw for both arms, and the p-value inverts the expanded percentile interval
(win rate against 0.5, difference against 0). docs/statistics.md states the assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.stats.bootstrap import DEFAULT_B, DEFAULT_SEED, bootstrap_p, design_wilson, percentile_interval, resample_counts

__all__ = ["PAIR_KEYS", "win_shares", "paired_comparison", "compare_cells"]

PAIR_KEYS = ("seed_set", "index")  # what makes two cells' images a pair: same seed set, same global sample index


def win_shares(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 where a is better than b, 0.5 on a tie, 0 where it is worse; NaN where either is NaN."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    better = a > b if higher_is_better else a < b
    out = np.where(better, 1.0, np.where(a == b, 0.5, 0.0))
    return np.where(np.isfinite(a) & np.isfinite(b), out, np.nan)


def paired_comparison(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, higher_is_better: bool = True,
                      resamples: int = DEFAULT_B, seed: int = DEFAULT_SEED, confidence: float = 0.95) -> dict:
    """a versus b on paired values (`clusters`: each pair's prompt): means, a - b and the win rate of a,
    each with its paired cluster-bootstrap interval and two-sided p-value, and the counts behind them.
    Pairs with a NaN on either side are left out."""
    a, b, clusters = np.asarray(a, float), np.asarray(b, float), np.asarray(clusters)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b, clusters = a[keep], b[keep], clusters[keep]
    empty = {"n": int(keep.sum()), "n_prompts": 0, "a_mean": math.nan, "b_mean": math.nan, "diff": math.nan,
             "diff_lo": math.nan, "diff_hi": math.nan, "diff_p": math.nan, "win_rate": math.nan, "win_lo": math.nan,
             "win_hi": math.nan, "win_p": math.nan}
    if len(a) == 0:
        return empty
    ids, cluster_of = np.unique(clusters, return_inverse=True)
    p = len(ids)
    wins = win_shares(a, b, higher_is_better)
    per_cluster = np.stack([np.bincount(cluster_of, weights=v, minlength=p) for v in (a - b, wins)])  # [2, P]
    counts = np.bincount(cluster_of, minlength=p).astype(float)
    out = {**empty, "n_prompts": p, "a_mean": float(a.mean()), "b_mean": float(b.mean()),
           "diff": float((a - b).mean()), "win_rate": float(wins.mean())}
    if p < 2:  # one prompt: no spread between prompts to resample
        return out
    weights = resample_counts(p, resamples, seed)  # [B, P], the same draw for both statistics
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (weights @ per_cluster.T) / (weights @ counts)[:, None]  # [B, 2]
    lo, hi = percentile_interval(reps, confidence, p)
    out.update(diff_lo=float(lo[0]), diff_hi=float(hi[0]), win_lo=float(lo[1]), win_hi=float(hi[1]))
    if lo[1] == hi[1]:  # every pair won (or lost, or tied) alike: a Wilson interval with one trial per prompt
        out["win_lo"], out["win_hi"] = design_wilson(out["win_rate"], 0.0, len(a), p, confidence)
    pvalues = bootstrap_p(np.stack([reps[:, 0], reps[:, 1] - 0.5], axis=1), p)
    out.update(diff_p=float(pvalues[0]), win_p=float(pvalues[1]))
    return out


def compare_cells(per_sample: pd.DataFrame, a: tuple[str, float], b: tuple[str, float], metric: str,
                  higher_is_better: bool = True, resamples: int = DEFAULT_B, seed: int = DEFAULT_SEED,
                  confidence: float = 0.95, keys: Sequence[str] = PAIR_KEYS) -> dict:
    """`paired_comparison` of two cells (guidance, scale) of a run's per_sample.csv rows on `metric`, their
    images paired by seed set and global sample index and clustered by prompt."""
    def cell(key: tuple[str, float]) -> pd.DataFrame:
        rows = per_sample[(per_sample["guidance"] == key[0]) & np.isclose(per_sample["scale"], key[1])]
        return rows[[*keys, "prompt_index", metric]]

    joined = cell(a).merge(cell(b), on=[*keys, "prompt_index"], suffixes=("_a", "_b"))
    return paired_comparison(joined[f"{metric}_a"].to_numpy(), joined[f"{metric}_b"].to_numpy(),
                             joined["prompt_index"].to_numpy(), higher_is_better, resamples, seed, confidence)
