"""Shared fixtures of the guider tests: a table-driven denoiser whose conditional, unconditional and
perturbed predictions are given tensors, a step at a sigma, and diffusers' guiders (or a skip)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Iterator, Sequence

import pytest
import torch

from guidance.guiders.base import StepInfo
from guidance.internals import Perturbation
from guidance.prediction import Prediction
from guidance.process import NoiseLevel, VPDiscrete
from guidance.protocols import Conditions

F64 = torch.float64
B, SHAPE = 3, (3, 8, 8)
PROCESS = VPDiscrete.from_schedule("linear", 1000)
SIGMAS = PROCESS.sigmas(20, "respace")


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def step_at(sigma: float, batch: int = B, trajectory: Sequence[float] = SIGMAS) -> StepInfo:
    level = PROCESS.level(sigma)
    return StepInfo(level, level.timesteps(batch, torch.device("cpu")), tuple(trajectory))


class TableDenoiser:
    """eps = cond[i], uncond[i] or (inside `perturbed`, on the perturbed rows) perturbed[i], in `space`.

    Condition ids: row i's caption is i, its null caption i + B. Counts evaluated rows and perturbed ones."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor, perturbed: torch.Tensor | None = None,
                 space: str = "eps") -> None:
        self.table = torch.cat([cond, uncond])
        self.perturbed_table = perturbed
        self.space = space
        self.rows = 0
        self.perturbed_rows = 0
        self.specs: list[Perturbation] = []
        self._active: slice | None = None

    def __call__(self, x: torch.Tensor, level: NoiseLevel, cond: torch.Tensor) -> Prediction:
        self.rows += len(cond)
        out = self.table[cond].clone()
        if self._active is not None:
            idx = torch.arange(len(cond))[self._active]
            out[idx] = self.perturbed_table[cond[idx]]
            self.perturbed_rows += len(idx)
        return Prediction(x, level, self.space, out)

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return cond + B

    @contextlib.contextmanager
    def perturbed(self, perturbation: Perturbation, rows: slice) -> Iterator[None]:
        self.specs.append(perturbation)
        self._active = rows
        try:
            yield
        finally:
            self._active = None


def conditions() -> Conditions:
    return Conditions(model=torch.arange(B))


def triple(seed: int = 0, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, cond, uncond, perturbed predictions of shape [B, *SHAPE]."""
    return tuple(randn(B, *SHAPE, seed=seed + k, dtype=dtype) for k in range(4))  # type: ignore[return-value]


def diffusers_guiders():
    """diffusers.guiders, or a skip when diffusers (a test dependency) is missing."""
    return pytest.importorskip("diffusers.guiders")


def diffusers_module(name: str):
    pytest.importorskip("diffusers")
    return importlib.import_module(name)
