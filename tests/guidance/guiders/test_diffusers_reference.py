"""diffusers' guiders as a checked reference for the methods that predate this package's new ones (CFG,
CFG-rescale, APG, CFG-Zero*), with the mapping of conventions, and the defects of diffusers 0.42.1
shown on cases small enough to check by hand: each defect test asserts the right (hand) value of
diffusers' code and is a strict xfail, so a diffusers release that fixes it turns the test red and
this file gets updated. The suite's own value on the same case is asserted outright."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidance.guiders import AdaptiveProjectedGuidance, AutoGuidance, CFGZeroStar, make_guidance
from guidance.guiders.cfg_rescale import rescale
from guidance.internals import gaussian_blur_2d
from tests.guidance.guiders.guider_helpers import B, SHAPE, SIGMAS, TableDenoiser, conditions, diffusers_guiders, diffusers_module, randn, step_at


def pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, c = randn(B, *SHAPE, seed=seed, dtype=torch.float32), randn(B, *SHAPE, seed=seed + 1, dtype=torch.float32)
    return x, c, 0.6 * c + 0.5 * randn(B, *SHAPE, seed=seed + 2, dtype=torch.float32)


def test_cfg_scale_conventions():
    """The suite's s is diffusers' guidance_scale (u + s (c - u)); diffusers' use_original_formulation
    (c + w (c - u), Ho & Salimans' w) is the suite's s = w + 1."""
    guiders = diffusers_guiders()
    x, c, u = pair(0)
    ours = make_guidance("cfg", 4.0).predict(TableDenoiser(c, u), x, step_at(SIGMAS[5]), conditions()).eps
    assert torch.allclose(ours, guiders.ClassifierFreeGuidance(guidance_scale=4.0).forward(c, u).pred, atol=1e-6)
    original = guiders.ClassifierFreeGuidance(guidance_scale=3.0, use_original_formulation=True)
    assert torch.allclose(ours, original.forward(c, u).pred, atol=1e-6)


def test_cfg_rescale_equals_diffusers_guidance_rescale_on_x0():
    """The suite rescales x0 (the paper's x prediction); diffusers rescales whatever it is given, so the
    two agree on x0 predictions (on an eps model's eps they differ: docs/guidance.md)."""
    guiders = diffusers_guiders()
    x, c, u = pair(3)
    ours = make_guidance("cfg-rescale", 5.0, phi=0.7).predict(TableDenoiser(c, u, space="x0"), x, step_at(SIGMAS[6]),
                                                              conditions()).x0
    ref = guiders.ClassifierFreeGuidance(guidance_scale=5.0, guidance_rescale=0.7).forward(c, u).pred
    assert torch.allclose(ours, ref, atol=1e-5)


def test_apg_equals_diffusers_original_formulation_over_a_trajectory():
    """The suite's x0 = x0_c + (s - 1) (D_orth + eta D_par) (the paper's Algorithm 1) is diffusers'
    use_original_formulation at guidance_scale s - 1. diffusers' default, x0_u + s (D_orth + eta D_par),
    is another method unless eta = 1 (it keeps (1 - eta) D_par less of the conditional's own update)."""
    mod = diffusers_module("diffusers.guiders.adaptive_projected_guidance")
    s, beta, r, eta = 6.0, -0.5, 4.0, 0.0
    ref = mod.AdaptiveProjectedGuidance(guidance_scale=s - 1, adaptive_projected_guidance_momentum=beta,
                                        adaptive_projected_guidance_rescale=r, eta=eta, use_original_formulation=True)
    ref.momentum_buffer = mod.MomentumBuffer(beta)
    ours = AdaptiveProjectedGuidance(s, momentum=beta, norm_threshold=r, eta=eta)
    for k in range(4):
        x, c, u = pair(10 * k)
        ref.set_state(step=k, num_inference_steps=4, timestep=torch.tensor(900 - k))
        got = ours.predict(TableDenoiser(c, u, space="x0"), x, step_at(SIGMAS[k]), conditions()).x0
        assert torch.allclose(got, ref.forward(c, u).pred, atol=1e-5), k
    default = mod.AdaptiveProjectedGuidance(guidance_scale=s, adaptive_projected_guidance_rescale=r, eta=eta)
    x, c, u = pair(50)
    fresh = AdaptiveProjectedGuidance(s, momentum=0.0, norm_threshold=r, eta=eta)
    ours = fresh.predict(TableDenoiser(c, u, space="x0"), x, step_at(SIGMAS[0]), conditions()).x0
    assert not torch.allclose(ours, default.forward(c, u).pred, atol=1e-2)


def test_cfg_zero_star_equals_diffusers_on_flow_velocities():
    """The suite applies CFG-Zero* to the rectified-flow velocity (any model); on flow predictions it is
    diffusers' ClassifierFreeZeroStarGuidance, zero-init step included (diffusers adds 1e-8 to |u_u|^2)."""
    guiders = diffusers_guiders()
    ref = guiders.ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=1)
    ours = CFGZeroStar(4.0, zero_init_steps=1)
    for k in range(3):
        x, c, u = pair(20 + k)
        ref.set_state(step=k, num_inference_steps=20, timestep=torch.tensor(999 - k))
        got = ours.predict(TableDenoiser(c, u, space="flow"), x, step_at(SIGMAS[k]), conditions()).get("flow")
        assert torch.allclose(got, ref.forward(c, u).pred, atol=1e-5), k


# defects of diffusers 0.42.1 ------------------------------------------------------------------------

GRID = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])  # one row, a 2x2 grid of tokens, one channel


