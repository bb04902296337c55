"""Seam score (task:inpaint): colour steps across the mask edge of the results, relative to the same
statistic of the real source images under the same masks.

For every pair of 4-neighbour pixels that straddles the mask edge (one pixel regenerated, one kept), the
squared colour difference (RGB in [0, 1], summed over channels) is the gradient energy across the edge.
The score of a set is the results' summed edge energy over the sources' (a ratio of sums, so images with
long edges weigh more): a real image scores exactly 1, a fill whose colours jump at the edge scores above
1, below 1 is smoother than real (a blurred fill). Its bootstrap resamples images, both sums alike."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.evaluators.base import Gathered, SetMetric
from bench.evaluators.registry import Column, Resources, ScoringBatch, register_metric


def edge_pairs(hole: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 1, H, W] hole masks -> boolean maps of horizontal [B, H, W-1] and vertical [B, H-1, W] pairs
    that straddle the edge."""
    h = hole[:, 0] > 0.5
    return h[:, :, 1:] != h[:, :, :-1], h[:, 1:, :] != h[:, :-1, :]


def edge_energy(images: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: summed squared colour step across the mask edge, and the number of edge pairs.

    images [B, 3, H, W] in [-1, 1]."""
    x = (images.float() + 1) / 2
    horizontal, vertical = edge_pairs(hole)
    dh = ((x[..., :, 1:] - x[..., :, :-1]) ** 2).sum(1)
    dv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum(1)
    energy = (dh * horizontal).sum((1, 2)) + (dv * vertical).sum((1, 2))
    return energy, (horizontal.sum((1, 2)) + vertical.sum((1, 2))).float()


@register_metric
class SeamScore(SetMetric):
    """Batch extras: "source" (uint8 [N, 3, H, W]) and "mask" ([N, 1, H, W], 1 = regenerated)."""

    name = "seam"
    columns = {"seam": Column(False, "seam score", "edge energy / the real sources' (1 = as real)", (0.0, float("inf")),
                              headline=False),
               # below 1 is smoother across the edge than real images (a blurred fill): not a seam, not real either
               "seam_gap": Column(False, "seam gap", "|seam score - 1| (0 = as real)", (0.0, float("inf")))}
    needs = frozenset({"task:inpaint"})
    networks = ""
    default = False

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.energies = Gathered(2, torch.float64).to(device)  # per image: results' and sources' edge energy

    @classmethod
    def for_cell(cls, resources: Resources) -> "SeamScore":
        return cls(resources.device)

    def update(self, batch: ScoringBatch) -> None:
        hole = batch.extras["mask"].to(batch.images.device)
        source = batch.extras["source"].to(batch.images.device).float().div(127.5).sub(1)
        self.energies.update(torch.stack([edge_energy(batch.pixels, hole)[0], edge_energy(source, hole)[0]], 1))

    def _sums(self, counts: Tensor) -> Tensor:
        e = self.energies.gathered()
        return counts.to(e) @ e  # [B, 2]

    def value(self) -> dict[str, float]:
        e = self.energies.gathered()
        seam = float(e[:, 0].sum() / e[:, 1].sum().clamp(min=1e-12))
        return {"seam": seam, "seam_gap": abs(seam - 1)}

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        sums = self._sums(counts)
        seam = (sums[:, 0] / sums[:, 1].clamp(min=1e-12)).float()
        return {"seam": seam, "seam_gap": (seam - 1).abs()}
