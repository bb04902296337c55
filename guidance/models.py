"""Model sources: `--model` names one, and each source is one adapter that returns a ModelBundle.

`emoji` is the embedded zoo; a directory holding zoo-format checkpoints (unet.safetensors, ...) is
loaded the same way; `diffusers:PATH` is a local diffusers pipeline folder (guidance.sources).
"""

from __future__ import annotations

import torch

from pathlib import Path

from guidance.bundle import ModelBundle
from guidance.sources import DIFFUSERS_PREFIX, GUIDING_CLIP, GUIDING_CLIP_SPEC
from guidance.sources.schedule import scheduler_sampler
from guidance.zoo.load import guiding_models_present as zoo_guiding_models, load_zoo


def load_bundle(spec: str, device: torch.device | str = "cpu") -> ModelBundle:
    """The bundle `--model` names: 'emoji' (the embedded zoo), a zoo-format model directory, or
    'diffusers:PATH' (a diffusers pipeline folder)."""
    if spec.startswith(DIFFUSERS_PREFIX):
        try:  # the optional `diffusers` extra: imported only when a pipeline is asked for
            from guidance.sources.pipeline import load_diffusers
        except ImportError as err:
            raise ValueError(f"--model {spec} needs diffusers and transformers ({err.name} is missing); install the "
                             f"extra: pip install 'guidance-bench[diffusers]'") from None
        return load_diffusers(spec[len(DIFFUSERS_PREFIX):], device)
    return load_zoo(None if spec == "emoji" else spec, device)


def guiding_models_present(spec: str | None = None) -> dict[str, bool]:
    """Which guiding models the model set `--model` names offers, from its files alone (nothing is loaded)."""
    if spec is not None and spec.startswith(DIFFUSERS_PREFIX):
        root = Path(spec[len(DIFFUSERS_PREFIX):]).expanduser()
        return {"decoder_clip": any((root / name).is_file() for name in (GUIDING_CLIP, GUIDING_CLIP_SPEC))}
    return zoo_guiding_models(None if spec in (None, "emoji") else spec)


def pixel_model(spec: str | None = None) -> bool:
    """Whether the model `--model` names samples pixels (the zoo) rather than latents (diffusers pipelines)."""
    return spec is None or not spec.startswith(DIFFUSERS_PREFIX)


def model_sampler(spec: str | None = None) -> str | None:
    """The sampler closest to a pipeline's own scheduler (what `--sampler` defaults to for it), from its
    scheduler config alone; None for the zoo (the preset's sampler) or a folder without one (loading says why)."""
    if spec is None or not spec.startswith(DIFFUSERS_PREFIX):
        return None
    return scheduler_sampler(Path(spec[len(DIFFUSERS_PREFIX):]).expanduser() / "scheduler" / "scheduler_config.json")
