"""The suite's samplers against k-diffusion's own, on one exact model, the same sigmas and the same noise.

`euler`, `euler-ancestral`, `heun` and `dpmpp-2m` are written after k-diffusion's `sample_euler`,
`sample_euler_ancestral`, `sample_heun` and `sample_dpmpp_2m`. Both run in float64 here, from the
same initial noise (ancestral: the same step noise too), on an analytic Gaussian-mixture model; the
final samples must agree to float64 rounding (max abs difference < 1e-10 on O(1) data). The only
differences allowed are coordinates: the suite's state is x = alpha (x0 + sigma eps) (the model's own
coordinates), k-diffusion's is x0 + sigma eps (VE), which agree at sigma = 0.

Cases: a VE (EDM) process on Karras sigmas with an x0- and an eps-predicting model, driven through
`as_k_diffusion`; a discrete VP (DDPM) process on diffusers' leading spacing with the suite's
`MixtureDenoiser`, through `as_k_diffusion`, through k-diffusion's own `DiscreteEpsDDPMDenoiser`, and
under CFG; and a VP process on Karras sigmas (fractional timesteps) through `DiscreteEpsDDPMDenoiser`,
where the suite hands the network its fractional time as float32, so that case holds to 1e-6.

k-diffusion's package __init__ imports heavy optional dependencies (wandb, clip, kornia, ...): only
`k_diffusion.sampling` (and the `utils` and `external` it needs) are loaded, without running it.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
from torch import Tensor, nn

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser, as_k_diffusion
from guidance.guiders import ClassifierFreeGuidance, NoGuidance
from guidance.process import VE, VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, Denoise, sample

F64 = torch.float64
TIGHT = 1e-10  # float64 rounding, accumulated over a trajectory of O(1) data
FLOAT32_TIME = 1e-6  # the suite tells a network a fractional time in float32 (NoiseLevel.timesteps)


def _load_k_diffusion() -> tuple[types.ModuleType, types.ModuleType]:
    """k_diffusion.sampling and k_diffusion.external without executing k_diffusion/__init__.py."""
    pytest.importorskip("torchsde", reason="k-diffusion's sampling module needs torchsde")
    pytest.importorskip("torchdiffeq", reason="k-diffusion's sampling module needs torchdiffeq")
    spec = importlib.util.find_spec("k_diffusion")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)", allow_module_level=True)
    if "k_diffusion" in sys.modules:  # the real package is already imported: use it
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    stub = types.ModuleType("k_diffusion")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__spec__ = spec
    sys.modules["k_diffusion"] = stub
    try:
        return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
    except ImportError as err:
        pytest.skip(f"k_diffusion.sampling does not import: {err}", allow_module_level=True)
    finally:  # leave no half-initialised package behind for anyone importing k_diffusion for real
        for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
            del sys.modules[name]


K_SAMPLING, K_EXTERNAL = _load_k_diffusion()
K_SAMPLERS = {"euler": K_SAMPLING.sample_euler, "heun": K_SAMPLING.sample_heun,
              "dpmpp-2m": K_SAMPLING.sample_dpmpp_2m}

# A 3-class isotropic mixture in 3-D, means beyond [-1, 1] (no clipping anywhere in this file).
MEANS = torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]], dtype=F64)
STDS = torch.tensor([0.5, 0.3, 0.7], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
EXACT = GaussianMixture(MEANS, STDS, WEIGHTS, torch.ones(1, dtype=F64))  # its table is unused here
BATCH = 8


def posterior_x0(x: Tensor, alpha: Tensor, s: Tensor, labels: Tensor) -> Tensor:
    """The mixture's exact E[x0 | x] for x = alpha x0 + s eps (guidance.analytic)."""
    return EXACT.posterior_x0(x, alpha, s, labels)


class VEMixture(nn.Module):
    """The mixture's exact denoiser for VE data x = x0 + sigma eps; told sigma, predicts x0 or eps."""

    def __init__(self, prediction: str) -> None:
        super().__init__()
        self.prediction = prediction

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        sigma = t.to(F64)[:, None]
        x0 = posterior_x0(x, torch.ones_like(sigma), sigma, cond)
        return x0 if self.prediction == "x0" else (x - x0) / sigma

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


