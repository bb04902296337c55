"""Noised-CLIP guidance (GLIDE, Nichol et al., 2022)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from guidance.guiders.base import GradientGuidance, StepInfo, at_least_fp32, register
from guidance.protocols import Conditions, NoisedCLIP


@register()
class CLIPGuidance(GradientGuidance):
    """g = s * grad_x exp(logit_scale) * <f(x_t, t), g(caption)> with unit-norm embeddings.

    The image tower sees the noised x_t and t (a CLIP trained on noised images), so the gradient is
    meaningful at every noise level. GLIDE warns that scoring with the guiding CLIP inflates the
    score: the harness scores with a separate evaluation CLIP.
    """

    name = "clip"
    quick_scales = (1.0, 5.0, 10.0)
    full_scales = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    needs = frozenset({"noised_clip"})
    reference = "Nichol et al. 2022 (GLIDE), arXiv:2112.10741, section 2.4"

    def __init__(self, clip: NoisedCLIP, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.clip = clip

    def similarity(self, x: Tensor, t: Tensor, text_emb: Tensor) -> Tensor:
        image_emb = F.normalize(at_least_fp32(self.clip.encode_image(x, t)), dim=-1)
        return at_least_fp32(self.clip.logit_scale).exp() * (image_emb * text_emb).sum(-1)

    def objective(self, step: StepInfo, cond: Conditions) -> Callable[[Tensor], Tensor]:
        tokens = cond.require("clip_tokens", self.name)
        with torch.no_grad():  # the caption side needs no gradient
            text_emb = F.normalize(at_least_fp32(self.clip.encode_text(tokens)), dim=-1)
        return lambda x_in: self.similarity(x_in, step.t, text_emb)
