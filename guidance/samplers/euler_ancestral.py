"""Euler ancestral (k-diffusion's sample_euler_ancestral): an Euler step down to sigma_down, then
fresh noise of size sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 (eta = 1: DDPM-like)."""

from __future__ import annotations

import math

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler, step_ratio


def ancestral_sigmas(cur: NoiseLevel, nxt: NoiseLevel, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of k-diffusion's get_ancestral_step, finite from sigma = inf."""
    if eta == 0 or nxt.sigma == 0:
        return nxt.sigma, 0.0
    ratio = step_ratio(cur, nxt)
    up = min(nxt.sigma, eta * nxt.sigma * math.sqrt(1 - ratio**2))
    return math.sqrt(nxt.sigma**2 - up**2), up


@register_sampler("euler-ancestral", "Euler ancestral (k-diffusion sample_euler_ancestral); --eta scales the noise",
                  stochastic=True, options=("eta",), default_eta=1.0)
def sample_euler_ancestral(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                           callback: StepCallback | None = None, eta: float = 1.0) -> Tensor:
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        step_noise = noise() if nxt.sigma > 0 else None
        pred = denoise(x, cur)
        down, up = ancestral_sigmas(cur, nxt, eta)
        y = pred.x0 + down * pred.renoise_eps()
        if step_noise is not None and up > 0:
            y = y + up * step_noise
        x = nxt.alpha * y
        if callback is not None:
            callback(i, x, pred)
    return x
