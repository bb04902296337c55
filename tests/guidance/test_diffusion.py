"""The training process (GaussianDiffusion), respacing, and the sampling loop's per-sample determinism."""

from __future__ import annotations

import math

import pytest
import torch

from torch import Tensor, nn

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.diffusion import GaussianDiffusion, cosine_betas, extract, linear_betas, space_timesteps
from guidance.guiders import ClassifierFreeGuidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import NonFiniteSampleError, sample


def test_linear_schedule_endpoints_and_cosine_alphabar():
    betas = linear_betas(1000)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    abar = torch.cumprod(1 - cosine_betas(1000), 0)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 100, 500, 900]:
        assert float(abar[t]) == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)


@pytest.mark.parametrize("spec,count", [("50", 50), ("10,10,3,2,2", 27), ("ddim50", 50), ("ddim25", 25), ("1000", 1000)])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_keeps_alphabar_exactly(spec, count, schedule):
    base = GaussianDiffusion.from_schedule(schedule, 1000)
    respaced = base.respace(spec)
    assert respaced.num_timesteps == count
    kept = respaced.timestep_map
    assert torch.equal(respaced.alphas_cumprod, base.alphas_cumprod[kept])
    # betas of the respaced process chain back to the same alphabar
    torch.testing.assert_close(torch.cumprod(1 - respaced.betas, 0), base.alphas_cumprod[kept], rtol=1e-6, atol=0)


def test_space_timesteps_matches_known_values():
    assert space_timesteps(100, "ddim10") == list(range(0, 100, 10))
    assert space_timesteps(100, "4") == [0, 33, 66, 99]
    assert space_timesteps(10, [2, 1]) == [0, 4, 5]
    # guided-diffusion adds the stride 999/20 ten times (499.4999...), it does not multiply (499.5 -> 500)
    assert space_timesteps(1000, "21")[9:12] == [450, 499, 549]
    with pytest.raises(ValueError, match="each count"):
        space_timesteps(10, "6,6,6")
    with pytest.raises(ValueError, match="fixed stride"):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError, match="bad timestep respacing"):
        space_timesteps(1000, "fifty")
    for bad in ("ddim0", "ddim1001"):  # out of range: no stride advice
        with pytest.raises(ValueError, match=f"cannot keep {bad[4:]} DDIM steps of 1000; use 1..1000"):
            space_timesteps(1000, bad)
    with pytest.raises(ValueError, match="use e.g. 'ddim50'"):
        space_timesteps(1000, "ddimx")
    assert space_timesteps(1000, "ddim1000") == list(range(1000))


def test_parameter_conversions_round_trip():
    d = GaussianDiffusion.from_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    idx = torch.tensor([0, 1, 10, 400, 900, 999])
    x_t = d.q_sample(x0, idx, eps)
    torch.testing.assert_close(d.x0_from_eps(x_t, idx, eps), x0)
    torch.testing.assert_close(d.eps_from_x0(x_t, idx, x0), eps)
    v = d.v_from_eps(x0, idx, eps)
    torch.testing.assert_close(d.eps_from_v(x_t, idx, v), eps)
    torch.testing.assert_close(d.x0_from_v(x_t, idx, v), x0)


def test_posterior_matches_bayes_rule_closed_form():
    d = GaussianDiffusion.from_schedule("linear", 1000)
    t = 500
    beta, abar_prev = d.betas[t], d.alphas_cumprod_prev[t]
    x0, x_t = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-0.7]], dtype=torch.float64)
    # q(x_{t-1}|x0) = N(sqrt(abar_prev) x0, 1-abar_prev); q(x_t|x_{t-1}) = N(sqrt(1-beta) x_{t-1}, beta)
    prec = 1 / (1 - abar_prev) + (1 - beta) / beta
    mean_expected = (abar_prev.sqrt() * x0 / (1 - abar_prev) + (1 - beta).sqrt() * x_t / beta) / prec
    mean, var, _ = d.q_posterior(x0, x_t, torch.tensor([t]))
    torch.testing.assert_close(mean, mean_expected)
    torch.testing.assert_close(var.squeeze(), 1 / prec)


def test_learned_variance_interpolates_log_beta_and_log_beta_tilde():
    d = GaussianDiffusion.from_schedule("cosine", 1000, learned_variance=True)
    idx = torch.tensor([100])
    like = torch.zeros(1, 1)
    hi = d.model_log_variance(idx, like, torch.ones(1, 1))
    lo = d.model_log_variance(idx, like, -torch.ones(1, 1))
    assert float(hi) == pytest.approx(math.log(float(d.betas[100])))
    assert float(lo) == pytest.approx(float(d.posterior_log_variance_clipped[100]))


@pytest.fixture(scope="module")
def mixture_model() -> tuple[VPDiscrete, list[float], NetworkDenoiser]:
    """The analytic mixture on the linear VP process, sampled over guided-diffusion's 20-step respacing."""
    process = VPDiscrete.from_schedule("linear", 1000)
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.5]])
    mixture = GaussianMixture(means, torch.tensor([0.3, 0.4]), torch.tensor([0.5, 0.5]), process.alphas_cumprod)
    return process, process.sigmas(20, "respace"), NetworkDenoiser(MixtureDenoiser(mixture), "eps")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_bit_identical_across_batch_sizes(mixture_model, sampler):
    process, sigmas, model = mixture_model
    n = 32
    labels = torch.arange(n) % 2

    def run(batch_size: int) -> torch.Tensor:
        parts = []
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            parts.append(sample(model, process, sigmas, ClassifierFreeGuidance(2.0), Conditions(model=labels[idx]),
                                shape=(2,), sample_indices=idx, seed=7, sampler=sampler,
                                eta=1.0 if sampler == "ddim" else None, clip_denoised=False))
        return torch.cat(parts)

    full = run(32)
    for bs in (1, 7):
        assert torch.equal(run(bs), full), f"batch size {bs} changed the samples"
    # a different seed changes them
    other = sample(model, process, sigmas, ClassifierFreeGuidance(2.0), Conditions(model=labels), shape=(2,),
                   sample_indices=range(n), seed=8, sampler=sampler, eta=1.0 if sampler == "ddim" else None,
                   clip_denoised=False)
    assert not torch.equal(other, full)


