"""The samplers and guidance details against published identities, on the exact Gaussian mixture.

Written after mutation testing showed these behaviours could break unnoticed: DDIM's eta noise, the
clipping of x0 in both samplers, the last ancestral step, the clipped posterior log-variance, the
linear schedule for T != 1000, which pass the learned variance comes from, CFG-Zero*'s zero-init
length, the dynamic threshold's cap, the log-sigma schedule, and the noise levels of the VP tables.
"""

from __future__ import annotations

import math
from typing import Sequence

import pytest
import torch

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.diffusion import GaussianDiffusion, linear_betas
from guidance.guiders import NoGuidance, make_guidance
from guidance.guiders.base import Guidance, StepInfo
from guidance.guiders.cfg_zero_star import CFGZeroStar
from guidance.guiders.dynamic_threshold import dynamic_threshold
from guidance.guiders.schedules import linear_in_log_sigma
from guidance.prediction import Prediction
from guidance.process import VPDiscrete, vp_betas
from guidance.protocols import Conditions, Denoiser
from guidance.samplers import one_step as step_once
from guidance.samplers import SAMPLERS, Denoise, sample

F64 = torch.float64
BASE = VPDiscrete.from_schedule("linear", 1000)
# means beyond [-1, 1], so x0 predictions leave the data range and clipping acts
MIXTURE = GaussianMixture(torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]]),
                          torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.5, 0.3, 0.2]), BASE.alphas_cumprod)


def state(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, Conditions]:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 3, generator=g, dtype=F64)
    return x, Conditions(model=torch.randint(0, 3, (n,), generator=g))


def exact() -> NetworkDenoiser:
    """The mixture's exact eps as a Denoiser (it indexes its table by whole timesteps: discrete sigmas only)."""
    return NetworkDenoiser(MixtureDenoiser(MIXTURE), "eps")


def position(sigmas: Sequence[float], index: int) -> int:
    """Where the old respaced step `index` (0 = the last step) sits in the descending sigmas."""
    return len(sigmas) - 2 - index


def tables(process: VPDiscrete, sigmas: Sequence[float], index: int) -> tuple[float, float, torch.Tensor]:
    """(abar, abar_prev, t) of the old respaced step `index`, read off the process's table (abar_prev = 1
    at the last step), so expected values do not come from the sampler's own levels."""
    i = position(sigmas, index)
    ts = process.timesteps("respace", len(sigmas) - 1)
    abar = float(process.alphas_cumprod[ts[i]])
    prev = float(process.alphas_cumprod[ts[i + 1]]) if i + 1 < len(ts) else 1.0
    return abar, prev, torch.full((16,), ts[i])


def step_at(process: VPDiscrete, sigmas: Sequence[float], index: int, batch: int) -> StepInfo:
    level = process.level(sigmas[position(sigmas, index)])
    return StepInfo(level, level.timesteps(batch, torch.device("cpu")), tuple(sigmas))


def one_step(sampler: str, model: Denoiser, guidance: Guidance, x: torch.Tensor, cond: Conditions,
             sigmas: Sequence[float], index: int, noise: torch.Tensor | None = None, clip_denoised: bool = True,
             process: VPDiscrete = BASE, **options: float) -> tuple[torch.Tensor, Prediction]:
    """One step of a registered sampler from the old respaced `index`: (x_next, the prediction it used).
    `noise` None: the step's noise is zero (the mean of a stochastic step)."""
    i = position(sigmas, index)
    return step_once(sampler, Denoise(model, guidance, cond, sigmas, clip_denoised), x, process.level(sigmas[i]),
                     process.level(sigmas[i + 1]), noise, **options)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("index", [40, 25, 3, 1, 0])
def test_ddim_with_eta_one_is_the_ancestral_step(index, clip):
    """DDIM with eta = 1 has sigma^2 = beta-tilde and the posterior mean (Song et al. 2021, sec. 4.1): the
    same step as DDPM with the fixed small variance, given the same noise, with or without clipping."""
    sigmas = BASE.sigmas(50, "respace")
    model = exact()
    x, cond = state()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    abar, _, t = tables(BASE, sigmas, index)
    x0 = (x - math.sqrt(1 - abar) * MIXTURE.eps(x, t, cond.model)) / math.sqrt(abar)
    if clip and index == 40:
        assert (x0.abs() > 1).any(), "clipping must act for this case to test it"
    ddpm, _ = one_step("ddpm", model, NoGuidance(), x, cond, sigmas, index, noise, clip_denoised=clip)
    ddim, _ = one_step("ddim", model, NoGuidance(), x, cond, sigmas, index, noise, clip_denoised=clip, eta=1.0)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-10)


