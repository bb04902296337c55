"""Percentile bootstrap over the images of a cell for set metrics, the reference held fixed.

Each resample draws n of the cell's n samples with replacement (as per-sample draw counts, so metrics reuse
their computed features and kernels: no network runs again). The interval covers the metric's variation
from which images were drawn; the reference's own sampling variation is not included.
"""

from __future__ import annotations

import torch
from torch import Tensor

BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def draw_counts(n: int, resamples: int, seed: int = BOOTSTRAP_SEED) -> Tensor:
    """[B, n] int64: how often each sample is drawn in each resample (fixed seed: reruns agree)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    return torch.zeros(resamples, n, dtype=torch.int64).scatter_add_(1, idx, torch.ones_like(idx))


def percentile_interval(values: Tensor, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(lo, hi) percentiles of the resampled values (NaNs dropped)."""
    v = values.double()
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    q = torch.quantile(v, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(q[0]), float(q[1])
