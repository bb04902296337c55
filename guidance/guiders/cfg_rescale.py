"""CFG rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", sec. 3.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidance.guiders.base import Prediction, StepInfo, at_least_fp32, register
from guidance.guiders.cfg import ClassifierFreeGuidance


def rescale(x_cfg: Tensor, x_pos: Tensor, phi: float) -> Tensor:
    """phi * x_cfg * std(x_pos) / std(x_cfg) + (1 - phi) * x_cfg, std per sample over all other dims.

    Where std(x_cfg) is 0 (a constant prediction) the ratio is taken as 1: no rescaling, no NaN.
    """
    dims = list(range(1, x_cfg.ndim))
    cfg32, pos32 = at_least_fp32(x_cfg), at_least_fp32(x_pos)
    std_pos = pos32.std(dim=dims, keepdim=True)
    std_cfg = cfg32.std(dim=dims, keepdim=True)
    ratio = torch.where(std_cfg > 0, std_pos / std_cfg.clamp_min(torch.finfo(std_cfg.dtype).tiny),
                        torch.ones_like(std_cfg))
    return (cfg32 * (phi * ratio + (1.0 - phi))).to(x_cfg.dtype)


RESCALE_SPACES = {"x0": "the x0 prediction (Lin et al.'s image-space argument; the default)",
                  "model": "the model's own output (eps, v or flow velocity), as diffusers' guidance_rescale"}


@register()
class RescaledCFG(ClassifierFreeGuidance):
    """CFG whose prediction is rescaled towards the conditional one's std (phi = 0.7 by default).

    x0_cfg = x0_u + s (x0_c - x0_u); x0 = phi * x0_cfg * std(x0_c) / std(x0_cfg) + (1 - phi) * x0_cfg,
    then eps from x0. The paper states the rule for the model's x prediction (its over-exposure
    argument is about the image), so `rescale_space="x0"` (the default) applies it to x0;
    `rescale_space="model"` applies it to whatever the model outputs (eps for Stable Diffusion 1.x, v
    for 2.x), which is diffusers' `guidance_rescale` (rescale_noise_cfg). At s = 1 the rescale is the
    identity and the unconditional pass is skipped.
    """

    name = "cfg-rescale"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    space = "x0"
    numerics_version = 2  # x0 no longer round-trips through eps before the step (changes fp32 samples ~1e-4)
    reference = "Lin et al. 2023, arXiv:2305.08891, section 3.4 (rescale classifier-free guidance)"

    def __init__(self, scale: float = 3.0, phi: float = 0.7, rescale_space: str = "x0") -> None:
        super().__init__(scale)
        if not 0.0 <= float(phi) <= 1.0:
            raise ValueError(f"guidance_rescale phi must be in [0, 1], got {phi}")
        if rescale_space not in RESCALE_SPACES:
            raise ValueError(f"unknown rescale space {rescale_space!r}; valid: {', '.join(RESCALE_SPACES)}")
        self.phi, self.rescale_space = float(phi), rescale_space

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        pred_cfg = pred_c.guided_by(pred_u, scale)
        if self.rescale_space == "model":
            space = pred_cfg.primary
            return pred_cfg.with_value(space, rescale(pred_cfg.get(space), pred_c.get(space), self.phi), pred_cfg.renoise)
        return pred_cfg.with_x0(rescale(pred_cfg.x0, pred_c.x0, self.phi))

    def __repr__(self) -> str:
        return f"RescaledCFG(scale={self.scale}, phi={self.phi}, rescale_space={self.rescale_space!r})"
