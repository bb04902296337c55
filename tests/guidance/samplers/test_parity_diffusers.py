"""The suite's samplers against diffusers' schedulers, driven by hand with the same exact model.

`ddim` against DDIMScheduler (set_alpha_to_one=True, steps_offset=0, the spacing of the suite's
schedule), `euler` against EulerDiscreteScheduler, `dpmpp-2m` against DPMSolverMultistepScheduler
(dpmsolver++, order 2, lower_order_final, final_sigmas_type="zero", fewer than 15 steps) and
`flow-euler` against FlowMatchEulerDiscreteScheduler. The model is an analytic Gaussian mixture
(exact eps / v / flow velocity); diffusers' loop is written out as its pipelines do (scale_model_input,
the model at the scheduler's timestep, step).

Precision: diffusers' DDIM keeps the sample's dtype, so with the suite's float64 alphas_cumprod put in
its table the two agree to float64 rounding (< 1e-12). Euler, DPM-Solver and flow-matching Euler cast
the sample to float32 inside `step` ("upcast") and keep their sigmas in float32, so those hold to
float32 rounding over the trajectory (< 1e-5 on O(1) data, measured <= 7e-7; the DPM-Solver test
also checks that its second-order term is far above that). Coordinates: DDIM, DPM-Solver and flow
Euler step in the model's own coordinates, as the suite; EulerDiscrete steps in VE coordinates
(x / alpha) and scales the model input back.

Documented differences: with clip_sample=True diffusers' DDIM keeps the unclipped eps unless
use_clipped_model_output=True; the suite's DDIM (guided-diffusion's) re-derives eps from the clipped x0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import NoGuidance
from guidance.process import RectifiedFlow, VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, Denoise, sample

pytest.importorskip("diffusers", reason="diffusers is not installed")
from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler  # noqa: E402
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler  # noqa: E402
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

F64 = torch.float64
TIGHT = 1e-12  # float64 rounding over a trajectory of O(1) data
FLOAT32_STATE = 1e-5  # diffusers casts the state to float32 in step() and keeps float32 sigmas (measured <= 7e-7)
BATCH = 8

# A 3-class isotropic mixture in 3-D, means beyond [-1, 1] so that clipping x0 acts.
MEANS = torch.tensor([[2.0, 0.0, 1.0], [-1.5, 1.5, 0.0], [0.0, -2.0, -1.0]], dtype=F64)
STDS = torch.tensor([0.5, 0.3, 0.7], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
EXACT = GaussianMixture(MEANS, STDS, WEIGHTS, torch.ones(1, dtype=F64))  # its table is unused here

# diffusers' beta schedules by name, as the suite builds them (in float64)
BETAS = {"linear": ("linear_diffusers", 0.0001, 0.02), "scaled_linear": ("scaled_linear", 0.00085, 0.012)}


def posterior_x0(x: Tensor, alpha: Tensor, s: Tensor, labels: Tensor) -> Tensor:
    """The mixture's exact E[x0 | x] for x = alpha x0 + s eps (guidance.analytic)."""
    return EXACT.posterior_x0(x, alpha, s, labels)


