"""APG-mix: plain CFG on the first, high-noise steps, then adaptive projected guidance (the recipe of
HunyuanImage 2.1 and diffusers' AdaptiveProjectedMixGuidance), switched by noise level."""

from __future__ import annotations

from torch import Tensor

from guidance.guiders.apg import AdaptiveProjectedGuidance
from guidance.guiders.base import GuidanceCost, Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.schedules import PAPER_SIGMA_HI
from guidance.protocols import Conditions, Denoiser


@register()
class APGMix(AdaptiveProjectedGuidance):
    """CFG on the first, high-noise steps (sigma > sigma_switch), then APG, with one momentum buffer.

    CFG with `cfg_scale` (default: s) for sigma > sigma_switch, APG with s (guidance.guiders.apg) at
    and below it. The momentum buffer is updated on the CFG steps too (D = x0_c - x0_u), so APG starts
    with it warm, as diffusers does. sigma_switch = 5.42 (default; the upper end of Kynkäänniemi et
    al.'s interval, above which guidance mostly sets the layout): with the zoo's default schedule,
    the first 1 of 4, 3 of 20 and 6 of 50 steps are CFG. s = 1 with cfg_scale 1 is the conditional model.
    """

    name = "apg-mix"
    quick_scales = (6.0, 10.0)
    full_scales = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0)
    space = "x0"
    reference = ("Sadat et al. 2024, arXiv:2410.02416 (APG); CFG before the switch as in HunyuanImage 2.1 "
                 "(Tencent 2025) / diffusers AdaptiveProjectedMixGuidance")

    def __init__(self, scale: float = 6.0, cfg_scale: float | None = None, sigma_switch: float = PAPER_SIGMA_HI,
                 momentum: float = -0.5, norm_threshold: float = 4.0, eta: float = 0.0) -> None:
        super().__init__(scale, momentum, norm_threshold, eta)
        self.cfg_scale = None if cfg_scale is None else float(cfg_scale)
        self.sigma_switch = float(sigma_switch)

    def in_cfg_phase(self, sigma: float) -> bool:
        return sigma > self.sigma_switch

    def phase_scale(self, scale: float, sigma: float) -> float:
        """The scale that applies at sigma: CFG's before the switch, APG's after it."""
        return (scale if self.cfg_scale is None else self.cfg_scale) if self.in_cfg_phase(sigma) else scale

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        if not self.in_cfg_phase(step.sigma):
            return super().predict(model, x, step, cond)
        scale = self.phase_scale(self.scale_at(step), step.sigma)
        if not self.guided(scale, cond):
            self.note_conditional_only()
            return model(x, step.level, cond.model)
        pred_c, pred_u = self.branches(model, x, step, cond)
        self.update(at_least_fp32(pred_c.x0) - at_least_fp32(pred_u.x0), step.sigma)
        return pred_c.guided_by(pred_u, scale)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        if negative:
            return GuidanceCost(network_passes=2)
        scale = self.scale_for_cost(sigma)
        if sigma is None or scale is None:
            return GuidanceCost(network_passes=2)
        return GuidanceCost(network_passes=2 if self.phase_scale(scale, sigma) != 1.0 else 1)

    def __repr__(self) -> str:
        return (f"APGMix(scale={self.scale}, cfg_scale={self.cfg_scale}, sigma_switch={self.sigma_switch:g}, "
                f"momentum={self.momentum}, norm_threshold={self.norm_threshold}, eta={self.eta})")
