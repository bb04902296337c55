"""Tiny random diffusers pipelines, written once per test session (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytest.importorskip("transformers", reason="transformers is not installed (the `diffusers` extra)")

from guidance.sources.tiny import save_pipeline  # noqa: E402


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