class VPMixtureContinuous(nn.Module):
    """The mixture's exact eps for a VP table at a fractional timestep t, whose sigma is interpolated in
    log sigma between table entries (k-diffusion's DiscreteSchedule.t_to_sigma, in float64)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.log_sigmas = ((1 - alphas_cumprod.to(F64)) / alphas_cumprod.to(F64)).sqrt().log()

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        t = t.to(F64)
        lo, hi, w = t.floor().long(), t.ceil().long(), t - t.floor()
        sigma = ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()[:, None]
        alpha = 1 / (1 + sigma**2).sqrt()
        x0 = posterior_x0(x, alpha, sigma * alpha, cond)
        return (x - alpha * x0) / (sigma * alpha)

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


class KDiffusionEps(nn.Module):
    """What k-diffusion's DiscreteEpsDDPMDenoiser wraps: inner_model(x, t, **extra_args) -> eps.

    Its sigma_to_t interpolates even at a table sigma, so a whole timestep can come out as
    449.99999999999994; a table-indexed model (MixtureDenoiser floors t) is handed the whole timestep."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        whole = (t - t.round()).abs() < 1e-9
        if bool(whole.all()):
            t = t.round().long()
        return self.net(x, t, cond)


VP_PROCESS = VPDiscrete.from_schedule("linear", 1000)
VE_PROCESS = VE(0.002, 80.0)
MIXTURE = GaussianMixture(MEANS, STDS, WEIGHTS, VP_PROCESS.alphas_cumprod)


def make_case(name: str):
    """(process, sigmas, suite denoiser, guidance, k-diffusion model(x_ve, sigma, cond=...), tolerance)."""
    if name.startswith("ve-karras"):
        process = VE_PROCESS
        sigmas = process.sigmas(12, "karras")
        model = NetworkDenoiser(VEMixture(name.rsplit("-", 1)[1]), prediction=name.rsplit("-", 1)[1])
        return process, sigmas, model, NoGuidance(), as_k_diffusion_cond(model, process), TIGHT
    if name.startswith("vp-leading"):
        process = VP_PROCESS
        sigmas = process.sigmas(20, "leading")
        model = NetworkDenoiser(MixtureDenoiser(MIXTURE), prediction="eps")
        if name == "vp-leading-compvis":
            k_model = K_EXTERNAL.DiscreteEpsDDPMDenoiser(KDiffusionEps(MixtureDenoiser(MIXTURE)),
                                                         process.alphas_cumprod, quantize=False)
            return process, sigmas, model, NoGuidance(), k_model, TIGHT
        if name == "vp-leading-cfg":
            guidance = ClassifierFreeGuidance(3.0)
            return process, sigmas, model, guidance, as_k_diffusion_guided(model, guidance, process, sigmas), TIGHT
        return process, sigmas, model, NoGuidance(), as_k_diffusion_cond(model, process), TIGHT
    if name == "vp-karras-compvis":
        process = VP_PROCESS
        sigmas = process.sigmas(12, "karras")
        net = VPMixtureContinuous(process.alphas_cumprod)
        k_model = K_EXTERNAL.DiscreteEpsDDPMDenoiser(KDiffusionEps(net), process.alphas_cumprod, quantize=False)
        return process, sigmas, NetworkDenoiser(net, prediction="eps"), NoGuidance(), k_model, FLOAT32_TIME
    raise ValueError(name)


