"""Diffusion processes in noise-level space: where every model and sampler of the suite meets.

A state at noise level sigma is x = alpha * (x0 + sigma * eps), in the model's own coordinates
(x = alpha x0 + s eps with s = alpha * sigma). sigma = s / alpha is the VE / EDM noise level that
k-diffusion's samplers and the suite's guidance schedules speak; alpha is how the model's process
scales it:

- VP (DDPM tables, `VPDiscrete`): alpha = sqrt(abar), s = sqrt(1 - abar); the network sees the
  training timestep of sigma (interpolated in log sigma between table entries, as k-diffusion);
- VE / EDM (`VE`): alpha = 1, s = sigma; the network sees sigma;
- rectified flow (`RectifiedFlow`): x_t = (1 - t) x0 + t eps, t = sigma / (1 + sigma), alpha = 1 - t,
  s = t; the network sees t times its number of training timesteps (diffusers' SD3 convention).

A sampler runs over a descending list of sigmas (the last one 0), made by `Process.sigmas`: the
model's own discrete timesteps with diffusers' spacings (leading, trailing, linspace) or
guided-diffusion's respacing, or Karras' and the exponential schedule between the process's ends.
Coefficients are host floats (float64), computed once per step: a step launches no device work to
get them, and golden tests hold to float64 rounding.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor

from guidance.diffusion import make_betas, space_timesteps

SCHEDULES: dict[str, str] = {
    "default": "the model's own: its discrete timesteps respaced (VP), its flow shift (flow), Karras (VE)",
    "respace": "guided-diffusion's respacing of the training timesteps (evenly strided, rounded); VP only",
    "leading": "diffusers' leading spacing of the training timesteps (steps_offset 0); VP only",
    "trailing": "diffusers' trailing spacing (starts at the last timestep; use with zero-terminal SNR); VP only",
    "linspace": "diffusers' linspace spacing of the training timesteps (rounded); VP only",
    "karras": "Karras et al. 2022, rho = 7, between the process's smallest and largest sigma",
    "exponential": "evenly spaced in log sigma between the process's smallest and largest sigma",
}


@dataclass(frozen=True)
class NoiseLevel:
    """One noise level in every coordinate a sampler, a guidance method or a network needs.

    `sigma` may be 0 (clean data) or inf (pure noise: alpha = 0, possible under zero-terminal SNR and
    rectified flow at t = 1). `recip_alpha` is kept beside alpha so that VP steps use exactly the
    table values DDPM and DDIM always used (sqrt(1 / abar)), not a reciprocal rounded twice.
    """

    sigma: float
    alpha: float
    s: float
    recip_alpha: float
    model_t: float  # what the network is told (training timestep, sigma, or t * N)
    abar: float = -1.0  # alpha^2 / (alpha^2 + s^2): the VP table value itself for VP levels; -1: derive it
    integer_time: bool = False  # model_t is a training timestep of a table (sent as long), else a float
    vp_scale: float = 1.0  # sqrt(alpha^2 + s^2): model coordinates over VP coordinates (1 for VP models)
    _times: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.abar < 0:
            norm2 = self.alpha**2 + self.s**2
            object.__setattr__(self, "abar", self.alpha**2 / norm2)
            object.__setattr__(self, "vp_scale", math.sqrt(norm2))

    @property
    def log_snr(self) -> float:
        """lambda = log(alpha / s) = -log(sigma): DPM-Solver's time variable (-inf at sigma = inf)."""
        if self.sigma == 0:
            return math.inf
        return -math.log(self.sigma) if math.isfinite(self.sigma) else -math.inf

    def timesteps(self, batch: int, device: torch.device | str) -> Tensor:
        """[B] model times, long where they are whole training timesteps (tables index by them).

        Made once per (batch, device) and shared by the guidance and the network: one fill per step."""
        key = (batch, str(device))
        cached = self._times.get(key)
        if cached is None:
            whole = self.integer_time
            cached = torch.full((batch,), int(self.model_t) if whole else float(self.model_t),
                                dtype=torch.long if whole else torch.float32, device=device)
            self._times[key] = cached
        return cached