def test_suite_seg_blur_by_hand():
    assert torch.equal(gaussian_blur_2d(GRID, (2, 2), 1e-3), GRID)  # a vanishing blur keeps the queries
    assert torch.allclose(gaussian_blur_2d(GRID, (2, 2), float("inf")), torch.full_like(GRID, 1.5))  # the mean


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 _gaussian_blur_2d swaps its branches (PR #14187): a "
                                       "finite sigma gives the mean query")
def test_diffusers_seg_blur_finite_sigma():
    mod = diffusers_module("diffusers.hooks.smoothed_energy_guidance_utils")
    assert torch.allclose(mod._gaussian_blur_2d(GRID.clone(), 1, 1e-3, 9999.0), GRID)


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 _gaussian_blur_2d swaps its branches (PR #14187): an "
                                       "infinite sigma runs a 3-tap blur, not the mean")
def test_diffusers_seg_blur_infinite_sigma():
    mod = diffusers_module("diffusers.hooks.smoothed_energy_guidance_utils")
    assert torch.allclose(mod._gaussian_blur_2d(GRID.clone(), 600001, 1e5, 9999.0), torch.full_like(GRID, 1.5))


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 SmoothedEnergyGuidance.prepare_models never counts its "
                                       "passes, so the blur hook is never installed and SEG is plain CFG")
def test_diffusers_seg_installs_its_hook_on_the_third_pass(monkeypatch):
    mod = diffusers_module("diffusers.guiders.smoothed_energy_guidance")
    installed = []
    monkeypatch.setattr(mod, "_apply_smoothed_energy_guidance_hook", lambda *a, **k: installed.append(a))
    guider = mod.SmoothedEnergyGuidance(guidance_scale=3.0, seg_guidance_scale=2.0, seg_guidance_layers=[0])
    guider.set_state(step=1, num_inference_steps=10, timestep=torch.tensor(900))
    assert guider.num_conditions == 3  # cond, uncond, cond with blurred queries
    for _ in range(3):
        guider.prepare_models(nn.Module())
    assert len(installed) == 1


def test_suite_tcfg_branches_are_cond_then_uncond():
    x, c, u = pair(30)
    model = TableDenoiser(c, u)
    make_guidance("tcfg", 3.0).predict(model, x, step_at(SIGMAS[4]), conditions())
    assert model.rows == 2 * B