def as_k_diffusion_cond(model, process):
    """as_k_diffusion, taking the labels as k-diffusion's extra_args (cond=...)."""

    def k_model(x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        return as_k_diffusion(model, process, cond)(x, sigma)

    return k_model


def as_k_diffusion_guided(model, guidance, process, sigmas):
    """The guided model (the suite's Denoise: CFG here) as k-diffusion's model(x_ve, sigma) -> x0."""

    def k_model(x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        denoise = Denoise(model, guidance, Conditions(model=cond), sigmas, clip_denoised=False)
        return as_k_diffusion(lambda x_, level, _: denoise(x_, level), process, None)(x, sigma)

    return k_model


CASES = ["ve-karras-x0", "ve-karras-eps", "vp-leading", "vp-leading-compvis", "vp-leading-cfg", "vp-karras-compvis"]


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.dtype == b.dtype == F64
    return float((a - b).abs().max())


def initial_state(process, sigmas, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(x_T in the suite's model coordinates, the same state in VE coordinates, labels)."""
    g = torch.Generator().manual_seed(seed)
    x_ve = sigmas[0] * torch.randn(BATCH, 3, generator=g, dtype=F64)
    labels = torch.randint(-1, 3, (BATCH,), generator=g)  # some unconditional rows (-1)
    return x_ve * process.level(sigmas[0]).alpha, x_ve, labels


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp-2m"])
def test_deterministic_sampler_equals_k_diffusion(sampler, case):
    process, sigmas, model, guidance, k_model, tol = make_case(case)
    x_model, x_ve, labels = initial_state(process, sigmas)
    ours = sample(model, process, sigmas, guidance, Conditions(model=labels), shape=(3,),
                  sample_indices=range(BATCH), sampler=sampler, x_T=x_model, clip_denoised=False, dtype=F64)
    theirs = K_SAMPLERS[sampler](k_model, x_ve, torch.tensor(sigmas, dtype=F64), extra_args={"cond": labels},
                                 disable=True)
    diff = max_diff(ours, theirs)
    assert diff < tol, f"{sampler} on {case}: max abs difference {diff:.3g} to k-diffusion (tolerance {tol:g})"
    assert float(ours.abs().max()) > 0.5  # a real sample, not a collapse to 0


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("case", CASES)
def test_euler_ancestral_equals_k_diffusion_with_the_same_noise(case, eta):
    """The suite's sampler function driven directly, so that both draw the very same step noise (k-diffusion
    adds noise_sampler() * sigma_up in VE coordinates; the suite's state is alpha times that)."""
    process, sigmas, model, guidance, k_model, tol = make_case(case)
    x_model, x_ve, labels = initial_state(process, sigmas, seed=1)
    g = torch.Generator().manual_seed(2)
    noises = [torch.randn(BATCH, 3, generator=g, dtype=F64) for _ in range(len(sigmas) - 2)]  # none at the last step

    ours_noise, theirs_noise = iter(noises), iter(noises)
    denoise = Denoise(model, guidance, Conditions(model=labels), sigmas, clip_denoised=False)
    ours = SAMPLERS["euler-ancestral"].fn(denoise, x_model, process.levels(sigmas), lambda: next(ours_noise), eta=eta)
    theirs = K_SAMPLING.sample_euler_ancestral(k_model, x_ve, torch.tensor(sigmas, dtype=F64),
                                               extra_args={"cond": labels}, eta=eta, disable=True,
                                               noise_sampler=lambda sigma, sigma_next: next(theirs_noise))
    assert next(ours_noise, None) is None and next(theirs_noise, None) is None  # both used every draw
    diff = max_diff(ours, theirs)
    assert diff < tol, f"euler-ancestral (eta {eta}) on {case}: max abs difference {diff:.3g} to k-diffusion"


def test_noise_schedules_equal_k_diffusion():
    """Karras and exponential sigmas as k-diffusion's get_sigmas_* (which ramp in float32), and the VP
    process's fractional timestep of a sigma as k-diffusion's DiscreteSchedule.sigma_to_t (float64)."""
    for process in (VE_PROCESS, VP_PROCESS):
        lo, hi = process.sigma_min, process.sigma_max
        for steps in (1, 2, 12, 50):
            if steps > 1:  # k-diffusion's ramp at n = 1 is [0] (sigma_max); ours is sigma_max too
                torch.testing.assert_close(torch.tensor(process.sigmas(steps, "karras"), dtype=F64),
                                           K_SAMPLING.get_sigmas_karras(steps, lo, hi).to(F64), rtol=2e-6, atol=0)
                torch.testing.assert_close(torch.tensor(process.sigmas(steps, "exponential"), dtype=F64),
                                           K_SAMPLING.get_sigmas_exponential(steps, lo, hi).to(F64), rtol=2e-6,
                                           atol=0)
            else:
                assert process.sigmas(1, "karras") == [hi, 0.0]
    schedule = K_EXTERNAL.DiscreteSchedule(((1 - VP_PROCESS.alphas_cumprod) / VP_PROCESS.alphas_cumprod).sqrt(),
                                           quantize=False)
    sigmas = VP_PROCESS.sigmas(30, "karras")[:-1] + VP_PROCESS.sigmas(20, "leading")[:-1]
    ours = torch.tensor([VP_PROCESS.level(s).model_t for s in sigmas], dtype=F64)
    theirs = schedule.sigma_to_t(torch.tensor(sigmas, dtype=F64))
    assert float((ours - theirs).abs().max()) < 1e-9
    assert not math.isclose(float(ours[3]), round(float(ours[3])))  # Karras sigmas fall between timesteps
