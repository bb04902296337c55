"""Self-Attention Guidance, SAG (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using
Self-Attention Guidance", arXiv:2210.00939), as diffusers' StableDiffusionSAGPipeline computes it."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, register
from guidance.internals import AttentionProbe
from guidance.protocols import Conditions, Denoiser, Perturbable, cond_cat

BLUR_KERNEL = 9  # the pipeline's Gaussian: 9 taps, sigma 1, reflect padding
BLUR_SIGMA = 1.0


def sag_blur(x: Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> Tensor:
    """A separable Gaussian blur of x [B, C, H, W] (kernel taps over linspace(-(k-1)/2, (k-1)/2), reflect)."""
    half = (kernel - 1) * 0.5
    taps = torch.linspace(-half, half, kernel, device=x.device)  # made on the device: no host copy per step
    pdf = torch.exp(-0.5 * (taps / sigma) ** 2)
    k1 = (pdf / pdf.sum()).to(x.dtype)
    weight = (k1[:, None] @ k1[None, :]).expand(x.shape[1], 1, kernel, kernel)
    pad = kernel // 2
    return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), weight, groups=x.shape[1])


def sag_mask(attention: Tensor, size: tuple[int, int], shape: tuple[int, int]) -> Tensor:
    """[B, 1, H, W] mask of the image tokens the self-attention map [B, heads, N, N] attends to more than
    uniformly (head-mean attention received, summed over queries, > 1), nearest-upsampled to the latents."""
    received = attention.mean(1).sum(1) > 1.0
    mask = received.reshape(-1, 1, *size).to(attention.dtype)
    return F.interpolate(mask, shape)


@register()
class SelfAttentionGuidance(Guidance):
    """eps + s (eps_b - eps_deg): eps_deg the model on x_t re-noised from x0 blurred where self-attention looks.

    eps_b is the branch SAG reads (the unconditional one with CFG, else the conditional): its x0 is blurred
    (9 taps, sigma 1) inside the mask of the middle block's self-attention map (tokens attended more than
    uniformly), re-noised with eps_b to the same level, and run through the model on the same condition.
    eps = CFG's (or the conditional) prediction + s (eps_b - eps_deg), in the model's own space, as diffusers'
    StableDiffusionSAGPipeline (`sag_scale`, `guidance_scale` = `cfg_scale`). s = 0 is no SAG pass.
    """

    name = "sag"
    identity_scale = 0.0
    reference = "Hong et al. 2023, arXiv:2210.00939 (self-attention guidance); diffusers StableDiffusionSAGPipeline"
    quick_scales: ClassVar[tuple[float, ...]] = (0.5, 1.0)
    full_scales: ClassVar[tuple[float, ...]] = (0.25, 0.5, 0.75, 1.0, 1.5)
    needs: ClassVar[frozenset[str]] = frozenset({"internals"})

    def __init__(self, scale: float = 0.75, cfg_scale: float = 1.0, layers: tuple[int, ...] | None = None) -> None:
        super().__init__(scale)
        self.cfg_scale = float(cfg_scale)
        self.layers = None if layers is None else tuple(int(i) for i in layers)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        cfg = self.cfg_scale != 1.0 or cond.negative is not None
        parts = [cond.model]
        if cfg:
            parts.append(cond.negative if cond.negative is not None else model.null_cond(cond.model))
        if scale == 0.0:
            preds = model(torch.cat([x] * len(parts)), step.level, cond_cat(parts)).chunk(len(parts))
            return preds[0].guided_by(preds[1], self.cfg_scale) if cfg else preds[0]
        if not isinstance(model, Perturbable):
            raise ValueError(f"guidance {self.name!r} reads the model's self-attention, which {type(model).__name__} "
                             f"does not expose; use a network model (NetworkDenoiser)")
        batch = x.shape[0]
        probe = AttentionProbe(self.layers)
        with model.perturbed(probe, slice((len(parts) - 1) * batch, len(parts) * batch)):
            preds = model(torch.cat([x] * len(parts)), step.level, cond_cat(parts)).chunk(len(parts))
        base = preds[-1]
        guided = preds[0].guided_by(base, self.cfg_scale) if cfg else preds[0]
        mask = sag_mask(probe.maps[0], probe.sizes[0], tuple(x.shape[-2:]))
        x0 = base.x0
        degraded = sag_blur(x0) * mask + x0 * (1 - mask)
        level = step.level
        pred_deg = model((level.alpha * degraded + level.s * base.eps).to(x.dtype), level, parts[-1])
        space = guided.primary
        return guided.with_value(space, guided.get(space) + scale * (base.get(space) - pred_deg.get(space)))

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        cfg = self.cfg_scale != 1.0 or negative
        return GuidanceCost(network_passes=1 + int(cfg) + int(self.active_at(sigma)))

    def __repr__(self) -> str:
        return f"SelfAttentionGuidance(scale={self.scale}, cfg_scale={self.cfg_scale}, layers={self.layers})"
