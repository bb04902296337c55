"""CFG followed by dynamic thresholding of the x0 prediction (Saharia et al. 2022, Imagen, section 2.3)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.protocols import Conditions, Denoiser


def dynamic_threshold(x0: Tensor, percentile: float, max_threshold: float | None = None) -> Tensor:
    """s = quantile(|x0|, p) per sample, s = max(s, 1) (and min(s, max_threshold)); clip to [-s, s], / s."""
    flat = at_least_fp32(x0).reshape(x0.shape[0], -1)
    s = torch.quantile(flat.abs(), percentile, dim=1).clamp_min(1.0)
    if max_threshold is not None:
        s = s.clamp_max(max_threshold)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return (torch.maximum(torch.minimum(at_least_fp32(x0), s), -s) / s).to(x0.dtype)


@register()
class DynamicThresholdCFG(ClassifierFreeGuidance):
    """CFG, then Imagen's dynamic thresholding of x0 (p = 0.995), then eps from the thresholded x0.

    x0 = x0(eps_u + s (eps_c - eps_u)); t = max(quantile_p(|x0|), 1) per sample; x0 <- clip(x0, -t, t) / t.
    Where t = 1 this is the static clipping to [-1, 1] the sampler does anyway. Thresholding also
    applies at s = 1 (one pass: the conditional model, thresholded).
    """

    name = "cfg-dynamic-threshold"
    quick_scales = (6.0, 10.0)
    full_scales = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0)
    needs = frozenset({"pixel_space"})
    space = "x0"
    numerics_version = 2  # x0 no longer round-trips through eps before the step (changes fp32 samples ~1e-4)
    reference = "Saharia et al. 2022 (Imagen), arXiv:2205.11487, section 2.3 (dynamic thresholding)"

    def __init__(self, scale: float = 3.0, percentile: float = 0.995, max_threshold: float | None = None) -> None:
        super().__init__(scale)
        if not 0.0 < float(percentile) <= 1.0:
            raise ValueError(f"dynamic-threshold percentile must be in (0, 1], got {percentile}")
        if max_threshold is not None and float(max_threshold) < 1.0:
            raise ValueError(f"max_threshold must be >= 1, got {max_threshold}")
        self.percentile = float(percentile)
        self.max_threshold = None if max_threshold is None else float(max_threshold)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        pred = super().predict(model, x, step, cond)  # CFG (one pass at s = 1)
        return pred.with_x0(dynamic_threshold(pred.x0, self.percentile, self.max_threshold))

    def __repr__(self) -> str:
        return f"DynamicThresholdCFG(scale={self.scale}, percentile={self.percentile})"
