"""Diffusion upsampling started from the noised bicubic image instead of pure noise (SDEdit-style truncation).

A diffusion upsampler sampled from pure noise must find the low-resolution image's colours itself;
a short-trained one drifts (guidance/zoo/weights/upsampler.md). Starting at timestep `start` from
q(x_start | bicubic) keeps the coarse image and lets the model add only what the noise at that level
hides: the fine detail bicubic lacks. `start` = the process's last timestep is the usual sampler.
The steps are those of the full `steps`-step trajectory at or below `start`, so a lower start also
costs fewer network evaluations.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from guidance.process import VPDiscrete
from guidance.rng import SampleNoise


def truncated_sigmas(process: VPDiscrete, steps: int, start: int) -> list[float]:
    """The `steps`-step trajectory's sigmas at or below timestep `start` (ending with 0)."""
    if not 0 < start <= process.num_timesteps - 1:
        raise ValueError(f"upsampler start timestep {start} is outside 1..{process.num_timesteps - 1}")
    limit = process.timestep_sigma(start)
    kept = [s for s in process.sigmas(steps) if s <= limit * (1 + 1e-9)]
    if len(kept) < 2:
        raise ValueError(f"no step of a {steps}-step trajectory lies at or below timestep {start}; "
                         f"raise the steps or the start")
    return kept


def truncated_start(process: VPDiscrete, sigmas: Sequence[float], image: Tensor, sample_indices: Sequence[int],
                    seed: int) -> Tensor:
    """x at the trajectory's first level: alpha * image + s * noise, with per-sample noise streams (the
    start of one image does not depend on its batch)."""
    level = process.level(float(sigmas[0]))
    noise = SampleNoise(seed, sample_indices, image.device).randn(image.shape[1:], image.dtype)
    return level.alpha * image + level.s * noise

