"""CFG++ against the closed form of its step: a DDIM / Euler step of CFG++ at lambda is a CFG step at
w = lambda * sigma / (sigma - sigma'), so CFG++ guides weakly with few large steps and strongly with
many small ones; its DPM-Solver++(2M) form reduces to the DDIM one at the first step."""

from __future__ import annotations

import pytest
import torch

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import CFGPlusPlus, ClassifierFreeGuidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, Denoise, sample

PROCESS = VPDiscrete.from_schedule("cosine", 1000)
MIX = GaussianMixture(torch.tensor([[-0.5, 0.3], [0.4, -0.2]], dtype=torch.float64), torch.tensor([0.2, 0.3]),
                      torch.tensor([0.6, 0.4]), PROCESS.alphas_cumprod)
MODEL = NetworkDenoiser(MixtureDenoiser(MIX), "eps")


def one_step(sampler: str, guidance, x: torch.Tensor, sigmas: list[float], i: int) -> torch.Tensor:  # noqa: ANN001
    cond = Conditions(model=torch.arange(len(x)) % 2)
    levels = [PROCESS.level(sigmas[i]), PROCESS.level(sigmas[i + 1])]
    return SAMPLERS[sampler].fn(Denoise(MODEL, guidance, cond, sigmas, clip_denoised=False), x, levels,
                                lambda: torch.zeros_like(x))


@pytest.mark.parametrize("sampler", ["ddim", "euler", "flow-euler", "dpmpp-2m"])
@pytest.mark.parametrize("i", [0, 5, 8])
def test_cfg_pp_step_is_a_cfg_step_at_the_effective_scale(sampler: str, i: int) -> None:
    lam = 0.6
    sigmas = PROCESS.sigmas(10, "respace")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    w = lam * sigmas[i] / (sigmas[i] - sigmas[i + 1])
    ours = one_step(sampler, CFGPlusPlus(lam), x, sigmas, i)
    cfg = one_step(sampler, ClassifierFreeGuidance(w), x, sigmas, i)
    assert (ours - cfg).abs().max() < 1e-10


def test_cfg_pp_is_refused_by_samplers_that_cannot_renoise() -> None:
    cond = Conditions(model=torch.zeros(2, dtype=torch.long))
    for sampler in ("ddpm", "heun"):
        with pytest.raises(ValueError, match="renoises with the unconditional"):
            sample(MODEL, PROCESS, PROCESS.sigmas(4), CFGPlusPlus(0.5), cond, (2,), range(2), sampler=sampler)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CFGPlusPlus(3.0)
