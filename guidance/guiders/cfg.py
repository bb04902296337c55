"""Classifier-free guidance (Ho & Salimans, 2021; GLIDE, Nichol et al., 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, register
from guidance.protocols import Conditions, Denoiser, cond_cat


@register()
class ClassifierFreeGuidance(Guidance):
    """eps = eps_u + s * (eps_c - eps_u), GLIDE/diffusers convention (Ho & Salimans' w = s - 1).

    s = 1 is the conditional model and skips the unconditional pass; s = 0 is unconditional. Both
    branches run in one batched forward. The mix is affine with weights summing to one, so it is the
    same in eps, x0, v or flow space; it is taken in the model's own (eps is undefined at zero SNR for a
    flow or v model, where x0 is not). A learned variance comes from the
    conditional pass. `conditions.negative`, when set, replaces the unconditional branch.
    """

    name = "cfg"
    quick_scales = (1.0, 3.0, 6.0)
    full_scales = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    identity_scale = 1.0
    reference = "Ho & Salimans 2021, arXiv:2207.12598; Nichol et al. 2022 (GLIDE), arXiv:2112.10741"

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__(scale)

    def branches(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> tuple[Prediction, Prediction]:
        """Conditional and unconditional predictions from one batched forward pass."""
        uncond = cond.negative if cond.negative is not None else model.null_cond(cond.model)
        pred_c, pred_u = model(torch.cat([x, x]), step.level, cond_cat([cond.model, uncond])).chunk(2)
        return pred_c, pred_u

    def guided(self, scale: float, cond: Conditions) -> bool:
        """Whether this evaluation needs the unconditional branch (not at s = 1 without a negative prompt)."""
        return not (scale == 1.0 and cond.negative is None)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        if not self.guided(scale, cond):
            return super().predict(model, x, step, cond)
        pred_c, pred_u = self.branches(model, x, step, cond)
        return self.combine(pred_c, pred_u, scale, step)

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        """The guided prediction from both branches at this evaluation: what a CFG variant changes."""
        return pred_c.guided_by(pred_u, scale)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2 if negative or self.active_at(sigma) else 1)