class VPMixtureV(nn.Module):
    """The mixture's exact v = alpha eps - s x0 on a VP table at whole timesteps (defined at abar = 0 too)."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.alphas_cumprod = alphas_cumprod.to(F64)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        abar = self.alphas_cumprod[t.long()][:, None]
        alpha, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = posterior_x0(x, alpha, s, cond)
        return (alpha * x - x0) / s  # alpha eps - s x0 with eps = (x - alpha x0) / s

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


class FlowMixture(nn.Module):
    """The mixture's exact rectified-flow velocity u = eps - x0 at x = (1 - t) x0 + t eps, told t * N."""

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        super().__init__()
        self.n = num_train_timesteps

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        tt = (t.to(F64) / self.n)[:, None]
        x0 = posterior_x0(x, 1 - tt, tt, cond)
        return (x - x0) / tt  # eps - x0 with eps = (x - (1 - t) x0) / t

    def null_cond(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


def vp_process(betas: str, zero_terminal_snr: bool = False) -> VPDiscrete:
    name, start, end = BETAS[betas]
    return VPDiscrete.from_schedule(name, 1000, zero_terminal_snr=zero_terminal_snr, beta_start=start, beta_end=end)


def vp_net(process: VPDiscrete, prediction: str) -> nn.Module:
    if prediction == "epsilon":
        return MixtureDenoiser(GaussianMixture(MEANS, STDS, WEIGHTS, process.alphas_cumprod))
    return VPMixtureV(process.alphas_cumprod)


def labels_and_noise(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 3, (BATCH,), generator=g)  # some unconditional rows (-1)
    return labels, torch.randn(BATCH, 3, generator=g, dtype=F64)


def whole_timesteps(t: Tensor) -> Tensor:
    return torch.full((BATCH,), int(t), dtype=torch.long)


def ours_sample(model, process, sigmas, labels, x_T, sampler, clip=False):
    return sample(NetworkDenoiser(model, prediction=model_prediction(model)), process, sigmas, NoGuidance(),
                  Conditions(model=labels), shape=(3,), sample_indices=range(BATCH), sampler=sampler, x_T=x_T,
                  clip_denoised=clip, dtype=F64)


def model_prediction(model: nn.Module) -> str:
    return {MixtureDenoiser: "eps", VPMixtureV: "v", FlowMixture: "flow"}[type(model)]


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.dtype == b.dtype == F64
    return float((a - b).abs().max())


# DDIM -------------------------------------------------------------------------------------------------

def ddim_scheduler(process: VPDiscrete, betas: str, prediction: str, spacing: str, steps: int,
                   **config) -> DDIMScheduler:
    _, start, end = BETAS[betas]
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule=betas, beta_start=start, beta_end=end,
                          set_alpha_to_one=True, steps_offset=0, prediction_type=prediction,
                          timestep_spacing=spacing, **{"clip_sample": False, **config})
    # diffusers builds its table in float32 (checked against the suite's in test_vp_tables_and_timesteps...);
    # the step itself is dtype-agnostic, so give it the suite's float64 table
    sched.alphas_cumprod = process.alphas_cumprod.clone()
    sched.set_timesteps(steps)
    assert sched.timesteps.tolist() == [int(process.level(s).model_t) for s in process.sigmas(steps, spacing)[:-1]]
    return sched


def run_ddim(sched: DDIMScheduler, net: nn.Module, labels: Tensor, x: Tensor, eta: float = 0.0,
             noises: list[Tensor] | None = None, use_clipped_model_output: bool = False) -> Tensor:
    for i, t in enumerate(sched.timesteps):
        out = net(x, whole_timesteps(t), labels)
        noise = None
        if eta > 0:  # diffusers draws noise at the last step too, where its std is 0
            noise = noises[i] if i < len(noises) else torch.zeros_like(x)
        x = sched.step(out, int(t), x, eta=eta, variance_noise=noise,
                       use_clipped_model_output=use_clipped_model_output).prev_sample
    return x


@pytest.mark.parametrize("betas,prediction,steps", [("linear", "epsilon", 20), ("scaled_linear", "epsilon", 25),
                                                    ("scaled_linear", "v_prediction", 20)])
def test_ddim_equals_diffusers(betas, prediction, steps):
    process = vp_process(betas)
    net = vp_net(process, prediction)
    labels, x_T = labels_and_noise()
    sigmas = process.sigmas(steps, "leading")
    ours = ours_sample(net, process, sigmas, labels, x_T, "ddim")
    theirs = run_ddim(ddim_scheduler(process, betas, prediction, "leading", steps), net, labels, x_T)
    assert max_diff(ours, theirs) < TIGHT


