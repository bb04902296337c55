"""A pipeline's scheduler as the suite's process, default trajectory and default sampler.

The process comes from the scheduler's own table (VP: its float32 alphas_cumprod, so trained betas,
zero-terminal SNR and every beta schedule carry over; flow: its shift), the prediction type from its
config, and the `default` schedule from the scheduler itself: a copy runs `set_timesteps(n)`, so
spacing (leading, trailing, linspace), steps_offset, Karras / exponential sigmas, the final sigma
(set_alpha_to_one, final_sigmas_type) and the flow shift (fixed or dynamic) are the pipeline's own, and
the trajectory ends where the scheduler's last step lands. `--sampler X` follows the trajectory of
diffusers' scheduler for X built from the same config (`XScheduler.from_config(pipe.scheduler.config)`).
A config field the suite does not reproduce is refused in one line. The other schedules
(--schedule respace, karras, ...) stay the suite's.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from guidance.process import NoiseLevel, RectifiedFlow, VPDiscrete
from guidance.checkpoints import CheckpointError

# the suite's sampler -> the diffusers scheduler class that takes the same steps (`--sampler X` on a pipeline
# folder is `pipe.scheduler = X.from_config(pipe.scheduler.config)`)
SCHEDULER_OF = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
                "euler-ancestral": "EulerAncestralDiscreteScheduler", "heun": "HeunDiscreteScheduler",
                "dpmpp-2m": "DPMSolverMultistepScheduler", "flow-euler": "FlowMatchEulerDiscreteScheduler"}
SAMPLER_OF = {name: sampler for sampler, name in SCHEDULER_OF.items()}
FLOW = ("FlowMatchEulerDiscreteScheduler",)
# schedulers that step in x / alpha (VE coordinates) from latents * init_noise_sigma and divide the model input back
VE_STATE = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler")

# Scheduler config fields the suite reproduces with any value: the training table (the scheduler's own
# alphas_cumprod carries beta schedule, trained betas and zero-terminal SNR), the prediction type, and every
# field that only shapes `set_timesteps` (spacing, offset, Karras / exponential / beta sigmas, final sigma,
# flow shift and dynamic shifting): the trajectory is read from a copy of the scheduler after set_timesteps.
HONOURED = frozenset({
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr",
    "prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one", "use_karras_sigmas",
    "use_exponential_sigmas", "use_beta_sigmas", "sigma_min", "sigma_max", "final_sigmas_type", "lower_order_final",
    "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len",
    "shift_terminal", "time_shift_type",
    # inert while the field that uses them is off (checked below: thresholding, clip_sample, use_flow_sigmas)
    "dynamic_thresholding_ratio", "sample_max_value", "clip_sample_range", "flow_shift", "lambda_min_clipped"})
# fields the suite reproduces at one value only (the suite's sampler steps this way)
FIXED: dict[str, Any] = {
    "clip_sample": False, "thresholding": False, "algorithm_type": "dpmsolver++", "solver_order": 2,
    "solver_type": "midpoint", "euler_at_final": False, "use_lu_lambdas": False, "use_flow_sigmas": False,
    "variance_type": None, "interpolation_type": "linear", "timestep_type": "discrete", "invert_sigmas": False,
    "stochastic_sampling": False}
FIXED_BY_CLASS = {"DDPMScheduler": {"variance_type": "fixed_small"}}
# fields honoured with any value on one class only: DPM-Solver's flow sigmas (Sana's shipped scheduler) are a
# rectified flow stepped by dpmpp-2m
HONOURED_BY_CLASS = {"DPMSolverMultistepScheduler": frozenset({"use_flow_sigmas"})}


def scheduler_sampler(config: Path) -> str | None:
    """The suite's sampler for the scheduler a scheduler_config.json names (ddim for one without a match);
    None where the file is missing or unreadable (loading the folder then names the problem)."""
    try:
        name = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return sampler_for(str(name))


def sampler_for(scheduler_class: str) -> str:
    """The suite's sampler that steps like a diffusers scheduler class (ddim, exact on every process, otherwise)."""
    return SAMPLER_OF.get(scheduler_class, "ddim")


