"""Adaptive projected guidance, APG (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of
High Guidance Scales in Diffusion Models", arXiv:2410.02416, Algorithm 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance


def _per_sample_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=list(range(1, a.ndim)), keepdim=True)


def project(v: Tensor, onto: Tensor) -> tuple[Tensor, Tensor]:
    """(parallel, orthogonal) parts of v w.r.t. `onto`, per sample; a zero `onto` gives parallel = 0."""
    sq = _per_sample_dot(onto, onto)
    tiny = torch.finfo(sq.dtype).tiny
    coef = torch.where(sq > 0, _per_sample_dot(v, onto) / sq.clamp_min(tiny), torch.zeros_like(sq))
    parallel = coef * onto
    return parallel, v - parallel


def clip_norm(v: Tensor, r: float) -> Tensor:
    """v * min(1, r / ||v||) per sample (r <= 0: unchanged; a zero v stays zero)."""
    if r <= 0:
        return v
    norm = _per_sample_dot(v, v).sqrt()
    return v * torch.where(norm > r, r / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.ones_like(norm))


@register()
class AdaptiveProjectedGuidance(ClassifierFreeGuidance):
    """APG in x0 space: the guidance update loses (most of) its component parallel to x0_c.

    D = x0_c - x0_u; with momentum beta, D_bar = D + beta * D_bar_prev (D_bar = D at the first step);
    D_bar <- D_bar * min(1, r / ||D_bar||); x0 = x0_c + (s - 1) (D_orth + eta * D_par), with D_par
    the projection of D_bar on x0_c. beta < 0 (default -0.5) damps the update over steps; the buffer
    is per trajectory (`reset()`, which the sampler calls) and keyed by sigma: it advances when sigma
    falls, and an evaluation at a sigma already seen (Heun's second evaluation is the next step's
    first) starts again from the buffer before it. eta = 1, beta = 0, r = inf is CFG.
    s = 1 is the conditional model (one pass; the momentum buffer is not updated at such steps).
    """

    name = "apg"
    quick_scales = (6.0, 10.0)
    full_scales = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0)
    space = "x0"
    numerics_version = 2  # x0 no longer round-trips through eps before the step (changes fp32 samples ~1e-4)
    reference = "Sadat et al. 2024, arXiv:2410.02416 (adaptive projected guidance, Algorithm 1)"

    def __init__(self, scale: float = 6.0, momentum: float = -0.5, norm_threshold: float = 4.0,
                 eta: float = 0.0) -> None:
        super().__init__(scale)
        self.momentum = float(momentum)
        self.norm_threshold = float(norm_threshold)
        self.eta = float(eta)
        self.reset()

    def reset(self) -> None:
        self._running: Tensor | None = None  # D_bar at the latest sigma
        self._before: Tensor | None = None  # D_bar at the sigma before it
        self._sigma: float | None = None

    def update(self, diff: Tensor, sigma: float | None = None) -> Tensor:
        """The momentum step D_bar = D + beta * D_bar_prev (no momentum: D), keyed by sigma."""
        if self.momentum == 0.0:
            return diff
        if self._running is not None and self._running.shape != diff.shape:
            raise ValueError(f"APG momentum buffer holds a batch of shape {tuple(self._running.shape)}, got "
                             f"{tuple(diff.shape)}; call reset() before sampling a new batch")
        if sigma is None or sigma != self._sigma:
            self._before, self._sigma = self._running, sigma
        self._running = diff if self._before is None else diff + self.momentum * self._before
        return self._running

    def guided_x0(self, x0_c: Tensor, x0_u: Tensor, scale: float, sigma: float | None = None) -> Tensor:
        x0_c32 = at_least_fp32(x0_c)
        diff = clip_norm(self.update(x0_c32 - at_least_fp32(x0_u), sigma), self.norm_threshold)
        parallel, orthogonal = project(diff, x0_c32)
        return (x0_c32 + (scale - 1.0) * (orthogonal + self.eta * parallel)).to(x0_c.dtype)

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        return pred_c.with_x0(self.guided_x0(pred_c.x0, pred_u.x0, scale, step.sigma))

    def __repr__(self) -> str:
        return (f"AdaptiveProjectedGuidance(scale={self.scale}, momentum={self.momentum}, "
                f"norm_threshold={self.norm_threshold}, eta={self.eta})")
