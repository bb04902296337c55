"""Processes in noise-level space: schedules against their published definitions, levels, spacings."""

from __future__ import annotations

import math

import pytest
import torch

from guidance.diffusion import GaussianDiffusion
from guidance.process import VE, RectifiedFlow, VPDiscrete, exponential_sigmas, karras_sigmas, rescale_zero_terminal_snr


def test_vp_levels_are_the_tables_ddim_always_used() -> None:
    process, old = VPDiscrete.from_schedule("cosine", 1000), GaussianDiffusion.from_schedule("cosine", 1000)
    for t in (0, 17, 500, 999):
        level = process.level(process.timestep_sigma(t))
        assert level.model_t == t and level.abar == float(old.alphas_cumprod[t])
        assert level.recip_alpha == float(old.sqrt_recip_alphas_cumprod[t]) and level.sigma == float(old.sigmas[t])
        assert math.isclose(level.alpha * level.sigma, level.s, rel_tol=1e-12)


def test_respace_matches_guided_diffusion_and_diffusers_spacings() -> None:
    process = VPDiscrete.from_schedule("linear", 1000)
    old = GaussianDiffusion.from_schedule("linear", 1000).respace("10")
    assert process.timesteps("respace", 10) == old.timestep_map.tolist()[::-1]
    assert process.timesteps("leading", 10) == list(range(900, -1, -100))
    assert process.timesteps("trailing", 10) == list(range(999, 0, -100))
    assert process.timesteps("linspace", 4) == [999, 666, 333, 0]
    sigmas = process.sigmas(10, "leading")
    assert sigmas[-1] == 0 and all(a > b for a, b in zip(sigmas, sigmas[1:]))


def test_off_grid_sigma_gets_an_interpolated_timestep() -> None:
    """k-diffusion's sigma_to_t: linear in log sigma between table entries."""
    process = VPDiscrete.from_schedule("linear", 1000)
    lo, hi = process.timestep_sigma(100), process.timestep_sigma(101)
    mid = math.exp((math.log(lo) + math.log(hi)) / 2)
    assert process.level(mid).model_t == pytest.approx(100.5, abs=1e-9)
    assert process.level(mid).timesteps(2, "cpu").dtype == torch.float32


def test_karras_and_exponential_schedules() -> None:
    sigmas = karras_sigmas(5, 0.002, 80.0)
    ramp = [(80.0 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7 for i in range(5)]
    assert sigmas == pytest.approx(ramp + [0.0]) and sigmas[0] == pytest.approx(80.0)
    exp = exponential_sigmas(3, 0.01, 100.0)
    assert exp == pytest.approx([100.0, 1.0, 0.01, 0.0])


def test_zero_terminal_snr_starts_from_pure_noise() -> None:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    assert float(abar[-1]) == pytest.approx(0.0, abs=1e-12)
    process = VPDiscrete.from_betas(betas, zero_terminal_snr=True)
    first = process.level(process.sigmas(10, "trailing")[0])
    assert math.isinf(first.sigma) and first.alpha == 0 and first.s == 1


def test_flow_schedule_is_diffusers_shifted_linspace() -> None:
    flow = RectifiedFlow(shift=3.0)
    sigmas = flow.sigmas(4)
    ts = [t / (1 + t) if math.isfinite(t) else 1.0 for t in sigmas]
    raw = torch.linspace(1.0, 3 * 0.001 / (1 + 2 * 0.001), 4, dtype=torch.float64).tolist()
    assert ts == pytest.approx([3 * t / (1 + 2 * t) for t in raw] + [0.0])
    level = flow.level(sigmas[1])
    assert level.alpha + level.s == pytest.approx(1.0) and level.model_t == pytest.approx(ts[1] * 1000)
    with pytest.raises(ValueError, match="sigma = inf"):
        flow.sigmas(4, "karras")


def test_ve_level_and_bad_inputs() -> None:
    assert VE().level(3.0).alpha == 1.0 and VE().level(3.0).s == 3.0
    with pytest.raises(ValueError, match="unknown schedule"):
        VE().sigmas(4, "cosine")
    with pytest.raises(ValueError, match="discrete-time"):
        VE().sigmas(4, "leading")
    with pytest.raises(ValueError, match="out of range"):
        VPDiscrete.from_schedule("cosine", 100).sigmas(101, "respace")
