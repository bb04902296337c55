"""Guidance methods behind one interface, and a registry that builds them by name."""

from __future__ import annotations

from typing import Any, Mapping

from guidance.guiders.apg import AdaptiveProjectedGuidance
from guidance.guiders.autoguidance import AutoGuidance
from guidance.guiders.base import GradientGuidance, Guidance, GuidanceCost, Prediction, StepInfo, split_output
from guidance.guiders.cfg import ClassifierFreeGuidance
from guidance.guiders.cfg_rescale import RescaledCFG
from guidance.guiders.cfg_zero_star import CFGZeroStar
from guidance.guiders.classifier import ClassifierGuidance
from guidance.guiders.clip import CLIPGuidance
from guidance.guiders.dynamic_threshold import DynamicThresholdCFG
from guidance.guiders.none import NoGuidance
from guidance.guiders.schedules import IntervalCFG

# name -> (class, guiding model it needs or None)
REGISTRY: dict[str, tuple[type[Guidance], str | None]] = {
    "none": (NoGuidance, None),
    "cfg": (ClassifierFreeGuidance, None),
    "classifier": (ClassifierGuidance, "classifier"),
    "clip": (CLIPGuidance, "clip"),
    "cfg-interval": (IntervalCFG, None),
    "cfg-rescale": (RescaledCFG, None),
    "apg": (AdaptiveProjectedGuidance, None),
    "cfg-zero-star": (CFGZeroStar, None),
    "cfg-dynamic-threshold": (DynamicThresholdCFG, None),
    "autoguidance": (AutoGuidance, "weak"),  # the weak model: a worse Denoiser with the same conditioning
}


def available_guidance() -> dict[str, str]:
    """Registered method names with a one-line description each."""
    return {name: (cls.__doc__ or cls.reference or name).strip().splitlines()[0] for name, (cls, _) in REGISTRY.items()}


def make_guidance(name: str, scale: float, models: Mapping[str, Any] | None = None, **options: Any) -> Guidance:
    """Build a registered guidance method; `models` supplies guiding networks ("classifier", "clip", "weak")."""
    if name not in REGISTRY:
        raise ValueError(f"unknown guidance {name!r}; valid: {', '.join(REGISTRY)}")
    cls, needs = REGISTRY[name]
    if needs is None:
        return cls(scale=scale, **options)
    if not models or models.get(needs) is None:
        raise ValueError(f"guidance {name!r} needs a {needs} model; the loaded model set has none")
    return cls(models[needs], scale=scale, **options)


__all__ = ["Guidance", "GradientGuidance", "GuidanceCost", "Prediction", "StepInfo", "split_output", "REGISTRY",
           "available_guidance", "make_guidance", "NoGuidance", "ClassifierFreeGuidance",
           "ClassifierGuidance", "CLIPGuidance", "IntervalCFG", "RescaledCFG", "AdaptiveProjectedGuidance",
           "CFGZeroStar", "DynamicThresholdCFG", "AutoGuidance"]
