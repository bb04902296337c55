"""Paired cluster bootstrap: intervals and p-values for cell means and differences between cells.

Every cell of a run is sampled from the same prompts with the same per-sample noise, so cells are
paired by prompt. Resampling prompts (each prompt a cluster: all its seed sets and samples go
together) with one set of resample weights shared by every cell keeps that pairing: the
prompt-to-prompt spread, which is most of the variance, cancels in a difference. Everything is
vectorised: a replicate mean is one matrix product of resample counts with per-cluster sums.
docs/statistics.md gives the method's assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _sps

__all__ = [
    "DEFAULT_B",
    "DEFAULT_SEED",
    "Clustered",
    "resample_counts",
    "expanded_alpha",
    "percentile_interval",
    "shifted_interval",
    "bootstrap_p",
    "holm",
    "wilson",
    "design_wilson",
    "prob_best",
]

DEFAULT_B = 2000
DEFAULT_SEED = 0


def resample_counts(n_clusters: int, b: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> np.ndarray:
    """How often each cluster is drawn in each of ``b`` resamples of size ``n_clusters`` [b, n_clusters]."""
    if n_clusters < 1:
        raise ValueError("the bootstrap needs at least one cluster (prompt); the table is empty")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=b).astype(float)


@dataclass(frozen=True)
class Clustered:
    """One metric as per-cell, per-cluster sums and counts, so that any resample's cell means are
    ``(W @ sums.T) / (W @ counts.T)``: the mean over the resampled clusters' samples."""

    cells: tuple[Hashable, ...]
    clusters: np.ndarray  # cluster ids [P]
    sums: np.ndarray  # [C, P]
    counts: np.ndarray  # [C, P]

    @classmethod
    def of(cls, frame: pd.DataFrame, value: str, cell: Sequence[str], cluster: str,
           cells: Sequence[tuple] | None = None, clusters: np.ndarray | None = None) -> "Clustered":
        """From a tidy frame (one row per sample); rows with NaN ``value`` are left out. ``cells`` and
        ``clusters`` fix the rows and columns (default: those present), so that several metrics
        share one cluster axis and hence one set of resample weights."""
        data = frame[list(cell) + [cluster, value]].dropna(subset=[value])
        keys = ([tuple(k) for k in data[list(cell)].drop_duplicates().itertuples(index=False)]
                if cells is None else [tuple(k) for k in cells])
        clusters = np.sort(data[cluster].unique()) if clusters is None else np.asarray(clusters)
        if not keys or len(clusters) == 0:  # no cell, or no value at all (a metric not computed)
            shape = (len(keys), len(clusters))
            return cls(tuple(keys), clusters, np.zeros(shape), np.zeros(shape))
        grouped = data.groupby(list(cell) + [cluster], sort=False)[value].agg(["sum", "count"])
        index = pd.MultiIndex.from_tuples([k + (c,) for k in keys for c in clusters])
        full = grouped.reindex(index, fill_value=0.0)
        shape = (len(keys), len(clusters))
        return cls(tuple(keys), clusters, full["sum"].to_numpy(float).reshape(shape),
                   full["count"].to_numpy(float).reshape(shape))

    def subset(self, mask: np.ndarray) -> "Clustered":
        """Only the clusters where ``mask`` holds (a category's prompts)."""
        return Clustered(self.cells, self.clusters[mask], self.sums[:, mask], self.counts[:, mask])

    def means(self) -> np.ndarray:
        """Point estimates per cell: the mean over all its samples [C]."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums.sum(1) / self.counts.sum(1)

    def replicates(self, weights: np.ndarray, rows: Sequence[int] | None = None,
                   clusters: np.ndarray | None = None) -> np.ndarray:
        """Cell means under each resample [B, C] (NaN where a resample drew none of a cell's samples).

        ``clusters`` (a boolean mask) restricts the mean to some clusters, e.g. the prompts two
        cells share; the weights stay those of the full resample, so the pairing is kept.
        """
        rows = list(range(len(self.cells))) if rows is None else list(rows)
        sums, counts = self.sums[rows], self.counts[rows]
        if clusters is not None:
            sums, counts = sums * clusters, counts * clusters
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ sums.T) / (weights @ counts.T)

    def cluster_counts(self, row: int) -> tuple[int, int]:
        """(clusters with samples, samples) of one cell."""
        return int((self.counts[row] > 0).sum()), int(self.counts[row].sum())


def expanded_alpha(confidence: float, n_clusters: int | None) -> float:
    """Tail share for an expanded percentile interval (Hesterberg 2015): the percentile bootstrap of
    a mean is too narrow by about sqrt((n-1)/n) and uses z where t belongs, so with ``n`` clusters
    the tails are taken at Phi(-sqrt(n/(n-1)) t_{n-1}) instead of (1 - confidence) / 2."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = (1.0 - confidence) / 2.0
    if n_clusters is None or n_clusters < 2:
        return alpha
    t = float(_sps.t.ppf(1.0 - alpha, df=n_clusters - 1))
    return float(_sps.norm.cdf(-math.sqrt(n_clusters / (n_clusters - 1)) * t))


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95,
                        n_clusters: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Expanded, when ``n_clusters`` is given) percentile bootstrap interval along axis 0, NaN
    replicates ignored. Its ends are replicate values, so a mean of 0/1 values stays in [0, 1]."""
    alpha = expanded_alpha(confidence, n_clusters)
    reps = np.asarray(replicates, float)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo = np.full(reps.shape[1], np.nan)
    hi = np.full(reps.shape[1], np.nan)
    ok = np.isfinite(reps).any(0)
    if ok.any():
        lo[ok], hi[ok] = np.nanquantile(reps[:, ok], [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def shifted_interval(estimate: float, replicates: np.ndarray, confidence: float = 0.95,
                     bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float]:
    """Percentile interval of the replicates shifted by their mean bias, mean(t*) - t, and clipped to the
    metric's range. For set metrics such as FID, whose resamples are biased (a resample's repeated images
    inflate FID), the plain percentile interval lies beside the estimate; the shift keeps the
    resamples' spread around the estimate. For an unbiased statistic it is the percentile interval."""
    reps = np.asarray(replicates, float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    bias = float(reps.mean()) - estimate
    q_lo, q_hi = np.quantile(reps, [alpha, 1.0 - alpha]) - bias
    return float(min(max(q_lo, bounds[0]), bounds[1])), float(min(max(q_hi, bounds[0]), bounds[1]))


def bootstrap_p(diff_replicates: np.ndarray, n_clusters: int | None = None) -> np.ndarray:
    """Two-sided p-value of "difference = 0" by inverting the (expanded) percentile interval, so
    p < 1 - confidence exactly when that interval excludes 0: the smaller share of replicates on
    either side of zero (+1, so never 0 with finitely many replicates), mapped back through the
    same expansion as the interval's tails."""
    reps = np.asarray(diff_replicates, float)
    if reps.ndim == 1:
        reps = reps[:, None]
    finite = np.isfinite(reps)
    n = finite.sum(0)
    below = (np.where(finite, reps, np.inf) <= 0).sum(0)
    above = (np.where(finite, reps, -np.inf) >= 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = np.minimum((np.minimum(below, above) + 1.0) / (n + 1.0), 0.5)
        if n_clusters is not None and n_clusters >= 2:
            t = -_sps.norm.ppf(tail) / math.sqrt(n_clusters / (n_clusters - 1))
            tail = _sps.t.sf(t, df=n_clusters - 1)
        p = np.minimum(2.0 * tail, 1.0)
    return np.where(n > 0, p, np.nan)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (controls the family-wise error rate under any dependence);
    NaNs stay NaN and do not count in the family."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def wilson(p_hat: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion from ``n`` (possibly effective, non-integer) trials."""
    if not n > 0 or math.isnan(p_hat):
        return math.nan, math.nan
    z = float(_sps.norm.ppf((1.0 + confidence) / 2.0))
    denom = 1.0 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def design_wilson(p_hat: float, boot_var: float, n_samples: int, n_clusters: int,
                  confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval with the effective sample size of clustered 0/1 data, p(1-p) / Var (Var from
    the cluster bootstrap), capped at the number of samples. When every sample scored 0 (or 1)
    there is no variance to estimate it from, so each cluster counts as one trial (conservative)."""
    if math.isnan(p_hat) or n_samples < 1:
        return math.nan, math.nan
    if 0.0 < p_hat < 1.0 and boot_var > 0:
        n_eff = min(float(n_samples), p_hat * (1.0 - p_hat) / boot_var)
    else:
        n_eff = float(max(n_clusters, 1))
    return wilson(p_hat, n_eff, confidence)


def prob_best(replicates: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Share of replicates in which each column is the best (ties split evenly) [C]."""
    reps = np.asarray(replicates, float)
    filled = np.where(np.isfinite(reps), reps, -np.inf if higher_is_better else np.inf)
    best = filled.max(1, keepdims=True) if higher_is_better else filled.min(1, keepdims=True)
    winners = (filled == best) & np.isfinite(reps)
    share = winners / np.maximum(winners.sum(1, keepdims=True), 1)
    return share.mean(0)
