"""Kernel Inception Distance: unbiased MMD^2 under the cubic polynomial kernel (Binkowski et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.kid import poly_kernel, poly_mmd

from bench.evaluators.base import SetMetric
from bench.evaluators.mmd import KernelMMD
from bench.evaluators.reference import Reference
from bench.evaluators.registry import Column, register_metric

KID_MAX_SUBSET = 100
KID_SUBSETS = 50
UNITS = "squared feature units of the feature network (cubic polynomial kernel)"


@register_metric
class KernelDistance(SetMetric):
    """torchmetrics' KID: mean and std over 50 random subsets of min(100, n) samples and reference images,
    drawn from torch's generator seeded with 0 (as before, so reruns and process counts agree). Resamples
    use the unbiased MMD^2 of the whole resample against the whole reference (the same expectation).
    Subsets are min(100, n, reference size) images."""

    name = "kid"
    columns = {"kid_mean": Column(False, "KID", UNITS), "kid_std": Column(False, "KID spread over subsets", UNITS, spread=True)}
    needs = frozenset({"reference", "features"})
    about = "KID: unbiased MMD² under the cubic polynomial kernel, in the feature network's units; lower is better."

    def __init__(self, reference: Reference, features: Tensor, chunk: int) -> None:
        self.reference = reference
        self.real, self.fake = reference.needs_features("kid").float().to(features.device), features.float()

    def value(self) -> dict[str, float]:
        subset = min(KID_MAX_SUBSET, len(self.fake), len(self.real))
        torch.manual_seed(0)
        scores = []
        for _ in range(KID_SUBSETS):
            f_real = self.real[torch.randperm(len(self.real))[:subset]]
            f_fake = self.fake[torch.randperm(len(self.fake))[:subset]]
            scores.append(poly_mmd(f_real, f_fake))
        stacked = torch.stack(scores)
        return {"kid_mean": float(stacked.mean()), "kid_std": float(stacked.std(unbiased=False))}

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        mmd = KernelMMD(poly_kernel, self.real, self.fake, k_rr=self.reference.kernel_mean("kid", poly_kernel))
        return {"kid_mean": mmd.resampled(counts).float()}
