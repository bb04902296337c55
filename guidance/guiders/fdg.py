"""Frequency-decoupled guidance, FDG (Sadat et al. 2025, "Guidance in the Frequency Domain Enables
High-Fidelity Sampling at Low CFG Scales", arXiv:2506.19713)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from guidance.guiders.apg import project
from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance

def _taps(like: Tensor) -> Tensor:
    """Burt & Adelson's 5-tap binomial [1, 4, 6, 4, 1] / 16, made on the device (no host copy):
    6 - 1.5 d - 0.5 d^2 at distance d = 0, 1, 2 from the centre, exact in floating point."""
    d = (torch.arange(5, device=like.device, dtype=like.dtype) - 2).abs()
    return (6.0 - 1.5 * d - 0.5 * d * d) / 16.0


def _blur(x: Tensor) -> Tensor:
    taps = _taps(x)
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), kernel, groups=x.shape[1])


def pyr_down(x: Tensor) -> Tensor:
    """Blur, then halve each side (bilinear, i.e. the mean of each 2x2 block of the blurred image)."""
    return F.interpolate(_blur(x), size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="bilinear", align_corners=False)


def pyr_up(x: Tensor) -> Tensor:
    """Double each side (bilinear), then blur."""
    return _blur(F.interpolate(x, size=(2 * x.shape[-2], 2 * x.shape[-1]), mode="bilinear", align_corners=False))


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """[L_0 (finest band), ..., L_{levels-2}, G_{levels-1} (coarsest Gaussian level)], as kornia's
    build_laplacian_pyramid for sides divisible by 2^(levels - 1); `reconstruct` inverts it exactly."""
    if x.ndim != 4:
        raise ValueError(f"frequency-decoupled guidance needs image predictions [B, C, H, W], got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    stride = 2 ** (levels - 1)
    if h % stride or w % stride or min(h, w) // stride < 3:
        raise ValueError(f"FDG with {levels} pyramid levels needs H and W divisible by {stride} with at least "
                         f"3 pixels at the coarsest level, got {h}x{w}; use fewer levels")
    gaussians = [x]
    for _ in range(levels - 1):
        gaussians.append(pyr_down(gaussians[-1]))
    return [g - pyr_up(g_next) for g, g_next in zip(gaussians, gaussians[1:])] + [gaussians[-1]]


def reconstruct(pyramid: list[Tensor]) -> Tensor:
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = pyr_up(image) + band
    return image


def fdg_mix(cond: Tensor, uncond: Tensor, scales: list[float], parallel_weights: list[float]) -> Tensor:
    """Per pyramid level i: u_i + w_i (Delta_i), Delta_i = c_i - u_i with its part parallel to c_i
    weighted by parallel_weights[i] (1: plain CFG shift); then the image rebuilt from the levels."""
    c32, u32 = at_least_fp32(cond), at_least_fp32(uncond)
    levels = len(scales)
    guided = []
    for w, p, c_i, u_i in zip(scales, parallel_weights, laplacian_pyramid(c32, levels), laplacian_pyramid(u32, levels)):
        shift = c_i - u_i
        if p != 1.0:
            parallel, orthogonal = project(shift, c_i)
            shift = p * parallel + orthogonal
        guided.append(u_i + w * shift)
    return reconstruct(guided).to(cond.dtype)


@register()
class FrequencyDecoupledGuidance(ClassifierFreeGuidance):
    """CFG per Laplacian-pyramid level: s on the fine band, 1 + (s - 1) / 2 on the coarse level.

    CFG per Laplacian-pyramid level: eps = R(u_i + w_i (c_i - u_i)), c_i / u_i the levels of the
    conditional / unconditional prediction, R the exact reconstruction.

    `levels` = 2 (the paper's SDXL setting): the high-frequency band gets s, the coarsest level
    w_low = 1 + low_fraction (s - 1) (low_fraction 0.5: s = 10 gives 5.5, near the paper's 10 / 5).
    Every w_i = s is exactly CFG (the pyramid is linear and inverted exactly). `parallel_weights`
    (per level, default 1) down-weights each level's shift component parallel to c_i, as APG.
    Combined in the model's own space (with parallel weights 1 it is affine and the same in all).
    s = 1 makes every w_i 1: the conditional model, one pass.
    """

    name = "fdg"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
    reference = "Sadat et al. 2025, arXiv:2506.19713 (frequency-decoupled guidance)"

    def __init__(self, scale: float = 3.0, levels: int = 2, low_fraction: float = 0.5,
                 parallel_weights: tuple[float, ...] | None = None) -> None:
        super().__init__(scale)
        if int(levels) < 1:
            raise ValueError(f"FDG needs at least 1 pyramid level, got {levels}")
        self.levels = int(levels)
        self.low_fraction = float(low_fraction)
        weights = [1.0] * self.levels if parallel_weights is None else [float(p) for p in parallel_weights]
        if len(weights) != self.levels:
            raise ValueError(f"FDG parallel_weights has {len(weights)} entries for {self.levels} levels; give one per level")
        self.parallel_weights = weights

    def level_scales(self, scale: float) -> list[float]:
        """The scale of each level, finest first: s for the bands, 1 + low_fraction (s - 1) for the coarsest."""
        if self.levels == 1:
            return [scale]
        return [scale] * (self.levels - 1) + [1.0 + self.low_fraction * (scale - 1.0)]

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        space = pred_c.primary
        return pred_c.with_value(space, fdg_mix(pred_c.get(space), pred_u.get(space), self.level_scales(scale),
                                                self.parallel_weights))

    def __repr__(self) -> str:
        return (f"FrequencyDecoupledGuidance(scale={self.scale}, levels={self.levels}, "
                f"low_fraction={self.low_fraction}, parallel_weights={self.parallel_weights})")
