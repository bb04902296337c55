"""Throughput: a torchmetrics `Metric`, so the timings of several processes or shard jobs merge.

Quality metrics (FID, KID, CMMD, precision/recall, CLIP score, accuracy, ...) are the registered ones
of this package; throughput is the cost side of every cell, computed from the sampler's own records.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["Throughput", "covered_seconds"]


def covered_seconds(intervals: Tensor) -> float:
    """Length of the union of [start, end] intervals [N, 2]: the wall time during which at least one
    process sampled, whether the processes ran side by side, one after another, or partly both."""
    total, start, end = 0.0, None, None
    for lo, hi in sorted(intervals.tolist()):
        if end is None or lo > end:
            total += 0.0 if end is None else end - start
            start, end = lo, hi
        else:
            end = max(end, hi)
    return total + (0.0 if end is None else end - start)


class Throughput(Metric):
    """Images, seconds and work per image across the processes or jobs that sampled a cell.

    Work adds up. The wall time is the union of every process's sampling intervals (wall-clock
    [start, end] per batch), so img/s is the throughput of the whole group for a torchrun group or
    shard jobs run at once, and of one job at a time for shard jobs run in turn. Timings recorded
    without intervals (older runs) fall back to the slowest process's seconds, i.e. side by side.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("images", "network_passes", "guide_passes", "backward_passes", "untimed_parts"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("seconds", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("peak_mem_mb", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("intervals", [], dist_reduce_fx="cat")

    def update(self, images: int, seconds: float, network_passes: float, guide_passes: float,
               backward_passes: float, peak_mem_mb: float, intervals: list[list[float]] | None = None) -> None:
        self.images += images
        self.seconds += seconds
        self.network_passes += network_passes
        self.guide_passes += guide_passes
        self.backward_passes += backward_passes
        self.peak_mem_mb = torch.maximum(self.peak_mem_mb, torch.tensor(float(peak_mem_mb), dtype=torch.float64))
        if intervals:
            self.intervals.append(torch.tensor(intervals, dtype=torch.float64).reshape(-1, 2))
        elif images:
            self.untimed_parts += 1

    def wall_seconds(self) -> Tensor:
        if self.untimed_parts > 0 or not self.intervals:
            return self.seconds
        return torch.tensor(covered_seconds(dim_zero_cat(self.intervals)), dtype=torch.float64)

    def compute(self) -> dict[str, Tensor]:
        n = self.images.clamp(min=1)
        wall = self.wall_seconds()
        return {"img_per_s": self.images / wall.clamp(min=1e-9), "s_per_img": wall / n,
                "network_passes_per_img": self.network_passes / n, "guide_passes_per_img": self.guide_passes / n,
                "backward_passes_per_img": self.backward_passes / n, "peak_mem_mb": self.peak_mem_mb}
