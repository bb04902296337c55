"""The effective CFG scale each guider records (guidance.effective_scale, GA-Eval's eq_cfg): exactly the
scale for CFG, and one step of CFG-rescale, APG, CFG-Zero*, PAG and SEG computed by hand from the
table denoiser's eps predictions. Tolerances: float64 throughout, so 1e-9 relative covers the few
reductions between the two computations."""

from __future__ import annotations

import math

import pytest
import torch

from guidance.effective_scale import EffectiveScaleLog, effective_scale, trajectory_mean
from guidance.guiders import make_guidance
from guidance.guiders.cfg import PerSampleCFG
from guidance.guiders.pag import PerturbedAttentionGuidance
from guidance.guiders.seg import SmoothedEnergyGuidance
from guidance.samplers.base import Denoise
from tests.guidance.guiders.guider_helpers import B, F64, PROCESS, SIGMAS, TableDenoiser, conditions, randn, triple

SIGMA = SIGMAS[5]
RTOL = 1e-9


def measured(guidance, model, x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """The [B] effective scale of one evaluation, recorded through the sampler's Denoise."""
    guidance.scale_log = log = EffectiveScaleLog()
    Denoise(model, guidance, conditions(), SIGMAS).guided(x, PROCESS.level(sigma))
    return log.per_sample(B)[:, 0]


def by_hand(guided_eps: torch.Tensor, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    d, v = c - u, guided_eps - u
    return (v * d).sum((1, 2, 3)).abs() / (d * d).sum((1, 2, 3))


def x0_of(eps: torch.Tensor, x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    lv = PROCESS.level(sigma)
    return x * lv.recip_alpha - lv.sigma * eps


def eps_of(x0: torch.Tensor, x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    lv = PROCESS.level(sigma)
    return (x * lv.recip_alpha - x0) / lv.sigma


@pytest.mark.parametrize("scale", [0.0, 1.5, 3.0, 7.5])
def test_cfg_is_its_scale(scale):
    x, c, u, _ = triple()
    got = measured(make_guidance("cfg", scale), TableDenoiser(c, u), x)
    assert torch.allclose(got, torch.full((B,), scale, dtype=F64), rtol=RTOL, atol=1e-12)


def test_cfg_at_one_is_the_conditional_model_scale_one():
    x, c, u, _ = triple()
    model = TableDenoiser(c, u)
    assert torch.equal(measured(make_guidance("cfg", 1.0), model, x), torch.ones(B, dtype=F64))
    assert model.rows == B  # still one pass: nothing extra was run to measure it


def test_measuring_runs_no_extra_pass_and_leaves_the_step_unchanged():
    x, c, u, _ = triple()
    plain_model, logged_model = TableDenoiser(c, u), TableDenoiser(c, u)
    plain = Denoise(plain_model, make_guidance("apg", 6.0), conditions(), SIGMAS)(x, PROCESS.level(SIGMA))
    guidance = make_guidance("apg", 6.0)
    guidance.scale_log = EffectiveScaleLog()
    logged = Denoise(logged_model, guidance, conditions(), SIGMAS)(x, PROCESS.level(SIGMA))
    assert torch.equal(plain.x0, logged.x0) and torch.equal(plain.eps, logged.eps)
    assert plain_model.rows == logged_model.rows == 2 * B


def test_cfg_rescale_one_step_by_hand():
    x, c, u, _ = triple(seed=3)
    s, phi = 4.0, 0.7
    x0_c, x0_u = x0_of(c, x), x0_of(u, x)
    x0_cfg = x0_u + s * (x0_c - x0_u)
    std = lambda t: t.std(dim=(1, 2, 3), keepdim=True)  # noqa: E731
    x0 = phi * x0_cfg * std(x0_c) / std(x0_cfg) + (1 - phi) * x0_cfg
    got = measured(make_guidance("cfg-rescale", s, phi=phi), TableDenoiser(c, u), x)
    want = by_hand(eps_of(x0, x), c, u)
    assert torch.allclose(got, want, rtol=RTOL)
    assert (got < s).all()  # the rescale pulls the step back towards eps_c's norm


@pytest.mark.parametrize("threshold", [0.0, 2.0])
def test_apg_one_step_by_hand(threshold):
    x, c, u, _ = triple(seed=5)
    s, eta = 6.0, 0.0
    x0_c, x0_u = x0_of(c, x), x0_of(u, x)
    diff = x0_c - x0_u  # first step: the momentum buffer is D itself
    if threshold > 0:
        norm = diff.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        diff = diff * torch.clamp(threshold / norm, max=1.0)
    coef = (diff * x0_c).sum((1, 2, 3), keepdim=True) / (x0_c * x0_c).sum((1, 2, 3), keepdim=True)
    parallel = coef * x0_c
    x0 = x0_c + (s - 1) * ((diff - parallel) + eta * parallel)
    got = measured(make_guidance("apg", s, norm_threshold=threshold), TableDenoiser(c, u), x)
    assert torch.allclose(got, by_hand(eps_of(x0, x), c, u), rtol=RTOL)


def test_cfg_zero_star_one_step_by_hand_and_nan_at_zero_init():
    x, c, u, _ = triple(seed=7)
    s = 3.0
    lv = PROCESS.level(SIGMA)
    flow = lambda eps: eps - x0_of(eps, x)  # noqa: E731  u = eps - x0 of the equivalent rectified flow
    u_c, u_u = flow(c), flow(u)
    s_star = (u_c * u_u).sum((1, 2, 3), keepdim=True) / (u_u * u_u).sum((1, 2, 3), keepdim=True)
    vel = s_star * u_u + s * (u_c - s_star * u_u)
    eps = (x + lv.alpha * vel) / (lv.alpha + lv.s)
    got = measured(make_guidance("cfg-zero-star", s), TableDenoiser(c, u), x)
    assert torch.allclose(got, by_hand(eps, c, u), rtol=RTOL)
    assert not torch.allclose(got, torch.full_like(got, s))  # the optimised scale moves it off CFG's
    model = TableDenoiser(c, u)
    first = measured(make_guidance("cfg-zero-star", s), model, x, sigma=SIGMAS[0])
    assert torch.isnan(first).all() and model.rows == 0  # zero-init: no network, nothing to measure


@pytest.mark.parametrize("cls", [PerturbedAttentionGuidance, SmoothedEnergyGuidance])
def test_perturbed_methods_by_hand(cls):
    # c = 1, u = 0.5, p = 0.25 (tests/guidance/guiders/perturbed_cases.py): with CFG 2 and s 3 the guided eps is 3.75,
    # so v = 3.25 along d = 0.5: 6.5. Alone (no eps_u) it is measured from eps_p: 3.25 - 0.25 over 0.75 = 1 + s.
    c, u, p = (torch.full((B, 1, 2, 2), v, dtype=F64) for v in (1.0, 0.5, 0.25))
    x = torch.zeros(B, 1, 2, 2, dtype=F64)
    with_cfg = measured(cls(3.0, cfg_scale=2.0), TableDenoiser(c, u, p), x)
    assert torch.allclose(with_cfg, torch.full((B,), 6.5, dtype=F64), rtol=RTOL)
    alone = measured(cls(3.0), TableDenoiser(c, u, p), x)
    assert torch.allclose(alone, torch.full((B,), 4.0, dtype=F64), rtol=RTOL)
    assert torch.equal(measured(cls(0.0), TableDenoiser(c, u, p), x), torch.ones(B, dtype=F64))


def test_pag_with_cfg_credits_only_the_part_along_cfg():
    """Random branches: PAG's pull (c - p) counts only through its projection on (c - u), as GA-Eval's `vp`."""
    x, c, u, p = triple(seed=11)
    got = measured(PerturbedAttentionGuidance(2.0, cfg_scale=4.0), TableDenoiser(c, u, p), x)
    assert torch.allclose(got, by_hand(u + 4.0 * (c - u) + 2.0 * (c - p), c, u), rtol=RTOL)


def test_gradient_methods_record_nan():
    log = EffectiveScaleLog()
    log.close(TableDenoiser(*triple()[1:3])(torch.zeros(B, 3, 8, 8, dtype=F64), PROCESS.level(SIGMA),
                                             torch.arange(B)), B)
    assert torch.isnan(log.per_sample(B)).all()


def test_per_sample_cfg_uses_each_rows_scale():
    x, c, u, _ = triple(seed=13)
    scales = [1.0, 2.5, 9.0, 4.0, 3.0]
    guidance = PerSampleCFG(scales).for_samples([4, 1, 2])
    got = measured(guidance, TableDenoiser(c, u), x)
    assert torch.allclose(got, torch.tensor([3.0, 2.5, 9.0], dtype=F64), rtol=RTOL)
    with pytest.raises(ValueError, match="for_samples"):
        measured(PerSampleCFG(scales), TableDenoiser(c, u), x)


def test_effective_scale_of_equal_branches_is_nan_and_the_mean_skips_it():
    a = randn(2, 3)
    assert torch.isnan(effective_scale(a, a, a)).all()
    steps = torch.tensor([[2.0, math.nan, 4.0], [math.nan, math.nan, math.nan]], dtype=F64)
    mean = trajectory_mean(steps)
    assert mean[0] == 3.0 and math.isnan(mean[1])
