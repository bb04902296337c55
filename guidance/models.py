"""Model sources: `--model` names one, and each source is one adapter that returns a ModelBundle.

`emoji` is the embedded zoo; a directory holding zoo-format checkpoints (unet.safetensors, ...) is
loaded the same way; `diffusers:PATH` is a local diffusers pipeline folder (guidance.sources).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guidance.bundle import ModelBundle
from guidance.sources import DIFFUSERS_PREFIX
from guidance.sources.schedule import scheduler_sampler
from guidance.zoo.load import load_zoo


def load_bundle(spec: str, device: torch.device | str = "cpu", sampler: str | None = None) -> ModelBundle:
    """The bundle `--model` names: 'emoji' (the embedded zoo), a zoo-format model directory, or
    'diffusers:PATH' (a diffusers pipeline folder, whose default trajectory is that of diffusers' scheduler
    for `sampler`; None: the folder's own)."""
    if spec.startswith(DIFFUSERS_PREFIX):
        try:  # the optional `diffusers` extra: imported only when a pipeline is asked for
            from guidance.sources.pipeline import load_diffusers
        except ImportError as err:
            raise ValueError(f"--model {spec} needs diffusers and transformers ({err.name} is missing); install the "
                             f"extra: pip install 'guidance-bench[diffusers]'") from None
        return load_diffusers(spec[len(DIFFUSERS_PREFIX):], device, sampler)
    return load_zoo(None if spec == "emoji" else spec, device)


def model_sampler(spec: str | None = None) -> str | None:
    """The sampler closest to a pipeline's own scheduler (what `--sampler` defaults to for it), from its
    scheduler config alone; None for the zoo (the preset's sampler) or a folder without one (loading says why)."""
    if spec is None or not spec.startswith(DIFFUSERS_PREFIX):
        return None
    return scheduler_sampler(Path(spec[len(DIFFUSERS_PREFIX):]).expanduser() / "scheduler" / "scheduler_config.json")