@pytest.mark.xfail(raises=AttributeError, strict=True,
                   reason="diffusers 0.42.1 TangentialClassifierFreeGuidance.is_conditional reads "
                          "_num_outputs_prepared, which does not exist (#14794)")
def test_diffusers_tcfg_is_conditional():
    guider = diffusers_guiders().TangentialClassifierFreeGuidance(guidance_scale=3.0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(999))
    guider.prepare_models(nn.Module())
    assert guider.is_conditional


CONSTANT_CFG = torch.zeros(1, 4)  # a guided prediction with zero std
POSITIVE = torch.tensor([[0.0, 1.0, 2.0, 3.0]])


def test_suite_rescale_of_a_zero_std_prediction_is_the_identity():
    assert torch.equal(rescale(CONSTANT_CFG, POSITIVE, 0.7), CONSTANT_CFG)


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 rescale_noise_cfg divides by a zero std (#13425): NaN")
def test_diffusers_rescale_of_a_zero_std_prediction():
    mod = diffusers_module("diffusers.guiders.guider_utils")
    assert torch.equal(mod.rescale_noise_cfg(CONSTANT_CFG, POSITIVE, 0.7), CONSTANT_CFG)


class OneBlock(nn.Module):
    """The smallest model diffusers' AutoGuidance can hook: one BasicTransformerBlock."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock

        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(8, 2, 4)])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.transformer_blocks[0](h)


def test_suite_autoguidance_weak_model_is_a_separate_deterministic_denoiser():
    x, c, u = pair(40)
    weak = TableDenoiser(u, u)
    g = AutoGuidance(weak, scale=2.0)
    first = g.predict(TableDenoiser(c, c), x, step_at(SIGMAS[3]), conditions()).eps
    assert torch.allclose(first, u + 2.0 * (c - u), atol=1e-6)
    assert torch.equal(first, g.predict(TableDenoiser(c, c), x, step_at(SIGMAS[3]), conditions()).eps)


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 AutoGuidance's 'weak model' is the main model with random "
                                       "dropout (training mode even under eval()) on chosen blocks, not the paper's "
                                       "separately trained weaker model: its second pass is not even deterministic")
def test_diffusers_autoguidance_weak_pass_is_deterministic():
    guiders = diffusers_guiders()
    torch.manual_seed(0)
    model = OneBlock().eval()
    from diffusers.hooks import LayerSkipConfig

    config = LayerSkipConfig(indices=[0], fqn="transformer_blocks", dropout=0.5)  # `auto_guidance_layers` crashes: below
    guider = guiders.AutoGuidance(guidance_scale=2.0, auto_guidance_config=config)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(999))
    guider.prepare_models(model)  # the conditional pass: no hook
    guider.prepare_models(model)  # the "unconditional" pass: the weak model
    h = torch.randn(1, 4, 8)
    with torch.no_grad():
        assert torch.equal(model(h), model(h))


@pytest.mark.xfail(raises=TypeError, strict=True,
                   reason="diffusers 0.42.1 SkipLayerGuidance (and AutoGuidance) build LayerSkipConfig(layer) per "
                          "entry of `*_layers`, an int where a list of indices is expected: len(int) raises when "
                          "the hook is applied")
@pytest.mark.parametrize("which", ["slg", "autoguidance"])
def test_diffusers_layer_lists_are_accepted(which):
    guiders = diffusers_guiders()
    model = OneBlock().eval()
    if which == "slg":
        guider = guiders.SkipLayerGuidance(guidance_scale=3.0, skip_layer_guidance_layers=[0])
        guider.set_state(step=1, num_inference_steps=10, timestep=torch.tensor(900))
    else:
        guider = guiders.AutoGuidance(guidance_scale=2.0, auto_guidance_layers=[0], dropout=0.5)
        guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(999))
    for _ in range(guider.num_conditions):
        guider.prepare_models(model)
        guider.cleanup_models(model)
