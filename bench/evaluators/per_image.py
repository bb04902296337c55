"""Per-image metrics: a score per image, gathered across processes, whose cell value is their mean."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from bench.evaluators.base import Gathered
from bench.evaluators.registry import RegisteredMetric, Resources, ScoringBatch


def chunked_mean(values: Tensor, chunk: int) -> float:
    """Mean of per-sample scores summed chunk by chunk in float64 (the order the cell's metric states add)."""
    total = torch.zeros((), dtype=torch.float64, device=values.device)
    for part in values.split(chunk):
        total += part.double().sum()
    return float(total / max(len(values), 1))


class PerImageMetric(RegisteredMetric):
    """torchmetrics' update/compute shape: `update(batch)` scores a batch, `compute()` gives every image's
    score per column in file order (all processes' rows under torchrun). Subclasses write `scores`."""

    kind = "per_image"
    row_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.rows = Gathered(len(self.columns), self.row_dtype).to(device)

    @classmethod
    def build(cls, resources: Resources) -> "PerImageMetric":
        """The metric as this scoring configures it (its scorer or classifier from `resources`)."""
        raise NotImplementedError

    def scores(self, batch: ScoringBatch) -> Tensor:
        """[N, len(columns)] scores of a batch's images."""
        raise NotImplementedError

    def update(self, batch: ScoringBatch) -> None:
        self.rows.update(self.scores(batch))

    def compute(self) -> dict[str, Tensor]:
        rows = self.rows.gathered()
        return {c: rows[:, i] for i, c in enumerate(self.columns)}

    def cell_value(self, values: Tensor, chunk: int) -> float:
        """The cell's value of one column from its per-image scores: their mean."""
        return chunked_mean(values, chunk)
