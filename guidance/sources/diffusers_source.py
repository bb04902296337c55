"""Local diffusers pipeline folders as a model source: `--model diffusers:PATH` (docs/diffusers.md).
diffusers and transformers are the optional `diffusers` extra, imported only when a pipeline is loaded."""

from __future__ import annotations

from pathlib import Path

import torch

from guidance.bundle import ModelBundle
from guidance.sources import DIFFUSERS_PREFIX
from guidance.sources.registry import ModelSource, register_source
from guidance.sources.schedule import scheduler_sampler


def load(folder: str, device: torch.device | str = "cpu", sampler: str | None = None) -> ModelBundle:
    try:  # the optional `diffusers` extra: imported only when a pipeline is asked for
        from guidance.sources.pipeline import load_diffusers
    except ImportError as err:
        raise ValueError(f"--model {DIFFUSERS_PREFIX}{folder} needs diffusers and transformers ({err.name} is "
                         f"missing); install the extra: pip install 'guidance-bench[diffusers]'") from None
    return load_diffusers(folder, device, sampler)


def sampler(folder: str) -> str | None:
    """The sampler closest to the pipeline's own scheduler, from its scheduler config alone (None: a
    folder without one; loading says why)."""
    return scheduler_sampler(Path(folder).expanduser() / "scheduler" / "scheduler_config.json")


def check(folder: str, batch_size: int) -> None:
    """The folder's configs, weights' headers and tokenizers, and a memory bound (guidance.sources.components)."""
    try:  # the optional `diffusers` extra; load names the missing package if it is absent
        from guidance.sources.components import check_pipeline_folder
    except ImportError:
        return
    check_pipeline_folder(Path(folder).expanduser(), batch_size)


SOURCE = register_source(ModelSource(DIFFUSERS_PREFIX, load, "a local diffusers pipeline folder", sampler, check))
