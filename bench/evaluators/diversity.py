"""Within-prompt diversity: the mean Euclidean distance between the features of a prompt's samples."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.evaluators.base import CellSet, SetMetric
from bench.evaluators.registry import Column, register_metric


@register_metric
class PromptDiversity(SetMetric):
    """Mean over prompts of the mean pairwise distance among that prompt's samples (needs
    --samples-per-prompt >= 2); in the space of the first feature network of --features."""

    name = "diversity"
    columns = {"diversity": Column(True, "diversity", "feature units of the first --features network", (0.0, float("inf")), headline=False)}
    needs = frozenset({"features"})
    networks = "first"
    bootstrapped = False

    def __init__(self, features: Tensor, prompt_index: Tensor) -> None:
        self.features, self.prompt_index = features.double(), prompt_index.to(features.device)

    @classmethod
    def of_cell(cls, cell: CellSet, net: str) -> "PromptDiversity | None":
        """None when no prompt has two samples (one sample per prompt: nothing to spread)."""
        if len(cell.prompt_index) == 0 or int(torch.bincount(cell.prompt_index).max()) < 2:
            return None
        return cls(cell.features[net], cell.prompt_index)

    def per_prompt(self) -> Tensor:
        out = []
        for p in torch.unique(self.prompt_index):
            group = self.features[self.prompt_index == p]
            if len(group) < 2:
                continue
            d = torch.cdist(group, group, compute_mode="donot_use_mm_for_euclid_dist")
            out.append(d.sum() / (len(group) * (len(group) - 1)))
        return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)

    def value(self) -> dict[str, float]:
        scores = self.per_prompt()
        return {"diversity": float(scores.mean()) if len(scores) else float("nan")}
