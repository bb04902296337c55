"""Per-sample random streams keyed by a global sample index.

Every sample owns a generator seeded from (seed, global index), so sample i gets the same initial
noise and the same step noise whatever the batch size, the batch it lands in or the process that
draws it: runs sharded over processes reproduce single-process runs image for image.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample `index` of run `seed` (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class SampleNoise:
    """Draws batched Gaussian noise where row b comes from sample `indices[b]`'s own generator."""

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.indices = [int(i) for i in indices]
        self.generators = [torch.Generator(self.device).manual_seed(sample_seed(seed, i)) for i in self.indices]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """[len(indices), *shape] standard normal noise."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])
