"""Tiny random diffusers pipelines, written once per test session (no download)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from guidance.sources.tiny import save_pipeline, swap_scheduler


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_pipeline(family, scheduler) -> the folder of that tiny pipeline (written on first use): the
    checkpoint's shipped scheduler config, or another swapped in from it (the same weights: a copy of the
    shipped folder with its scheduler replaced, as cheap as copying the tiny weights)."""
    made: dict[tuple[str, str], Path] = {}

    def make(family: str = "sd", scheduler: str = "shipped") -> Path:
        key = (family, scheduler)
        if key not in made:
            if scheduler == "shipped":
                made[key] = save_pipeline(tmp_path_factory.mktemp(f"{family}-shipped"), family)
            else:
                copy = shutil.copytree(make(family), tmp_path_factory.mktemp(f"{family}-{scheduler}") / "pipe")
                made[key] = swap_scheduler(copy, family, scheduler)
        return made[key]

    return make
