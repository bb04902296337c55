"""Guidance methods behind one interface, and a registry that builds them by name.

Each method is one module of this package and registers itself where it is defined
(`@register()` in guidance.guiders.base); importing the package imports every module, so adding a
method is adding its file (and its test).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from guidance.guiders.base import (REGISTRY, GradientGuidance, Guidance, GuidanceCost, MethodContext, Prediction, StepInfo,
                                   register)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from guidance.guiders.apg import AdaptiveProjectedGuidance  # noqa: E402
from guidance.guiders.autoguidance import AutoGuidance  # noqa: E402
from guidance.guiders.cfg import ClassifierFreeGuidance  # noqa: E402
from guidance.guiders.cfg_pp import CFGPlusPlus  # noqa: E402
from guidance.guiders.cfg_rescale import RescaledCFG  # noqa: E402
from guidance.guiders.cfg_zero_star import CFGZeroStar  # noqa: E402
from guidance.guiders.classifier import ClassifierGuidance  # noqa: E402
from guidance.guiders.clip import CLIPGuidance  # noqa: E402
from guidance.guiders.dynamic_threshold import DynamicThresholdCFG  # noqa: E402
from guidance.guiders.none import NoGuidance  # noqa: E402
from guidance.guiders.schedules import IntervalCFG  # noqa: E402

# the order methods are listed in (`--guidance list`, `all`): the GLIDE paper's first
_FIRST = ("none", "cfg", "classifier", "clip")
REGISTRY.update({k: REGISTRY.pop(k) for k in [*_FIRST, *sorted(set(REGISTRY) - set(_FIRST))] if k in REGISTRY})


def available_guidance() -> dict[str, str]:
    """Registered method names with a one-line description each."""
    return {name: (cls.__doc__ or cls.reference or name).strip().splitlines()[0] for name, (cls, _) in REGISTRY.items()}


def guidance_class(name: str) -> type[Guidance]:
    """The registered class of method `name`; a one-line ValueError for a name nobody registered."""
    if name not in REGISTRY:
        raise ValueError(f"unknown guidance {name!r}; valid: {', '.join(REGISTRY)}")
    return REGISTRY[name][0]


def make_guidance(name: str, scale: float, models: Mapping[str, Any] | None = None, **options: Any) -> Guidance:
    """Build a registered guidance method; `models` supplies guiding networks ("classifier", "clip", "weak")."""
    cls, needs = guidance_class(name), REGISTRY[name][1]
    if needs is None:
        return cls(scale=scale, **options)
    if not models or models.get(needs) is None:
        raise ValueError(f"guidance {name!r} needs a {needs} model; the loaded model set has none")
    return cls(models[needs], scale=scale, **options)


__all__ = ["Guidance", "GradientGuidance", "GuidanceCost", "Prediction", "StepInfo", "REGISTRY", "register",
           "MethodContext", "available_guidance", "guidance_class", "make_guidance", "NoGuidance", "ClassifierFreeGuidance", "CFGPlusPlus",
           "ClassifierGuidance", "CLIPGuidance", "IntervalCFG", "RescaledCFG", "AdaptiveProjectedGuidance",
           "CFGZeroStar", "DynamicThresholdCFG", "AutoGuidance"]
