"""Golden tests of the sampler and the GLIDE-paper guidance modules against an exact Gaussian mixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from guidance.analytic import GaussianMixture, MixtureClassifier, MixtureDenoiser
from guidance.diffusion import GaussianDiffusion
from guidance.guiders import ClassifierFreeGuidance, ClassifierGuidance, CLIPGuidance, NoGuidance
from guidance.protocols import Conditions
from guidance.sampling import ddim_step, ddpm_step, sample

torch.set_default_dtype(torch.float32)
F64 = torch.float64


@pytest.fixture(scope="module")
def base() -> GaussianDiffusion:
    return GaussianDiffusion.from_schedule("linear", 1000)


@pytest.fixture(scope="module")
def mixture(base: GaussianDiffusion) -> GaussianMixture:
    means = torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]])
    return GaussianMixture(means, torch.tensor([0.5, 0.3, 0.7]), torch.tensor([0.5, 0.3, 0.2]), base.alphas_cumprod)


def rand_state(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("s", [0.0, 1.0, 2.5, 7.0])
@pytest.mark.parametrize("index", [999, 600, 250, 10, 0])
def test_classifier_guidance_at_s_minus_1_equals_cfg_at_s_ddim(base, mixture, s, index):
    """Exact parts: eps_c - sqrt(1-abar)(s-1) grad log p(y|x) == eps_u + s (eps_c - eps_u)."""
    diffusion = base.respace("50")
    model = MixtureDenoiser(mixture)
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    step_index = min(index, diffusion.num_timesteps - 1)
    cfg = ddim_step(model, diffusion, ClassifierFreeGuidance(s), x, step_index, cond, clip_denoised=False)
    clf = ddim_step(model, diffusion, ClassifierGuidance(MixtureClassifier(mixture), s - 1), x, step_index, cond,
                    clip_denoised=False)
    torch.testing.assert_close(clf.eps, cfg.eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(clf.x_prev, cfg.x_prev, rtol=0, atol=1e-9)
    if s == 1.0:
        plain = ddim_step(model, diffusion, NoGuidance(), x, step_index, cond, clip_denoised=False)
        torch.testing.assert_close(cfg.x_prev, plain.x_prev, rtol=0, atol=1e-12)
        torch.testing.assert_close(clf.x_prev, plain.x_prev, rtol=0, atol=1e-12)


def test_classifier_equals_cfg_over_whole_ddim_trajectory(base, mixture):
    diffusion = base.respace("ddim25")
    model = MixtureDenoiser(mixture)
    _, y = rand_state(32)
    cond = Conditions(model=y, labels=y)
    kwargs = dict(shape=(3,), sample_indices=range(32), seed=3, sampler="ddim", clip_denoised=False, dtype=F64)
    a = sample(model, diffusion, ClassifierFreeGuidance(4.0), cond, **kwargs)
    b = sample(model, diffusion, ClassifierGuidance(MixtureClassifier(mixture), 3.0), cond, **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_cfg_scale_zero_is_unconditional_and_one_skips_pass(base, mixture):
    diffusion = base.respace("20")
    model = MixtureDenoiser(mixture)
    x, y = rand_state()
    uncond = ddim_step(model, diffusion, NoGuidance(), x, 10, Conditions(model=torch.full_like(y, -1)), clip_denoised=False)
    zero = ddim_step(model, diffusion, ClassifierFreeGuidance(0.0), x, 10, Conditions(model=y), clip_denoised=False)
    torch.testing.assert_close(zero.eps, uncond.eps, rtol=0, atol=1e-12)
    assert ClassifierFreeGuidance(1.0).cost().network_passes == 1
    assert ClassifierFreeGuidance(3.0).cost().network_passes == 2


@pytest.mark.parametrize("index", [20, 0])
def test_ddpm_gradient_guidance_is_variance_weighted_mean_shift(base, mixture, index):
    """mu_guided - mu_plain == Sigma * s * grad log p(y|x_t), with Sigma the step's fixed variance
    beta-tilde, which is 0 at the last step (guided-diffusion's condition_mean does not move it; the
    clipped log-variance, nonzero there, is only for noise and likelihoods)."""
    diffusion = base.respace("40")
    model = MixtureDenoiser(mixture)
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    plain = ddpm_step(model, diffusion, NoGuidance(), x, index, cond, noise=None, clip_denoised=False)
    guided = ddpm_step(model, diffusion, ClassifierGuidance(MixtureClassifier(mixture), 2.0), x, index, cond,
                       noise=None, clip_denoised=False)
    t = diffusion.model_timesteps(torch.full((len(y),), index))
    x_req = x.clone().requires_grad_(True)
    logp = torch.log_softmax(mixture.class_logits(x_req, t), -1)[torch.arange(len(y)), y].sum()
    (grad,) = torch.autograd.grad(logp, x_req)
    variance = diffusion.posterior_variance[index]
    assert (variance == 0) == (index == 0)
    torch.testing.assert_close(guided.x_prev - plain.x_prev, variance * 2.0 * grad, rtol=1e-9, atol=1e-12)


class _LearnedVarianceWrapper(torch.nn.Module):
    """Appends constant variance channels v (and, for the uncond branch, a different v) to exact eps."""

    learned_variance = True

    def __init__(self, inner: MixtureDenoiser) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, t, cond):
        eps = self.inner(x, t, cond)
        v = torch.where((cond >= 0)[:, None], torch.full_like(eps, 0.5), torch.full_like(eps, -0.9))
        return torch.cat([eps, v], 1)

    def null_cond(self, cond):
        return self.inner.null_cond(cond)


def test_cfg_guides_eps_only_and_variance_comes_from_conditional_pass(base, mixture):
    diffusion = base.respace("30")
    model = _LearnedVarianceWrapper(MixtureDenoiser(mixture))
    x, y = rand_state()
    pred = ClassifierFreeGuidance(3.0).predict(model, x, _step(diffusion, 12, len(y)), Conditions(model=y))
    torch.testing.assert_close(pred.var_values, torch.full_like(x, 0.5))
    eps_c = mixture.eps(x, diffusion.model_timesteps(torch.full((len(y),), 12)), y)
    eps_u = mixture.eps(x, diffusion.model_timesteps(torch.full((len(y),), 12)), torch.full_like(y, -1))
    torch.testing.assert_close(pred.eps, eps_u + 3.0 * (eps_c - eps_u), rtol=0, atol=1e-12)


def test_ddpm_gradient_uses_learned_variance(base, mixture):
    """With a learned variance, the mean shift uses that Sigma, not the fixed posterior variance."""
    diffusion = GaussianDiffusion.from_schedule("linear", 1000, learned_variance=True, respacing="30")
    model = _LearnedVarianceWrapper(MixtureDenoiser(mixture))
    x, y = rand_state()
    cond = Conditions(model=y, labels=y)
    plain = ddpm_step(model, diffusion, NoGuidance(), x, 12, cond, noise=None, clip_denoised=False)
    guided = ddpm_step(model, diffusion, ClassifierGuidance(MixtureClassifier(mixture), 1.5), x, 12, cond,
                       noise=None, clip_denoised=False)
    frac = (0.5 + 1) / 2
    log_var = frac * diffusion.betas[12].log() + (1 - frac) * diffusion.posterior_log_variance_clipped[12]
    # the exact gradient of the Bayes posterior, by autograd through the mixture (not the method's code)
    t = diffusion.model_timesteps(torch.full((len(y),), 12))
    x_req = x.clone().requires_grad_(True)
    logp = torch.log_softmax(mixture.class_logits(x_req, t), -1)[torch.arange(len(y)), y].sum()
    (grad,) = torch.autograd.grad(logp, x_req)
    torch.testing.assert_close(guided.x_prev - plain.x_prev, log_var.exp() * 1.5 * grad, rtol=1e-9, atol=1e-12)


def _step(diffusion, index, batch):
    from guidance.sampling import step_info

    return step_info(diffusion, index, batch, torch.device("cpu"))


@pytest.mark.parametrize("sampler,respacing", [("ddim", "200"), ("ddpm", None)])
def test_sampler_reproduces_mixture_moments(base, mixture, sampler, respacing):
    """Unguided sampling from the exact score recovers the data distribution's mean and covariance."""
    diffusion = base.respace(respacing) if respacing else base
    model = MixtureDenoiser(mixture)
    n = 4000
    cond = Conditions(model=torch.full((n,), -1))
    x = sample(model, diffusion, NoGuidance(), cond, shape=(3,), sample_indices=range(n), seed=11,
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
    diffusion = base.respace("ddim50")
    model = MixtureDenoiser(mixture)
    n = 600
    labels = torch.arange(n) % 3
    t0 = torch.zeros(n, dtype=torch.long)
    probs = []
    for s in [0.0, 1.0, 2.0, 4.0]:
        x = sample(model, diffusion, ClassifierFreeGuidance(s), Conditions(model=labels), shape=(3,),
                   sample_indices=range(n), seed=5, sampler="ddim", clip_denoised=False, dtype=F64)
        p = torch.softmax(mixture.class_logits(x, t0), -1)[torch.arange(n), labels].mean()
        probs.append(float(p))
    assert all(b > a for a, b in zip(probs, probs[1:])), probs


class _ToyCLIP(torch.nn.Module):
    """An affine noised CLIP: image embedding W x + (1 - abar_t) b, text embedding a lookup."""

    def __init__(self, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(4, 3, generator=g, dtype=F64)
        self.text = torch.randn(5, 4, generator=g, dtype=F64)
        self.b = torch.randn(4, generator=g, dtype=F64)
        self.logit_scale = torch.tensor(2.0, dtype=F64)
        self.alphas_cumprod = diffusion.alphas_cumprod

    def encode_image(self, x, t):
        abar = self.alphas_cumprod[t][:, None]
        return x @ self.w.T + (1 - abar) * self.b

    def encode_text(self, tokens):
        return self.text[tokens]


def test_clip_gradient_matches_closed_form(base):
    clip = _ToyCLIP(base)
    x, _ = rand_state(8)
    tokens = torch.arange(8) % 5
    step = _step(base, 300, 8)
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
    g_early = CLIPGuidance(clip, 1.0).gradient(x, _step(base, 900, 4), cond)
    g_late = CLIPGuidance(clip, 1.0).gradient(x, _step(base, 10, 4), cond)
    assert not torch.allclose(g_early, g_late)


def test_classifier_guidance_without_labels_is_a_clear_error(base, mixture):
    x, y = rand_state(4)
    with pytest.raises(ValueError, match="needs conditions.labels"):
        ClassifierGuidance(MixtureClassifier(mixture), 1.0).gradient(x, _step(base, 5, 4), Conditions(model=y))


def test_every_planted_bug_still_matches_the_code_it_mutates():
    """scripts/plant_bugs.py replaces literal text; a refactor that moves that text would disarm the
    mutation (classifier-gradient-dropped was, by the GradientGuidance refactor) without this check."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("plant_bugs", root / "scripts" / "plant_bugs.py")
    plant_bugs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plant_bugs)
    for name, (path, old, new) in plant_bugs.MUTATIONS.items():
        assert (root / path).read_text().count(old) == 1, f"mutation {name!r} no longer matches {path}"
        assert old != new
    for bugs, _ in plant_bugs.SUITES.values():
        assert set(bugs) <= set(plant_bugs.MUTATIONS)
