"""Flow-matching Euler (diffusers' FlowMatchEulerDiscreteScheduler): z' = z + (t' - t) u.

In rectified-flow coordinates z = x / (alpha + s), t = s / (alpha + s), with the velocity u = eps - x0;
for a flow model z is x itself. Algebraically the same step as Euler and DDIM (every first-order
deterministic solver of this ODE is); kept as diffusers writes it, for parity with SD3-style
pipelines. Under CFG++: z' = (1 - t') x0 + t' eps_u.
"""

from __future__ import annotations

from torch import Tensor

from guidance.process import NoiseLevel
from guidance.samplers.base import Denoise, NoiseFn, StepCallback, register_sampler


@register_sampler("flow-euler", "flow-matching Euler (diffusers FlowMatchEulerDiscreteScheduler)")
def sample_flow_euler(denoise: Denoise, x: Tensor, levels: list[NoiseLevel], noise: NoiseFn,
                      callback: StepCallback | None = None) -> Tensor:
    for i in range(len(levels) - 1):
        cur, nxt = levels[i], levels[i + 1]
        pred = denoise(x, cur)
        total, total_next = cur.alpha + cur.s, nxt.alpha + nxt.s
        t, t_next = cur.s / total, nxt.s / total_next
        if pred.renoise is None:
            z = x if total == 1.0 else x / total
            z = z + (t_next - t) * pred.get("flow")
        else:
            z = (1 - t_next) * pred.x0 + t_next * pred.renoise
        x = z if total_next == 1.0 else z * total_next
        if callback is not None:
            callback(i, x, pred)
    return x
