"""The methods beyond GLIDE: each against its paper's formula written out here, edge cases, costs,
one guided DDIM step with the zoo model, and autoguidance on the exact Gaussian mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from typing import Sequence

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import (REGISTRY, AdaptiveProjectedGuidance, AutoGuidance, CFGPlusPlus, CFGZeroStar,
                              ClassifierFreeGuidance, ClassifierGuidance, DynamicThresholdCFG, IntervalCFG, NoGuidance,
                              RescaledCFG, make_guidance)
from guidance.guiders.apg import clip_norm, project
from guidance.guiders.base import Guidance, StepInfo
from guidance.guiders.cfg_zero_star import optimized_scale
from guidance.guiders.schedules import constant, interval, linear_in_log_sigma
from guidance.prediction import Prediction
from guidance.process import NoiseLevel, VPDiscrete
from guidance.protocols import Conditions, Denoiser
from guidance.samplers import SAMPLERS, Denoise, sample
from bench.zoo import sized

F64 = torch.float64
B, SHAPE = 4, (3, 5, 6)
PROCESS = VPDiscrete.from_schedule("linear", 1000)
SIGMAS = PROCESS.sigmas(20, "respace")  # the old respace("20"): step index i is SIGMAS[19 - i]
TIMESTEPS = PROCESS.timesteps("respace", 20)  # descending, as SIGMAS
EVALUATIONS = SAMPLERS["ddim"].evaluations(SIGMAS)


def sigma_of(index: int, sigmas: Sequence[float] = SIGMAS) -> float:
    """The sigma of the old respaced step `index` (0 = the last step before sigma 0)."""
    return sigmas[len(sigmas) - 2 - index]


def step_of(sigma: float, batch: int, process: VPDiscrete = PROCESS, trajectory: Sequence[float] = SIGMAS) -> StepInfo:
    level = process.level(sigma)
    return StepInfo(level, level.timesteps(batch, torch.device("cpu")), tuple(trajectory))


class TableDenoiser:
    """A Denoiser with eps = table[cond]: cond holds row ids; the null condition of row i is row i + B."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table
        self.rows = 0  # rows evaluated, to count passes

    def __call__(self, x: torch.Tensor, level: NoiseLevel, cond: torch.Tensor) -> Prediction:
        self.rows += len(cond)
        return Prediction(x, level, "eps", self.table[cond])

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return cond + B


def ddim_step(model: Denoiser, guidance: Guidance, x: torch.Tensor, sigma: float, cond: Conditions,
              process: VPDiscrete = PROCESS, sigmas: Sequence[float] = SIGMAS,
              clip_denoised: bool = True) -> torch.Tensor:
    """One DDIM step from `sigma` to the next sigma of the trajectory."""
    i = list(sigmas).index(sigma)
    levels = [process.level(sigmas[i]), process.level(sigmas[i + 1])]
    return SAMPLERS["ddim"].fn(Denoise(model, guidance, cond, sigmas, clip_denoised), x, levels,
                               lambda: torch.zeros_like(x))


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def setup(index=12, seed=0, eps_c=None, eps_u=None):
    """x_t, a model whose conditional / unconditional eps are eps_c / eps_u, the step and conditions."""
    x = randn(B, *SHAPE, seed=seed)
    eps_c = randn(B, *SHAPE, seed=seed + 1) if eps_c is None else eps_c
    eps_u = randn(B, *SHAPE, seed=seed + 2) if eps_u is None else eps_u
    model = TableDenoiser(torch.cat([eps_c, eps_u]))
    return x, model, step_of(sigma_of(index), B), Conditions(model=torch.arange(B))


def ab(index):
    """sqrt(abar), sqrt(1 - abar) of the old respaced step `index`, from the table (not the level)."""
    abar = float(PROCESS.alphas_cumprod[TIMESTEPS[len(TIMESTEPS) - 1 - index]])
    return math.sqrt(abar), math.sqrt(1 - abar)


def x0_from(x, eps, index):
    a, b = ab(index)
    return (x - b * eps) / a


def eps_from(x, x0, index):
    a, b = ab(index)
    return (x - a * x0) / b


# ---------------------------------------------------------------- schedules and interval guidance