@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_ddim_with_eta_equals_diffusers_given_the_same_noise(eta):
    process = vp_process("linear")
    net = vp_net(process, "epsilon")
    labels, x_T = labels_and_noise(1)
    steps = 20
    g = torch.Generator().manual_seed(5)
    noises = [torch.randn(BATCH, 3, generator=g, dtype=F64) for _ in range(steps - 1)]  # the suite: none at the end
    sigmas = process.sigmas(steps, "leading")
    it = iter(noises)
    denoise = Denoise(NetworkDenoiser(net), NoGuidance(), Conditions(model=labels), sigmas, clip_denoised=False)
    ours = SAMPLERS["ddim"].fn(denoise, x_T, process.levels(sigmas), lambda: next(it), eta=eta)
    assert next(it, None) is None
    theirs = run_ddim(ddim_scheduler(process, "linear", "epsilon", "leading", steps), net, labels, x_T, eta, noises)
    assert max_diff(ours, theirs) < TIGHT


def test_ddim_zero_terminal_snr_v_prediction_equals_diffusers():
    """Lin et al. 2023: rescaled betas (abar_T = 0), trailing spacing, v-prediction; both start at pure
    noise (the suite at sigma = inf, where x = eps) and the first step's x0 is -v."""
    process = vp_process("scaled_linear", zero_terminal_snr=True)
    net = vp_net(process, "v_prediction")
    labels, x_T = labels_and_noise(2)
    steps = 10  # divides 1000: diffusers' DDIM steps to t - 1000 // steps, the next trailing timestep only then
    sigmas = process.sigmas(steps, "trailing")
    assert math.isinf(sigmas[0])
    ours = ours_sample(net, process, sigmas, labels, x_T, "ddim")
    sched = ddim_scheduler(process, "scaled_linear", "v_prediction", "trailing", steps, rescale_betas_zero_snr=True)
    assert float(sched.alphas_cumprod[sched.timesteps[0]]) == 0.0
    theirs = run_ddim(sched, net, labels, x_T)
    assert max_diff(ours, theirs) < TIGHT


def test_ddim_clip_sample_equals_diffusers_with_the_clipped_model_output():
    """The suite's DDIM clips x0 and re-derives eps from it (guided-diffusion): diffusers'
    clip_sample=True with use_clipped_model_output=True. Without it diffusers keeps the network's eps
    beside the clipped x0; the first step shows the difference exactly."""
    process = vp_process("linear")
    net = vp_net(process, "epsilon")
    labels, x_T = labels_and_noise(3)
    steps = 20
    sigmas = process.sigmas(steps, "leading")
    ours = ours_sample(net, process, sigmas, labels, x_T, "ddim", clip=True)
    clipped = run_ddim(ddim_scheduler(process, "linear", "epsilon", "leading", steps, clip_sample=True), net, labels,
                       x_T, use_clipped_model_output=True)
    assert max_diff(ours, clipped) < TIGHT

    unclipped_eps = run_ddim(ddim_scheduler(process, "linear", "epsilon", "leading", steps, clip_sample=True), net,
                             labels, x_T, use_clipped_model_output=False)
    assert max_diff(ours, unclipped_eps) > 1e-3  # a real difference, not rounding

    # one step from x_T: diffusers' rule is sqrt(abar') clip(x0) + sqrt(1 - abar') eps_network
    cur, nxt = process.level(sigmas[0]), process.level(sigmas[1])
    pred = NetworkDenoiser(net)(x_T, cur, labels)
    x0_clipped = pred.x0.clamp(-1, 1)
    assert bool((pred.x0.abs() > 1).any()), "clipping must act for this case to test it"
    sched = ddim_scheduler(process, "linear", "epsilon", "leading", steps, clip_sample=True)
    t = int(sched.timesteps[0])
    diffusers_step = sched.step(net(x_T, whole_timesteps(t), labels), t, x_T).prev_sample
    expected = math.sqrt(nxt.abar) * x0_clipped + math.sqrt(1 - nxt.abar) * pred.eps
    assert max_diff(diffusers_step, expected) < TIGHT
    denoise = Denoise(NetworkDenoiser(net), NoGuidance(), Conditions(model=labels), sigmas, clip_denoised=True)
    ours_step = SAMPLERS["ddim"].fn(denoise, x_T, [cur, nxt], lambda: None)
    expected_ours = math.sqrt(nxt.abar) * x0_clipped + math.sqrt(1 - nxt.abar) * pred.clipped().eps
    assert max_diff(ours_step, expected_ours) < TIGHT


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_vp_tables_and_timesteps_equal_diffusers(spacing):
    """The float32 tables diffusers builds equal the suite's float64 ones to float32 rounding, and the
    spacings give the same timesteps as DDIM's set_timesteps (and Euler's, but for linspace: Euler keeps
    the fractional timesteps and interpolates sigma linearly between table entries; the suite's
    linspace is DDIM's, rounded to whole timesteps)."""
    for betas, zsnr in (("linear", False), ("scaled_linear", False), ("scaled_linear", True)):
        process = vp_process(betas, zsnr)
        _, start, end = BETAS[betas]
        sched = DDIMScheduler(beta_schedule=betas, beta_start=start, beta_end=end, rescale_betas_zero_snr=zsnr)
        torch.testing.assert_close(sched.alphas_cumprod.to(F64), process.alphas_cumprod, rtol=2e-6, atol=1e-9)
    process = vp_process("linear")
    for steps in (1, 7, 10, 20, 25, 50, 333, 1000):
        ours = [int(process.level(s).model_t) for s in process.sigmas(steps, spacing)[:-1]]
        ddim = DDIMScheduler(timestep_spacing=spacing, steps_offset=0)
        ddim.set_timesteps(steps)
        euler = EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=0)
        euler.set_timesteps(steps)
        assert ours == ddim.timesteps.tolist(), (spacing, steps)
        if spacing != "linspace":
            assert euler.timesteps.tolist() == [float(t) for t in ours], (spacing, steps)


