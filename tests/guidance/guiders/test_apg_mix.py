"""APG-mix: CFG before the switch (by sigma), APG with a buffer warmed on the CFG steps after it,
costs, and diffusers' AdaptiveProjectedMixGuidance over a trajectory."""

from __future__ import annotations

import torch

from guidance.guiders import make_guidance
from guidance.guiders.apg import AdaptiveProjectedGuidance
from guidance.guiders.apg_mix import APGMix
from tests.guidance.guiders.guider_helpers import B, SHAPE, SIGMAS, TableDenoiser, conditions, diffusers_module, randn, step_at

STEPS = 6
SWITCH = (SIGMAS[1] + SIGMAS[2]) / 2  # steps 0 and 1 are CFG, 2.. are APG


def branches(k: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    c = randn(B, *SHAPE, seed=10 * k, dtype=dtype)
    return c, 0.7 * c + 0.5 * randn(B, *SHAPE, seed=10 * k + 1, dtype=dtype)


def test_cfg_then_apg_with_the_buffer_warmed_on_the_cfg_steps():
    mix = APGMix(6.0, cfg_scale=2.0, sigma_switch=SWITCH)
    apg = AdaptiveProjectedGuidance(6.0)
    x = randn(B, *SHAPE, seed=99)
    for k in range(STEPS):
        c, u = branches(k)
        step = step_at(SIGMAS[k])
        out = mix.predict(TableDenoiser(c, u, space="x0"), x, step, conditions()).x0
        if k < 2:
            assert torch.allclose(out, u + 2.0 * (c - u), atol=1e-12)
            apg.update(c - u, SIGMAS[k])  # the same buffer update, by hand
        else:
            assert torch.allclose(out, apg.predict(TableDenoiser(c, u, space="x0"), x, step, conditions()).x0, atol=1e-12)


def test_cost_follows_the_phase():
    g = APGMix(6.0, cfg_scale=1.0, sigma_switch=SWITCH)
    assert g.cost(SIGMAS[0]).network_passes == 1  # CFG phase at scale 1: the conditional model
    assert g.cost(SIGMAS[3]).network_passes == 2
    assert g.cost(SIGMAS[0], negative=True).network_passes == 2
    model = TableDenoiser(*branches(0))
    g.predict(model, randn(B, *SHAPE), step_at(SIGMAS[0]), conditions())
    assert model.rows == B
    assert make_guidance("apg-mix", 1.0).cost(0.5).network_passes == 1


def test_equals_diffusers_adaptive_projected_mix_guidance():
    mod = diffusers_module("diffusers.guiders.adaptive_projected_guidance_mix")
    s_cfg, s, beta, r, eta = 2.5, 7.0, -0.5, 4.0, 0.25
    # the suite's x0 = x0_c + (s - 1) * update is diffusers' original formulation at scale s - 1
    ref = mod.AdaptiveProjectedMixGuidance(guidance_scale=s_cfg - 1, adaptive_projected_guidance_scale=s - 1,
                                           adaptive_projected_guidance_momentum=beta,
                                           adaptive_projected_guidance_rescale=r, eta=eta,
                                           use_original_formulation=True, adaptive_projected_guidance_start_step=1)
    ref.momentum_buffer = mod.MomentumBuffer(beta)
    ours = APGMix(s, cfg_scale=s_cfg, sigma_switch=SWITCH, momentum=beta, norm_threshold=r, eta=eta)
    x = randn(B, *SHAPE, seed=5, dtype=torch.float32)
    for k in range(STEPS):
        c, u = branches(k, torch.float32)
        ref.set_state(step=k, num_inference_steps=STEPS, timestep=torch.tensor(999 - k))
        expected = ref.forward(c, u).pred
        got = ours.predict(TableDenoiser(c, u, space="x0"), x, step_at(SIGMAS[k]), conditions()).x0
        assert torch.allclose(got, expected, atol=1e-5), k