def test_ddim_step_follows_song_et_al_for_any_eta():
    """x_{t-1} = sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z, s = eta sqrt((1-abar')/(1-abar)) sqrt(1-abar/abar')."""
    sigmas, index, eta = BASE.sigmas(20, "respace"), 7, 0.5
    model = exact()
    x, cond = state()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    out, _ = one_step("ddim", model, NoGuidance(), x, cond, sigmas, index, z, clip_denoised=False, eta=eta)
    abar, prev, t = tables(BASE, sigmas, index)
    eps = MIXTURE.eps(x, t, cond.model)
    x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    s = eta * math.sqrt((1 - prev) / (1 - abar)) * math.sqrt(1 - abar / prev)
    torch.testing.assert_close(out, math.sqrt(prev) * x0 + math.sqrt(1 - prev - s**2) * eps + s * z)


def test_whole_ddim_trajectory_with_eta_one_equals_ancestral_sampling():
    """`sample` must pass eta on and draw step noise for DDIM too: eta = 1 reproduces DDPM sample for sample."""
    sigmas = BASE.sigmas(25, "respace")
    model = exact()
    _, cond = state(8)
    kwargs = dict(shape=(3,), sample_indices=range(8), seed=3, dtype=F64)
    ddpm = sample(model, BASE, sigmas, NoGuidance(), cond, sampler="ddpm", **kwargs)
    ddim = sample(model, BASE, sigmas, NoGuidance(), cond, sampler="ddim", eta=1.0, **kwargs)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-8, atol=1e-9)
    assert not torch.allclose(sample(model, BASE, sigmas, NoGuidance(), cond, sampler="ddim", eta=0.0, **kwargs), ddpm)


def test_the_last_ancestral_step_adds_no_noise():
    model = exact()
    x, cond = state()
    sigmas = BASE.sigmas(10, "respace")
    z = torch.randn(x.shape, dtype=F64)
    with_noise, _ = one_step("ddpm", model, NoGuidance(), x, cond, sigmas, 0, z)
    without, _ = one_step("ddpm", model, NoGuidance(), x, cond, sigmas, 0, None)
    assert torch.equal(with_noise, without)
    assert not torch.equal(one_step("ddpm", model, NoGuidance(), x, cond, sigmas, 1, z)[0],
                           one_step("ddpm", model, NoGuidance(), x, cond, sigmas, 1, None)[0])  # the others do


def test_process_tables_match_guided_diffusion():
    # the log of beta-tilde, with its 0 at t = 0 replaced by beta-tilde_1 (guided-diffusion's clipping;
    # the training process keeps the table, the DDPM sampler's use of it is tested below and in the golden tests)
    d = GaussianDiffusion.from_schedule("linear", 1000).respace("30")
    assert d.posterior_variance[0] == 0
    torch.testing.assert_close(d.posterior_log_variance_clipped[0], d.posterior_variance[1].log())
    torch.testing.assert_close(d.posterior_log_variance_clipped[1:], d.posterior_variance[1:].log())
    # the linear schedule keeps T = 1000's endpoints for other T: beta from 1e-4 * 1000/T to 0.02 * 1000/T
    betas = linear_betas(100)
    assert betas[0].item() == pytest.approx(1e-3) and betas[-1].item() == pytest.approx(0.2)
    learned = GaussianDiffusion.from_schedule("cosine", 1000, learned_variance=True)  # the training process
    assert learned.respace("10").learned_variance and learned.respace("ddim10").learned_variance
    process = VPDiscrete.from_schedule("linear", 100)
    torch.testing.assert_close(process.alphas_cumprod, torch.cumprod(1 - betas.double(), 0))
    # respacing keeps guided-diffusion's timesteps: the sampler's sigmas are the table's at timestep_map
    for spec, steps, spacing in (("30", 30, "respace"), ("ddim10", 10, "leading")):
        respaced = GaussianDiffusion.from_schedule("cosine", 1000).respace(spec)
        sigmas = VPDiscrete.from_schedule("cosine", 1000).sigmas(steps, spacing)
        torch.testing.assert_close(torch.tensor(sigmas[:-1][::-1], dtype=F64), respaced.sigmas.double())


class _TwoVariances(torch.nn.Module):
    """Exact eps with learned-variance channels that tell the passes apart: v = +0.5 for a caption,
    -0.9 for the null caption, `weak_v` for every row when it plays the weak model."""

    learned_variance = True

    def __init__(self, weak_v: float | None = None) -> None:
        super().__init__()
        self.inner, self.weak_v = MixtureDenoiser(MIXTURE), weak_v

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        eps = self.inner(x, t, cond)
        v = torch.where((cond >= 0)[:, None], torch.full_like(eps, 0.5), torch.full_like(eps, -0.9))
        return torch.cat([eps, v if self.weak_v is None else torch.full_like(eps, self.weak_v)], 1)

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return self.inner.null_cond(cond)


