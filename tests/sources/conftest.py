"""Tiny random diffusers pipelines, written once per test session (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from guidance.sources.tiny import save_pipeline


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_pipeline(family, scheduler) -> the folder of that tiny pipeline (written on first use)."""
    made: dict[tuple[str, str], Path] = {}

    def make(family: str = "sd", scheduler: str = "ddim") -> Path:
        key = (family, scheduler)
        if key not in made:
            made[key] = save_pipeline(tmp_path_factory.mktemp(f"{family}-{scheduler}"), family, scheduler)
        return made[key]

    return make
