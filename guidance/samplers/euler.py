"""Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, k-diffusion's sample_euler).

dx_ve / dsigma = (x_ve - x0) / sigma = eps, so one step is x_ve' = x0 + sigma' eps: in model
coordinates x' = alpha' x0 + s' eps, which stays finite from sigma = inf. It is DDIM at eta = 0
written for any process (Karras et al., section 3); the two differ in the schedules they are used
with and in a VP model's fractional timesteps between table entries.
"""

from __future__ import annotations

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler


@register_sampler("euler", "Euler on the probability-flow ODE (Karras et al. 2022; k-diffusion sample_euler)")
def sample_euler(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                 callback: StepCallback | None = None) -> Tensor:
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        pred = denoise(x, cur)
        x = nxt.alpha * pred.x0 + nxt.s * pred.renoise_eps()
        if callback is not None:
            callback(i, x, pred)
    return x
