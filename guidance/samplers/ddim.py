"""DDIM (Song et al. 2021), deterministic at eta = 0 and ancestral-like at eta = 1.

x_next = sqrt(abar_next) x0 + sqrt(1 - abar_next - sigma_eta^2) eps + sigma_eta z, in VP coordinates
(other processes are mapped there and back), with the process's own alphabar: a VP model steps on
exactly guided-diffusion's numbers. x0 is clipped and eps recomputed from it before the direction
term (guided-diffusion; diffusers' `clip_sample` keeps the unclipped eps, see docs/samplers.md).
Under CFG++ the direction term uses the unconditional eps.
"""

from __future__ import annotations

import math

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler


@register_sampler("ddim", "DDIM (Song et al. 2021); --eta 0 deterministic, 1 ancestral-like", options=("eta",))
def sample_ddim(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                callback: StepCallback | None = None, eta: float = 0.0) -> Tensor:
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        step_noise = noise() if eta > 0 and nxt.sigma > 0 else None
        pred = denoise(x, cur)
        abar, abar_prev = cur.abar, nxt.abar
        sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        x = pred.x0 * math.sqrt(abar_prev) + math.sqrt(max(0.0, 1 - abar_prev - sigma**2)) * pred.renoise_eps()
        if step_noise is not None:
            x = x + sigma * step_noise
        if nxt.vp_scale != 1.0:
            x = x * nxt.vp_scale
        if callback is not None:
            callback(i, x, pred)
    return x
