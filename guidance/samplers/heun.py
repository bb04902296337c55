"""Heun's second-order method (Karras et al. 2022, Algorithm 1 without churn; k-diffusion sample_heun).

Two model evaluations per step: an Euler step to sigma_next, then the trapezoid of the two slopes
(in VE coordinates the slope is eps). The last step (to sigma = 0) is plain Euler, as in EDM, and
so is a first step from sigma = inf, where the trapezoid is undefined. Its error per step grows with
sigma: start it from a sigma_max near EDM's 80, not a cosine table's 2e4 (docs/samplers.md).
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler


def heun_evaluations(sigmas: Sequence[float]) -> list[float]:
    out = []
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
        out.append(float(sigma))
        if nxt > 0 and math.isfinite(sigma):
            out.append(float(nxt))
    return out


@register_sampler("heun", "Heun, 2nd order, 2 evaluations per step (Karras et al. 2022; k-diffusion sample_heun)",
                  renoise=False, evaluations=heun_evaluations)
def sample_heun(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                callback: StepCallback | None = None) -> Tensor:
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        pred = denoise(x, cur)
        if nxt.sigma == 0 or math.isinf(cur.sigma):
            x = nxt.alpha * pred.x0 + nxt.s * pred.eps
        else:
            y, dt = x * cur.recip_alpha, nxt.sigma - cur.sigma
            y_euler = y + dt * pred.eps
            slope = pred.eps + denoise(y_euler * nxt.alpha, nxt).eps
            x = nxt.alpha * (y + (dt / 2) * slope)
        if callback is not None:
            callback(i, x, pred)
    return x
