"""The truncated upsampler start: which steps it keeps, its start state's law, and the usual sampler at the top."""

from __future__ import annotations

import pytest
import torch

from guidance.process import VPDiscrete
from guidance.upsample import truncated_sigmas, truncated_start

PROCESS = VPDiscrete.from_schedule("cosine", 1000)


def test_truncation_keeps_the_trajectorys_steps_at_or_below_the_start():
    full = PROCESS.sigmas(25)
    assert truncated_sigmas(PROCESS, 25, 999) == full  # the top: the usual sampler from pure noise
    kept = truncated_sigmas(PROCESS, 25, 500)
    limit = PROCESS.timestep_sigma(500)
    assert kept == [s for s in full if s <= limit] and kept[-1] == 0
    assert 11 <= len(kept) - 1 <= 14  # about half the steps (the respaced grid is ~41.6 timesteps apart)
    with pytest.raises(ValueError, match="outside"):
        truncated_sigmas(PROCESS, 25, 1000)
    assert len(truncated_sigmas(PROCESS, 2, 1)) == 2  # the respaced grid always holds t = 0


def test_the_start_state_is_q_xt_given_the_image_with_per_sample_noise():
    sigmas = truncated_sigmas(PROCESS, 25, 400)
    level = PROCESS.level(sigmas[0])
    image = torch.rand(64, 3, 8, 8) * 2 - 1
    x = truncated_start(PROCESS, sigmas, image, list(range(64)), seed=3)
    noise = (x - level.alpha * image) / level.s
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05  # 12,288 draws: se 0.009
    alone = truncated_start(PROCESS, sigmas, image[5:6], [5], seed=3)
    torch.testing.assert_close(alone, x[5:6], rtol=0, atol=1e-6)  # independent of the batch
    assert level.alpha ** 2 + level.s ** 2 == pytest.approx(1.0)