def test_explicit_initial_noise_is_used(mixture_model):
    process, sigmas, model = mixture_model
    labels = torch.zeros(4, dtype=torch.long)
    x_T = torch.randn(4, 2)
    a = sample(model, process, sigmas, ClassifierFreeGuidance(1.0), Conditions(model=labels), (2,), range(4), seed=0,
               x_T=x_T)
    b = sample(model, process, sigmas, ClassifierFreeGuidance(1.0), Conditions(model=labels), (2,), range(4), seed=99,
               x_T=x_T)
    assert torch.equal(a, b)  # DDIM eta=0 is deterministic given x_T


class _NaNFrom(nn.Module):
    """The mixture's eps, NaN for one sample from model timestep `t_bad` down: a blow-up mid-trajectory."""

    def __init__(self, net: MixtureDenoiser, t_bad: int) -> None:
        super().__init__()
        self.net, self.t_bad = net, t_bad

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        eps = self.net(x, t, cond)
        bad = torch.zeros_like(eps, dtype=torch.bool)
        bad[0] = bool(t[0] <= self.t_bad)
        return eps.masked_fill(bad, float("nan"))

    def null_cond(self, cond: Tensor) -> Tensor:
        return self.net.null_cond(cond)


def test_non_finite_samples_name_guidance_scale_and_step(mixture_model):
    process, sigmas, model = mixture_model
    labels = torch.zeros(4, dtype=torch.long)
    x_T = torch.full((4, 2), float("nan"))
    with pytest.raises(NonFiniteSampleError, match=rf"'cfg' at scale 3.0, first at step 0 of 20 \(sigma {sigmas[0]:.4g}\)"):
        sample(model, process, sigmas, ClassifierFreeGuidance(3.0), Conditions(model=labels), (2,), range(4), x_T=x_T)
    # a NaN that appears later is reported at the step that made it, with that step's sigma
    t_bad = process.timesteps("respace", 20)[5]
    late = NetworkDenoiser(_NaNFrom(model.net, t_bad), "eps")
    with pytest.raises(NonFiniteSampleError, match=rf"first at step 5 of 20 \(sigma {sigmas[5]:.4g}\)"):
        sample(late, process, sigmas, ClassifierFreeGuidance(3.0), Conditions(model=labels), (2,), range(4))


def test_tables_are_copied_to_a_device_once_and_released_with_the_table():
    """A per-step host-to-device copy would synchronise the GPU stream; `meta` stands in for CUDA here."""
    import gc

    from guidance.diffusion import _DEVICE_COPIES, on_device

    table = torch.linspace(0.1, 0.9, 10, dtype=torch.float64)
    meta = torch.device("meta")
    first = on_device(table, meta)
    assert first.device == meta and on_device(table, meta) is first
    assert on_device(table, torch.device("cpu")) is table
    other = table.clone()
    assert on_device(other, meta) is not first
    key = (id(table), meta)
    assert key in _DEVICE_COPIES
    del table, first
    gc.collect()
    assert key not in _DEVICE_COPIES


def test_extract_on_another_device_reads_the_right_entries():
    diffusion = GaussianDiffusion.from_schedule("cosine", 50)
    like = torch.zeros(3, 2, 4, 4, device="meta")
    out = extract(diffusion.alphas_cumprod, torch.tensor([0, 7, 49]), like)
    assert out.device.type == "meta" and out.shape == (3, 1, 1, 1) and out.dtype == like.dtype
    cpu = extract(diffusion.alphas_cumprod, torch.tensor([0, 7, 49]), torch.zeros(3, 2, 4, 4))
    torch.testing.assert_close(cpu.flatten(), diffusion.alphas_cumprod[[0, 7, 49]].float())


def test_a_step_shared_by_the_batch_gives_what_per_sample_steps_give():
    """One int step for the whole batch (coefficients as host floats) and [B] steps (training) agree."""
    diffusion = GaussianDiffusion.from_schedule("cosine", 50, learned_variance=True)
    g = torch.Generator().manual_seed(0)
    x, eps, v = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    v = v.clamp(-1, 1)
    for i in (0, 7, 49):
        per_sample = torch.full((3,), i)
        coef = extract(diffusion.alphas_cumprod, i, x)
        assert isinstance(coef, float) and coef == float(diffusion.alphas_cumprod[i])
        torch.testing.assert_close(diffusion.x0_from_eps(x, i, eps), diffusion.x0_from_eps(x, per_sample, eps))
        torch.testing.assert_close(diffusion.eps_from_x0(x, i, eps), diffusion.eps_from_x0(x, per_sample, eps))
        for var_values in (None, v):
            shared = diffusion.p_mean_variance(x, i, eps, var_values, clip_denoised=True)
            each = diffusion.p_mean_variance(x, per_sample, eps, var_values, clip_denoised=True)
            for key in each:
                assert shared[key].shape == each[key].shape, key
                torch.testing.assert_close(shared[key], each[key])
