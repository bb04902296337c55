"""CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion
Models", arXiv:2406.08070).

CFG extrapolates: at large w the guided eps leaves the data manifold, and DDIM renoises with it.
CFG++ interpolates, eps_l = eps_u + l (eps_c - eps_u) with l in [0, 1], denoises with the x0 that
eps_l implies, and renoises with the *unconditional* eps:

    DDIM / Euler:  x_next = alpha_next * x0(eps_l) + s_next * eps_u       (paper, Algorithm 1)
    DPM-Solver++(2M): the multistep update with the unconditional x0 in the renoise term and the
                      history (ComfyUI's sample_dpmpp_2m_cfg_pp).

The sampler must see both branches: the prediction carries eps_u as `renoise`, which samplers
that support it use (ddim, euler, euler-ancestral, dpmpp-2m, flow-euler); the others refuse it.
l = 0 is the unconditional model; there is no scale at which CFG++ is the conditional model alone
(l = 1 renoises with eps_u all the same). A first-order step of CFG++ at l is exactly a CFG step at
w = l * sigma / (sigma - sigma') (tested): CFG++ guides weakly with a few large steps (w < 1 at 6 steps
on the zoo) and strongly with many small ones; compare it with CFG at equal steps only.
"""

from __future__ import annotations

from torch import Tensor

from guidance.guiders.base import GuidanceCost, Prediction, StepInfo, register
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.protocols import Conditions, Denoiser


@register()
class CFGPlusPlus(ClassifierFreeGuidance):
    """x0 from eps_u + l (eps_c - eps_u), l in [0, 1]; the sampler renoises with eps_u."""

    name = "cfg-pp"
    quick_scales = (0.2, 0.6)  # CFG++'s lambda in [0, 1]
    full_scales = (0.2, 0.4, 0.6, 0.8)
    identity_scale = -1.0  # no scale is the unguided conditional model: both passes always run
    renoises_unconditionally = True
    reference = "Chung et al. 2024, arXiv:2406.08070 (CFG++, Algorithm 1 and the DPM-Solver++ form)"

    def __init__(self, scale: float = 0.6) -> None:
        if not callable(scale) and not 0.0 <= float(scale) <= 1.0:
            raise ValueError(f"CFG++ scale (lambda) must be in [0, 1], got {scale}; it interpolates, so "
                             f"CFG's w = 3..12 corresponds to about lambda = 0.2..0.8")
        super().__init__(scale)

    def guided(self, scale: float, cond: Conditions) -> bool:
        return True

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        pred_c, pred_u = self.branches(model, x, step, cond)
        return pred_c.guided_by(pred_u, scale, renoise=pred_u.eps)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2)
