"""pytest-benchmark: the sampler's own host work per trajectory, with a network that does nothing.

On a GPU a small model is launch-bound: the device waits for the host, so every microsecond the
sampler and guidance code spend per step (Python, tiny tensor ops) adds to the sampling time. This
isolates that cost from the network's (run by `invoke perf`, not in CI; `--compare` catches growth).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from guidance.denoisers import NetworkDenoiser
from guidance.guiders import make_guidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, sample

STEPS = 100


class NullNetwork(nn.Module):
    """Returns eps = 0 and v = 0 at once: what is left to time is the sampler and the guidance."""

    learned_variance = True

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.zeros_like(cond)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", ["none", "cfg"])
def test_trajectory_host_cost(benchmark, name, sampler):
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(STEPS)
    model = NetworkDenoiser(NullNetwork(), "eps", learned_variance=True)
    cond = Conditions(model=torch.zeros(2, 8, dtype=torch.long))
    guidance = make_guidance(name, 3.0, {})
    with torch.no_grad():
        out = benchmark(sample, model, process, sigmas, guidance, cond, (3, 8, 8), range(2), sampler=sampler)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