def test_schedules_are_functions_of_sigma():
    sched = interval(3.0, 0.28, 5.42)
    assert sched(0.28) == 1.0 and sched(0.2800001) == 3.0 and sched(5.42) == 3.0 and sched(5.4201) == 1.0
    assert type(sched(100.0)) is float and sched(100.0) == 1.0  # exactly the identity: CFG skips a pass
    assert interval(2.0, 1.0, 2.0, identity=0.0)(0.5) == 0.0
    assert constant(2.5)(0.1) == constant(2.5)(50.0) == 2.5
    ramp = linear_in_log_sigma(1.0, 5.0, 0.1, 10.0)
    assert ramp(0.01) == 1.0 and ramp(100.0) == 5.0 and ramp(1.0) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        interval(3.0, 5.0, 1.0)
    # the same sigma gets the same scale whatever the number of steps
    g = IntervalCFG(3.0)
    cosine = VPDiscrete.from_schedule("cosine", 1000)
    for n in (10, 20, 50):
        sigmas = cosine.sigmas(n)
        for t, sigma in zip(cosine.timesteps("respace", n), sigmas):
            abar = float(cosine.alphas_cumprod[t])
            expected = 3.0 if 0.28 < math.sqrt((1 - abar) / abar) <= 5.42 else 1.0
            assert g.scale_at(step_of(sigma, 1, cosine, sigmas)) == expected


def test_interval_cfg_skips_the_unconditional_pass_outside_and_counts_it():
    g = IntervalCFG(4.0, sigma_lo=0.3, sigma_hi=2.0)
    sigmas = SIGMAS[:-1][::-1]  # by old step index
    inside = [i for i, s in enumerate(sigmas) if 0.3 < s <= 2.0]
    assert inside and len(inside) < len(sigmas)
    for index in (inside[0], len(sigmas) - 1, 0):
        x, model, step, cond = setup(index)
        pred = g.predict(model, x, step, cond)
        eps_c, eps_u = model.table[:B], model.table[B:]
        if index in inside:
            assert model.rows == 2 * B
            torch.testing.assert_close(pred.eps, eps_u + 4.0 * (eps_c - eps_u), rtol=0, atol=1e-12)
        else:
            assert model.rows == B
            assert torch.equal(pred.eps, eps_c)
        assert g.cost(sigmas[index]).network_passes == (2 if index in inside else 1)
    total = g.cost_per_image(EVALUATIONS, SIGMAS)
    assert total.network_passes == 2 * len(inside) + (len(sigmas) - len(inside))
    assert g.cost().network_passes == 2  # where guidance is active


@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_cost_per_image_sums_the_evaluations(sampler):
    """One cost per model evaluation: n per trajectory for DDIM, 2n - 1 for Heun (its last step is Euler)."""
    evaluations = SAMPLERS[sampler].evaluations(SIGMAS)
    n = len(evaluations)
    assert n == (20 if sampler == "ddim" else 39)

    def cost(method: Guidance):
        return method.cost_per_image(evaluations, SIGMAS)

    assert cost(NoGuidance()).network_passes == n
    assert cost(ClassifierFreeGuidance(3.0)).network_passes == 2 * n
    assert cost(ClassifierFreeGuidance(1.0)).network_passes == n
    assert cost(CFGPlusPlus(0.6)).network_passes == cost(CFGPlusPlus(1.0)).network_passes == 2 * n  # never skips
    clf = cost(ClassifierGuidance(torch.nn.Identity(), 2.0))
    assert (clf.network_passes, clf.guide_passes, clf.backward_passes) == (n, n, n)
    for cls in (RescaledCFG, AdaptiveProjectedGuidance, DynamicThresholdCFG):
        assert cost(cls(3.0)).network_passes == 2 * n
        assert cost(cls(1.0)).network_passes == n
    assert cost(CFGZeroStar(3.0)).network_passes == 2 * (n - 1)  # zero-init step: no pass
    assert cost(CFGZeroStar(3.0, zero_init_steps=0)).network_passes == 2 * n
    assert cost(AutoGuidance(torch.nn.Identity(), 2.0)).network_passes == 2 * n


class _Counting:
    """Wraps a network and counts the rows it evaluates, and the rows that will be backpropagated."""

    def __init__(self, model) -> None:
        self.model, self.rows, self.backward_rows = model, 0, 0

    def _count(self, x: torch.Tensor) -> None:
        self.rows += len(x)
        self.backward_rows += len(x) if x.requires_grad else 0

    def __call__(self, x, t, *rest):
        self._count(x)
        return self.model(x, t, *rest)

    def encode_image(self, x, t):
        self._count(x)
        return self.model.encode_image(x, t)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("name", sorted(n for n, (cls, needs) in REGISTRY.items() if needs != "decoder_clip"
                                         and "embedded_guidance" not in getattr(cls, "needs", ())))
