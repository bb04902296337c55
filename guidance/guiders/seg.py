"""Smoothed Energy Guidance, SEG (Hong 2024, "Smoothed Energy Guidance: Guiding Diffusion Models with
Reduced Energy Curvature of Attention", arXiv:2408.00760)."""

from __future__ import annotations

import math

from guidance.guiders.base import register
from guidance.guiders.perturbed import PerturbedGuidance
from guidance.internals import Perturbation


@register()
class SmoothedEnergyGuidance(PerturbedGuidance):
    """As PAG, eps_p with the chosen layers' queries blurred by a 2D Gaussian (inf: the mean query).

    eps = eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_seg), eps_seg with the queries of the chosen
    self-attention layers blurred by a 2D Gaussian of `blur_sigma` tokens over the image grid.

    blur_sigma = inf (default) is the infinite-blur limit: every query is the mean query, so every
    token attends with the same weights. A finite sigma smooths the attention energy less.
    """

    name = "seg"
    quick_scales = (1.5, 3.0)
    full_scales = (0.5, 1.0, 2.0, 3.0, 5.0)
    reference = "Hong 2024, arXiv:2408.00760 (smoothed energy guidance)"

    def __init__(self, scale: float = 3.0, cfg_scale: float = 1.0, layers: tuple[int, ...] | None = None,
                 blur_sigma: float = math.inf) -> None:
        super().__init__(scale, cfg_scale, layers)
        self.blur_sigma = float(blur_sigma)
        self.perturbation()  # checks blur_sigma before any sampling

    def perturbation(self) -> Perturbation:
        return Perturbation("smoothed-query", self.layers, self.blur_sigma)
