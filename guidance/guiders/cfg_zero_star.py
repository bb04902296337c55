"""CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
arXiv:2503.18886), on the rectified-flow velocity of any model.

The paper works with a flow-matching velocity v. Any state x = alpha x0 + s eps rescaled to
z = x / (alpha + s) is the rectified-flow state z = (1 - t) x0 + t eps with t = s / (alpha + s), whose
velocity is u = eps - x0: the prediction's "flow" space (guidance.prediction), exact for flow models
and an affine map of eps at fixed x for eps, v and x0 models. So the paper's rule is applied to
exactly the velocities it was written for:

    s* = <u_c, u_u> / ||u_u||^2 (per sample),   u = s* u_u + w (u_c - s* u_u).

Zero-init sets u = 0 for the first K steps of the trajectory (x0 = eps = x / (alpha + s)): a
deterministic first-order step then leaves z where it is, as the flow ODE with u = 0. These
evaluations run no network (their cost is 0 passes) and carry no learned variance (ancestral
sampling uses the fixed one there). "The first K steps" is read from sigma against the
trajectory's sigmas, so Heun's second evaluation of step K is not zero-initialised.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.protocols import Conditions, Denoiser


def optimized_scale(v_c: Tensor, v_u: Tensor) -> Tensor:
    """s* = <v_c, v_u> / ||v_u||^2 per sample, shaped [B, 1, ...]; 1 where v_u = 0 (it is then unused)."""
    dims = list(range(1, v_c.ndim))
    sq = (v_u * v_u).sum(dim=dims, keepdim=True)
    dot = (v_c * v_u).sum(dim=dims, keepdim=True)
    return torch.where(sq > 0, dot / sq.clamp_min(torch.finfo(sq.dtype).tiny), torch.ones_like(sq))


@register()
class CFGZeroStar(ClassifierFreeGuidance):
    """CFG on rectified-flow velocities with the optimised scale s* and zero-init of the first steps.

    u = s* u_u + s (u_c - s* u_u), s* = <u_c, u_u> / ||u_u||^2, u = eps - x0 of the equivalent
    rectified flow (module docstring). s = 1 is the conditional model (one pass); s* = 1 gives CFG.
    """

    name = "cfg-zero-star"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    space = "flow"
    numerics_version = 2  # x0 no longer round-trips through eps before the step (changes fp32 samples ~1e-4)
    reference = "Fan et al. 2025, arXiv:2503.18886 (CFG-Zero*: optimised scale and zero-init)"

    def __init__(self, scale: float = 3.0, zero_init_steps: int = 1, use_optimized_scale: bool = True) -> None:
        super().__init__(scale)
        if int(zero_init_steps) < 0:
            raise ValueError(f"zero_init_steps must be >= 0, got {zero_init_steps}")
        self.zero_init_steps = int(zero_init_steps)
        self.use_optimized_scale = bool(use_optimized_scale)

    def is_zero_init(self, sigma: float, trajectory: Sequence[float]) -> bool:
        """Whether sigma is among the first `zero_init_steps` sigmas of the trajectory (no device sync)."""
        steps = [s for s in trajectory if s > 0]
        k = min(self.zero_init_steps, len(steps))
        return k > 0 and sigma >= steps[k - 1]

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        if self.is_zero_init(step.sigma, step.trajectory):
            return Prediction(x, step.level, "flow", torch.zeros_like(at_least_fp32(x)))
        scale = self.scale_at(step)
        if not self.guided(scale, cond):
            self.note_conditional_only()
            return model(x, step.level, cond.model)
        pred_c, pred_u = self.branches(model, x, step, cond)
        u_c, u_u = at_least_fp32(pred_c.get("flow")), at_least_fp32(pred_u.get("flow"))
        s_star = optimized_scale(u_c, u_u) if self.use_optimized_scale else torch.ones_like(u_c[:, :1])
        return pred_c.with_value("flow", s_star * u_u + scale * (u_c - s_star * u_u))

    def runs_network_at(self, sigma: float, trajectory: Sequence[float]) -> bool:
        """Not at the zero-init steps (those run no network)."""
        return not self.is_zero_init(sigma, trajectory)

    def __repr__(self) -> str:
        return f"CFGZeroStar(scale={self.scale}, zero_init_steps={self.zero_init_steps})"
