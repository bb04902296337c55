"""Golden tests of the samplers and the GLIDE-paper guidance modules against an exact Gaussian mixture."""

from __future__ import annotations

import math
from typing import Sequence

import pytest
import torch

from guidance.analytic import GaussianMixture, MixtureClassifier, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import ClassifierFreeGuidance, ClassifierGuidance, CLIPGuidance, NoGuidance
from guidance.guiders.base import Guidance, StepInfo
from guidance.prediction import Prediction
from guidance.process import VPDiscrete
from guidance.protocols import Conditions, Denoiser
from guidance.samplers import one_step as step_once
from guidance.samplers import Denoise, sample
from tests.paths import ROOT

torch.set_default_dtype(torch.float32)
F64 = torch.float64


@pytest.fixture(scope="module")
def base() -> VPDiscrete:
    return VPDiscrete.from_schedule("linear", 1000)


@pytest.fixture(scope="module")
def mixture(base: VPDiscrete) -> GaussianMixture:
    means = torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]])
    return GaussianMixture(means, torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.5, 0.3, 0.2]), base.alphas_cumprod)


def rand_state(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def exact(mixture: GaussianMixture) -> NetworkDenoiser:
    """The mixture's exact eps as a Denoiser (it indexes its table by whole timesteps: discrete sigmas only)."""
    return NetworkDenoiser(MixtureDenoiser(mixture), "eps")


def position(sigmas: Sequence[float], index: int) -> int:
    """Where the old respaced step `index` (0 = the last step) sits in the descending sigmas."""
    return len(sigmas) - 2 - index


def one_step(sampler: str, model: Denoiser, guidance: Guidance, x: torch.Tensor, cond: Conditions,
             process: VPDiscrete, sigmas: Sequence[float], index: int, noise: torch.Tensor | None = None,
             clip_denoised: bool = False, **options: float) -> tuple[torch.Tensor, Prediction]:
    """One step of a registered sampler from the old respaced `index`: (x_next, the prediction it used).
    `noise` None: the step's noise is zero (the mean of an ancestral step)."""
    i = position(sigmas, index)
    return step_once(sampler, Denoise(model, guidance, cond, sigmas, clip_denoised), x, process.level(sigmas[i]),
                     process.level(sigmas[i + 1]), noise, **options)


def step_at(process: VPDiscrete, sigma: float, batch: int, trajectory: Sequence[float] = ()) -> StepInfo:
    level = process.level(sigma)
    return StepInfo(level, level.timesteps(batch, torch.device("cpu")), tuple(trajectory))


def timestep_step(process: VPDiscrete, t: int, batch: int) -> StepInfo:
    """The step at training timestep t (the unrespaced process)."""
    return step_at(process, process.timestep_sigma(t), batch)


def vp_tables(process: VPDiscrete, sigmas: Sequence[float], index: int) -> tuple[float, float]:
    """(abar, abar_prev) of the old respaced step `index`, read off the process's table (abar_prev = 1 at
    the last step), so the expected values below do not come from the sampler's own levels."""
    timesteps = [process.sigma_to_t(s) for s in sigmas[:-1]]
    i = position(sigmas, index)
    abar = float(process.alphas_cumprod[int(timesteps[i])])
    prev = float(process.alphas_cumprod[int(timesteps[i + 1])]) if i + 1 < len(timesteps) else 1.0
    return abar, prev


def exact_grad(mixture: GaussianMixture, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x log p(y | x_t) of the Bayes posterior, by autograd through the mixture (not the method's code)."""
    x_req = x.clone().requires_grad_(True)
    logp = torch.log_softmax(mixture.class_logits(x_req, t), -1)[torch.arange(len(y)), y].sum()
    (grad,) = torch.autograd.grad(logp, x_req)
    return grad


@pytest.mark.parametrize("s", [0.0, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("index", [999, 600, 250, 10, 0])
def test_classifier_guidance_at_s_minus_1_equals_cfg_at_s_ddim(base, mixture, s, index):
    """Exact parts: eps_c - sqrt(1-abar)(s-1) grad log p(y|x) == eps_u + s (eps_c - eps_u)."""
    sigmas = base.sigmas(50, "respace")
    model = exact(mixture)
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    step_index = min(index, len(sigmas) - 2)
    cfg_x, cfg = one_step("ddim", model, ClassifierFreeGuidance(s), x, cond, base, sigmas, step_index)
    clf_x, clf = one_step("ddim", model, ClassifierGuidance(MixtureClassifier(mixture), s - 1), x, cond, base, sigmas,
                          step_index)
    torch.testing.assert_close(clf.eps, cfg.eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(clf_x, cfg_x, rtol=0, atol=1e-9)
    if s == 1.0:
        plain_x, _ = one_step("ddim", model, NoGuidance(), x, cond, base, sigmas, step_index)
        torch.testing.assert_close(cfg_x, plain_x, rtol=0, atol=1e-12)
        torch.testing.assert_close(clf_x, plain_x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp-2m"])
def test_classifier_equals_cfg_over_whole_trajectory(base, mixture, sampler):
    """The score correction eps - s g is the same step as CFG for every deterministic sampler, not only DDIM."""
    sigmas = base.sigmas(25, "leading")  # = the old respace("ddim25")
    model = exact(mixture)
    _, y = rand_state(32)
    cond = Conditions(model=y, labels=y)
    kwargs = dict(shape=(3,), sample_indices=range(32), seed=3, sampler=sampler, clip_denoised=False, dtype=F64)
    a = sample(model, base, sigmas, ClassifierFreeGuidance(4.0), cond, **kwargs)
    b = sample(model, base, sigmas, ClassifierGuidance(MixtureClassifier(mixture), 3.0), cond, **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_cfg_scale_zero_is_unconditional_and_one_skips_pass(base, mixture):
    sigmas = base.sigmas(20, "respace")
    model = exact(mixture)
    x, y = rand_state()
    _, uncond = one_step("ddim", model, NoGuidance(), x, Conditions(model=torch.full_like(y, -1)), base, sigmas, 10)
    _, zero = one_step("ddim", model, ClassifierFreeGuidance(0.0), x, Conditions(model=y), base, sigmas, 10)
    torch.testing.assert_close(zero.eps, uncond.eps, rtol=0, atol=1e-12)
    assert ClassifierFreeGuidance(1.0).cost().network_passes == 1
    assert ClassifierFreeGuidance(3.0).cost().network_passes == 2


@pytest.mark.parametrize("index", [20, 0])
def test_ddpm_gradient_guidance_is_variance_weighted_mean_shift(base, mixture, index):
    """mu_guided - mu_plain == Sigma * s * grad log p(y|x_t), with Sigma the step's fixed variance
    beta-tilde, which is 0 at the last step (guided-diffusion's condition_mean does not move it; the
    clipped log-variance, nonzero there, is only for noise and likelihoods)."""
    sigmas = base.sigmas(40, "respace")
    model = exact(mixture)
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    plain, _ = one_step("ddpm", model, NoGuidance(), x, cond, base, sigmas, index)
    guided, _ = one_step("ddpm", model, ClassifierGuidance(MixtureClassifier(mixture), 2.0), x, cond, base, sigmas,
                         index)
    t = base.level(sigmas[position(sigmas, index)]).timesteps(len(y), "cpu")
    grad = exact_grad(mixture, x, t, y)
    abar, prev = vp_tables(base, sigmas, index)
    variance = (1 - abar / prev) * (1 - prev) / (1 - abar)  # beta-tilde of the respaced step
    assert (variance == 0) == (index == 0)
    torch.testing.assert_close(guided - plain, variance * 2.0 * grad, rtol=1e-9, atol=1e-12)


class _LearnedVarianceWrapper(torch.nn.Module):
    """Appends constant variance channels v (and, for the uncond branch, a different v) to exact eps."""

    learned_variance = True

    def __init__(self, inner: MixtureDenoiser) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        eps = self.inner(x, t, cond)
        v = torch.where((cond >= 0)[:, None], torch.full_like(eps, 0.5), torch.full_like(eps, -0.9))
        return torch.cat([eps, v], 1)

    def null_cond(self, cond: torch.Tensor) -> torch.Tensor:
        return self.inner.null_cond(cond)


def learned(mixture: GaussianMixture) -> NetworkDenoiser:
    return NetworkDenoiser(_LearnedVarianceWrapper(MixtureDenoiser(mixture)), "eps", learned_variance=True)


def test_cfg_guides_eps_only_and_variance_comes_from_conditional_pass(base, mixture):
    sigmas = base.sigmas(30, "respace")
    model = learned(mixture)
    x, y = rand_state()
    step = step_at(base, sigmas[position(sigmas, 12)], len(y), sigmas)
    pred = ClassifierFreeGuidance(3.0).predict(model, x, step, Conditions(model=y))
    torch.testing.assert_close(pred.var_values, torch.full_like(x, 0.5))
    eps_c = mixture.eps(x, step.t, y)
    eps_u = mixture.eps(x, step.t, torch.full_like(y, -1))
    torch.testing.assert_close(pred.eps, eps_u + 3.0 * (eps_c - eps_u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("index", [12, 0])
def test_ddpm_gradient_uses_learned_variance(base, mixture, index):
    """With a learned variance, the mean shift uses that Sigma, not the fixed posterior variance:
    log Sigma = f log beta + (1 - f) log beta-tilde, and at the last step (beta-tilde = 0) guided-diffusion's
    clipped log-variance, log beta-tilde of the step before."""
    sigmas = base.sigmas(30, "respace")
    model = learned(mixture)
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    if index == 0:
        # the clipped log-variance needs the step before: run the last two steps, guiding only the last
        # (the scale is a function of sigma), so both runs reach the last step from the same state
        tail = sigmas[-3:]
        seen: list[torch.Tensor] = []
        runs = {}
        for name, method in (("plain", NoGuidance()),
                             ("guided", ClassifierGuidance(MixtureClassifier(mixture), lambda sg: 1.5 if sg < tail[0] else 0.0))):
            runs[name] = sample(model, base, tail, method, cond, shape=(3,), sample_indices=range(len(y)), sampler="ddpm",
                                x_T=x, clip_denoised=False, dtype=F64,
                                callback=lambda i, x_next, pred: seen.append(x_next) if i == 0 else None)
        torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)
        plain, guided, x = runs["plain"], runs["guided"], seen[0]
    else:
        plain, _ = one_step("ddpm", model, NoGuidance(), x, cond, base, sigmas, index)
        guided, _ = one_step("ddpm", model, ClassifierGuidance(MixtureClassifier(mixture), 1.5), x, cond, base,
                             sigmas, index)
    abar, prev = vp_tables(base, sigmas, index)
    beta = 1 - abar / prev
    if index == 0:
        abar1, prev1 = vp_tables(base, sigmas, 1)
        beta_tilde = (1 - abar1 / prev1) * (1 - prev1) / (1 - abar1)
    else:
        beta_tilde = beta * (1 - prev) / (1 - abar)
    frac = (0.5 + 1) / 2
    log_var = frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)
    t = base.level(sigmas[position(sigmas, index)]).timesteps(len(y), "cpu")
    grad = exact_grad(mixture, x, t, y)
    torch.testing.assert_close(guided - plain, math.exp(log_var) * 1.5 * grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sampler,steps", [("ddim", 200), ("ddpm", 1000), ("dpmpp-2m", 100)])
def test_sampler_reproduces_mixture_moments(base, mixture, sampler, steps):
    """Unguided sampling from the exact score recovers the data distribution's mean and covariance."""
    sigmas = base.sigmas(steps, "respace")
    model = exact(mixture)
    n = 4000
    cond = Conditions(model=torch.full((n,), -1))
    x = sample(model, base, sigmas, NoGuidance(), cond, shape=(3,), sample_indices=range(n), seed=11,
               sampler=sampler, clip_denoised=False, dtype=F64)
    mean, cov = x.mean(0), torch.cov(x.T)
    true_mean, true_cov = mixture.mean(), mixture.covariance()
    # Monte-Carlo standard error of the mean is sqrt(diag(cov) / n) < 0.03; allow ~4 standard errors
    # plus discretisation error. Covariance entries have standard error ~ sqrt(2/n) * var < 0.06.
    torch.testing.assert_close(mean, true_mean, rtol=0, atol=0.1)
    torch.testing.assert_close(cov, true_cov, rtol=0, atol=0.2)
    # class proportions: the exact classifier at t=0 assigns samples to components
    t0 = torch.zeros(n, dtype=torch.long)
    share = torch.bincount(mixture.class_logits(x, t0).argmax(-1), minlength=3).double() / n
    torch.testing.assert_close(share, mixture.weights, rtol=0, atol=0.04)


def test_raising_scale_raises_target_class_probability(base, mixture):
    sigmas = base.sigmas(50, "leading")  # = the old respace("ddim50")
    model = exact(mixture)
    n = 600
    labels = torch.arange(n) % 3
    t0 = torch.zeros(n, dtype=torch.long)
    probs = []
    for s in [0.0, 1.0, 2.0, 4.0]:
        x = sample(model, base, sigmas, ClassifierFreeGuidance(s), Conditions(model=labels), shape=(3,),
                   sample_indices=range(n), seed=5, sampler="ddim", clip_denoised=False, dtype=F64)
        p = torch.softmax(mixture.class_logits(x, t0), -1)[torch.arange(n), labels].mean()
        probs.append(float(p))
    assert all(b > a for a, b in zip(probs, probs[1:])), probs


class _ToyCLIP(torch.nn.Module):
    """An affine noised CLIP: image embedding W x + (1 - abar_t) b, text embedding a lookup."""

    def __init__(self, process: VPDiscrete) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(4, 3, generator=g, dtype=F64)
        self.text = torch.randn(5, 4, generator=g, dtype=F64)
        self.b = torch.randn(4, generator=g, dtype=F64)
        self.logit_scale = torch.tensor(2.0, dtype=F64)
        self.alphas_cumprod = process.alphas_cumprod

    def encode_image(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t][:, None]
        return x @ self.w.T + (1 - abar) * self.b

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text[tokens]


def test_clip_gradient_matches_closed_form(base):
    clip = _ToyCLIP(base)
    x, _ = rand_state(8)
    tokens = torch.arange(8) % 5
    step = timestep_step(base, 300, 8)
    assert torch.equal(step.t, torch.full((8,), 300))
    grad = CLIPGuidance(clip, 3.0).gradient(x, step, Conditions(model=tokens, clip_tokens=tokens))
    # d/dx exp(ls) * <u/|u|, z> with u = W x + (1 - abar) b: exp(ls) * W^T (z - <u_hat, z> u_hat) / |u|
    u = x @ clip.w.T + (1 - base.alphas_cumprod[300]) * clip.b
    u_hat = u / u.norm(dim=-1, keepdim=True)
    z = clip.text[tokens] / clip.text[tokens].norm(dim=-1, keepdim=True)
    inner = (z - (u_hat * z).sum(-1, keepdim=True) * u_hat) / u.norm(dim=-1, keepdim=True)
    expected = 3.0 * clip.logit_scale.exp() * inner @ clip.w
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_clip_gradient_sees_timestep(base):
    """The guiding CLIP must receive the step's timestep (a wrong t changes the gradient)."""
    clip = _ToyCLIP(base)
    x, _ = rand_state(4)
    tokens = torch.arange(4)
    cond = Conditions(model=tokens, clip_tokens=tokens)
    g_early = CLIPGuidance(clip, 1.0).gradient(x, timestep_step(base, 900, 4), cond)
    g_late = CLIPGuidance(clip, 1.0).gradient(x, timestep_step(base, 10, 4), cond)
    assert not torch.allclose(g_early, g_late)


def test_classifier_guidance_without_labels_is_a_clear_error(base, mixture):
    x, y = rand_state(4)
    with pytest.raises(ValueError, match="needs conditions.labels"):
        ClassifierGuidance(MixtureClassifier(mixture), 1.0).gradient(x, timestep_step(base, 5, 4), Conditions(model=y))


def test_every_planted_bug_still_matches_the_code_it_mutates():
    """scripts/plant_bugs.py replaces literal text; a refactor that moves that text would disarm the
    mutation (classifier-gradient-dropped was, by the GradientGuidance refactor) without this check."""
    import importlib.util

    root = ROOT
    spec = importlib.util.spec_from_file_location("plant_bugs", root / "scripts" / "plant_bugs.py")
    plant_bugs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plant_bugs)
    for name, (path, old, new) in plant_bugs.MUTATIONS.items():
        assert (root / path).read_text().count(old) == 1, f"mutation {name!r} no longer matches {path}"
        assert old != new
    for bugs, _ in plant_bugs.SUITES.values():
        assert set(bugs) <= set(plant_bugs.MUTATIONS)
