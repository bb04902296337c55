"""A method's effective CFG scale, step by step (GA-Eval: "Guidance Matters", Xie et al., ICLR 2026,
arXiv:2602.22570; code Maxwells-Demons/Guidance-Matters).

At every model evaluation, with eps_c the conditional prediction, eps_r the reference branch (the
unconditional or negative prediction) and eps the method's guided prediction, all in eps space:

    d = eps_c - eps_r,   v = eps - eps_r,   eq_cfg = ||proj_d v|| / ||d|| = |<v, d>| / ||d||^2  (per sample)

so CFG at scale s gives exactly |s|, and a method that is not a multiple of d along its whole update
(APG, CFG-rescale, PAG on top of CFG) is credited only with its component along d, as GA-Eval's
pipelines do (their `vp`). The trajectory mean over evaluations is the method's effective scale.

Nothing here runs the network: guiders hand the branches they computed anyway to the log
(`Guidance.note_branches`), and the sampler's `Denoise` closes each evaluation with the guided
prediction. Evaluations without a reference branch are recorded as follows: the conditional
prediction alone (CFG at s = 1, PAG at s = 0) is scale 1 by definition (eps = eps_c, so v = d);
an evaluation with no conditional pair at all (CFG-Zero*'s zero-init steps, gradient guidance) is NaN,
left out of the mean as GA-Eval leaves out its NaN steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from guidance.prediction import Prediction, at_least_fp32

# its name in a run's files: the per-sample array [N, evaluations] stored beside the samples, and per_sample.csv's
# column of each sample's trajectory mean
EFFECTIVE_SCALE = "effective_scale"


def eps_of(pred: Prediction) -> Tensor:
    """The prediction's eps without caching it on `pred` (a cached eps would change which space later
    conversions start from, and so the samples' last bits)."""
    if "eps" in pred.known:
        return pred.known["eps"]
    return Prediction(pred.x, pred.level, pred.primary, pred.known[pred.primary]).eps  # type: ignore[arg-type]


def effective_scale(guided: Tensor, cond: Tensor, reference: Tensor) -> Tensor:
    """|<guided - reference, cond - reference>| / ||cond - reference||^2 per sample [B] (NaN where cond = reference)."""
    g, c, r = at_least_fp32(guided), at_least_fp32(cond), at_least_fp32(reference)
    dims = list(range(1, c.ndim))
    d = c - r
    dd = (d * d).sum(dim=dims)
    vd = ((g - r) * d).sum(dim=dims)
    return torch.where(dd > 0, vd.abs() / dd.clamp_min(torch.finfo(dd.dtype).tiny), torch.full_like(dd, math.nan))


class EffectiveScaleLog:
    """The effective scale of each evaluation of one batch's trajectory, kept on the device (no host sync
    per step): a guider notes its branches, `close` computes the evaluation's [B] values."""

    def __init__(self) -> None:
        self.values: list[Tensor] = []
        self._branches: tuple[Prediction, Prediction] | None = None
        self._conditional_only = False

    def branches(self, cond: Prediction, reference: Prediction) -> None:
        """This evaluation's conditional prediction and the one guidance is measured from (eps_u, or the
        negative prompt's; for a method without one, the branch it guides away from)."""
        self._branches, self._conditional_only = (cond, reference), False

    def conditional_only(self) -> None:
        """This evaluation returned the conditional prediction alone: scale 1 by definition."""
        self._branches, self._conditional_only = None, True

    def close(self, guided: Prediction, batch: int) -> None:
        """Record the evaluation whose guided prediction is `guided` (NaN when nothing was noted)."""
        if self._branches is not None:
            cond, reference = self._branches
            value = effective_scale(eps_of(guided), eps_of(cond), eps_of(reference))
        else:
            device = guided.known[guided.primary].device
            value = torch.full((batch,), 1.0 if self._conditional_only else math.nan, dtype=torch.float64, device=device)
        self.values.append(value.detach().double())
        self._branches, self._conditional_only = None, False

    def per_sample(self, batch: int) -> Tensor | None:
        """[batch, evaluations] float64 on the CPU, or None when no evaluation was recorded (or one of
        another batch size: a task that sampled something else with this guidance)."""
        if not self.values or any(v.shape != (batch,) for v in self.values):
            return None
        return torch.stack(self.values, dim=1).cpu()


def trajectory_mean(per_step: Tensor) -> Tensor:
    """Mean over evaluations, NaN steps left out ([B]; NaN where every step is NaN)."""
    finite = torch.isfinite(per_step)
    count = finite.sum(dim=-1)
    total = torch.where(finite, per_step, torch.zeros_like(per_step)).sum(dim=-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))