def is_flow(scheduler: Any) -> bool:
    """Whether the scheduler runs a rectified flow: FlowMatchEuler, or DPM-Solver with `use_flow_sigmas` (Sana)."""
    return type(scheduler).__name__ in FLOW or bool(scheduler.config.get("use_flow_sigmas"))


def trajectory_scheduler(scheduler: Any, sampler: str | None) -> Any:
    """The scheduler whose trajectory `sampler` follows on this pipeline: the pipeline's own where it is that
    sampler's class, else `SamplerClass.from_config(scheduler.config)` as a diffusers user swaps schedulers (a
    PNDM folder's default `ddim` is DDIMScheduler.from_config). A sampler of the other process kind (flow on a
    VP pipeline, or the reverse) keeps the pipeline's scheduler: diffusers has no such swap."""
    import diffusers  # noqa: PLC0415 (optional dependency)

    name = type(scheduler).__name__
    target = SCHEDULER_OF.get(sampler or sampler_for(name))
    if target is None or target == name or (target in FLOW) != is_flow(scheduler):
        return scheduler
    return getattr(diffusers, target).from_config(scheduler.config)


def check_config(scheduler: Any) -> None:
    """Refuse, in one line, a scheduler config field the suite does not reproduce (never silently ignored).
    A field this list does not know passes only at its diffusers default (a newer diffusers' addition)."""
    name = type(scheduler).__name__
    defaults = {k: p.default for k, p in inspect.signature(type(scheduler).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    fixed = {**FIXED, **FIXED_BY_CLASS.get(name, {})}
    for key, value in scheduler.config.items():
        if key.startswith("_") or key in HONOURED or key in HONOURED_BY_CLASS.get(name, ()):
            continue
        wanted = fixed.get(key, defaults.get(key, value))
        if value != wanted:
            raise CheckpointError(f"the pipeline's {name} has {key}={value!r}, which the suite does not reproduce "
                                  f"(its samplers step with {key}={wanted!r}); set {key} to {wanted!r} in "
                                  f"scheduler/scheduler_config.json or pass another --sampler")


def scheduler_timesteps(scheduler: Any, steps: int, **options: Any) -> tuple[list[float], list[float] | None]:
    """The scheduler's timesteps for `steps` and its sigmas where it keeps them (on a copy: the pipeline's is untouched)."""
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps, device="cpu", **options)
    times = [float(t) for t in sched.timesteps]
    sigmas = None if getattr(sched, "sigmas", None) is None else [float(s) for s in sched.sigmas]
    if len(times) > steps:  # Heun lists each inner level twice (its two evaluations): one level each
        keep = [0, *(i for i in range(1, len(times)) if times[i] != times[i - 1])]
        times = [times[i] for i in keep]
        sigmas = None if sigmas is None else [*(sigmas[i] for i in keep), sigmas[-1]]
    return times, sigmas


def final_sigma(scheduler: Any, steps: int, sigmas: list[float] | None) -> float:
    """Where the scheduler's last step lands: DDIM at final_alpha_cumprod (abar_0 with set_alpha_to_one false),
    DDPM at abar = 1, the sigma-keeping schedulers at their last sigma (final_sigmas_type sigma_min or zero)."""
    if sigmas is not None:
        return sigmas[steps]
    final = getattr(scheduler, "final_alpha_cumprod", None)
    if final is None:
        return 0.0
    abar = float(final)
    return 0.0 if abar >= 1.0 else math.sqrt((1.0 - abar) / abar)


def check_steps(scheduler: Any, times: list[float], final: float) -> None:
    """The (scheduler, steps) pairs whose steps the suite's samplers cannot take, refused in one line."""
    name, config = type(scheduler).__name__, scheduler.config
    if name == "DDIMScheduler":  # DDIM steps from t to t - T // n, which need not be the next timestep
        jump = config.num_train_timesteps // len(times)
        bad = [(a, b) for a, b in zip(times, times[1:]) if a - jump != b]
        if bad:
            raise ValueError(f"DDIMScheduler with timestep_spacing={config.timestep_spacing!r} at --steps {len(times)} "
                             f"steps from timestep {bad[0][0]:g} to {bad[0][0] - jump:g} but evaluates the model next at "
                             f"{bad[0][1]:g}, which no trajectory reproduces; use --steps dividing "
                             f"{config.num_train_timesteps} with leading or trailing spacing, or --sampler euler")
    if name == "DPMSolverMultistepScheduler" and final > 0 and config.lower_order_final and len(times) < 15:
        raise ValueError(f"DPMSolverMultistepScheduler with final_sigmas_type={config.final_sigmas_type!r} and "
                         f"lower_order_final takes a first-order last step below 15 steps, which the suite's dpmpp-2m "
                         f"does not (it does at sigma 0); use --steps 15 or more, or final_sigmas_type \"zero\"")


class PipelineVP(VPDiscrete):
    """The scheduler's VP table; its `default` trajectory is the scheduler's own timesteps, ending where the
    scheduler's last step lands (above sigma 0 for DDIM with set_alpha_to_one false)."""

    def __init__(self, alphas_cumprod: torch.Tensor, scheduler: Any) -> None:
        super().__init__(alphas_cumprod)
        self.scheduler = scheduler
        self.scheduler_times: dict[float, float] = {}  # off-table sigma -> the timestep the scheduler tells the network

    def level(self, sigma: float) -> NoiseLevel:
        """As VPDiscrete, except that at an off-table sigma of the scheduler's own trajectory (Karras) the
        network is told the scheduler's timestep (DPM-Solver rounds it), not the interpolated one."""
        level = super().level(sigma)
        t = self.scheduler_times.get(sigma)
        if t is None or level.integer_time:
            return level
        return replace(level, model_t=t, integer_time=float(t).is_integer(), _times={})

    def initial_scale(self, level: NoiseLevel) -> float:
        """The pipeline's initial state in model coordinates: randn * init_noise_sigma, which the VE-state
        schedulers take as x / alpha (so / sqrt(1 + sigma^2)); with linspace or trailing spacing their
        init_noise_sigma is sigma_max, not sqrt(sigma_max^2 + 1), so the state starts below scale 1."""
        if type(self.scheduler).__name__ not in VE_STATE or math.isinf(level.sigma):
            return 1.0
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(2, device="cpu")  # init_noise_sigma depends on sigma_max and the spacing alone
        return float(sched.init_noise_sigma) / math.sqrt(1.0 + float(sched.sigmas.max()) ** 2)

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule != "default":
            return super().sigmas(steps, schedule)
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"--steps {steps} is out of range for a model of {self.num_timesteps} timesteps; "
                             f"use 1..{self.num_timesteps}")
        times, sigmas = scheduler_timesteps(self.scheduler, steps)
        final = final_sigma(self.scheduler, steps, sigmas)
        check_steps(self.scheduler, times, final)
        trajectory = [self.trajectory_sigma(t, None if sigmas is None else sigmas[i]) for i, t in enumerate(times)]
        if final >= trajectory[-1]:  # a last step onto its own level (DDIM from t = 0 to abar_0): the identity
            return trajectory if len(trajectory) > 1 else [trajectory[0], 0.0]
        if final > 0 and math.isclose(final, self.timestep_sigma(0), rel_tol=1e-6):
            final = self.timestep_sigma(0)  # the table's own sigma: its level is abar_0 to the last bit
        return [*trajectory, final]

    def trajectory_sigma(self, t: float, sigma: float | None) -> float:
        """The table's own sigma at a whole timestep the scheduler's sigma agrees with (DDIM and DDPM keep
        none), else the scheduler's sigma (Karras and exponential ramps between table entries)."""
        whole = t.is_integer() and 0 <= t < self.num_timesteps
        if whole and (sigma is None or math.isclose(self.timestep_sigma(int(t)), sigma, rel_tol=1e-5)):
            return self.timestep_sigma(int(t))
        if sigma is None:
            raise ValueError(f"{type(self.scheduler).__name__} gives fractional timesteps and no sigmas; pass "
                             f"--schedule leading, trailing or linspace")
        self.scheduler_times[sigma] = t
        return sigma


