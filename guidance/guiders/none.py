"""No guidance: the conditional model alone, one network pass per evaluation."""

from __future__ import annotations

from guidance.guiders.base import Guidance, register


@register()
class NoGuidance(Guidance):
    """eps = eps_c: the conditional model alone, one network pass per evaluation (the baseline)."""

    name = "none"
    quick_scales = (0.0,)
    full_scales = (0.0,)
    reference = "The conditional model's own prediction; the baseline every method is compared with."
