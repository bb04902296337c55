"""The sampling loop's own draw of the initial noise (every other test passes x_T explicitly)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from guidance.denoisers import NetworkDenoiser
from guidance.guiders import NoGuidance
from guidance.process import VE, RectifiedFlow, VPDiscrete
from guidance.protocols import Conditions
from guidance.rng import SampleNoise
from guidance.samplers import sample

N, SHAPE = 16, (3, 16, 16)  # 12,288 noise values: their std is known to about 1% (2 standard errors)


class RecordingZeroEps(nn.Module):
    """Predicts 0 everywhere; keeps every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("process, prediction, sampler, prior_std", [
    (VPDiscrete.from_schedule("cosine", 1000), "eps", "ddim", 1.0),  # x_T ~ N(0, I)
    (VE(0.002, 80.0), "eps", "euler", 80.0),  # k-diffusion's x_T = sigma_max * randn
    (RectifiedFlow(shift=3.0), "flow", "flow-euler", 1.0),  # pure noise at t = 1
], ids=["vp", "ve", "flow"])
def test_the_drawn_initial_noise_has_the_priors_scale(process, prediction: str, sampler: str, prior_std: float) -> None:
    net = RecordingZeroEps()
    sigmas = process.sigmas(3)
    cond = Conditions(torch.zeros(N))
    x = sample(NetworkDenoiser(net, prediction), process, sigmas, NoGuidance(), cond, SHAPE, range(N), seed=7,
               sampler=sampler, clip_denoised=False)
    first = net.inputs[0]
    assert abs(float(first.std()) / prior_std - 1) < 0.03
    assert abs(float(first.mean())) < 0.03 * prior_std
    # and it is the per-sample stream, scaled: the same samples as passing that draw as x_T
    x_T = SampleNoise(7, range(N), torch.device("cpu")).randn(SHAPE) * prior_std
    explicit = sample(NetworkDenoiser(RecordingZeroEps(), prediction), process, sigmas, NoGuidance(), cond, SHAPE,
                      range(N), seed=7, sampler=sampler, clip_denoised=False, x_T=x_T)
    assert torch.allclose(x, explicit, rtol=1e-6, atol=1e-6 * prior_std)