class Process(ABC):
    """How one model family relates sigma to its coordinates and time input."""

    name: str = "process"

    @abstractmethod
    def level(self, sigma: float) -> NoiseLevel: ...

    @property
    @abstractmethod
    def sigma_min(self) -> float: ...

    @property
    @abstractmethod
    def sigma_max(self) -> float: ...

    def default_schedule(self) -> str:
        return "karras"

    def discrete_sigmas(self, spacing: str, steps: int) -> list[float]:
        able = "default" if math.isinf(self.sigma_max) else "default, karras or exponential"
        raise ValueError(f"--schedule {spacing} needs a discrete-time (VP) model; a {self.name} model takes {able}")

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        """Descending sigmas of a `steps`-step trajectory, ending with 0 (steps + 1 values)."""
        if steps < 1:
            raise ValueError(f"--steps {steps} is out of range; use at least 1")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if schedule == "default":
            schedule = self.default_schedule()
        if schedule == "karras":
            return karras_sigmas(steps, self.sigma_min, self.sigma_max)
        if schedule == "exponential":
            return exponential_sigmas(steps, self.sigma_min, self.sigma_max)
        return self.discrete_sigmas(schedule, steps)

    def levels(self, sigmas: list[float]) -> list[NoiseLevel]:
        return [self.level(s) for s in sigmas]

    def initial_scale(self, level: NoiseLevel) -> float:
        """Standard deviation of the initial noise in model coordinates (the prior at the first sigma)."""
        return 1.0


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022 (eq. 5), as k-diffusion's get_sigmas_karras, with 0 appended."""
    if steps == 1:
        return [sigma_max, 0.0]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    inner = [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(1, steps - 1)]
    return [sigma_max, *inner, sigma_min, 0.0]  # the ends exactly: a table's own sigmas, not one ulp past them


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> list[float]:
    """Evenly spaced in log sigma (k-diffusion's get_sigmas_exponential), with 0 appended."""
    if steps == 1:
        return [sigma_max, 0.0]
    a, b = math.log(sigma_max), math.log(sigma_min)
    inner = [math.exp(a + i / (steps - 1) * (b - a)) for i in range(1, steps - 1)]
    return [sigma_max, *inner, sigma_min, 0.0]  # the ends exactly: a table's own sigmas, not one ulp past them


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2023 (Algorithm 1), as diffusers' `rescale_zero_terminal_snr`: abar_T becomes 0."""
    sqrt_abar = torch.cumprod(1.0 - betas.to(torch.float64), 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def vp_betas(schedule: str, num_timesteps: int, beta_start: float = 0.0001, beta_end: float = 0.02) -> Tensor:
    """Betas by name: 'linear' and 'cosine' as the zoo (guided-diffusion), and diffusers' 'scaled_linear'
    (SD 1.x/2.x: linear in sqrt(beta)) and 'linear_diffusers' (linear between beta_start and beta_end)."""
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    if schedule == "linear_diffusers":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return make_betas(schedule, num_timesteps)


@dataclass
class VPDiscrete(Process):
    """A discrete variance-preserving process (DDPM tables), as every eps / v UNet was trained on.

    `alphas_cumprod[t]` for training timesteps t = 0..T-1. Zero-terminal SNR (abar_T = 0) is kept as
    sigma = inf at the last timestep: samplers start there in model coordinates (x = eps), as
    diffusers' DDIM does; `from_betas(..., zero_terminal_snr=True)` rescales the betas.
    """

    alphas_cumprod: Tensor
    name: str = "vp"
    _sigmas: Tensor = field(init=False, repr=False)
    _log_sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        abar = self.alphas_cumprod.to(torch.float64)
        if abar.ndim != 1 or not bool(((abar >= 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be a decreasing 1-D tensor with values in [0, 1)")
        if bool((abar[:-1] == 0).any()):
            raise ValueError("only the last timestep may have alphas_cumprod 0 (zero-terminal SNR)")
        self.alphas_cumprod = abar
        self._sigmas = (1.0 / abar - 1).sqrt()  # as GaussianDiffusion's table; inf where abar = 0
        self._log_sigmas = self._sigmas.log()

    @classmethod
    def from_betas(cls, betas: Tensor, zero_terminal_snr: bool = False) -> "VPDiscrete":
        betas = betas.to(torch.float64)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(torch.cumprod(1.0 - betas, 0))

    @classmethod
    def from_schedule(cls, schedule: str = "cosine", num_timesteps: int = 1000, zero_terminal_snr: bool = False,
                      beta_start: float = 0.0001, beta_end: float = 0.02) -> "VPDiscrete":
        return cls.from_betas(vp_betas(schedule, num_timesteps, beta_start, beta_end), zero_terminal_snr)

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def sigma_min(self) -> float:
        return float(self._sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest finite sigma (zero-terminal SNR's inf is not a point a Karras ramp can start at)."""
        finite = self._sigmas[torch.isfinite(self._sigmas)]
        return float(finite[-1])

    def default_schedule(self) -> str:
        return "respace"

    def timestep_sigma(self, t: int) -> float:
        return float(self._sigmas[t])

    def level(self, sigma: float) -> NoiseLevel:
        """The level at sigma: a table entry exactly when sigma is one (DDPM and DDIM then see the
        same numbers as ever), else interpolated in log sigma for the model time (k-diffusion)."""
        if sigma == 0:
            return NoiseLevel(0.0, 1.0, 0.0, 1.0, -1.0, 1.0, True, 1.0)
        t = self.sigma_to_t(sigma)
        if float(t).is_integer() and float(self._sigmas[int(t)]) == sigma:
            abar = float(self.alphas_cumprod[int(t)])
            if abar == 0:
                return NoiseLevel(math.inf, 0.0, 1.0, math.inf, t, 0.0, True, 1.0)
            return NoiseLevel(float(self._sigmas[int(t)]), math.sqrt(abar), math.sqrt(1 - abar),
                              float((1.0 / self.alphas_cumprod[int(t)]).sqrt()), t, abar, True, 1.0)
        alpha = 1 / math.sqrt(1 + sigma**2)
        return NoiseLevel(sigma, alpha, sigma * alpha, math.sqrt(1 + sigma**2), t, alpha**2, False, 1.0)

    def sigma_to_t(self, sigma: float) -> float:
        """The (fractional) training timestep of sigma, interpolated in log sigma (k-diffusion's rule)."""
        if math.isinf(sigma):
            if not math.isinf(float(self._sigmas[-1])):
                raise ValueError("sigma = inf needs a zero-terminal-SNR process")
            return float(self.num_timesteps - 1)
        exact = (self._sigmas == sigma).nonzero()
        if len(exact):
            return float(exact[0, 0])
        log_sigma = math.log(sigma)
        finite = self._log_sigmas[torch.isfinite(self._log_sigmas)]
        if log_sigma <= float(finite[0]):
            return 0.0
        if log_sigma >= float(finite[-1]):
            return float(len(finite) - 1)
        hi = int(torch.searchsorted(finite, torch.tensor(log_sigma, dtype=torch.float64)))
        lo = hi - 1
        w = (float(finite[hi]) - log_sigma) / (float(finite[hi]) - float(finite[lo]))
        return lo + (1 - w)

    def discrete_sigmas(self, spacing: str, steps: int) -> list[float]:
        return [self.timestep_sigma(t) for t in self.timesteps(spacing, steps)] + [0.0]

    def timesteps(self, spacing: str, steps: int) -> list[int]:
        """Training timesteps of a `steps`-step trajectory, descending (diffusers' spacings, or
        guided-diffusion's respacing)."""
        n = self.num_timesteps
        if not 1 <= steps <= n:
            raise ValueError(f"--steps {steps} is out of range for a model of {n} timesteps; use 1..{n}")
        if spacing == "respace":
            kept = space_timesteps(n, str(steps))
        elif spacing == "leading":
            ratio = n // steps
            kept = [i * ratio for i in range(steps)]
        elif spacing == "trailing":
            ratio = n / steps
            kept = sorted({int(round(n - i * ratio)) - 1 for i in range(steps)})
        elif spacing == "linspace":
            kept = [int(v) for v in torch.linspace(0, n - 1, steps, dtype=torch.float64).round().tolist()]
        else:
            raise ValueError(f"unknown spacing {spacing!r}; valid: respace, leading, trailing, linspace")
        return sorted(set(kept), reverse=True)


@dataclass
class VE(Process):
    """Variance exploding / EDM: x = x0 + sigma * eps; the network is told sigma itself."""

    min_sigma: float = 0.002
    max_sigma: float = 80.0
    name: str = "ve"

    @property
    def sigma_min(self) -> float:
        return self.min_sigma

    @property
    def sigma_max(self) -> float:
        return self.max_sigma

    def level(self, sigma: float) -> NoiseLevel:
        return NoiseLevel(float(sigma), 1.0, float(sigma), 1.0, float(sigma))

    def initial_scale(self, level: NoiseLevel) -> float:
        return level.s  # k-diffusion's x_T = sigma_max * randn


@dataclass
class RectifiedFlow(Process):
    """x_t = (1 - t) x0 + t eps (SD3, FLUX); the network is told t * num_train_timesteps.

    The default schedule is diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(n) (SD3's): t evenly
    spaced from 1 to shift(1 / N), each shifted by t' = shift t / (1 + (shift - 1) t) (SD3 uses
    shift = 3), then 0. The smallest sigma is shift(shift(1 / N)).
    """

    shift: float = 1.0
    num_train_timesteps: int = 1000
    name: str = "flow"

    @property
    def sigma_min(self) -> float:
        t = self.shifted(self.shifted(1.0 / self.num_train_timesteps))
        return t / (1 - t)

    @property
    def sigma_max(self) -> float:
        return math.inf

    def shifted(self, t: float) -> float:
        return self.shift * t / (1 + (self.shift - 1) * t)

    def default_schedule(self) -> str:
        return "flow"

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule in ("karras", "exponential"):
            raise ValueError(f"--schedule {schedule} needs a finite largest sigma; a flow model starts at t = 1 "
                             f"(sigma = inf): use --schedule default")
        if schedule not in ("default", "flow"):
            return super().sigmas(steps, schedule)
        if steps < 1:
            raise ValueError(f"--steps {steps} is out of range; use at least 1")
        # as FlowMatchEulerDiscreteScheduler.set_timesteps(n), which SD3's pipeline calls: t evenly spaced
        # from 1 to the training schedule's last (already shifted) t, then shifted
        last = self.shifted(1.0 / self.num_train_timesteps)
        ts = torch.linspace(1.0, last, steps, dtype=torch.float64) if steps > 1 else torch.tensor([1.0])
        return [self.t_to_sigma(self.shifted(float(t))) for t in ts] + [0.0]

    @staticmethod
    def t_to_sigma(t: float) -> float:
        return math.inf if t >= 1 else t / (1 - t)

    def level(self, sigma: float) -> NoiseLevel:
        t = 1.0 if math.isinf(sigma) else sigma / (1 + sigma)
        alpha = 1 - t
        return NoiseLevel(float(sigma), alpha, t, math.inf if alpha == 0 else 1 / alpha, t * self.num_train_timesteps)
