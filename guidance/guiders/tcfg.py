"""Tangential classifier-free guidance, TCFG (Kwon et al. 2025, "TCFG: Tangential Damping
Classifier-free Guidance", arXiv:2503.18137)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.protocols import Conditions, Denoiser


def tangential_uncond(cond: Tensor, uncond: Tensor) -> Tensor:
    """The unconditional prediction projected on the principal direction of the stacked pair.

    Per sample, M = [cond; uncond] (2 x N); its first right singular vector v1 (the direction of
    largest energy of the pair) spans what is kept: u' = <u, v1> v1. The sign of v1 cancels."""
    c32, u32 = at_least_fp32(cond), at_least_fp32(uncond)
    stacked = torch.stack([c32.flatten(1), u32.flatten(1)], dim=1)  # [B, 2, N]
    _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
    v1 = vh[:, :1]  # [B, 1, N]
    u_flat = u32.flatten(1)[:, None]  # [B, 1, N]
    return ((u_flat @ v1.transpose(-2, -1)) @ v1).reshape(uncond.shape).to(uncond.dtype)


@register()
class TangentialCFG(ClassifierFreeGuidance):
    """eps = u' + s (eps_c - u'), u' = eps_u projected on the first right singular vector of the
    per-sample stack [eps_c; eps_u]: the unconditional's component off the pair's principal
    direction (its "tangential" part) is removed before the CFG mix.

    Applied to the network's output (the model's own space, eps for the zoo), as the paper (on SD's
    eps) and diffusers do. s = 1 is the conditional model (one pass).
    """

    name = "tcfg"
    reference = "Kwon et al. 2025, arXiv:2503.18137 (TCFG: tangential damping classifier-free guidance)"

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__(scale)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        if not self.guided(scale, cond):
            return model(x, step.level, cond.model)
        pred_c, pred_u = self.branches(model, x, step, cond)
        space = pred_c.primary
        c = pred_c.get(space)
        u = tangential_uncond(c, pred_u.get(space))
        return pred_c.with_value(space, u + scale * (c - u))

    def __repr__(self) -> str:
        return f"TangentialCFG(scale={self.scale})"
