"""Process groups for sharded runs: torchrun (`--nproc N`) or independent shard jobs (`--shard K/N`).

Work is split at batch granularity (batch b goes to rank b mod N), so every batch has the same
members as in a one-process run: images, and hence metrics, match a single-process run exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    launched: bool = False  # inside a torchrun process group (metrics sync through torch.distributed)

    def owns(self, batch_number: int) -> bool:
        return batch_number % self.world == self.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.launched:
            dist.barrier()


def parse_shard(text: str | None) -> Shard:
    """'K/N' for an independent job K of N (merge later with `python -m bench merge`)."""
    if not text:
        return Shard()
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"bad --shard {text!r}; use K/N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise ValueError(f"bad --shard {text!r}: K must be in 0..N-1")
    return Shard(k, n, launched=False)


def init_from_env(device: str) -> Shard:
    """Join the torchrun process group if this process was launched by torchrun; else one process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Shard()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return Shard(dist.get_rank(), dist.get_world_size(), launched=True)


def local_device(device: str) -> str:
    """Under torchrun, `cuda` means this process's GPU (LOCAL_RANK)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device
