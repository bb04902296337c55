"""Fréchet distance between Gaussian fits of sample and reference features (FID on Inception features,
FD-DINOv2 on DINOv2's, domain FID on the evaluation classifier's)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.image.fid import _compute_fid

from bench.evaluators.base import ChunkedSums, SetMetric
from bench.evaluators.reference import Reference
from bench.evaluators.registry import Column, register_metric


@register_metric
class FrechetDistance(SetMetric):
    """||mu_r - mu_s||^2 + tr(S_r + S_s - 2 (S_r S_s)^1/2).

    The value is torchmetrics' FID computed from the same chunked float64 sums (so it equals what
    torchmetrics gives when fed these features chunk by chunk). Resamples use tr((S_r^1/2 S_s S_r^1/2)^1/2),
    the same trace, through the smaller of the n x n and d x d Gram matrices, so B resamples stay cheap.
    """

    name = "fid"
    columns = {"fid": Column(False, "FID", "squared feature units of the feature network", (0.0, math.inf))}
    needs = frozenset({"reference", "features"})
    about = ("FID: Fréchet distance of Gaussian fits of sample and reference features, in squared units of the "
             "feature network named below; lower is better, and biased at small n (compare only equal n).")

    def __init__(self, reference: Reference, features: Tensor, chunk: int) -> None:
        self.reference, self.features, self.chunk = reference, features, chunk

    def value(self) -> dict[str, float]:
        mu_r, cov_r = (t.to(self.features.device) for t in self.reference.mean_cov())
        mu_s, cov_s = ChunkedSums.of(self.features, self.chunk).mean_cov()
        return {"fid": float(_compute_fid(mu_r, cov_r, mu_s, cov_s).to(self.features.dtype))}

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        mu_r, cov_r = (t.to(self.features.device) for t in self.reference.mean_cov())
        root = self.reference.cov_sqrt().to(self.features.device)
        trace_r = cov_r.trace()
        x = self.features.double()
        z = x @ root  # the samples seen through S_r^1/2
        n = x.shape[0]
        out = []
        for w in counts:
            idx = torch.repeat_interleave(torch.arange(n, device=x.device), w.to(x.device).long())
            xb, zb = x[idx], z[idx]
            mu = xb.mean(0)
            xc, zc = xb - mu, zb - zb.mean(0)
            trace_s = xc.square().sum() / (n - 1)
            gram = zc @ zc.T if n <= zc.shape[1] else zc.T @ zc
            cross = torch.linalg.eigvalsh(gram / (n - 1)).clamp(min=0).sqrt().sum()
            out.append((mu - mu_r.to(mu)).square().sum() + trace_r + trace_s - 2 * cross)
        return {"fid": torch.stack(out).float()}
