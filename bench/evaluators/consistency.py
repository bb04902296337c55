"""Consistency PSNR (task:cascade): whether an upsampler keeps its input. The output, area-downsampled to
the input's size, against the low-resolution sample it came from."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.psnr import PSNR_CAP
from bench.evaluators.registry import Column, Resources, ScoringBatch, register_metric


def psnr(a: Tensor, b: Tensor, cap: float = PSNR_CAP) -> Tensor:
    """Per-image PSNR (dB, 8-bit scale) of images in [-1, 1], capped at `cap` (an exact copy)."""
    err = (((a.float() - b.float()) / 2) ** 2).mean((1, 2, 3))
    return (10 * torch.log10(1.0 / err.clamp(min=10 ** (-cap / 10)))).clamp(max=cap)


@register_metric
class ConsistencyPSNR(PerImageMetric):
    """Batch extras: "low_res" (uint8 [N, 3, h, w], the base sample the upsampler was given)."""

    name = "consistency_psnr"
    columns = {"consistency_psnr": Column(True, "PSNR against the low-res input",
                                          f"dB (8-bit scale; {PSNR_CAP:g} = exact)", (0.0, PSNR_CAP))}
    needs = frozenset({"task:cascade"})
    default = False

    @classmethod
    def build(cls, resources: Resources) -> "ConsistencyPSNR":
        return cls(resources.device)

    def scores(self, batch: ScoringBatch) -> Tensor:
        low = batch.extras["low_res"].to(batch.images.device).float().div(127.5).sub(1)
        down = F.interpolate(batch.pixels, size=tuple(low.shape[-2:]), mode="area")
        return psnr(down, low).unsqueeze(1)
