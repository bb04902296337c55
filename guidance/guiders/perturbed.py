"""The shared mix of guidance by a perturbed conditional pass (PAG, SEG, SLG): CFG plus a pull away
from the model's own prediction with chosen attention layers or blocks damaged (guidance.internals)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from guidance.guiders.base import Guidance, GuidanceCost, Prediction, StepInfo
from guidance.internals import Perturbation
from guidance.protocols import Conditions, Denoiser, Perturbable, cond_cat


def perturbed_mix(pred_c: Prediction, pred_u: Prediction | None, pred_p: Prediction | None, cfg_scale: float,
                  scale: float) -> Prediction:
    """eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_p), in the model's own space (weights sum to one,
    so every space gives the same step); a missing branch contributes nothing."""
    space = pred_c.primary
    c = pred_c.get(space)
    value = c if pred_u is None else pred_u.get(space) + cfg_scale * (c - pred_u.get(space))
    if pred_p is not None:
        value = value + scale * (c - pred_p.get(space))
    return pred_c.with_value(space, value)


class PerturbedGuidance(Guidance):
    """eps = eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_p), eps_p the conditional prediction of the
    model with `perturbation()` applied. `scale` is s (0: no perturbed pass); `cfg_scale` is CFG's
    (1, the default: no unconditional pass, the method alone, as its paper's unguided results).

    The conditional, unconditional and perturbed rows run in one batched forward; the perturbation
    applies to the last B rows only (guidance.internals). The model must be `Perturbable`.
    """

    identity_scale = 0.0  # the scales are the perturbed pass's s, with CFG off (cfg_scale 1)
    needs = frozenset({"internals"})

    def __init__(self, scale: float = 3.0, cfg_scale: float = 1.0, layers: tuple[int, ...] | None = None) -> None:
        super().__init__(scale)
        self.cfg_scale = float(cfg_scale)
        self.layers = None if layers is None else tuple(int(i) for i in layers)

    def perturbation(self) -> Perturbation:
        raise NotImplementedError

    def predict(self, model: Denoiser, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
        scale = self.scale_at(step)
        cfg = self.cfg_scale != 1.0 or cond.negative is not None
        parts = [cond.model]
        if cfg:
            parts.append(cond.negative if cond.negative is not None else model.null_cond(cond.model))
        if scale != 0.0:
            if not isinstance(model, Perturbable):
                raise ValueError(f"guidance {self.name!r} perturbs the model's attention layers, which "
                                 f"{type(model).__name__} does not expose; use a network model (NetworkDenoiser)")
            parts.append(cond.model)
        if len(parts) == 1:
            self.note_conditional_only()
            return model(x, step.level, cond.model)
        batch = x.shape[0]
        rows = slice((len(parts) - 1) * batch, len(parts) * batch)
        context = model.perturbed(self.perturbation(), rows) if scale != 0.0 else nullcontext()  # type: ignore[union-attr]
        with context:
            preds = model(torch.cat([x] * len(parts)), step.level, cond_cat(parts)).chunk(len(parts))
        # measured from eps_u where CFG runs; PAG/SEG alone have none, so from the perturbed branch they guide
        # away from (eps_c + s (eps_c - eps_p) is CFG with eps_p as its unconditional: 1 + s)
        self.note_branches(preds[0], preds[1] if cfg else preds[-1])
        return perturbed_mix(preds[0], preds[1] if cfg else None, preds[-1] if scale != 0.0 else None,
                             self.cfg_scale, scale)

    def cost(self, sigma: float | None = None, negative: bool = False) -> GuidanceCost:
        cfg = self.cfg_scale != 1.0 or negative
        return GuidanceCost(network_passes=1 + int(cfg) + int(self.active_at(sigma)))

    def __repr__(self) -> str:
        scale = "schedule" if callable(self.scale) else self.scale
        return f"{type(self).__name__}(scale={scale}, cfg_scale={self.cfg_scale}, layers={self.layers})"
