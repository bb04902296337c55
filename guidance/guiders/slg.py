"""Skip-Layer Guidance, SLG (Stability AI's Stable Diffusion 3.5 reference sampler; the spatiotemporal
skip guidance of Hyung et al. 2024, arXiv:2411.18664)."""

from __future__ import annotations

from guidance.guiders.base import register
from guidance.guiders.perturbed import PerturbedGuidance
from guidance.guiders.schedules import interval
from guidance.internals import Perturbation

# The zoo's sigmas at SD 3.5's steps 1%..20% (its default skip_layer_start / end) with 20 to 50 steps.
SLG_SIGMA_LO = 3.0
SLG_SIGMA_HI = 30.0


@register()
class SkipLayerGuidance(PerturbedGuidance):
    """As PAG, eps_p with chosen layers skipped, only for sigma in (3, 30] by default.

    eps = eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_skip) for sigma in (sigma_lo, sigma_hi], the
    model alone elsewhere; eps_skip with the chosen layers skipped (the zoo: the attention block's
    residual branch dropped; diffusers: the whole transformer block made the identity).

    The interval is by noise level, so it means the same for every sampler and step count; outside
    it the perturbed pass does not run and `cost(sigma)` says so.
    """

    name = "slg"
    quick_scales = (1.5, 3.0)
    full_scales = (0.5, 1.0, 2.0, 3.0, 5.0)
    reference = "Stable Diffusion 3.5 skip-layer guidance; Hyung et al. 2024, arXiv:2411.18664 (STG)"

    def __init__(self, scale: float = 3.0, cfg_scale: float = 1.0, layers: tuple[int, ...] | None = None,
                 sigma_lo: float = SLG_SIGMA_LO, sigma_hi: float = SLG_SIGMA_HI) -> None:
        if callable(scale):
            raise TypeError("SkipLayerGuidance takes a number (its scale inside the sigma interval)")
        super().__init__(interval(scale, sigma_lo, sigma_hi, identity=0.0), cfg_scale, layers)

    def perturbation(self) -> Perturbation:
        return Perturbation("skip", self.layers)

    def __repr__(self) -> str:
        s = self.scale
        return (f"SkipLayerGuidance(scale={s.scale}, sigma in ({s.sigma_lo:g}, {s.sigma_hi:g}], "
                f"cfg_scale={self.cfg_scale}, layers={self.layers})")