def test_reported_cost_is_the_work_the_sampler_does(name, negative):
    """cost_per_image against passes counted in a real sampling run, at the identity scale (where
    methods skip work, unless a negative prompt keeps CFG's second branch) and at a guiding scale."""
    size = sized.CONFIGS["tiny"]
    nets = sized.build_models(size, torch.device("cpu"))
    cond = sized.conditions(size, 2, torch.device("cpu"))
    if negative:
        cond = Conditions(cond.model, cond.labels, cond.clip_tokens, negative=cond.model.flip(0))
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(6, "leading")
    learned = nets["unet"].learned_variance
    identity = REGISTRY[name][0].identity_scale
    # CFG++ has no identity scale (it always runs both passes) and its lambda lies in [0, 1]
    scales = (0.0, 0.6) if name == "cfg-pp" else (identity, 4.0)
    for scale in scales:
        unet, weak, guide = _Counting(nets["unet"]), _Counting(nets["unet"]), _Counting(None)
        guide.model = nets["clip" if name == "clip" else "classifier"]
        method = make_guidance(name, scale, {"classifier": guide, "clip": guide,
                                             "weak": NetworkDenoiser(weak, "eps", learned)})
        sample(NetworkDenoiser(unet, "eps", learned), process, sigmas, method, cond, (3, 16, 16), range(2),
               sampler="ddim")
        cost = method.cost_per_image(SAMPLERS["ddim"].evaluations(sigmas), sigmas, negative=negative)
        assert cost.network_passes == (unet.rows + weak.rows) / 2, (name, scale)
        assert cost.guide_passes == guide.rows / 2 and cost.backward_passes == guide.backward_rows / 2, (name, scale)
        assert unet.backward_rows == weak.backward_rows == 0, (name, scale)  # backward through the guide only


# ---------------------------------------------------------------- CFG rescale


def rescale_reference(x, eps_c, eps_u, s, phi, index):
    x0_c, x0_u = x0_from(x, eps_c, index), x0_from(x, eps_u, index)
    out = torch.empty_like(x)
    for i in range(B):
        x_cfg = x0_u[i] + s * (x0_c[i] - x0_u[i])
        x_rescaled = x_cfg * x0_c[i].std() / x_cfg.std()
        out[i] = phi * x_rescaled + (1 - phi) * x_cfg
    return eps_from(x, out, index)


