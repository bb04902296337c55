"""Model sources: `--model` names one, and each source is one adapter that returns a ModelBundle.

Every module `guidance/sources/*_source.py` registers a source under the prefix `--model` names it by
(guidance.sources.registry): `emoji` or a zoo-format directory (zoo_source), `diffusers:PATH`
(diffusers_source). Adding a source is adding such a module.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

import guidance.sources
from guidance.bundle import ModelBundle
from guidance.sources.registry import source_of

for _module in pkgutil.iter_modules(guidance.sources.__path__):
    if _module.name.endswith("_source"):
        importlib.import_module(f"guidance.sources.{_module.name}")


def load_bundle(spec: str, device: torch.device | str = "cpu", sampler: str | None = None) -> ModelBundle:
    """The bundle `--model` names, from the source registered for its prefix. `sampler` picks the default
    trajectory of sources whose models carry their own scheduler (a diffusers folder follows diffusers'
    scheduler for it; None: the folder's own)."""
    source, rest = source_of(spec)
    return source.load(rest, device, sampler)


def model_sampler(spec: str | None = None) -> str | None:
    """The sampler closest to the model's own scheduler (what `--sampler` defaults to for it); None where
    the source has none (the zoo: the preset's sampler)."""
    if spec is None:
        return None
    source, rest = source_of(spec)
    return source.sampler(rest)