def test_ddim_trailing_with_steps_not_dividing_the_timesteps_is_not_diffusers():
    """Documented difference: diffusers' DDIM steps from t to t - N // steps whatever its timesteps are, so
    with trailing spacing and steps not dividing N it steps to levels off its own list (999 -> 857, then
    evaluates at 856) and ends at t = 0 instead of the clean data. The suite steps along its sigmas."""
    process = vp_process("scaled_linear", zero_terminal_snr=True)
    net = vp_net(process, "v_prediction")
    labels, x_T = labels_and_noise(7)
    sched = ddim_scheduler(process, "scaled_linear", "v_prediction", "trailing", 7, rescale_betas_zero_snr=True)
    assert sched.timesteps.tolist() == [999, 856, 713, 570, 428, 285, 142]
    assert 999 - 1000 // 7 == 857 and 142 - 1000 // 7 == 0  # diffusers' prev_timestep: off the list, and not -1
    ours = ours_sample(net, process, process.sigmas(7, "trailing"), labels, x_T, "ddim")
    assert max_diff(ours, run_ddim(sched, net, labels, x_T)) > 1e-4


# Euler ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_equals_diffusers_euler_discrete(prediction):
    process = vp_process("scaled_linear")
    net = vp_net(process, prediction)
    labels, z = labels_and_noise(4)
    steps = 20
    sigmas = process.sigmas(steps, "leading")
    _, start, end = BETAS["scaled_linear"]
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=start, beta_end=end,
                                   prediction_type=prediction, timestep_spacing="leading", steps_offset=0)
    sched.alphas_cumprod = process.alphas_cumprod.clone()  # its sigmas then differ from ours by float32 rounding only
    sched.set_timesteps(steps)
    torch.testing.assert_close(sched.sigmas.to(F64), torch.tensor(sigmas, dtype=F64), rtol=1e-6, atol=0)
    x = z * sched.init_noise_sigma  # VE coordinates
    x_T = x * process.level(sigmas[0]).alpha  # the same state in the model's
    for t in sched.timesteps:
        out = net(sched.scale_model_input(x, t), whole_timesteps(t), labels)
        x = sched.step(out, t, x).prev_sample
    ours = ours_sample(net, process, sigmas, labels, x_T, "euler")
    assert max_diff(ours, x) < FLOAT32_STATE
    # on whole timesteps the suite's Euler step is its DDIM step (Karras et al. 2022, sec. 3)
    ddim = ours_sample(net, process, sigmas, labels, x_T, "ddim")
    assert max_diff(ours, ddim) < 1e-12


