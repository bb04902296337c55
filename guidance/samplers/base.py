"""What every sampler shares: the guided model as samplers call it, and the sampler registry.

A sampler is a plain function over a `Denoise` (the guided model at a noise level), the initial
state, the trajectory's noise levels and a noise source, as k-diffusion's are: it owns its loop and
nothing else. It registers itself where it is defined (`@register_sampler`), with what the harness
needs to know of it: whether it draws noise, whether it can renoise with CFG++'s unconditional
eps, and at which sigmas it evaluates the model (for NFE and cost counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from torch import Tensor

from guidance.guiders.base import Guidance, StepInfo
from guidance.prediction import Prediction
from guidance.process import NoiseLevel
from guidance.protocols import Conditions, Denoiser

NoiseFn = Callable[[], Tensor]  # the next step's per-sample standard normal noise, shaped like x


class StepCallback(Protocol):
    def __call__(self, i: int, x: Tensor, pred: Prediction) -> None: ...


class Denoise:
    """The guided model at one noise level, as samplers call it.

    `__call__` applies a gradient method's g as the score correction eps - s g (valid for every
    sampler) and clips x0 to the data range where the model asks for it; `guided` returns the
    prediction and g apart, for DDPM's mean shift Sigma g.
    """

    def __init__(self, model: Denoiser, guidance: Guidance, cond: Conditions, trajectory: Sequence[float],
                 clip_denoised: bool = True) -> None:
        self.model, self.guidance, self.cond = model, guidance, cond
        self.trajectory = tuple(float(s) for s in trajectory)
        self.clip_denoised = clip_denoised

    def guided(self, x: Tensor, level: NoiseLevel) -> tuple[Prediction, Tensor | None]:
        step = StepInfo(level, level.timesteps(x.shape[0], x.device), self.trajectory)
        pred = self.guidance.predict(self.model, x, step, self.cond)
        if self.guidance.scale_log is not None:
            self.guidance.scale_log.close(pred, x.shape[0])
        if pred.known[pred.primary].dtype != x.dtype:
            pred = pred.to(x.dtype)
        return pred, self.guidance.gradient(x, step, self.cond)

    def __call__(self, x: Tensor, level: NoiseLevel) -> Prediction:
        pred, grad = self.guided(x, level)
        if grad is not None:
            pred = pred.with_score_correction(grad)
        return pred.clipped() if self.clip_denoised else pred


SamplerFn = Callable[..., Tensor]  # fn(denoise, x, levels, noise, callback, **options) -> x


def one_evaluation_per_step(sigmas: Sequence[float]) -> list[float]:
    return [float(s) for s in sigmas[:-1]]


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: SamplerFn
    description: str
    stochastic: bool = False  # draws fresh noise at every step
    renoise: bool = True  # can renoise with CFG++'s unconditional eps
    options: tuple[str, ...] = ()  # keyword options it takes (e.g. "eta")
    default_eta: float = 0.0
    evaluations: Callable[[Sequence[float]], list[float]] = one_evaluation_per_step

    def nfe(self, sigmas: Sequence[float]) -> int:
        """Model evaluations per trajectory (a guided evaluation may run several network passes)."""
        return len(self.evaluations(sigmas))


SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(name: str, description: str, **spec: object) -> Callable[[SamplerFn], SamplerFn]:
    """Function decorator: register a sampler under `name`, where it is defined."""

    def add(fn: SamplerFn) -> SamplerFn:
        if name in SAMPLERS and SAMPLERS[name].fn is not fn:
            raise ValueError(f"sampler {name!r} is registered twice")
        SAMPLERS[name] = SamplerSpec(name, fn, description, **spec)  # type: ignore[arg-type]
        return fn

    return add


def step_ratio(cur: NoiseLevel, nxt: NoiseLevel) -> float:
    """sigma_next / sigma (0 when sigma is inf): exp(-h) in DPM-Solver's log-SNR time."""
    return 0.0 if math.isinf(cur.sigma) else nxt.sigma / cur.sigma
