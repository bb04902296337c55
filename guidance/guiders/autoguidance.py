"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself", arXiv:2406.02507)."""

from __future__ import annotations

from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, register
from guidance.protocols import Conditions, Denoiser


@register()
class AutoGuidance(Guidance):
    """eps = eps_weak + s (eps_main - eps_weak), the weak model a worse Denoiser given the same condition.

    Karras et al. write D = D_0 + w (D_1 - D_0) for denoiser (x0) outputs; the weights sum to one, so
    the same mix of eps predictions at the same x_t is exactly the same step. s = 1 is the main model
    alone (the weak pass is skipped). The learned variance, if any, comes from the main model.
    `conditions.negative` is not used (there is no unconditional branch).
    """

    name = "autoguidance"
    quick_scales = (1.5, 2.5)
    full_scales = (1.25, 1.5, 2.0, 2.5, 3.0)
    needs = frozenset({"weak_model"})
    identity_scale = 1.0
    reference = "Karras et al. 2024, arXiv:2406.02507 (autoguidance)"

    def __init__(self, weak: Denoiser, scale: float = 2.0) -> None:
        super().__init__(scale)
        self.weak = weak

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        main = super().predict(model, x, step, cond)
        scale = self.scale_at(step)
        if scale == 1.0:
            self.note_conditional_only()
            return main
        weak = self.weak(x, step.level, cond.model)
        self.note_branches(main, weak)  # CFG with the weak model as its unconditional: measured from it
        return main.guided_by(weak, scale)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2 if self.active_at(sigma) else 1)  # main + weak passes
