"""Model sources by the prefix `--model` names them with: each source registers itself
(`register_source`) in its own module under guidance.sources (`*_source.py`), and `load_bundle`
(guidance.models) looks the prefix up here instead of a chain of string tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from guidance.bundle import ModelBundle


@dataclass(frozen=True)
class ModelSource:
    """How one kind of `--model` becomes a ModelBundle. `prefix` is what the spec starts with
    ("diffusers:"); the empty prefix is the fallback every other spec goes to (a zoo name or directory).
    `load` and `sampler` get the spec without the prefix (`load` also the sampler the run asked for, which
    a source whose models carry their own scheduler follows; others ignore it); `sampler` names the sampler the model's own
    scheduler is closest to (None: the preset's); `check` refuses a spec whose files cannot load, before
    anything loads or samples (raising CheckpointError or ValueError with the fix; it gets the run's batch
    size, for a memory bound); `domain` is what every model of the source shows where that is known before
    loading (the zoo: emoji; None: known once a model loads, from its bundle), so domain-bound checks run
    up front."""

    prefix: str
    load: Callable[[str, torch.device | str, str | None], ModelBundle]
    description: str
    sampler: Callable[[str], str | None] = lambda rest: None
    check: Callable[[str, int], None] = lambda rest, batch_size: None
    domain: str | None = None


SOURCES: dict[str, ModelSource] = {}


def register_source(source: ModelSource) -> ModelSource:
    if source.prefix in SOURCES and SOURCES[source.prefix] != source:
        raise ValueError(f"model source prefix {source.prefix!r} is registered twice")
    SOURCES[source.prefix] = source
    return source


def source_of(spec: str) -> tuple[ModelSource, str]:
    """The source whose prefix `spec` starts with (the longest such), and the spec without it."""
    matches = [p for p in SOURCES if spec.startswith(p)]
    if not matches:
        raise ValueError(f"--model {spec!r} names no model source; valid: {describe_sources()}")
    prefix = max(matches, key=len)
    return SOURCES[prefix], spec[len(prefix):]


def describe_sources() -> str:
    return "; ".join(f"{s.prefix or '(no prefix)'}: {s.description}" for s in SOURCES.values())
