"""Per-image statistics of edited images and the interval estimates the editing and cascade reports use.

Seam score. For every pair of 4-neighbour pixels that straddles the mask edge (one pixel regenerated,
one kept), take the squared colour difference (RGB in [0, 1], summed over channels): the gradient
energy across the edge. The seam score of a set of results is their mean edge energy divided by the
same statistic of the real source images under the same masks. A real image scores exactly 1; a fill
whose colours jump at the edge (a pasted patch, a fill that ignores its surroundings) scores above 1.
Below 1 means smoother across the edge than real images (e.g. a blurred fill): not a seam, but not
real either, so reports give the distance from 1 as well.

Intervals are 95% bootstraps over images (the unit the edit is applied to). FID and KID are
recomputed on every resample from the images' features against fixed real statistics; a resample
repeats images, which biases both upwards (FID strongly at small n), so their percentile interval
is shifted back by the bootstrap's estimate of that bias (mean of the resamples - value): the
interval has the resamples' spread and contains the value.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from bench.evaluators.psnr import psnr_known  # noqa: F401 (re-exported: the inpainting scorer imports it here)
from bench.evaluators.seam import edge_energy, edge_pairs  # noqa: F401 (the inpainting scorer and its tests import them here)

BOOTSTRAP = 300
KID_REFERENCE = 2000  # real features KID compares against (a fixed random subset)


def seam_score(results: Tensor, real: Tensor, hole: Tensor) -> float:
    """Mean edge energy of `results` over that of `real` images under the same masks (1 = as real)."""
    e_res, n = edge_energy(results, hole)
    e_real, _ = edge_energy(real, hole)
    return float(e_res.sum() / n.sum()) / max(float(e_real.sum() / n.sum()), 1e-12)


def fid_from_features(features: np.ndarray, mu_real: np.ndarray, cov_real: np.ndarray) -> float:
    """Frechet distance of the features' Gaussian to the real one (trace term from the eigenvalues)."""
    mu = features.mean(0)
    cov = np.cov(features, rowvar=False)
    eig = np.linalg.eigvals(cov @ cov_real)
    covmean = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu - mu_real) ** 2).sum() + np.trace(cov) + np.trace(cov_real) - 2 * covmean)


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _self_term(features: np.ndarray) -> float:
    k, m = _kernel(features, features), len(features)
    return float((k.sum() - np.trace(k)) / (m * (m - 1)))


def kid_from_features(features: np.ndarray, real: np.ndarray, real_term: float | None = None) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al.; torchmetrics' KID on one subset)."""
    yy = _self_term(real) if real_term is None else real_term
    return _self_term(features) + yy - 2 * float(_kernel(features, real).mean())


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, seed: int = 0, resamples: int = BOOTSTRAP,
              debias: bool = False) -> tuple[float, float, float]:
    """(value, lo, hi): the statistic of all n items and its 95% percentile-bootstrap interval, with
    `debias` shifted by the resamples' mean minus the value (for statistics that resampling biases)."""
    rng = np.random.default_rng(seed)
    value = statistic(np.arange(n))
    if n < 2:
        return value, math.nan, math.nan
    draws = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    lo, hi = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    shift = float(np.mean(draws)) - value if debias else 0.0
    return value, lo - shift, hi - shift


class RealStatistics:
    """Real-image features once: FID's mean and covariance, and a fixed subset for KID."""

    def __init__(self, features: np.ndarray) -> None:
        self.mu = features.mean(0)
        self.cov = np.cov(features, rowvar=False)
        pick = np.random.default_rng(0).permutation(len(features))[:KID_REFERENCE]
        self.subset = features[pick]
        self.subset_term = _self_term(self.subset)

    def scores(self, features: np.ndarray) -> dict[str, tuple[float, float, float]]:
        """FID and KID of generated features, with bootstrap intervals over the generated images."""
        fid = bootstrap(lambda i: fid_from_features(features[i], self.mu, self.cov), len(features), debias=True)
        kid = bootstrap(lambda i: kid_from_features(features[i], self.subset, self.subset_term), len(features),
                        debias=True)
        return {"fid": fid, "kid": kid}


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    return bootstrap(lambda i: float(values[i].mean()), len(values))