# DPM-Solver++(2M) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing,steps", [("trailing", 10), ("leading", 12), ("trailing", 14)])
def test_dpmpp_2m_equals_diffusers_dpm_solver_multistep(spacing, steps):
    process = vp_process("scaled_linear")
    net = vp_net(process, "epsilon")
    labels, x_T = labels_and_noise(5)
    sigmas = process.sigmas(steps, spacing)
    _, start, end = BETAS["scaled_linear"]
    sched = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=start, beta_end=end,
                                        algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
                                        final_sigmas_type="zero", timestep_spacing="trailing",
                                        prediction_type="epsilon")
    sched.alphas_cumprod = process.alphas_cumprod.clone()
    timesteps = [int(process.level(s).model_t) for s in sigmas[:-1]]
    if spacing == "trailing":
        sched.set_timesteps(steps)
        assert sched.timesteps.tolist() == timesteps
    else:  # DPM-Solver's own "leading" spaces steps + 1 points and drops 0; pass the suite's
        sched.set_timesteps(timesteps=timesteps)
    torch.testing.assert_close(sched.sigmas.to(F64), torch.tensor(sigmas, dtype=F64), rtol=1e-6, atol=0)
    x = x_T.clone()  # DPM-Solver steps in the model's coordinates
    for t in sched.timesteps:
        out = net(sched.scale_model_input(x, t), whole_timesteps(t), labels)
        x = sched.step(out, t, x).prev_sample
    ours = ours_sample(net, process, sigmas, labels, x_T, "dpmpp-2m")
    assert max_diff(ours, x) < FLOAT32_STATE
    # the second-order term is well above the tolerance: a first-order solver lands far away
    assert max_diff(ours, ours_sample(net, process, sigmas, labels, x_T, "euler")) > 100 * FLOAT32_STATE


# flow-matching Euler -----------------------------------------------------------------------------------

def flow_t(sigmas: list[float]) -> list[float]:
    return [1.0 if math.isinf(s) else s / (1 + s) for s in sigmas]


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_equals_diffusers_flow_match_euler(shift):
    """The step on the suite's default flow schedule, which is set_timesteps(n)'s (SD3's pipeline)."""
    process = RectifiedFlow(shift)
    net = FlowMixture()
    labels, x_T = labels_and_noise(6)
    steps = 12
    sigmas = process.sigmas(steps)
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    torch.testing.assert_close(sched.sigmas.to(F64), torch.tensor(flow_t(sigmas), dtype=F64), rtol=1e-6, atol=0)
    x = x_T.clone()
    for t in sched.timesteps:
        out = net(x, t.to(F64).expand(BATCH), labels)
        x = sched.step(out, t, x).prev_sample
    ours = ours_sample(net, process, sigmas, labels, x_T, "flow-euler")
    assert max_diff(ours, x) < FLOAT32_STATE
    # Euler in sigma is the same first-order step in other coordinates
    assert max_diff(ours, ours_sample(net, process, sigmas, labels, x_T, "euler")) < 1e-12


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_default_schedule_equals_diffusers_set_timesteps(shift):
    """RectifiedFlow's default schedule against FlowMatchEulerDiscreteScheduler.set_timesteps(n) (what
    SD3's pipeline calls)."""
    for steps in (4, 12, 28):
        sched = FlowMatchEulerDiscreteScheduler(shift=shift)
        sched.set_timesteps(steps)
        torch.testing.assert_close(torch.tensor(flow_t(RectifiedFlow(shift).sigmas(steps)), dtype=F64),
                                   sched.sigmas.to(F64), rtol=1e-6, atol=1e-7)
