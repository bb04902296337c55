"""The embedded zoo as a model source: `--model emoji` (the shipped weights) or a directory of
zoo-format checkpoints (the fallback for a spec without a registered prefix)."""

from __future__ import annotations

from pathlib import Path

import torch

from guidance.bundle import ModelBundle
from guidance.sources.registry import ModelSource, register_source
from guidance.zoo.load import ZOO_DIR, load_zoo

ZOO_NAME = "emoji"  # --model's name for the embedded zoo


def model_dir(spec: str) -> Path:
    """The directory a zoo spec names: the embedded weights for 'emoji', else the spec itself."""
    return ZOO_DIR if spec == ZOO_NAME else Path(spec)


def load(spec: str, device: torch.device | str = "cpu", sampler: str | None = None) -> ModelBundle:
    """The zoo's bundle; its trajectory follows the run's sampler and schedule, so `sampler` is not needed."""
    return load_zoo(model_dir(spec), device)


SOURCE = register_source(ModelSource("", load, f"'{ZOO_NAME}' (the embedded zoo) or a directory of zoo checkpoints"))