class PipelineFlow(RectifiedFlow):
    """The scheduler's rectified flow; its `default` trajectory is the scheduler's own sigmas (t values), with
    `mu` (the pipeline's image-size shift) where the config shifts dynamically. On that trajectory the network
    is told the scheduler's timestep (DPM-Solver's flow sigmas truncate t * N to a whole timestep)."""

    def __init__(self, shift: float, num_train_timesteps: int, scheduler: Any, mu: float | None = None) -> None:
        super().__init__(shift=shift if mu is None else math.exp(mu), num_train_timesteps=num_train_timesteps)
        self.scheduler, self.mu = scheduler, mu
        self.scheduler_times: dict[float, float] = {}  # sigma of the scheduler's trajectory -> its timestep

    def level(self, sigma: float) -> NoiseLevel:
        level = super().level(sigma)
        t = self.scheduler_times.get(sigma)
        return level if t is None or t == level.model_t else replace(level, model_t=t, _times={})

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule not in ("default", "flow"):
            return super().sigmas(steps, schedule)
        if steps < 1:
            raise ValueError(f"--steps {steps} is out of range; use at least 1")
        times, ts = scheduler_timesteps(self.scheduler, steps, **({} if self.mu is None else {"mu": self.mu}))
        sigmas = [self.t_to_sigma(t) for t in ts[:steps]]
        self.scheduler_times.update(zip(sigmas, times))
        return sigmas + [self.t_to_sigma(ts[steps])]


