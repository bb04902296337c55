"""Universal CLIP guidance (Bansal et al. 2023): a clean CLIP's gradient through the decoded x0 estimate."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from guidance.guiders.base import GradientGuidance, GuidanceCost, Prediction, StepInfo, at_least_fp32, register
from guidance.protocols import Conditions, Denoiser


class DecoderCLIP(Protocol):
    """What the method needs from a bundle: x0 (latents) -> images in [-1, 1], differentiably, and a
    CLIP trained on clean images (unit-norm embeddings)."""

    logit_scale: Tensor

    def decode(self, x0: Tensor) -> Tensor: ...

    def encode_image(self, images: Tensor) -> Tensor: ...

    def encode_text(self, tokens: Tensor) -> Tensor: ...


@register()
class UniversalCLIPGuidance(GradientGuidance):
    """g = s * grad_x exp(logit_scale) * <f(D(x0_hat(x_t))), g(caption)>, through denoiser, decoder and CLIP.

    Unlike GLIDE's `clip` (a CLIP trained on noised x_t), the CLIP sees clean images: the decoder's
    image of the denoiser's x0 estimate, so the gradient runs back through the CLIP, the VAE decoder
    and the denoiser (Bansal et al.'s forward universal guidance; diffusers' community CLIP-guided
    Stable Diffusion). The denoiser's forward that predicts is the one differentiated (one network
    pass per evaluation); where the scale is not 0 the decoder and CLIP run forward and all three
    backward once (guide_passes and backward_passes count them). The prediction is the conditional one.
    """

    name = "universal-clip"
    quick_scales = (5.0, 20.0)
    full_scales = (1.0, 5.0, 10.0, 20.0, 50.0)
    needs = frozenset({"decoder_clip"})
    reference = "Bansal et al. 2023, arXiv:2302.07121 (universal guidance, forward guidance with CLIP)"

    def __init__(self, guide: DecoderCLIP, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.guide = guide
        self._graph: tuple[Tensor, Prediction] | None = None  # this evaluation's x_t and differentiable prediction

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        if self.scale_at(step) == 0.0:
            return super().predict(model, x, step, cond)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            pred = model(x_in, step.level, cond.model)
        self._graph = (x_in, pred)
        detached = Prediction(x, pred.level, pred.primary, pred.known[pred.primary].detach(),
                              None if pred.var_values is None else pred.var_values.detach())
        return detached

    def similarity(self, images: Tensor, text_emb: Tensor) -> Tensor:
        image_emb = F.normalize(at_least_fp32(self.guide.encode_image(images)), dim=-1)
        return at_least_fp32(self.guide.logit_scale).exp() * (image_emb * text_emb).sum(-1)

    def gradient(self, x: Tensor, step: StepInfo, cond: Conditions) -> Tensor | None:
        scale = self.scale_at(step)
        if scale == 0.0 or self._graph is None:
            return None
        x_in, pred = self._graph
        self._graph = None
        tokens = cond.require("clip_tokens", self.name)
        with torch.no_grad():
            text_emb = F.normalize(at_least_fp32(self.guide.encode_text(tokens)), dim=-1)
        with torch.enable_grad():
            value = self.similarity(self.guide.decode(pred.x0), text_emb)
            (grad,) = torch.autograd.grad(value.sum(), x_in)
        return scale * grad.to(x.dtype)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        guided = float(self.active_at(sigma))
        return GuidanceCost(network_passes=1, guide_passes=guided, backward_passes=guided)
