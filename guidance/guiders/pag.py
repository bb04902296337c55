"""Perturbed-Attention Guidance, PAG (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
Perturbed-Attention Guidance", arXiv:2403.17377)."""

from __future__ import annotations

from guidance.guiders.base import register
from guidance.guiders.perturbed import PerturbedGuidance
from guidance.internals import Perturbation


@register()
class PerturbedAttentionGuidance(PerturbedGuidance):
    """eps_c + s (eps_c - eps_p), eps_p with identity self-attention maps on chosen layers (+ optional CFG).

    eps = eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_p), eps_p with the self-attention map of the
    chosen layers replaced by the identity (each token's output is its own value).

    Layers index the model's self-attention layers (None: the middle block's, the UNet's bottleneck,
    as the paper's mid-block choice for SD). s = 0 is the conditional model (1 pass with cfg_scale 1).
    """

    name = "pag"
    quick_scales = (1.5, 3.0)
    full_scales = (0.5, 1.0, 2.0, 3.0, 5.0)
    reference = "Ahn et al. 2024, arXiv:2403.17377 (perturbed-attention guidance)"

    def perturbation(self) -> Perturbation:
        return Perturbation("identity-attention", self.layers)
