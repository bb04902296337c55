"""A pipeline's scheduler as the suite's process, default trajectory and default sampler.

The process comes from the scheduler's own table (VP: its float32 alphas_cumprod, so trained betas,
zero-terminal SNR and every beta schedule carry over; flow: its shift), the prediction type from its
config, and the `default` schedule from the scheduler itself: a copy runs `set_timesteps(n)`, so
spacing (leading, trailing, linspace), steps_offset and Karras sigmas are the pipeline's own. The
other schedules (--schedule respace, karras, ...) stay the suite's.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from guidance.process import NoiseLevel, RectifiedFlow, VPDiscrete
from guidance.zoo.store import CheckpointError

# diffusers scheduler class -> the suite's sampler that takes the same steps
SAMPLER_OF = {"DDIMScheduler": "ddim", "DDPMScheduler": "ddpm", "EulerDiscreteScheduler": "euler",
              "EulerAncestralDiscreteScheduler": "euler-ancestral", "HeunDiscreteScheduler": "heun",
              "DPMSolverMultistepScheduler": "dpmpp-2m", "FlowMatchEulerDiscreteScheduler": "flow-euler"}
FLOW = ("FlowMatchEulerDiscreteScheduler",)


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


def scheduler_timesteps(scheduler: Any, steps: int) -> tuple[list[float], list[float] | None]:
    """The scheduler's timesteps for `steps` and its sigmas where it keeps them (on a copy: the pipeline's is untouched)."""
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps, device="cpu")
    sigmas = getattr(sched, "sigmas", None)
    return [float(t) for t in sched.timesteps], None if sigmas is None else [float(s) for s in sigmas]


class PipelineVP(VPDiscrete):
    """The scheduler's VP table; its `default` trajectory is the scheduler's own timesteps."""

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

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule != "default":
            return super().sigmas(steps, schedule)
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"--steps {steps} is out of range for a model of {self.num_timesteps} timesteps; "
                             f"use 1..{self.num_timesteps}")
        times, sigmas = scheduler_timesteps(self.scheduler, steps)
        return [*(self.trajectory_sigma(t, None if sigmas is None else sigmas[i]) for i, t in enumerate(times)), 0.0]

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
    """The scheduler's rectified flow; its `default` trajectory is the scheduler's own sigmas (t values)."""

    def __init__(self, shift: float, num_train_timesteps: int, scheduler: Any) -> None:
        super().__init__(shift=shift, num_train_timesteps=num_train_timesteps)
        self.scheduler = scheduler

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule not in ("default", "flow"):
            return super().sigmas(steps, schedule)
        if steps < 1:
            raise ValueError(f"--steps {steps} is out of range; use at least 1")
        _, ts = scheduler_timesteps(self.scheduler, steps)
        return [self.t_to_sigma(t) for t in ts[:steps]] + [0.0]


def pipeline_process(scheduler: Any) -> tuple[VPDiscrete | RectifiedFlow, str, str]:
    """(process, prediction type, default sampler) of a pipeline's scheduler."""
    name, config = type(scheduler).__name__, scheduler.config
    sampler = sampler_for(name)
    if name in FLOW:
        if config.get("use_dynamic_shifting"):
            raise CheckpointError(f"the pipeline's {name} shifts its schedule by image size (use_dynamic_shifting), "
                                  f"which the suite has no process for; set use_dynamic_shifting false and a fixed "
                                  f"shift in scheduler/scheduler_config.json")
        return PipelineFlow(float(config.get("shift", 1.0)), int(config.num_train_timesteps), scheduler), "flow", sampler
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise CheckpointError(f"the pipeline's {name} keeps no alphas_cumprod table; replace scheduler/ with a "
                              f"DDIM, Euler or DPM-Solver scheduler config")
    process = PipelineVP(abar.to(torch.float64), scheduler)  # as the scheduler steps: its own float32 table
    return process, str(config.get("prediction_type", "epsilon")), sampler