def dynamic_shift(config: Any, image_seq_len: int) -> float:
    """mu of a dynamically shifting flow scheduler for images of `image_seq_len` tokens, as diffusers' SD3 and
    Flux pipelines compute it (a line from base_shift at base_image_seq_len to max_shift at max_image_seq_len)."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return image_seq_len * slope + config.base_shift - slope * config.base_image_seq_len


def pipeline_process(scheduler: Any, sampler: str | None = None,
                     image_seq_len: int | None = None) -> tuple[VPDiscrete | RectifiedFlow, str, str]:
    """(process, prediction type, default sampler) of a pipeline's scheduler; the process's default trajectory
    is that of the scheduler `sampler` swaps in (trajectory_scheduler), every config field checked first."""
    name = type(scheduler).__name__
    default = sampler_for(name)
    sched = trajectory_scheduler(scheduler, sampler)
    check_config(sched)
    config = sched.config
    if is_flow(sched):
        mu = None
        if config.get("use_dynamic_shifting"):
            if image_seq_len is None:
                raise CheckpointError(f"the pipeline's {name} shifts its schedule by image size (use_dynamic_shifting) "
                                      f"and the image size is unknown; set use_dynamic_shifting false")
            mu = dynamic_shift(config, image_seq_len)
        shift = config.get("shift", 1.0) if type(sched).__name__ in FLOW else config.get("flow_shift", 1.0)
        return PipelineFlow(float(shift), int(config.num_train_timesteps), sched, mu), "flow", default
    abar = getattr(sched, "alphas_cumprod", None)
    if abar is None:
        raise CheckpointError(f"the pipeline's {name} keeps no alphas_cumprod table; replace scheduler/ with a "
                              f"DDIM, Euler or DPM-Solver scheduler config")
    process = PipelineVP(abar.to(torch.float64), sched)  # as the scheduler steps: its own float32 table
    return process, str(config.get("prediction_type", "epsilon")), default
