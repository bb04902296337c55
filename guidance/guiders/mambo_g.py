"""MAMBO-G, magnitude-aware guidance (Zhu et al. 2025, "MAMBO-G: Magnitude-Aware Mitigation for
Boosted Guidance", arXiv:2508.03442)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance


def damped_scale(cond: Tensor, uncond: Tensor, scale: float, alpha: float) -> Tensor:
    """w(r) = 1 + (s - 1) exp(-alpha r), r = ||cond - uncond|| / ||uncond|| per sample ([B, 1, ...]).

    A zero unconditional prediction gives r = inf, i.e. w = 1 (the conditional model), not NaN."""
    dims = list(range(1, cond.ndim))
    c32, u32 = at_least_fp32(cond), at_least_fp32(uncond)
    diff = torch.linalg.vector_norm(c32 - u32, dim=dims, keepdim=True)
    base = torch.linalg.vector_norm(u32, dim=dims, keepdim=True)
    ratio = torch.where(base > 0, diff / base.clamp_min(torch.finfo(base.dtype).tiny), torch.full_like(base, torch.inf))
    return 1.0 + (scale - 1.0) * torch.exp(-alpha * ratio)


@register()
class MagnitudeAwareGuidance(ClassifierFreeGuidance):
    """CFG with its scale damped per sample: w = 1 + (s - 1) exp(-alpha |eps_c - eps_u| / |eps_u|).

    eps = eps_u + w (eps_c - eps_u), w = 1 + (s - 1) exp(-alpha ||eps_c - eps_u|| / ||eps_u||) per
    sample: the CFG scale is damped where the guidance update is large relative to the prediction
    (the early, high-noise steps). alpha = 8 (the paper's and diffusers' default).

    Applied to the network's output (the model's own space: the paper's velocity for flow models, eps
    for the zoo), as diffusers does. s = 1 is the conditional model (one pass); alpha = 0 is CFG.
    """

    name = "mambo-g"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
    reference = "Zhu et al. 2025, arXiv:2508.03442 (MAMBO-G: magnitude-aware mitigation for boosted guidance)"

    def __init__(self, scale: float = 3.0, alpha: float = 8.0) -> None:
        super().__init__(scale)
        if not float(alpha) >= 0:
            raise ValueError(f"MAMBO-G alpha must be >= 0 (0 is CFG), got {alpha}")
        self.alpha = float(alpha)

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        space = pred_c.primary
        c, u = pred_c.get(space), pred_u.get(space)
        w = damped_scale(c, u, scale, self.alpha).to(c.dtype)
        return pred_c.with_value(space, u + w * (c - u))

    def __repr__(self) -> str:
        return f"MagnitudeAwareGuidance(scale={self.scale}, alpha={self.alpha})"
