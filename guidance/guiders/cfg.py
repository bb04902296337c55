"""Classifier-free guidance (Ho & Salimans, 2021; GLIDE, Nichol et al., 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, split_output
from guidance.protocols import Conditions, Denoiser


class ClassifierFreeGuidance(Guidance):
    """eps = eps_u + s * (eps_c - eps_u), GLIDE/diffusers convention (Ho & Salimans' w = s - 1).

    s = 1 is the conditional model and skips the unconditional pass; s = 0 is unconditional. Both
    branches run in one batched forward. Only the eps channels are guided: a learned variance comes
    from the conditional pass. `conditions.negative`, when set, replaces the unconditional branch
    (negative prompts).
    """

    name = "cfg"
    identity_scale = 1.0
    reference = "Ho & Salimans 2021, arXiv:2207.12598; Nichol et al. 2022 (GLIDE), arXiv:2112.10741"

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__(scale)

    def branches(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> tuple[Prediction, Prediction]:
        """Conditional and unconditional predictions from one batched forward pass."""
        uncond = cond.negative if cond.negative is not None else model.null_cond(cond.model)
        out = model(torch.cat([x, x]), torch.cat([step.t, step.t]), torch.cat([cond.model, uncond]))
        out_c, out_u = out.chunk(2)
        return (split_output(out_c, x.shape[1], model.learned_variance),
                split_output(out_u, x.shape[1], model.learned_variance))

    def combine(self, eps_c: Tensor, eps_u: Tensor, scale: float, step: StepInfo) -> Tensor:
        return eps_u + scale * (eps_c - eps_u)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        if scale == 1.0 and cond.negative is None:
            return super().predict(model, x, step, cond)
        pred_c, pred_u = self.branches(model, x, step, cond)
        return Prediction(self.combine(pred_c.eps, pred_u.eps, scale, step), pred_c.var_values)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2 if negative or self.active_at(sigma) else 1)
