"""Guidance scales as functions of the noise level sigma, and CFG limited to an interval of sigma.

A schedule is a callable sigma -> scale (sigma = sqrt((1 - abar) / abar), the VE / EDM noise level
of the step), so it means the same thing whatever the number of sampling steps. Any `Guidance`
accepts one as its `scale`.

Guidance interval (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves
sample and distribution quality in diffusion models", arXiv:2404.07724): guide only for sigma in
(sigma_lo, sigma_hi] and use the unguided model elsewhere. Outside the interval the schedule returns
exactly the method's identity scale, so CFG runs one network pass there and `cost(sigma)` says so.

Increasing schedule (Wang et al. 2024, "Analysis of Classifier-Free Guidance Weight Schedulers",
arXiv:2404.13040, whose linearly increasing scheduler did best): the scale grows as the noise falls,
here linear in log sigma from 1 at sigma_hi to 1 + 2 (s - 1) at sigma_lo, so its mean over a
log-uniform trajectory between them is s. Early guidance (arXiv:2506.08351): guide only on the
first, high-noise steps (sigma > sigma_stop), the conditional model (one pass) after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidance.guiders.base import register
from guidance.guiders.cfg import ClassifierFreeGuidance

# The paper's interval for EDM2-S on ImageNet-512 (sigma in the EDM sense, data scaled to [-1, 1]).
PAPER_SIGMA_LO = 0.28
PAPER_SIGMA_HI = 5.42
# EDM's sigma range (Karras et al. 2022), the span of the increasing schedule
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0
# early guidance stops where the signal starts to dominate (SNR = 1 / sigma^2 = 1)
EARLY_SIGMA_STOP = 1.0


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Constant:
    """scale(sigma) = s at every noise level."""

    scale: float

    def __call__(self, sigma: float) -> float:
        return self.scale


@dataclass(frozen=True)
class Interval:
    """scale(sigma) = s for sigma in (sigma_lo, sigma_hi], else exactly `identity` (no guidance)."""

    scale: float
    sigma_lo: float
    sigma_hi: float
    identity: float = 1.0

    def __call__(self, sigma: float) -> float:
        return self.scale if self.sigma_lo < sigma <= self.sigma_hi else self.identity


@dataclass(frozen=True)
class LinearInLogSigma:
    """Linear in log sigma from scale_hi at sigma_hi to scale_lo at sigma_lo, constant beyond them."""

    scale_lo: float
    scale_hi: float
    sigma_lo: float
    sigma_hi: float

    def __call__(self, sigma: float) -> float:
        if sigma <= self.sigma_lo:
            return self.scale_lo
        if sigma >= self.sigma_hi:
            return self.scale_hi
        u = (math.log(sigma) - math.log(self.sigma_lo)) / (math.log(self.sigma_hi) - math.log(self.sigma_lo))
        return self.scale_lo + u * (self.scale_hi - self.scale_lo)


@dataclass(frozen=True)
class Above:
    """scale(sigma) = s for sigma > sigma_stop (the first, high-noise steps), else exactly `identity`."""

    scale: float
    sigma_stop: float
    identity: float = 1.0

    def __call__(self, sigma: float) -> float:
        return self.scale if sigma > self.sigma_stop else self.identity


def constant(s: float) -> Constant:
    return Constant(_finite(s, "scale"))


def interval(s: float, sigma_lo: float = PAPER_SIGMA_LO, sigma_hi: float = PAPER_SIGMA_HI,
             identity: float = 1.0) -> Interval:
    """s inside (sigma_lo, sigma_hi], `identity` (1.0 for CFG-like methods) outside."""
    lo, hi = _finite(sigma_lo, "sigma_lo"), _finite(sigma_hi, "sigma_hi")
    if not 0.0 <= lo < hi:
        raise ValueError(f"guidance interval needs 0 <= sigma_lo < sigma_hi, got ({lo}, {hi}]")
    return Interval(_finite(s, "scale"), lo, hi, _finite(identity, "identity scale"))


def linear_in_log_sigma(scale_lo: float, scale_hi: float, sigma_lo: float, sigma_hi: float) -> LinearInLogSigma:
    lo, hi = _finite(sigma_lo, "sigma_lo"), _finite(sigma_hi, "sigma_hi")
    if not 0.0 < lo < hi:
        raise ValueError(f"linear_in_log_sigma needs 0 < sigma_lo < sigma_hi, got {lo}, {hi}")
    return LinearInLogSigma(_finite(scale_lo, "scale_lo"), _finite(scale_hi, "scale_hi"), lo, hi)


def increasing(s: float, sigma_lo: float = EDM_SIGMA_MIN, sigma_hi: float = EDM_SIGMA_MAX,
               identity: float = 1.0) -> LinearInLogSigma:
    """Monotonically increasing as sigma falls: `identity` at sigma >= sigma_hi, identity + 2 (s - identity)
    at sigma <= sigma_lo, linear in log sigma between (mean s over a log-uniform trajectory)."""
    s = _finite(s, "scale")
    return linear_in_log_sigma(identity + 2.0 * (s - identity), identity, sigma_lo, sigma_hi)


def first_steps(s: float, sigma_stop: float = EARLY_SIGMA_STOP, identity: float = 1.0) -> Above:
    """s while sigma > sigma_stop (the first steps), exactly `identity` from there on."""
    stop = _finite(sigma_stop, "sigma_stop")
    if stop < 0:
        raise ValueError(f"sigma_stop must be >= 0, got {stop}")
    return Above(_finite(s, "scale"), stop, _finite(identity, "identity scale"))


@register()
class IntervalCFG(ClassifierFreeGuidance):
    """CFG with scale s for sigma in (sigma_lo, sigma_hi] and the conditional model (1 pass) elsewhere.

    Default interval (0.28, 5.42]: the paper's choice for EDM2-S (ImageNet-512). The zoo's sigma is
    the same quantity (sqrt((1 - abar) / abar), pixels in [-1, 1]); with 20 steps of its cosine
    schedule 13 of 20 steps fall inside (35 of 50; 715 of 1000): the harness counts the
    passes this saves.
    """

    name = "cfg-interval"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    reference = ("Kynkäänniemi et al. 2024, arXiv:2404.07724 (guidance interval); "
                 "CFG: Ho & Salimans 2021, arXiv:2207.12598")

    def __init__(self, scale: float = 3.0, sigma_lo: float = PAPER_SIGMA_LO, sigma_hi: float = PAPER_SIGMA_HI) -> None:
        if callable(scale):
            raise TypeError("IntervalCFG takes a number (the scale inside the interval); "
                            "pass a schedule to ClassifierFreeGuidance instead")
        super().__init__(interval(scale, sigma_lo, sigma_hi, identity=self.identity_scale))

    def __repr__(self) -> str:
        s = self.scale
        return f"IntervalCFG(scale={s.scale}, sigma in ({s.sigma_lo:g}, {s.sigma_hi:g}])"


@register()
class IncreasingCFG(ClassifierFreeGuidance):
    """CFG whose scale rises as the noise falls, linear in log sigma with mean s (Wang et al. 2024).

    CFG whose scale increases as the noise falls (Wang et al. 2024): 1 at sigma >= 80 (one pass),
    1 + 2 (s - 1) at sigma <= 0.002, linear in log sigma between; s is the mean over that range.
    With the zoo's default 20 steps and s = 3: 1 at the first (sigma 2e4, one pass), then 1.71 rising to
    4.56 at the last; their mean is 2.6, as the zoo's steps are not log-uniform in sigma."""

    name = "cfg-increasing"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    reference = "Wang et al. 2024, arXiv:2404.13040 (CFG weight schedulers: linearly increasing)"

    def __init__(self, scale: float = 3.0, sigma_lo: float = EDM_SIGMA_MIN, sigma_hi: float = EDM_SIGMA_MAX) -> None:
        if callable(scale):
            raise TypeError("IncreasingCFG takes a number (the schedule's mean scale)")
        super().__init__(increasing(scale, sigma_lo, sigma_hi, identity=self.identity_scale))

    def __repr__(self) -> str:
        s = self.scale
        return f"IncreasingCFG(scale {s.scale_hi:g} at sigma {s.sigma_hi:g} to {s.scale_lo:g} at sigma {s.sigma_lo:g})"


@register()
class EarlyCFG(ClassifierFreeGuidance):
    """CFG on the first, high-noise steps only (sigma > 1); the conditional model (one pass) after.

    CFG with scale s on the first steps only (sigma > sigma_stop, default 1, where SNR < 1), the
    conditional model (one pass) after them: guidance sets the layout, the late steps run unguided."""

    name = "cfg-early"
    quick_scales = (3.0, 6.0)
    full_scales = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    reference = "Guidance on the first steps only, arXiv:2506.08351; CFG: Ho & Salimans 2021, arXiv:2207.12598"

    def __init__(self, scale: float = 3.0, sigma_stop: float = EARLY_SIGMA_STOP) -> None:
        if callable(scale):
            raise TypeError("EarlyCFG takes a number (the scale on the first steps)")
        super().__init__(first_steps(scale, sigma_stop, identity=self.identity_scale))

    def __repr__(self) -> str:
        return f"EarlyCFG(scale={self.scale.scale}, sigma > {self.scale.sigma_stop:g})"
