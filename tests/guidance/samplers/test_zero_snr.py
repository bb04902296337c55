"""Trajectories that start at pure noise (sigma = inf: rectified flow at t = 1, zero-terminal SNR):
every sampler's first step, every CFG-family method, DDIM with noise; and schedules whose ends must
be the table's own sigmas (a one-ulp overshoot once made CFG-Zero* skip its zero-init step)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from guidance.denoisers import NetworkDenoiser
from guidance.guiders import REGISTRY, make_guidance
from guidance.process import RectifiedFlow, VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, Denoise, one_step, sample, sampler_spec

X0 = 0.5


class ConstantData(nn.Module):
    """The exact flow velocity u = eps - x0 of data that is the constant X0 (label shifts it a little)."""

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        x0 = X0 + 0.05 * cond.to(x)[:, None]
        frac = t.to(x)[:, None] / 1000  # the flow time t
        eps = (x - (1 - frac) * x0) / frac.clamp_min(1e-12)
        return eps - x0

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.zeros_like(cond)


FLOW = RectifiedFlow(shift=3.0)
MODEL = NetworkDenoiser(ConstantData(), "flow")


@pytest.mark.parametrize("sampler", ["ddim", "euler", "flow-euler", "dpmpp-2m", "heun", "euler-ancestral"])
def test_first_step_from_pure_noise_keeps_the_noise(sampler: str) -> None:
    """From x = eps at sigma = inf, one deterministic step lands on alpha' x0 + s' eps (the noise is kept)."""
    sigmas = FLOW.sigmas(6)
    assert math.isinf(sigmas[0])
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cond = Conditions(model=torch.zeros(64, dtype=torch.long))
    nxt = FLOW.level(sigmas[1])
    options = {"eta": 0.0} if "eta" in sampler_spec(sampler).options else {}
    x1, _ = one_step(sampler, Denoise(MODEL, make_guidance("none", 0.0), cond, sigmas, False), x, FLOW.level(sigmas[0]),
                     nxt, **options)
    assert (x1 - (nxt.alpha * X0 + nxt.s * x)).abs().max() < 1e-9


# methods this vector-valued analytic model cannot run: they act on images or on a network's layers
NOT_ON_VECTORS = {"fdg": "a Laplacian pyramid over [B, C, H, W] (tests/guidance/guiders/test_fdg.py)",
                  **{n: "perturbs a network's attention or blocks (tests/guidance/guiders)" for n in ("pag", "seg", "slg")},
                  "nag": "mixes a network's attention outputs (tests/guidance/guiders/test_nag.py)",
                  "sag": "reads a network's self-attention map (tests/guidance/sources/test_diffusers_sag.py)",
                  "flux-distilled": "an input of guidance-distilled transformers (tests/guidance/sources/test_diffusers_flux.py)"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skip(reason=NOT_ON_VECTORS[n])) if n in NOT_ON_VECTORS
                                  else n for n, (_, needs) in REGISTRY.items() if needs is None])
def test_every_combining_method_runs_from_pure_noise(name: str) -> None:
    """A flow model's trajectory starts at sigma = inf, where eps says nothing of x0: methods must mix in
    a space defined there (the model's own) and still steer towards the conditional data."""
    scale = 0.6 if name == "cfg-pp" else 3.0
    cond = Conditions(model=torch.ones(8, dtype=torch.long))
    x = sample(MODEL, FLOW, FLOW.sigmas(8), make_guidance(name, scale), cond, (3,), range(8), seed=1,
               sampler="flow-euler", clip_denoised=False, dtype=torch.float64)
    assert torch.isfinite(x).all()
    assert (x - (X0 + 0.05)).abs().max() < 0.2


@pytest.mark.parametrize("steps", [4, 10, 25, 50])
def test_ddim_with_noise_on_zero_terminal_snr(steps: int) -> None:
    """1 - abar' - sigma_eta^2 is 0 at abar = 0 and may round below it: DDIM must not take its square root raw."""
    process = VPDiscrete.from_schedule("scaled_linear", 1000, zero_terminal_snr=True, beta_start=0.00085, beta_end=0.012)
    model = NetworkDenoiser(VSpaceOf(ConstantData()), "v")
    x = sample(model, process, process.sigmas(steps, "trailing"), make_guidance("cfg", 2.0),
               Conditions(model=torch.ones(4, dtype=torch.long)), (3,), range(4), sampler="ddim", eta=1.0,
               clip_denoised=False, dtype=torch.float64)
    assert torch.isfinite(x).all()


class VSpaceOf(nn.Module):
    """The constant data as a VP v-prediction network at whole timesteps (zero-terminal SNR defined)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.process = VPDiscrete.from_schedule("scaled_linear", 1000, zero_terminal_snr=True, beta_start=0.00085,
                                                beta_end=0.012)
        self.inner = inner

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        abar = self.process.alphas_cumprod[t.long()].to(x)[:, None]
        alpha, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = X0 + 0.05 * cond.to(x)[:, None]
        eps = (x - alpha * x0) / s.clamp_min(1e-12)
        return alpha * eps - s * x0

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.zeros_like(cond)


@pytest.mark.parametrize("schedule", ["karras", "exponential"])
def test_schedule_ends_are_the_tables_own_sigmas(schedule: str) -> None:
    """CFG-Zero*'s zero-init is read from sigma: the counted cost and the network passes it makes agree."""
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(10, schedule)
    assert sigmas[0] == process.sigma_max and sigmas[-2] == process.sigma_min
    calls: list[int] = []

    class Counting(nn.Module):
        def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
            calls.append(len(x))
            return torch.zeros_like(x)

        def null_cond(self, cond: Tensor) -> Tensor:
            return torch.zeros_like(cond)

    guidance = make_guidance("cfg-zero-star", 3.0)
    sample(NetworkDenoiser(Counting()), process, sigmas, guidance, Conditions(model=torch.ones(2, dtype=torch.long)),
           (3,), range(2), sampler="euler", clip_denoised=False)
    cost = guidance.cost_per_image(SAMPLERS["euler"].evaluations(sigmas), sigmas)
    assert sum(calls) / 2 == cost.network_passes == 18