@pytest.mark.parametrize("s", [0.0, 2.5, 7.0])
@pytest.mark.parametrize("phi", [0.0, 0.7, 1.0])
def test_cfg_rescale_matches_paper(s, phi):
    x, model, step, cond = setup(12)
    pred = RescaledCFG(s, phi).predict(model, x, step, cond)
    expected = rescale_reference(x, model.table[:B], model.table[B:], s, phi, 12)
    torch.testing.assert_close(pred.eps, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("phi", [0.0, 0.7, 1.0])
def test_cfg_rescale_in_the_models_space_is_diffusers_rule(phi):
    """rescale_space="model": diffusers' rescale_noise_cfg on the model's eps, written out per sample."""
    x, model, step, cond = setup(12)
    pred = RescaledCFG(5.0, phi, rescale_space="model").predict(model, x, step, cond)
    eps_c, eps_u = model.table[:B], model.table[B:]
    eps_cfg = eps_u + 5.0 * (eps_c - eps_u)
    std_c = eps_c.std(dim=list(range(1, x.ndim)), keepdim=True)
    std_cfg = eps_cfg.std(dim=list(range(1, x.ndim)), keepdim=True)
    expected = phi * eps_cfg * std_c / std_cfg + (1 - phi) * eps_cfg
    torch.testing.assert_close(pred.eps, expected, rtol=1e-9, atol=1e-9)
    if phi > 0:  # another rule than the x0-space default
        assert (pred.eps - RescaledCFG(5.0, phi).predict(model, x, step, cond).eps).abs().max() > 1e-3
    with pytest.raises(ValueError, match="unknown rescale space"):
        RescaledCFG(5.0, phi, rescale_space="eps")


def test_cfg_rescale_edge_cases():
    x, model, step, cond = setup(12)
    pred = RescaledCFG(1.0).predict(model, x, step, cond)  # s = 1: conditional model, one pass
    assert model.rows == B and torch.equal(pred.eps, model.table[:B])
    # identical branches with a constant x0: std(x0_cfg) = 0 -> no NaN, no rescaling
    const_eps = eps_from(x, torch.full_like(x, 0.3), 12)
    x, model, step, cond = setup(12, eps_c=const_eps, eps_u=const_eps)
    pred = RescaledCFG(5.0, 0.7).predict(model, x, step, cond)
    assert torch.isfinite(pred.eps).all()
    torch.testing.assert_close(pred.eps, const_eps, rtol=0, atol=1e-9)
    # constant conditional x0 (std 0), varied unconditional: x0 = (1 - phi) x0_cfg, finite
    x, model, step, cond = setup(12, eps_c=const_eps)
    pred = RescaledCFG(5.0, 0.7).predict(model, x, step, cond)
    x0_cfg = x0_from(x, model.table[B:] + 5.0 * (model.table[:B] - model.table[B:]), 12)
    torch.testing.assert_close(x0_from(x, pred.eps, 12), 0.3 * x0_cfg, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- APG


def apg_reference(x0_cs, x0_us, s, beta, r, eta):
    """Algorithm 1 of Sadat et al., per sample on flattened vectors, over a sequence of steps."""
    outs, running = [], None
    for x0_c, x0_u in zip(x0_cs, x0_us):
        diff = x0_c - x0_u
        running = diff.clone() if running is None else diff + beta * running
        out = torch.empty_like(x0_c)
        for i in range(B):
            d, c = running[i].flatten().clone(), x0_c[i].flatten()
            if r > 0 and d.norm() > r:
                d = d * (r / d.norm())
            par = (d @ c) / (c @ c) * c if float(c @ c) > 0 else torch.zeros_like(d)
            out[i] = (c + (s - 1) * ((d - par) + eta * par)).view_as(x0_c[i])
        outs.append(out)
    return outs


@pytest.mark.parametrize("s,beta,r,eta", [(6.0, -0.5, 4.0, 0.0), (3.0, 0.0, 0.0, 1.0), (0.0, -0.5, 2.0, 0.3),
                                          (10.0, 0.5, 100.0, 0.0)])
def test_apg_matches_algorithm_over_steps(s, beta, r, eta):
    g = AdaptiveProjectedGuidance(s, momentum=beta, norm_threshold=r, eta=eta)
    g.reset()
    x0_cs, x0_us, got = [], [], []
    for k, index in enumerate((15, 14, 13)):
        x, model, step, cond = setup(index, seed=10 * k)
        pred = g.predict(model, x, step, cond)
        x0_cs.append(x0_from(x, model.table[:B], index))
        x0_us.append(x0_from(x, model.table[B:], index))
        got.append(x0_from(x, pred.eps, index))
    for a, b in zip(got, apg_reference(x0_cs, x0_us, s, beta, r, eta)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_apg_momentum_resets_and_reduces_to_cfg():
    g = AdaptiveProjectedGuidance(5.0, momentum=-0.5, norm_threshold=0.0)  # a clipped norm would hide it
    x, model, step, cond = setup(10, seed=3)
    first = g.predict(model, x, step, cond).eps
    later = step_of(sigma_of(9), B)
    second = g.predict(model, x, later, cond).eps  # the next sigma: the buffer holds the first diff
    fresh = AdaptiveProjectedGuidance(5.0, momentum=-0.5, norm_threshold=0.0).predict(model, x, later, cond).eps
    assert not torch.allclose(second, fresh)
    # the same sigma again (Heun's second evaluation is the next step's first) starts from the buffer before it
    torch.testing.assert_close(g.predict(model, x, later, cond).eps, second, rtol=0, atol=0)
    g.reset()
    torch.testing.assert_close(g.predict(model, x, step, cond).eps, first, rtol=0, atol=0)
    with pytest.raises(ValueError, match="reset"):
        g.update(torch.zeros(2, 3))  # a batch of another shape without reset()
    # eta = 1, no momentum, no threshold: plain CFG (in x0 space, hence also in eps)
    cfg_like = AdaptiveProjectedGuidance(5.0, momentum=0.0, norm_threshold=0.0, eta=1.0)
    eps_c, eps_u = model.table[:B], model.table[B:]
    torch.testing.assert_close(cfg_like.predict(model, x, step, cond).eps, eps_u + 5.0 * (eps_c - eps_u),
                               rtol=1e-9, atol=1e-9)


def test_apg_momentum_is_keyed_by_sigma():
    """D_bar advances when sigma falls; a second evaluation at a sigma already seen restarts from the
    buffer before it, so Heun's two evaluations per sigma do not apply the momentum twice."""
    g = AdaptiveProjectedGuidance(5.0, momentum=-0.5)
    d1, d2, d3, d4 = (randn(B, 7, seed=20 + k) for k in range(4))
    torch.testing.assert_close(g.update(d1, 3.0), d1, rtol=0, atol=0)
    torch.testing.assert_close(g.update(d2, 2.0), d2 - 0.5 * d1, rtol=0, atol=0)
    torch.testing.assert_close(g.update(d3, 2.0), d3 - 0.5 * d1, rtol=0, atol=0)
    torch.testing.assert_close(g.update(d4, 1.0), d4 - 0.5 * (d3 - 0.5 * d1), rtol=0, atol=1e-15)


def test_apg_edge_cases():
    x, model, step, cond = setup(10)
    g = AdaptiveProjectedGuidance(1.0)
    assert torch.equal(g.predict(model, x, step, cond).eps, model.table[:B]) and model.rows == B
    # identical branches: zero update; zero x0_c: projection onto a zero vector gives no NaN
    same = randn(B, *SHAPE, seed=7)
    x, model, step, cond = setup(10, eps_c=same, eps_u=same)
    torch.testing.assert_close(AdaptiveProjectedGuidance(8.0).predict(model, x, step, cond).eps, same,
                               rtol=0, atol=1e-9)
    # exact zero vectors (through eps, x0 = 0 only holds up to rounding, which has a direction)
    v = randn(B, *SHAPE, seed=8)
    parallel, orthogonal = project(v, torch.zeros_like(v))
    assert torch.equal(parallel, torch.zeros_like(v)) and torch.equal(orthogonal, v)
    assert torch.equal(clip_norm(torch.zeros_like(v), 2.0), torch.zeros_like(v))
    g = AdaptiveProjectedGuidance(8.0, momentum=0.0, norm_threshold=2.0)
    torch.testing.assert_close(g.guided_x0(torch.zeros_like(v), v, 8.0), 7.0 * clip_norm(-v, 2.0), rtol=0, atol=1e-12)
    clipped = clip_norm(v, 2.0)
    torch.testing.assert_close(clipped.flatten(1).norm(dim=1), torch.full((B,), 2.0, dtype=F64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- CFG-Zero*


def zero_star_reference(x, eps_c, eps_u, w, index):
    a, b = ab(index)
    v_c, v_u = eps_c - x0_from(x, eps_c, index), eps_u - x0_from(x, eps_u, index)  # rectified-flow velocity
    out = torch.empty_like(x)
    for i in range(B):
        s_star = (v_c[i].flatten() @ v_u[i].flatten()) / (v_u[i].flatten() @ v_u[i].flatten())
        v = s_star * v_u[i] + w * (v_c[i] - s_star * v_u[i])
        out[i] = (x[i] + a * v) / (a + b)  # from x = a x0 + b eps and v = eps - x0
    return out


@pytest.mark.parametrize("w", [0.0, 2.0, 5.0])
@pytest.mark.parametrize("index", [18, 9, 1])
def test_cfg_zero_star_matches_paper(w, index):
    x, model, step, cond = setup(index)
    pred = CFGZeroStar(w).predict(model, x, step, cond)
    torch.testing.assert_close(pred.eps, zero_star_reference(x, model.table[:B], model.table[B:], w, index),
                               rtol=1e-8, atol=1e-9)
    plain = CFGZeroStar(w, use_optimized_scale=False).predict(model, x, step, cond)  # s* = 1: CFG
    eps_c, eps_u = model.table[:B], model.table[B:]
    torch.testing.assert_close(plain.eps, eps_u + w * (eps_c - eps_u), rtol=1e-8, atol=1e-9)


def test_cfg_zero_star_zero_init_and_edges():
    last = len(SIGMAS) - 2  # the first step of the trajectory
    x, model, step, cond = setup(last)
    pred = CFGZeroStar(4.0).predict(model, x, step, cond)
    assert model.rows == 0  # no network at a zero-init step
    a, b = ab(last)
    torch.testing.assert_close(x0_from(x, pred.eps, last), x / (a + b), rtol=1e-9, atol=1e-9)  # v = 0
    torch.testing.assert_close(pred.get("flow"), torch.zeros_like(x), rtol=0, atol=0)
    out = ddim_step(model, CFGZeroStar(4.0), x, sigma_of(last), cond, clip_denoised=False)
    a_prev, b_prev = ab(last - 1)
    torch.testing.assert_close(out / (a_prev + b_prev), x / (a + b), rtol=1e-9, atol=1e-9)  # z stays
    # without the trajectory no sigma is known to be among the first steps: nothing is zeroed
    x, model, step, cond = setup(last)
    CFGZeroStar(4.0).predict(model, x, StepInfo(step.level, step.t), cond)
    assert model.rows == 2 * B
    x, model, step, cond = setup(last - 1)
    CFGZeroStar(4.0).predict(model, x, step, cond)
    assert model.rows == 2 * B  # only the first step is zeroed by default
    x, model, step, cond = setup(10)
    assert torch.equal(CFGZeroStar(1.0).predict(model, x, step, cond).eps, model.table[:B]) and model.rows == B
    # v_u = 0: s* is then irrelevant (s* v_u = 0); it is 1, not NaN
    v = randn(B, *SHAPE, seed=9)
    assert torch.equal(optimized_scale(v, torch.zeros_like(v)), torch.ones(B, 1, 1, 1, dtype=F64))
    half = torch.full((B, 1, 1, 1), 0.5, dtype=F64)
    torch.testing.assert_close(optimized_scale(v, 2.0 * v), half, rtol=0, atol=1e-12)
    # eps_u = x / (a + b) is v_u = 0 up to rounding: finite
    x, model, step, cond = setup(10, eps_u=x / sum(ab(10)))
    assert torch.isfinite(CFGZeroStar(3.0).predict(model, x, step, cond).eps).all()


# ---------------------------------------------------------------- dynamic thresholding


@pytest.mark.parametrize("s", [0.0, 1.0, 4.0, 12.0])
def test_dynamic_threshold_matches_imagen(s):
    x, model, step, cond = setup(3)  # low noise: x0 mostly in range, tails beyond 1
    pred = DynamicThresholdCFG(s, percentile=0.995).predict(model, x, step, cond)
    eps_c, eps_u = model.table[:B], model.table[B:]
    x0 = x0_from(x, eps_u + s * (eps_c - eps_u), 3).numpy()
    expected = np.empty_like(x0)
    for i in range(B):
        t = max(np.percentile(np.abs(x0[i]), 99.5), 1.0)
        expected[i] = np.clip(x0[i], -t, t) / t
    torch.testing.assert_close(x0_from(x, pred.eps, 3), torch.from_numpy(expected), rtol=1e-9, atol=1e-9)
    assert model.rows == (B if s == 1.0 else 2 * B)


def test_dynamic_threshold_leaves_in_range_x0_alone():
    x = randn(B, *SHAPE)
    x0 = torch.rand(B, *SHAPE, dtype=F64, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    eps = eps_from(x, x0, 5)
    _, model, step, cond = setup(5, eps_c=eps, eps_u=eps)
    pred = DynamicThresholdCFG(6.0).predict(model, x, step, cond)
    torch.testing.assert_close(pred.eps, eps, rtol=0, atol=1e-9)  # threshold 1: nothing changes


# ---------------------------------------------------------------- negative prompts and the mixture


@pytest.fixture(scope="module")
def mixture():
    base = PROCESS
    means = torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]])
    return GaussianMixture(means, torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.5, 0.3, 0.2]), base.alphas_cumprod)


def exact(mixture: GaussianMixture) -> NetworkDenoiser:
    """The mixture's exact eps as a Denoiser (it indexes its table by whole timesteps: discrete sigmas only)."""
    return NetworkDenoiser(MixtureDenoiser(mixture), "eps")


class _NullIs:
    """A Denoiser whose null caption is a given condition (what a negative prompt stands in for)."""

    def __init__(self, model: Denoiser, null: torch.Tensor) -> None:
        self.model, self.null = model, null

    def __call__(self, x: torch.Tensor, level: NoiseLevel, cond: torch.Tensor) -> Prediction:
        return self.model(x, level, cond)

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return self.null


@pytest.mark.parametrize("cls", [ClassifierFreeGuidance, RescaledCFG, AdaptiveProjectedGuidance, CFGZeroStar,
                                 DynamicThresholdCFG, IntervalCFG])
def test_negative_prompt_replaces_the_unconditional_branch(mixture, cls):
    model = exact(mixture)
    x, y = randn(6, 3, seed=4), torch.tensor([0, 1, 2, 0, 1, 2])
    step = step_of(sigma_of(8), 6)  # sigma 2.27: inside the guidance interval too
    assert step.sigma == pytest.approx(2.27, abs=0.01)
    plain = cls(3.0).predict(model, x, step, Conditions(model=y)).eps
    null = cls(3.0).predict(model, x, step, Conditions(model=y, negative=torch.full_like(y, -1))).eps
    torch.testing.assert_close(null, plain, rtol=0, atol=1e-12)
    # a real negative acts exactly as a model whose null caption is that negative would
    neg = (y + 1) % 3
    got = cls(3.0).predict(model, x, step, Conditions(model=y, negative=neg)).eps
    as_null = cls(3.0).predict(_NullIs(model, neg), x, step, Conditions(model=y)).eps
    torch.testing.assert_close(got, as_null, rtol=0, atol=1e-12)
    assert cls(3.0).active_at(step.sigma) and not torch.allclose(got, plain)  # and it steers
    if cls is ClassifierFreeGuidance:
        neg = (y + 1) % 3
        got = cls(3.0).predict(model, x, step, Conditions(model=y, negative=neg)).eps
        eps_c, eps_n = mixture.eps(x, step.t, y), mixture.eps(x, step.t, neg)
        torch.testing.assert_close(got, eps_n + 3.0 * (eps_c - eps_n), rtol=0, atol=1e-12)


def test_autoguidance_formula_and_edges(mixture):
    main, weak = randn(B, *SHAPE, seed=1), randn(B, *SHAPE, seed=2)
    x, model, step, cond = setup(8, eps_c=main)
    weak_model = TableDenoiser(torch.cat([weak, weak]))
    for s in (0.0, 1.0, 2.5):
        pred = AutoGuidance(weak_model, s).predict(model, x, step, cond)
        torch.testing.assert_close(pred.eps, weak + s * (main - weak), rtol=0, atol=1e-12)
    weak_model.rows = 0
    AutoGuidance(weak_model, 1.0).predict(model, x, step, cond)
    assert weak_model.rows == 0  # s = 1: the weak pass is skipped
    same = AutoGuidance(model, 4.0).predict(model, x, step, cond)  # weak == main: the main model
    torch.testing.assert_close(same.eps, main, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs a weak model"):
        make_guidance("autoguidance", 2.0, {"classifier": None})
    assert isinstance(make_guidance("autoguidance", 2.0, {"weak": weak_model}), AutoGuidance)


def test_autoguidance_with_a_wider_weak_mixture_pulls_samples_to_the_modes(mixture):
    """Weak = the same mixture with 2x the stds: guided samples sit closer to their class mean."""
    weak = GaussianMixture(mixture.means, mixture.stds * 2.0, mixture.weights, mixture.alphas_cumprod)
    sigmas = PROCESS.sigmas(50, "leading")  # = the old respace("ddim50")
    n = 600
    labels = torch.arange(n) % 3
    kwargs = dict(shape=(3,), sample_indices=range(n), seed=2, sampler="ddim", clip_denoised=False, dtype=F64)
    spread = {}
    for s in (0.0, 1.0, 2.0):
        g = AutoGuidance(exact(weak), s)
        x = sample(exact(mixture), PROCESS, sigmas, g, Conditions(model=labels), **kwargs)
        spread[s] = float(((x - mixture.means[labels]) ** 2).sum(-1).mean())
        assert float((x - mixture.means[labels]).mean(0).abs().max()) < 0.1  # no bias, only tighter
    expected_plain = float((3 * mixture.stds[labels] ** 2).mean())
    # s = 1: the main model (DDIM-50 is ~12% tight here); s = 0: the weak model (4x the variance)
    assert spread[1.0] == pytest.approx(expected_plain, rel=0.2)
    assert spread[0.0] == pytest.approx(4 * expected_plain, rel=0.2)
    assert spread[2.0] < 0.5 * spread[1.0], spread


# ---------------------------------------------------------------- the zoo model, end to end

NEW_METHODS = ["cfg-interval", "cfg-rescale", "apg", "cfg-zero-star", "cfg-dynamic-threshold", "autoguidance",
               "cfg-pp", "tcfg", "mambo-g", "fdg", "apg-mix", "cfg-increasing", "cfg-early", "pag", "seg", "nag", "sag"]
OUTSIDE_THIS_STEP = {"slg"}  # its sigma interval (3, 30] excludes the step below (tests/guidance/guiders/test_slg.py)
DISTILLED_ONLY = {"flux-distilled"}  # the zoo takes no guidance-strength input (tests/guidance/sources/test_diffusers_flux.py)
ZOO_SCALES = {"cfg-pp": 0.6}  # CFG++'s lambda lies in [0, 1]; the others guide at 3


@pytest.fixture(scope="module")
def zoo():
    from guidance.zoo.load import load_zoo

    return load_zoo()


class NullCaptionWeak:
    """Stand-in weak Denoiser (any model will do): the zoo denoiser with the caption dropped."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, level: NoiseLevel, cond: torch.Tensor) -> Prediction:
        return self.model(x, level, self.model.null_cond(cond))

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return self.model.null_cond(cond)


def test_every_registered_method_is_covered():
    # universal-clip needs a latent bundle's decoder: tests/guidance/sources/test_diffusers_bundle.py
    assert set(NEW_METHODS) | OUTSIDE_THIS_STEP | DISTILLED_ONLY | {"none", "cfg", "classifier", "clip", "universal-clip"} == set(REGISTRY)


@pytest.fixture(scope="module")
def zoo_case(zoo):
    """One caption, a noisy x at the third of 10 respaced sigmas (sigma ~ 2.8: inside the default guidance
    interval and not a zero-init step) and the unguided step from it (the zoo UNet is slow on 2 CPU cores)."""
    cond = Conditions(model=zoo.tokenizer(["grinning face"]))
    sigmas = zoo.process.sigmas(10, "respace")
    sigma = sigmas[2]
    assert 0.28 < sigma <= 5.42
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = ddim_step(zoo.denoiser, NoGuidance(), x, sigma, cond, zoo.process, sigmas)
    return sigmas, sigma, x, cond, plain


@pytest.mark.parametrize("name", NEW_METHODS)
def test_one_guided_ddim_step_with_the_zoo(zoo, zoo_case, name):
    sigmas, sigma, x, cond, plain = zoo_case
    models = {**zoo.guiding_models(), "weak": NullCaptionWeak(zoo.denoiser)}
    guidance = make_guidance(name, ZOO_SCALES.get(name, 3.0), models)
    guidance.reset()
    with torch.no_grad():
        out = ddim_step(zoo.denoiser, guidance, x, sigma, cond, zoo.process, sigmas)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, plain), f"{name} changed nothing"
    if name == "autoguidance":  # with the caption-dropped model as the weak one, autoguidance is CFG
        with torch.no_grad():
            cfg = ddim_step(zoo.denoiser, ClassifierFreeGuidance(3.0), x, sigma, cond, zoo.process, sigmas)
        torch.testing.assert_close(out, cfg, rtol=1e-5, atol=1e-5)


def test_autoguidance_without_a_weak_model_is_a_clear_error_and_all_skips_it(zoo):
    from dataclasses import replace

    from bench.runner.config import BenchConfig
    from bench.runner.applicability import applicable_guidance, check_compatible
    from bench.runner.store import load_prompt_set

    no_weak = replace(zoo, weak_unet=None)
    assert no_weak.weak is None
    with pytest.raises(ValueError, match="autoguidance.*needs a weak model"):
        make_guidance("autoguidance", 2.0, no_weak.guiding_models())
    every = BenchConfig.from_preset("tiny", guidance=["all"], scales={"all": [2.0]})
    prompts, notes = load_prompt_set(every), []
    resolved = applicable_guidance(every, prompts, no_weak, note=notes.append)
    assert "autoguidance" not in resolved.guidance
    assert set(resolved.guidance) == set(REGISTRY) - {"autoguidance", "universal-clip"} - DISTILLED_ONLY
    assert resolved.scale_grid() == {g: [2.0] for g in resolved.guidance}
    assert any("skips 'autoguidance'" in n for n in notes)
    with pytest.raises(ValueError, match="needs a weak model"):  # named: kept, so the run errors
        check_compatible(BenchConfig.from_preset("tiny", guidance=["cfg", "autoguidance"]), prompts, no_weak)
    # the zoo has its weak model; universal-clip needs a decoder and a clean guiding CLIP, which it has not
    assert set(applicable_guidance(every, prompts, zoo).guidance) == set(REGISTRY) - {"universal-clip"} - DISTILLED_ONLY
    ddpm = applicable_guidance(replace(every, sampler="ddpm"), prompts, zoo, note=notes.append)
    assert set(ddpm.guidance) == set(REGISTRY) - {"cfg-pp", "universal-clip"} - DISTILLED_ONLY  # ancestral DDPM cannot renoise unconditionally
    assert any("skips 'cfg-pp'" in n for n in notes)


def test_autoguidance_with_the_committed_weak_model(zoo, zoo_case):
    """The zoo's weak model: same family and vocabulary, smaller; one step follows Karras et al.'s formula."""
    assert zoo.weak is not None, "guidance/zoo/weights/weak_unet.safetensors is missing (invoke train --models weak_unet)"
    assert sum(p.numel() for p in zoo.weak_unet.parameters()) < sum(p.numel() for p in zoo.unet.parameters()) / 2
    assert torch.equal(zoo.weak_unet.vocab, zoo.unet.vocab)
    sigmas, sigma, x, cond, plain = zoo_case
    step = step_of(sigma, 1, zoo.process, sigmas)
    with torch.no_grad():
        guided = AutoGuidance(zoo.weak, 2.0).predict(zoo.denoiser, x, step, cond)
        main = zoo.unet(x, step.t, cond.model)[:, :3]  # the raw networks' eps, not the adapters'
        weak = zoo.weak_unet(x, step.t, cond.model)[:, :3]
        out = ddim_step(zoo.denoiser, AutoGuidance(zoo.weak, 2.0), x, sigma, cond, zoo.process, sigmas)
    torch.testing.assert_close(guided.eps, weak + 2.0 * (main - weak), rtol=1e-5, atol=1e-5)
    assert (main - weak).abs().mean() > 1e-3, "the weak model predicts the same eps as the main one"
    assert torch.isfinite(out).all() and not torch.allclose(out, plain)


@pytest.mark.parametrize("name", ["classifier", "clip"])
def test_gradient_guides_see_the_model_timestep_of_a_respaced_step(name):
    """A respaced trajectory's step position is not the timestep the guide was trained on: the classifier
    and the noised CLIP must see the level's training timestep (every CLIP test had used the unrespaced process)."""
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(20, "respace")
    seen = []

    class Recording(torch.nn.Module):
        logit_scale = torch.tensor(0.0)

        def forward(self, x, t):
            seen.append(t.clone())
            return x.flatten(1)[:, :5]

        def encode_image(self, x, t):
            return self(x, t)

        def encode_text(self, tokens):
            return torch.ones(len(tokens), 5)

    guidance = make_guidance(name, 2.0, {name: Recording()})
    x = torch.randn(2, 3, 4, 4)
    cond = Conditions(model=torch.zeros(2, dtype=torch.long), labels=torch.tensor([0, 3]),
                      clip_tokens=torch.zeros(2, 4, dtype=torch.long))
    index = 7  # the old respaced step index; its training timestep, from the respacing, is not 7
    timestep = process.timesteps("respace", 20)[len(sigmas) - 2 - index]
    assert timestep != index and process.sigma_to_t(sigma_of(index, sigmas)) == timestep
    assert guidance.gradient(x, step_of(sigma_of(index, sigmas), 2, process, sigmas), cond) is not None
    assert seen and all(torch.equal(t, torch.full((2,), timestep)) for t in seen)