def two_variances(weak_v: float | None = None) -> NetworkDenoiser:
    return NetworkDenoiser(_TwoVariances(weak_v), "eps", learned_variance=True)


@pytest.mark.parametrize("name", ["cfg", "cfg-interval", "cfg-rescale", "apg", "cfg-zero-star",
                                  "cfg-dynamic-threshold", "autoguidance", "cfg-pp"])
def test_guided_prediction_keeps_the_conditional_passs_variance(name):
    """GLIDE takes the variance from the conditional branch (autoguidance: from the main model), never
    from the unconditional or weak pass, and never drops it."""
    sigmas = BASE.sigmas(20, "respace")
    x, cond = state()
    scale = 0.6 if name == "cfg-pp" else 3.0  # CFG++'s lambda lies in [0, 1]
    method = make_guidance(name, scale, {"weak": two_variances(weak_v=-0.2)})
    step = step_at(BASE, sigmas, 8, len(x))  # inside the default guidance interval, after CFG-Zero*'s zero-init step
    assert method.scale_at(step) == scale
    pred = method.predict(two_variances(), x, step, cond)
    torch.testing.assert_close(pred.var_values, torch.full_like(x, 0.5))


class _Counting(MixtureDenoiser):
    def __init__(self) -> None:
        super().__init__(MIXTURE)
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x, t, cond)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cfg_zero_star_zero_inits_exactly_its_first_k_steps(k):
    sigmas = BASE.sigmas(10, "respace")
    x, cond = state()
    method = CFGZeroStar(3.0, zero_init_steps=k)
    n = len(sigmas) - 1
    for index in range(n - 1, n - 1 - (k + 1), -1):
        net = _Counting()
        step = step_at(BASE, sigmas, index, len(x))
        pred = method.predict(NetworkDenoiser(net, "eps"), x, step, cond)
        zero_init = index >= n - k
        assert (net.calls == 0) == zero_init, (k, index)
        assert method.runs_network_at(step.sigma, sigmas) == (not zero_init)
        if zero_init:
            abar, _, _ = tables(BASE, sigmas, index)
            a, b = math.sqrt(abar), math.sqrt(1 - abar)
            torch.testing.assert_close(pred.eps, x / (a + b))  # v = 0: the prediction that keeps z fixed
            torch.testing.assert_close(pred.x0, x / (a + b))
    evaluations = SAMPLERS["ddim"].evaluations(sigmas)
    assert method.cost_per_image(evaluations, sigmas).network_passes == 2 * (n - k)
    # Heun evaluates step i's end again at the start of step i + 1: still only the first k steps are zeroed
    heun = SAMPLERS["heun"].evaluations(sigmas)
    zeroed = sum(1 for s in heun if s >= sigmas[k - 1])
    assert method.cost_per_image(heun, sigmas).network_passes == 2 * (len(heun) - zeroed)
    assert zeroed == k + (k - 1)  # the first k sigmas, and the second evaluations of the first k - 1 steps


def test_dynamic_threshold_is_capped_by_max_threshold():
    x0 = torch.linspace(-4, 4, 101, dtype=F64).repeat(2, 1)
    capped = dynamic_threshold(x0, 0.995, max_threshold=1.5)
    torch.testing.assert_close(capped, x0.clamp(-1.5, 1.5) / 1.5)
    free = dynamic_threshold(x0, 0.995)
    s = torch.quantile(x0.abs(), 0.995, dim=1, keepdim=True)
    torch.testing.assert_close(free, x0.clamp(-s, s) / s)


def test_linear_in_log_sigma_runs_from_lo_to_hi():
    schedule = linear_in_log_sigma(scale_lo=1.0, scale_hi=5.0, sigma_lo=0.1, sigma_hi=10.0)
    assert schedule(0.1 * 1.0001) == pytest.approx(1.0, abs=1e-3) and schedule(10.0 / 1.0001) == pytest.approx(5.0, abs=1e-3)
    assert schedule(10 ** -0.5) == pytest.approx(2.0)  # a quarter of the way in log sigma
    assert schedule(0.01) == 1.0 and schedule(100.0) == 5.0


def test_noise_levels_are_the_ve_sigmas_and_the_cosine_betas_are_capped():
    """sigma_t = sqrt((1 - abar_t) / abar_t), computed here from the betas (schedules and the guidance
    interval read it); the cosine schedule caps beta at 0.999 (Nichol & Dhariwal), which sets the last sigma."""
    betas = vp_betas("cosine", 1000).double()
    cosine = VPDiscrete.from_betas(betas)
    abar = torch.cumprod(1 - betas, 0)
    every = torch.tensor(cosine.sigmas(1000, "respace")[:-1][::-1], dtype=F64)
    torch.testing.assert_close(every, ((1 - abar) / abar).sqrt())
    assert betas.max().item() == pytest.approx(0.999)
    assert cosine.sigma_max == pytest.approx(float(((1 - abar[-1]) / abar[-1]).sqrt()))
    ts = cosine.timesteps("respace", 20)
    sigmas20 = cosine.sigmas(20, "respace")
    abar20 = abar[ts]
    torch.testing.assert_close(torch.tensor(sigmas20[:-1], dtype=F64), ((1 - abar20) / abar20).sqrt())
    for sigma, t in zip(sigmas20, ts):  # a table sigma is its timestep's level, exactly the table's numbers
        level = cosine.level(sigma)
        assert level.model_t == t and level.abar == float(abar[t])
        assert level.alpha == math.sqrt(float(abar[t])) and level.s == math.sqrt(1 - float(abar[t]))


