"""Samplers as plain functions, one module each, registered where they are defined.

Importing the package imports every module, so adding a sampler is adding its file (and its test).
`sample` runs a trajectory with per-sample random streams; `SAMPLERS` describes what is available.
"""

from __future__ import annotations

import importlib
import pkgutil

from guidance.samplers.base import SAMPLERS, Denoise, SamplerSpec, register_sampler
from guidance.samplers.loop import NonFiniteSampleError, check_pairing, one_step, renoising_samplers, sample, sampler_spec

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# listing order: the classic pair first, then by name
_FIRST = ("ddim", "ddpm")
SAMPLERS.update({k: SAMPLERS.pop(k) for k in [*_FIRST, *sorted(set(SAMPLERS) - set(_FIRST))] if k in SAMPLERS})

__all__ = ["SAMPLERS", "Denoise", "SamplerSpec", "register_sampler", "NonFiniteSampleError", "check_pairing", "one_step",
           "renoising_samplers", "sample", "sampler_spec"]
