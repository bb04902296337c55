"""Tangential classifier-free guidance, TCFG (Kwon et al. 2025, "TCFG: Tangential Damping
Classifier-free Guidance", arXiv:2503.18137)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance


def tangential_uncond(cond: Tensor, uncond: Tensor) -> Tensor:
    """The unconditional prediction projected on the principal direction of the stacked pair.

    Per sample, M = [cond; uncond] (2 x N); its first right singular vector v1 (the direction of
    largest energy of the pair) spans what is kept: u' = <u, v1> v1. v1 is M^T e / |M^T e|, e the top
    eigenvector of the 2 x 2 Gram matrix M M^T, in closed form: no SVD (which synchronises a CUDA
    device with the host). The signs of e and v1 cancel."""
    c32, u32 = at_least_fp32(cond).flatten(1), at_least_fp32(uncond).flatten(1)
    a, b, d = (c32 * c32).sum(1), (c32 * u32).sum(1), (u32 * u32).sum(1)
    top = 0.5 * (a + d) + torch.sqrt((0.5 * (a - d)) ** 2 + b * b)
    # two expressions of the same eigenvector; take the better-conditioned one per sample
    e1 = torch.stack([b, top - a], 1)
    e2 = torch.stack([top - d, b], 1)
    e = torch.where((e1.norm(dim=1) >= e2.norm(dim=1))[:, None], e1, e2)
    w = e[:, :1] * c32 + e[:, 1:] * u32  # M^T e, along v1
    ww = (w * w).sum(1, keepdim=True)
    coef = torch.where(ww > 0, (u32 * w).sum(1, keepdim=True) / ww.clamp_min(torch.finfo(ww.dtype).tiny),
                       torch.zeros_like(ww))
    return (coef * w).reshape(uncond.shape).to(uncond.dtype)


@register()
class TangentialCFG(ClassifierFreeGuidance):
    """CFG with eps_u first projected on the principal direction of the stacked [eps_c; eps_u].

    eps = u' + s (eps_c - u'), u' = eps_u projected on the first right singular vector of the
    per-sample stack [eps_c; eps_u]: the unconditional's component off the pair's principal
    direction (its "tangential" part) is removed before the CFG mix.

    Applied to the network's output (the model's own space, eps for the zoo), as the paper (on SD's
    eps) and diffusers do. s = 1 is the conditional model (one pass).
    """

    name = "tcfg"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    reference = "Kwon et al. 2025, arXiv:2503.18137 (TCFG: tangential damping classifier-free guidance)"

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__(scale)

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        space = pred_c.primary
        c = pred_c.get(space)
        u = tangential_uncond(c, pred_u.get(space))
        return pred_c.with_value(space, u + scale * (c - u))

    def __repr__(self) -> str:
        return f"TangentialCFG(scale={self.scale})"
