"""CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching Models",
arXiv:2503.18886), adapted to an eps-prediction VP model through its equivalent rectified flow.

The paper works with a flow-matching velocity v. A VP state x_t = a x0 + b eps (a = sqrt(abar),
b = sqrt(1 - abar)) rescaled to z = x_t / (a + b) is the rectified-flow state z = (1 - t) x0 + t eps
with t = b / (a + b), whose velocity is v = eps - x0. For a fixed x_t this v is an affine function of
the eps prediction, v = ((a + b) eps - x_t) / a, and back, eps = (a v + x_t) / (a + b). So the
paper's rule is applied to exactly the velocities it was written for, and converted back to eps:

    s* = <v_c, v_u> / ||v_u||^2 (per sample),   v = s* v_u + w (v_c - s* v_u).

Zero-init sets v = 0 for the first K steps of the process (x0 = z, eps = x_t / (a + b)): under DDIM
without clipping z does not move, as the flow ODE with v = 0. These steps run no network (their
cost is 0 passes) and carry no learned variance (ancestral sampling uses the fixed one there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.diffusion import GaussianDiffusion
from guidance.guiders.base import Prediction, StepInfo, at_least_fp32
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.protocols import Conditions, Denoiser


def optimized_scale(v_c: Tensor, v_u: Tensor) -> Tensor:
    """s* = <v_c, v_u> / ||v_u||^2 per sample, shaped [B, 1, ...]; 1 where v_u = 0 (it is then unused)."""
    dims = list(range(1, v_c.ndim))
    sq = (v_u * v_u).sum(dim=dims, keepdim=True)
    dot = (v_c * v_u).sum(dim=dims, keepdim=True)
    return torch.where(sq > 0, dot / sq.clamp_min(torch.finfo(sq.dtype).tiny), torch.ones_like(sq))


class CFGZeroStar(ClassifierFreeGuidance):
    """CFG on rectified-flow velocities with the optimised scale s* and zero-init of the first steps.

    v = s* v_u + s (v_c - s* v_u), s* = <v_c, v_u> / ||v_u||^2, v = eps - x0 of the equivalent
    rectified flow (module docstring). s = 1 is the conditional model (one pass); s* = 1 gives CFG.
    """

    name = "cfg-zero-star"
    space = "v"  # rectified-flow velocity v = eps - x0 (an affine map of eps at fixed x_t)
    reference = "Fan et al. 2025, arXiv:2503.18886 (CFG-Zero*: optimised scale and zero-init)"

    def __init__(self, scale: float = 3.0, zero_init_steps: int = 1, use_optimized_scale: bool = True) -> None:
        super().__init__(scale)
        if int(zero_init_steps) < 0:
            raise ValueError(f"zero_init_steps must be >= 0, got {zero_init_steps}")
        self.zero_init_steps = int(zero_init_steps)
        self.use_optimized_scale = bool(use_optimized_scale)

    def is_zero_init(self, step: StepInfo) -> bool:
        """Whether this is one of the first `zero_init_steps` steps (read from sigma: no device sync)."""
        n, k = step.diffusion.num_timesteps, self.zero_init_steps
        return k > 0 and step.sigma >= float(step.diffusion.sigmas[max(n - k, 0)])

    @staticmethod
    def _ab(step: StepInfo) -> tuple[float, float]:
        """sqrt(abar) and sqrt(1 - abar) at this step (host floats: the batch shares the step)."""
        d = step.diffusion
        return float(d.sqrt_alphas_cumprod[step.index]), float(d.sqrt_one_minus_alphas_cumprod[step.index])

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        a, b = self._ab(step)
        if self.is_zero_init(step):
            return Prediction(x / (a + b), None)
        scale = self.scale_at(step)
        if scale == 1.0 and cond.negative is None:
            return super().predict(model, x, step, cond)
        pred_c, pred_u = self.branches(model, x, step, cond)
        x32 = at_least_fp32(x)
        v_c = ((a + b) * at_least_fp32(pred_c.eps) - x32) / a
        v_u = ((a + b) * at_least_fp32(pred_u.eps) - x32) / a
        s_star = optimized_scale(v_c, v_u) if self.use_optimized_scale else torch.ones_like(v_c[:, :1])
        v = s_star * v_u + scale * (v_c - s_star * v_u)
        eps = (a * v + x32) / (a + b)
        return Prediction(eps.to(pred_c.eps.dtype), pred_c.var_values)

    def network_sigmas(self, diffusion: GaussianDiffusion) -> list[float]:
        """The steps after the zero-init ones (those run no network)."""
        return diffusion.sigmas[: max(diffusion.num_timesteps - self.zero_init_steps, 0)].tolist()

    def __repr__(self) -> str:
        return f"CFGZeroStar(scale={self.scale}, zero_init_steps={self.zero_init_steps})"
