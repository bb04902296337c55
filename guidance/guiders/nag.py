"""Normalized Attention Guidance, NAG (Chen et al. 2025, "Normalized Attention Guidance: Universal Negative
Guidance for Diffusion Models", arXiv:2505.21179)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, register
from guidance.internals import NormalizedAttention
from guidance.protocols import Conditions, Denoiser, Perturbable, cond_cat

# the reference code's attention-processor defaults (ComfyUI's core node: tau 1.5, alpha 0.5)
NAG_TAU = 2.5
NAG_ALPHA = 0.5


@register()
class NormalizedAttentionGuidance(Guidance):
    """Extrapolates attention features away from the negative prompt's, L1-normalised and blended (paper's phi).

    In every attention layer that attends to the text, the positive rows' output becomes
    alpha Z^ + (1 - alpha) Z+, with Z~ = Z+ + s (Z+ - Z-), Z^ = Z~ min(r, tau) / r, r = |Z~|_1 / |Z+|_1 per token
    (guidance.internals.NormalizedAttention). Z- is the same layer's output on the negative prompt (the null
    condition, i.e. the empty prompt, without one), whose rows run in the same batched forward.

    `scale` is the paper's phi (0: the conditional model, one pass); the reference code's and ComfyUI's
    `nag_scale` is phi + 1. `cfg_scale` (1: off, the paper's setting for distilled models) adds CFG against the
    negative branch's prediction: eps = eps_- + s_cfg (eps_nag - eps_-), at no further pass.
    """

    name = "nag"
    identity_scale = 0.0
    reference = "Chen et al. 2025, arXiv:2505.21179 (normalized attention guidance)"
    quick_scales: ClassVar[tuple[float, ...]] = (2.0, 4.0)
    full_scales: ClassVar[tuple[float, ...]] = (1.0, 2.0, 3.0, 4.0, 6.0)
    needs: ClassVar[frozenset[str]] = frozenset({"internals", "text_attention"})

    def __init__(self, scale: float = 4.0, tau: float = NAG_TAU, alpha: float = NAG_ALPHA, cfg_scale: float = 1.0) -> None:
        if callable(scale):
            raise TypeError("NormalizedAttentionGuidance takes a number (phi)")
        super().__init__(scale)
        NormalizedAttention(0.0, tau, alpha, slice(0))  # checks tau and alpha up front
        self.tau, self.alpha, self.cfg_scale = float(tau), float(alpha), float(cfg_scale)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        cfg = self.cfg_scale != 1.0
        if scale == 0.0 and not cfg:
            return model(x, step.level, cond.model)
        if not isinstance(model, Perturbable):
            raise ValueError(f"guidance {self.name!r} works inside the model's attention layers, which "
                             f"{type(model).__name__} does not expose; use a network model (NetworkDenoiser)")
        negative = cond.negative if cond.negative is not None else model.null_cond(cond.model)
        batch = x.shape[0]
        spec = NormalizedAttention(scale, self.tau, self.alpha, slice(batch, 2 * batch))
        with model.perturbed(spec, slice(0, batch)):
            pred_nag, pred_neg = model(torch.cat([x, x]), step.level, cond_cat([cond.model, negative])).chunk(2)
        return pred_nag.guided_by(pred_neg, self.cfg_scale) if cfg else pred_nag

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        """The negative branch is a whole second pass (its rows run through every layer to give Z- at each)."""
        return GuidanceCost(network_passes=2 if self.cfg_scale != 1.0 or self.active_at(sigma) else 1)

    def __repr__(self) -> str:
        return (f"NormalizedAttentionGuidance(scale={self.scale}, tau={self.tau}, alpha={self.alpha}, "
                f"cfg_scale={self.cfg_scale})")
