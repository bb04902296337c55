"""Precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020): k-nearest-
neighbour balls (k = 3) around reference and sample features, Euclidean distance; a point on a ball's
edge is inside it (the original code's <=)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bench.evaluators.base import SetMetric, kth_neighbour_distance
from bench.evaluators.reference import Reference
from bench.evaluators.registry import Column, register_metric

NEAREST_K = 3
CHUNK = 4096


def any_drawn(drawn: Tensor, hit: Tensor) -> Tensor:
    """[B, R]: per resample, whether any drawn sample j has hit[r, j] (reference rows a block at a time)."""
    return torch.cat([(drawn.float() @ hit[lo:lo + CHUNK].float().T) > 0 for lo in range(0, len(hit), CHUNK)], 1).double()


@register_metric
class PrecisionRecall(SetMetric):
    """precision: share of samples inside some reference ball; recall: share of reference points inside
    some sample ball; density: sample-in-reference-ball count / (k n); coverage: share of reference balls
    holding at least one sample. Resamples keep each sample's ball radius from the whole set (a resample's
    duplicates would otherwise shrink the radii to zero). With k or fewer samples or reference points the
    balls are undefined and the columns are NaN."""

    name = "prdc"
    columns = {"precision": Column(True, "precision", "fraction of samples", (0.0, 1.0), headline=False),
               "recall": Column(True, "recall", "fraction of reference images", (0.0, 1.0), headline=False),
               "density": Column(True, "density", "mean reference balls per sample / k (may exceed 1)", (0.0, math.inf), headline=False),
               "coverage": Column(True, "coverage", "fraction of reference balls", (0.0, 1.0), headline=False)}
    needs = frozenset({"reference", "features"})

    def __init__(self, reference: Reference, features: Tensor, chunk: int) -> None:
        real = reference.needs_features("precision/recall").double().to(features.device)
        self.n = len(features)
        self.defined = min(len(real), len(features)) > NEAREST_K  # a k-NN ball needs k other points
        if not self.defined:
            return
        fake = features.double()
        real_radii = reference.radii(NEAREST_K).to(features.device)
        fake_radii = kth_neighbour_distance(fake, NEAREST_K)
        self.in_count = torch.zeros(len(fake), dtype=torch.float64, device=fake.device)
        recall_hit, cover_hit = [], []
        for lo in range(0, len(real), CHUNK):  # [R, n] distances a block of reference rows at a time
            d = torch.cdist(real[lo:lo + CHUNK], fake)
            inside_real = d <= real_radii[lo:lo + CHUNK].unsqueeze(1)  # sample j inside reference ball r
            self.in_count += inside_real.sum(0)  # per sample: reference balls holding it
            recall_hit.append(d <= fake_radii.unsqueeze(0))  # reference point r inside sample ball j
            cover_hit.append(inside_real)  # reference ball r holds sample j
        self.recall_hit, self.cover_hit = torch.cat(recall_hit), torch.cat(cover_hit)

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        if not self.defined:
            return {c: torch.full((len(counts),), float("nan")) for c in self.columns}
        w = counts.to(self.in_count).reshape(-1, len(self.in_count))
        n = w.shape[1]
        drawn = (w > 0).double()
        return {"precision": ((w @ (self.in_count > 0).double()) / n).float(),
                "recall": any_drawn(drawn, self.recall_hit).mean(1).float(),
                "density": ((w @ self.in_count) / (NEAREST_K * n)).float(),
                "coverage": any_drawn(drawn, self.cover_hit).mean(1).float()}

    def value(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.resampled(torch.ones(1, self.n)).items()}
