"""DDPM ancestral sampling (Ho et al. 2020), fixed or learned-range variance (Nichol & Dhariwal 2021).

Written in VP coordinates with the process's alphabar at each level, so a VP model's steps use the
very table values guided-diffusion's do; other processes are mapped to VP coordinates and back
(x_vp = x / sqrt(alpha^2 + s^2)). Gradient guidance shifts the mean by Sigma * g (Dhariwal &
Nichol, Algorithm 1). The posterior variance of the last step is 0; its log is clipped to the
previous step's, as guided-diffusion does, which only matters for the learned interpolation.
"""

from __future__ import annotations

import math

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler


def posterior_variance(cur: NoiseLevel, nxt: NoiseLevel) -> float:
    beta = 1.0 - cur.abar / nxt.abar
    return beta * (1.0 - nxt.abar) / (1.0 - cur.abar)


@register_sampler("ddpm", "DDPM ancestral (Ho et al. 2020), fixed or learned variance; gradient guidance as a "
                          "mean shift", stochastic=True, renoise=False)
def sample_ddpm(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                callback: StepCallback | None = None) -> Tensor:
    n = len(levels) - 1
    for i in range(n):
        cur, nxt = levels[i], levels[i + 1]
        last = nxt.sigma == 0
        step_noise = None if last else noise()
        pred, grad = denoise.guided(x, cur)
        x0 = pred.x0.clamp(-1, 1) if denoise.clip_denoised else pred.x0
        x_vp = x if cur.vp_scale == 1.0 else x / cur.vp_scale
        abar, abar_prev = cur.abar, nxt.abar
        beta = 1.0 - abar / abar_prev
        mean = (beta * math.sqrt(abar_prev) / (1.0 - abar)) * x0 + ((1.0 - abar_prev) * math.sqrt(1.0 - beta)
                                                                     / (1.0 - abar)) * x_vp
        variance = posterior_variance(cur, nxt)
        clipped = variance if variance > 0 or i == 0 else posterior_variance(levels[i - 1], cur)
        min_log = math.log(clipped) if clipped > 0 else math.log(beta)
        if pred.var_values is None:
            log_var = x.new_full((1,) * x.ndim, min_log)
            var = x.new_full((1,) * x.ndim, variance)
        else:
            frac = (pred.var_values + 1) / 2
            log_var = frac * math.log(beta) + (1 - frac) * min_log
            var = log_var.exp()
        if grad is not None:
            mean = mean + var * (grad if cur.vp_scale == 1.0 else grad * cur.vp_scale)
        x = mean if step_noise is None else mean + (0.5 * log_var).exp() * step_noise
        if nxt.vp_scale != 1.0:
            x = x * nxt.vp_scale
        if callback is not None:
            callback(i, x, pred)
    return x
