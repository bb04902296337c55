"""No guidance: the conditional model alone, one network pass per step."""

from __future__ import annotations

from guidance.guiders.base import Guidance


class NoGuidance(Guidance):
    """eps = eps_c: the conditional model alone, one network pass per step (the baseline)."""

    name = "none"
    reference = "The conditional model's own prediction; the baseline every method is compared with."