@pytest.mark.parametrize("steps, inside", [(20, 13), (50, 35), (10, 6)])
def test_the_default_guidance_interval_covers_the_documented_steps(steps, inside):
    """docs/guidance.md: with the zoo's cosine schedule, (0.28, 5.42] holds 13 of 20 steps (35 of 50, 6 of 10)."""
    from guidance.guiders.schedules import IntervalCFG

    sigmas = VPDiscrete.from_schedule("cosine", 1000).sigmas(steps)  # the default: respaced
    guided = IntervalCFG(3.0).cost_per_image(SAMPLERS["ddim"].evaluations(sigmas), sigmas).network_passes
    assert guided - steps == inside


def test_ancestral_noise_is_scaled_by_the_learned_variance():
    """With a learned range, x_{t-1} = mean + exp(log Sigma / 2) z where log Sigma = f log beta + (1 - f)
    log beta-tilde, f = (v + 1) / 2 (Nichol & Dhariwal eq. 15), not the fixed beta-tilde."""
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(20, "respace")
    model = two_variances()
    x, cond = state()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    for index in (1, 10, 18):
        noisy, _ = one_step("ddpm", model, NoGuidance(), x, cond, sigmas, index, z, clip_denoised=False,
                            process=process)
        mean, _ = one_step("ddpm", model, NoGuidance(), x, cond, sigmas, index, None, clip_denoised=False,
                           process=process)
        abar, prev, _ = tables(process, sigmas, index)
        beta = 1 - abar / prev
        beta_tilde = beta * (1 - prev) / (1 - abar)
        f = (0.5 + 1) / 2  # the caption rows' v
        log_var = f * math.log(beta) + (1 - f) * math.log(beta_tilde)
        torch.testing.assert_close(noisy - mean, math.exp(0.5 * log_var) * z)


def test_ddim_applies_the_gradient_correction_before_clipping_x0():
    """eps' = eps - sqrt(1 - abar) g, then x0 from eps' is clipped and eps recomputed from the clipped x0
    (the correction moves x0 before the data range is enforced; docs/guidance.md measures the other
    order at 0.81 per pixel on the zoo)."""
    from guidance.analytic import MixtureClassifier

    sigmas, index, scale = BASE.sigmas(50, "respace"), 40, 2.0
    model = exact()
    guidance = make_guidance("classifier", scale, {"classifier": MixtureClassifier(MIXTURE)})
    x, cond = state()
    cond = Conditions(model=cond.model, labels=cond.model)
    out, _ = one_step("ddim", model, guidance, x, cond, sigmas, index, clip_denoised=True)
    step = step_at(BASE, sigmas, index, len(x))
    abar, prev, t = tables(BASE, sigmas, index)
    assert torch.equal(step.t, t)
    grad = guidance.gradient(x, step, cond)
    eps = MIXTURE.eps(x, t, cond.model) - math.sqrt(1 - abar) * grad
    x0 = ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar))
    assert (x0.abs() > 1).any(), "clipping must act for this case to test it"
    x0 = x0.clamp(-1, 1)
    eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    torch.testing.assert_close(out, math.sqrt(prev) * x0 + math.sqrt(1 - prev) * eps)


def test_a_reused_guidance_object_starts_each_batch_afresh():
    """The harness keeps one guidance object per cell for all its batches: per-trajectory state (APG's
    momentum) must not leak from one batch into the next, so batch 2 matches a fresh object's."""
    sigmas = BASE.sigmas(10, "respace")
    model = exact()
    _, cond = state(6)
    kwargs = dict(shape=(3,), seed=5, dtype=F64, sampler="ddim")
    shared = make_guidance("apg", 4.0, {})
    sample(model, BASE, sigmas, shared, cond[:3], sample_indices=range(3), **kwargs)
    second = sample(model, BASE, sigmas, shared, cond[3:], sample_indices=range(3, 6), **kwargs)
    fresh = sample(model, BASE, sigmas, make_guidance("apg", 4.0, {}), cond[3:], sample_indices=range(3, 6), **kwargs)
    assert torch.equal(second, fresh)
