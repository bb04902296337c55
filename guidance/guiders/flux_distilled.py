"""Embedded (distilled) guidance: the guidance strength as an input of a guidance-distilled transformer
(FLUX.1-dev; Black Forest Labs 2024), one pass per step."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, register
from guidance.protocols import Conditions, Denoiser

EMBEDDED = "guidance"  # the model condition's entry a guidance-distilled adapter reads (guidance.sources.flux)


@register()
class DistilledGuidance(Guidance):
    """The model told its guidance strength s (FluxPipeline's `guidance_scale`): one pass, no second branch.

    A guidance-distilled transformer was trained to imitate CFG at the strength it is given; s = 1 asks for
    the conditional model. A negative prompt has no branch to act in here (use `cfg` or `nag` on top of the
    distilled model: they run at its default strength). Refused on models without the input.
    """

    name = "flux-distilled"
    identity_scale = 1.0
    reference = "FLUX.1-dev guidance distillation (Black Forest Labs 2024); diffusers FluxPipeline guidance_scale"
    quick_scales: ClassVar[tuple[float, ...]] = (2.5, 3.5)
    full_scales: ClassVar[tuple[float, ...]] = (1.0, 2.0, 3.5, 5.0, 7.0)
    needs: ClassVar[frozenset[str]] = frozenset({"embedded_guidance"})

    def __init__(self, scale: float = 3.5) -> None:
        super().__init__(scale)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        model_cond = cond.model
        if not isinstance(model_cond, dict) or EMBEDDED not in model_cond:
            raise ValueError(f"guidance {self.name!r} sets the guidance strength a guidance-distilled model takes as "
                             f"input (FLUX.1-dev's guidance_embeds); this model has no such input: use cfg or nag")
        strength = torch.full_like(model_cond[EMBEDDED], self.scale_at(step))
        return model(x, step.level, {**model_cond, EMBEDDED: strength})

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=1)
