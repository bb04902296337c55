"""PSNR of the kept region of an inpainted image against its source (task:inpaint): how much of what
should not change did change."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.registry import Column, Resources, ScoringBatch, register_metric

PSNR_CAP = 100.0  # dB given to an exact copy (the error is floored so the log stays finite)


def psnr_known(results: Tensor, source: Tensor, hole: Tensor, cap: float = PSNR_CAP) -> Tensor:
    """Per-image PSNR (dB, 8-bit scale) of the kept region against the source, capped at `cap` (exact).

    results, source [N, 3, H, W] in [-1, 1]; hole [N, 1, H, W], 1 where the image is regenerated."""
    keep = (1 - hole).expand_as(results)
    err = (((results.float() - source.float()) / 2) ** 2 * keep).sum((1, 2, 3)) / keep.sum((1, 2, 3)).clamp(min=1)
    return (10 * torch.log10(1.0 / err.clamp(min=10 ** (-cap / 10)))).clamp(max=cap)


@register_metric
class PSNRKnown(PerImageMetric):
    """Batch extras: "source" (uint8 [N, 3, H, W], the image before the edit) and "mask" ([N, 1, H, W],
    1 = regenerated)."""

    name = "psnr_known"
    columns = {"psnr_known": Column(True, "PSNR outside the mask", f"dB (8-bit scale; {PSNR_CAP:g} = exact)",
                                    (0.0, PSNR_CAP))}
    needs = frozenset({"task:inpaint"})
    default = False

    @classmethod
    def build(cls, resources: Resources) -> "PSNRKnown":
        return cls(resources.device)

    def scores(self, batch: ScoringBatch) -> Tensor:
        source = batch.extras["source"].to(batch.images.device).float().div(127.5).sub(1)
        return psnr_known(batch.pixels, source, batch.extras["mask"].to(batch.images.device)).unsqueeze(1)
