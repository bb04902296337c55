"""The metrics of the editing and cascade tasks: PSNR of the kept region, the seam score, and the
cascade's consistency PSNR. Each class follows the metric declaration the harness shares (name, kind,
columns with direction, bounds, units and label, needs; update then compute).

Seam score. For every pair of 4-neighbour pixels that straddles the mask edge (one pixel regenerated,
one kept), take the squared colour difference (RGB in [0, 1], summed over channels): the gradient
energy across the edge. The seam score of a set of results is their summed edge energy divided by the
same sum over the real source images under the same masks. A real image scores exactly 1; a fill whose
colours jump at the edge (a pasted patch, a fill that ignores its surroundings) scores above 1. Below 1
is smoother across the edge than real images (e.g. a blurred fill): not a seam, but not real either,
so `seam_gap` (|seam - 1|, lower is better) is what ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 100.0  # dB: an exact copy (zero error) scores this, not infinity


@dataclass(frozen=True)
class Column:
    """One result column of a metric: its direction, range, units and report heading."""

    higher_is_better: bool
    bounds: tuple[float, float] | None
    units: str
    label: str


def to_signed(images: Tensor) -> Tensor:
    """uint8 [N, 3, H, W] -> float in [-1, 1] (float input is taken as already there)."""
    return images.float().div(127.5).sub(1) if images.dtype == torch.uint8 else images.float()


def edge_pairs(hole: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 1, H, W] hole masks -> boolean maps of horizontal [B, H, W-1] and vertical [B, H-1, W] pairs
    that straddle the edge."""
    h = hole[:, 0] > 0.5
    return h[:, :, 1:] != h[:, :, :-1], h[:, 1:, :] != h[:, :-1, :]


def edge_energy(images: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: summed squared colour step across the mask edge, and the number of edge pairs.

    images [B, 3, H, W] in [-1, 1] (or uint8)."""
    x = (to_signed(images) + 1) / 2
    horizontal, vertical = edge_pairs(hole)
    dh = ((x[..., :, 1:] - x[..., :, :-1]) ** 2).sum(1)
    dv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum(1)
    energy = (dh * horizontal).sum((1, 2)) + (dv * vertical).sum((1, 2))
    return energy, (horizontal.sum((1, 2)) + vertical.sum((1, 2))).float()


def seam_score(results: Tensor, real: Tensor, hole: Tensor) -> float:
    """Summed edge energy of `results` over that of `real` images under the same masks (1 = as real)."""
    return float(edge_energy(results, hole)[0].sum() / edge_energy(real, hole)[0].sum().clamp(min=1e-12))


def psnr(a: Tensor, b: Tensor, keep: Tensor | None = None, cap: float = PSNR_CAP) -> Tensor:
    """Per-image PSNR (dB, 8-bit scale: peak 1 on [0, 1]) of `a` against `b` over the pixels `keep`
    marks (all when None), capped at `cap` (an exact match)."""
    a, b = to_signed(a), to_signed(b)
    keep = torch.ones_like(a[:, :1]) if keep is None else keep.float()
    keep = keep.expand_as(a)
    err = (((a - b) / 2) ** 2 * keep).sum((1, 2, 3)) / keep.sum((1, 2, 3)).clamp(min=1)
    return (10 * torch.log10(1.0 / err.clamp(min=10 ** (-cap / 10)))).clamp(max=cap)


class PerImageMetric:
    """Collects a per-image score over `update` calls; `compute` returns it per image."""

    name: ClassVar[str]
    kind: ClassVar[str] = "per_image"
    columns: ClassVar[dict[str, Column]]
    needs: ClassVar[frozenset[str]]

    def __init__(self) -> None:
        self.values: list[Tensor] = []

    def score(self, images: Tensor, extras: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def update(self, images: Tensor, extras: dict[str, Tensor]) -> None:
        self.values.append(self.score(images, extras).double().cpu())

    def compute(self) -> dict[str, Tensor]:
        return {self.name: torch.cat(self.values) if self.values else torch.zeros(0, dtype=torch.float64)}


class KnownRegionPSNR(PerImageMetric):
    """How well an edit keeps what it was told to keep: PSNR of the region outside the mask against
    the source (100 dB: exact)."""

    name = "psnr_known"
    columns = {"psnr_known": Column(True, (0.0, PSNR_CAP), "dB", "PSNR outside the mask")}
    needs = frozenset({"task:inpaint"})

    def score(self, images: Tensor, extras: dict[str, Tensor]) -> Tensor:
        hole = extras["mask"].float()[:, None]
        return psnr(images, extras["source"], keep=1 - hole)


class ConsistencyPSNR(PerImageMetric):
    """Whether an upsampler keeps its input: PSNR of the output area-downsampled to the input's size
    against the low-resolution sample it came from."""

    name = "consistency_psnr"
    columns = {"consistency_psnr": Column(True, (0.0, PSNR_CAP), "dB", "PSNR against the low-res input")}
    needs = frozenset({"task:cascade"})

    def score(self, images: Tensor, extras: dict[str, Tensor]) -> Tensor:
        low = to_signed(extras["low_res"])
        down = F.interpolate(to_signed(images), size=tuple(low.shape[-2:]), mode="area")
        return psnr(down, low)


class SeamScore:
    """Edge energy across the mask's edge relative to the real sources' (a set metric: a ratio of sums)."""

    name = "seam"
    kind = "set"
    columns = {"seam": Column(False, (0.0, float("inf")), "ratio (1 = as real)", "seam score"),
               "seam_gap": Column(False, (0.0, float("inf")), "|ratio - 1|", "seam score's distance from 1")}
    needs = frozenset({"task:inpaint"})

    def __init__(self) -> None:
        self.result: list[Tensor] = []
        self.real: list[Tensor] = []

    def update(self, images: Tensor, extras: dict[str, Tensor]) -> None:
        hole = extras["mask"].float()[:, None]
        self.result.append(edge_energy(images, hole)[0].double().cpu())
        self.real.append(edge_energy(extras["source"], hole)[0].double().cpu())

    def energies(self) -> tuple[Tensor, Tensor]:
        """Per image: the result's and the source's edge energy."""
        return torch.cat(self.result), torch.cat(self.real)

    def compute(self, counts: Tensor | None = None) -> dict[str, Tensor]:
        """The ratio of sums; with bootstrap `counts` [B, N], one ratio per resample [B]."""
        result, real = self.energies()
        if counts is not None:
            seam = (counts.double() @ result) / (counts.double() @ real).clamp(min=1e-12)
        else:
            seam = result.sum() / real.sum().clamp(min=1e-12)
        return {"seam": seam, "seam_gap": (seam - 1).abs()}


TASK_METRICS = (KnownRegionPSNR, SeamScore, ConsistencyPSNR)


def task_metric_directions() -> dict[str, bool]:
    """Each task metric column's direction (True: higher is better)."""
    return {c: col.higher_is_better for m in TASK_METRICS for c, col in m.columns.items()}
