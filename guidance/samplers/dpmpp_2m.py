"""DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095; k-diffusion's sample_dpmpp_2m).

Multistep, second order in log-SNR time lambda = -log sigma, one evaluation per step: with
h = lambda_next - lambda and r = h_last / h,
    x_ve' = (sigma' / sigma) x_ve - expm1(-h) [D + (D - D_prev) / (2 r)],
first order at the first and the last step. In model coordinates (sigma' / sigma) x_ve is
(s' / s) x, so a trajectory may start at sigma = inf. Under CFG++ the renoise term uses the
unconditional x0 and the history is of unconditional x0s (ComfyUI's sample_dpmpp_2m_cfg_pp).
"""

from __future__ import annotations

import math

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler, step_ratio


@register_sampler("dpmpp-2m", "DPM-Solver++(2M), 2nd-order multistep, 1 evaluation per step (Lu et al. 2022)")
def sample_dpmpp_2m(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                    callback: StepCallback | None = None) -> Tensor:
    previous: Tensor | None = None  # the last step's x0 (unconditional under CFG++)
    h_last = math.inf
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        pred = denoise(x, cur)
        d = pred.x0
        ratio = step_ratio(cur, nxt)
        d_renoise = d if pred.renoise is None or ratio == 0 else x * cur.recip_alpha - cur.sigma * pred.renoise
        h = nxt.log_snr - cur.log_snr
        x = (nxt.s / cur.s) * x + nxt.alpha * (d - ratio * d_renoise)  # from sigma = inf: s' x + alpha' x0
        if previous is not None and nxt.sigma > 0 and math.isfinite(h_last):
            x = x - (nxt.alpha * math.expm1(-h) / (2 * h_last / h)) * (d - previous)
        previous, h_last = d_renoise, h
        if callback is not None:
            callback(i, x, pred)
    return x
