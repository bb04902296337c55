"""Per-sample random streams keyed by a global sample index.

Every sample owns a generator seeded from (seed, global index), so sample i gets the same initial
noise and the same step noise whatever the batch size, the batch it lands in or the process that
draws it: runs sharded over processes reproduce single-process runs image for image.

Two noise modes (NOISE_MODES): `device` keeps each generator on the run's device (the default: the
zoo's samples, and no host-to-device copy per step on a GPU); `diffusers` keeps it on the CPU and moves
the noise, so sample i's initial latents are `torch.randn(shape, generator=torch.Generator("cpu")
.manual_seed(sample_seed(seed, i)))`, what a diffusers pipeline draws from
`generator=torch.Generator("cpu").manual_seed(seed_i)`, whatever device the run is on. On a CPU run
the two modes draw the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
NOISE_MODES = {"device": "each sample's generator on the run's device (default)",
               "diffusers": "each sample's generator on the CPU, as diffusers' generator=torch.Generator('cpu') "
                            "draws: any sample regenerates in a diffusers pipeline from its noise_seed"}


def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample `index` of run `seed` (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class SampleNoise:
    """Draws batched Gaussian noise where row b comes from sample `indices[b]`'s own generator."""

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu",
                 mode: str = "device") -> None:
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {mode!r}; valid: {', '.join(NOISE_MODES)}")
        self.device = torch.device(device)
        self.draw_on = self.device if mode == "device" else torch.device("cpu")
        self.indices = [int(i) for i in indices]
        self.generators = [torch.Generator(self.draw_on).manual_seed(sample_seed(seed, i)) for i in self.indices]

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """[len(indices), *shape] standard normal noise, on the run's device."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.draw_on, dtype=dtype)
                            for g in self.generators]).to(self.device)
