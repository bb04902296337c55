"""Within-prompt diversity: the mean Euclidean distance between the features of a prompt's samples."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.evaluators.base import HIGHER


class PromptDiversity:
    """Mean over prompts of the mean pairwise distance among that prompt's samples (needs
    --samples-per-prompt >= 2); in the space of the first feature network of --features."""

    name = "diversity"
    columns = {"diversity": HIGHER}
    units = "feature units of the first --features network"

    def __init__(self, features: Tensor, prompt_index: Tensor) -> None:
        self.features, self.prompt_index = features.double(), prompt_index.to(features.device)

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
