"""Classifier-free guidance (Ho & Salimans, 2021; GLIDE, Nichol et al., 2022)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo, at_least_fp32, register
from guidance.protocols import Conditions, Denoiser, cond_cat


@register()
class ClassifierFreeGuidance(Guidance):
    """eps = eps_u + s * (eps_c - eps_u), GLIDE/diffusers convention (Ho & Salimans' w = s - 1).

    s = 1 is the conditional model and skips the unconditional pass; s = 0 is unconditional. Both
    branches run in one batched forward. The mix is affine with weights summing to one, so it is the
    same in eps, x0, v or flow space; it is taken in the model's own (eps is undefined at zero SNR for a
    flow or v model, where x0 is not). A learned variance comes from the
    conditional pass. `conditions.negative`, when set, replaces the unconditional branch.
    """

    name = "cfg"
    quick_scales = (1.0, 3.0, 6.0)
    full_scales = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    identity_scale = 1.0
    reference = "Ho & Salimans 2021, arXiv:2207.12598; Nichol et al. 2022 (GLIDE), arXiv:2112.10741"

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__(scale)

    def branches(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> tuple[Prediction, Prediction]:
        """Conditional and unconditional predictions from one batched forward pass."""
        uncond = cond.negative if cond.negative is not None else model.null_cond(cond.model)
        pred_c, pred_u = model(torch.cat([x, x]), step.level, cond_cat([cond.model, uncond])).chunk(2)
        self.note_branches(pred_c, pred_u)
        return pred_c, pred_u

    def guided(self, scale: float, cond: Conditions) -> bool:
        """Whether this evaluation needs the unconditional branch (not at s = 1 without a negative prompt)."""
        return not (scale == 1.0 and cond.negative is None)

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        if not self.guided(scale, cond):
            self.note_conditional_only()
            return super().predict(model, x, step, cond)
        pred_c, pred_u = self.branches(model, x, step, cond)
        return self.combine(pred_c, pred_u, scale, step)

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        """The guided prediction from both branches at this evaluation: what a CFG variant changes."""
        return pred_c.guided_by(pred_u, scale)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2 if negative or self.active_at(sigma) else 1)


class PerSampleCFG(ClassifierFreeGuidance):
    """CFG at each sample's own scale, looked up by the sample's global index: plain CFG calibrated sample by
    sample to another method's effective scale (GA-Eval's matched-CFG rerun). Not registered (no one asks for
    it by name); `for_samples` gives the guidance of one batch. `scale` is the mean scale (costs, messages)."""

    def __init__(self, sample_scales: Sequence[float] | Tensor, rows: Tensor | None = None) -> None:
        values = torch.as_tensor(sample_scales, dtype=torch.float64)
        if values.numel() == 0 or not torch.isfinite(values).all():
            raise ValueError("per-sample CFG scales must be finite, one per sample")
        super().__init__(float(values.mean()))
        self.sample_scales = values
        self.rows = rows

    def for_samples(self, indices: Sequence[int]) -> "PerSampleCFG":
        return PerSampleCFG(self.sample_scales, self.sample_scales[list(indices)])

    def guided(self, scale: float, cond: Conditions) -> bool:
        return True  # some rows may sit at 1, others not: every evaluation runs both branches

    def combine(self, pred_c: Prediction, pred_u: Prediction, scale: float, step: StepInfo) -> Prediction:
        if self.rows is None or len(self.rows) != pred_c.x.shape[0]:
            raise ValueError("PerSampleCFG needs the batch's scales: sample with guidance.for_samples(indices)")
        value = pred_c.known[pred_c.primary]
        rows = self.rows.to(device=value.device, dtype=at_least_fp32(value).dtype).view(-1, *[1] * (value.ndim - 1))
        return pred_c.guided_by(pred_u, rows)  # type: ignore[arg-type]

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        return GuidanceCost(network_passes=2)
