"""A denoiser's output at one noise level, in the space it was made in, converted on demand.

Models predict eps (DDPM, SD 1.x), v (SD 2.x, Salimans & Ho), x0, or a rectified-flow velocity
u = eps - x0 (SD3, FLUX). Guidance methods combine in the space they are defined in (CFG in eps, APG
and CFG-rescale in x0, CFG-Zero* in flow velocity) and samplers need x0 and eps. A `Prediction`
holds whichever representations are known and converts exactly between them at its state x and
level, so a method or sampler that works in the model's own space sees the network's numbers
untouched (no round trip through another space).

With x = alpha x0 + s eps (guidance.process): x0 = x / alpha - sigma eps, eps = (x / alpha - x0) / sigma,
v = alpha eps - s x0, u = eps - x0, and back from v and u by solving the same two equations.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from guidance.process import NoiseLevel

Space = Literal["eps", "x0", "v", "flow"]
SPACES: tuple[str, ...] = ("eps", "x0", "v", "flow")


def at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half-precision values before combining them (norms, standard deviations, log-softmax)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Prediction:
    """Known representations of one prediction at state `x` and `level`, plus optional extras:
    `var_values` (learned-range variance, from the conditional pass) and `renoise` (the eps a sampler
    should renoise with instead of the guided one: CFG++'s unconditional eps)."""

    def __init__(self, x: Tensor, level: NoiseLevel, space: Space, value: Tensor, var_values: Tensor | None = None,
                 renoise: Tensor | None = None) -> None:
        if space not in SPACES:
            raise ValueError(f"unknown prediction space {space!r}; valid: {', '.join(SPACES)}")
        self.x, self.level = x, level
        self.known: dict[str, Tensor] = {space: value}
        self.primary: str = space
        self.var_values, self.renoise = var_values, renoise

    # conversions -------------------------------------------------------------------------------
    def get(self, space: Space) -> Tensor:
        if space not in self.known:
            self.known[space] = self._convert(space)
        return self.known[space]

    @property
    def eps(self) -> Tensor:
        return self.get("eps")

    @property
    def x0(self) -> Tensor:
        return self.get("x0")

    def _convert(self, space: str) -> Tensor:
        if space not in SPACES:
            raise ValueError(f"unknown prediction space {space!r}; valid: {', '.join(SPACES)}")
        lv, x = self.level, self.x
        if space in ("v", "flow"):
            eps, x0 = self.eps, self.x0
            return lv.alpha * eps - lv.s * x0 if space == "v" else eps - x0
        source = "eps" if "eps" in self.known else "x0" if "x0" in self.known else self.primary
        value = self.known[source]
        if source == "eps":  # space == "x0"
            if lv.alpha == 0:
                raise ValueError("x0 is undefined from an eps prediction at zero SNR (sigma = inf); "
                                 "such a model must predict v, x0 or a flow velocity")
            return x * lv.recip_alpha - lv.sigma * value
        if source == "x0":  # space == "eps"
            if lv.s == 0:
                return torch.zeros_like(value)  # sigma = 0: eps is arbitrary, and every sampler multiplies it by 0
            if lv.alpha == 0:
                return x / lv.s
            return (x * lv.recip_alpha - value) / lv.sigma
        if source == "v":  # x0 = (alpha x - s v) / n2, eps = (s x + alpha v) / n2, n2 = alpha^2 + s^2
            n2 = lv.alpha**2 + lv.s**2
            x0 = (lv.alpha * x - lv.s * value) / n2
            eps = (lv.s * x + lv.alpha * value) / n2
        else:  # flow velocity u = eps - x0: x0 = (x - s u) / (alpha + s), eps = (x + alpha u) / (alpha + s)
            total = lv.alpha + lv.s
            x0 = (x - lv.s * value) / total
            eps = (x + lv.alpha * value) / total
        self.known.setdefault("x0", x0)
        self.known.setdefault("eps", eps)
        return self.known[space]

    # building new predictions --------------------------------------------------------------------
    def with_value(self, space: Space, value: Tensor, renoise: Tensor | None = None) -> "Prediction":
        """A new prediction at the same state and level (the learned variance carried over)."""
        return Prediction(self.x, self.level, space, value, self.var_values, renoise)

    def guided_by(self, base: "Prediction", scale: float, renoise: Tensor | None = None) -> "Prediction":
        """base + scale * (self - base): the mix of CFG and autoguidance, in this prediction's own space.

        The mix is affine with weights summing to one, so every space gives the same result; the model's
        own is defined at sigma = inf, where eps carries no x0 for flow and v models."""
        space = self.primary
        return self.with_value(space, base.get(space) + scale * (self.get(space) - base.get(space)), renoise)

    def with_x0(self, x0_new: Tensor) -> "Prediction":
        """This prediction with its x0 edited (thresholded, rescaled, projected). Where eps is known it
        is moved by the edit alone, eps - (x0_new - x0) / sigma, so the small sigma of the last steps
        divides only the edit: an unchanged x0 gives back eps exactly."""
        out = Prediction(self.x, self.level, "x0", x0_new, self.var_values, self.renoise)
        if "eps" in self.known and self.level.sigma > 0 and math.isfinite(self.level.sigma):
            out.known["eps"] = self.eps - (x0_new - self.x0) / self.level.sigma
        return out

    def with_score_correction(self, grad: Tensor) -> "Prediction":
        """The prediction whose score is this one's plus `grad` (a guiding model's gradient of a
        log-density w.r.t. x): eps - s * grad (Dhariwal & Nichol's DDIM rule, valid for any sampler).
        At zero SNR (alpha = 0) x holds no information about x0 and the prediction is left as it is."""
        if self.level.alpha == 0:
            return self
        return Prediction(self.x, self.level, "eps", self.eps - self.level.s * grad, self.var_values, self.renoise)

    def clipped(self, lo: float = -1.0, hi: float = 1.0) -> "Prediction":
        """x0 clamped to the data range and eps recomputed from it (guided-diffusion's clip_denoised)."""
        return Prediction(self.x, self.level, "x0", self.x0.clamp(lo, hi), self.var_values, self.renoise)

    def renoise_eps(self) -> Tensor:
        """The eps a sampler renoises with: the prediction's own, or CFG++'s unconditional one."""
        return self.eps if self.renoise is None else self.renoise

    def chunk(self, parts: int) -> list["Prediction"]:
        """Split a batched prediction (CFG's one forward over several conditions) along the batch."""
        xs = self.x.chunk(parts)
        pieces = {k: v.chunk(parts) for k, v in self.known.items()}
        var = None if self.var_values is None else self.var_values.chunk(parts)
        out = []
        for i in range(parts):
            pred = Prediction(xs[i], self.level, self.primary, pieces[self.primary][i], None if var is None else var[i])
            pred.known = {k: v[i] for k, v in pieces.items()}
            out.append(pred)
        return out

    def to(self, dtype: torch.dtype) -> "Prediction":
        """The same prediction with every tensor in `dtype` (the sampler's state dtype)."""
        out = Prediction(self.x, self.level, self.primary, self.known[self.primary].to(dtype),
                         None if self.var_values is None else self.var_values.to(dtype),
                         None if self.renoise is None else self.renoise.to(dtype))
        out.known = {k: v.to(dtype) for k, v in self.known.items()}
        return out
