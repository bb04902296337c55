"""The Gaussian diffusion process: schedules, forward noising, posteriors and parameter conversions.

All tables are float64 so that golden tests against analytic cases can hold to 1e-9; they are cast
to the sample's dtype only where they meet a tensor (`extract`). Conventions follow Ho et al. (2020)
and Nichol & Dhariwal (2021) (learned-range variance), as in guided-diffusion and GLIDE.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "linear_betas",
    "cosine_betas",
    "make_betas",
    "GaussianDiffusion",
    "space_timesteps",
    "extract",
]


def linear_betas(num_timesteps: int) -> Tensor:
    """Ho et al.'s linear schedule, scaled so any T matches the T=1000 endpoints (as guided-diffusion)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, max_beta: float = 0.999, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine schedule (diffusers' "squaredcos_cap_v2", GLIDE's "squaredcos_cap_v2")."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def make_betas(schedule: str, num_timesteps: int) -> Tensor:
    schedules = {"linear": linear_betas, "cosine": cosine_betas, "squaredcos_cap_v2": cosine_betas}
    if schedule not in schedules:
        raise ValueError(f"unknown beta schedule {schedule!r}; valid: {sorted(schedules)}")
    return schedules[schedule](num_timesteps)


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """Which original timesteps a respaced sampler keeps (guided-diffusion's rule, sorted ascending).

    "50" keeps 50 evenly strided steps; "10,10,3" splits [0, T) into three equal sections and keeps
    10, 10 and 3 steps in them; "ddim50" keeps exactly every T/50-th step (DDIM's fixed stride).
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            try:
                desired = int(text[len("ddim"):])
            except ValueError:
                raise ValueError(f"bad timestep respacing {section_counts!r}; use e.g. 'ddim50'") from None
            if not 1 <= desired <= num_timesteps:
                raise ValueError(f"cannot keep {desired} DDIM steps of {num_timesteps}; use 1..{num_timesteps}")
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot keep exactly {desired} steps of {num_timesteps} with a fixed stride; "
                             f"use a plain count such as '{desired}'")
        try:
            counts = [int(c) for c in text.split(",")]
        except ValueError:
            raise ValueError(f"bad timestep respacing {section_counts!r}; use e.g. '50', '10,10,3' or 'ddim50'") from None
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or count > size:
            raise ValueError(f"cannot keep {count} steps in a section of {size} (T={num_timesteps}, "
                             f"respacing {section_counts!r}); each count must be in [1, {size}]")
        # guided-diffusion accumulates the fractional stride (its rounding of ties differs from stride * j)
        stride, position = ((size - 1) / (count - 1) if count > 1 else 1.0), 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


_DEVICE_COPIES: dict[tuple[int, torch.device], tuple[weakref.ref, Tensor]] = {}


def on_device(table: Tensor, device: torch.device) -> Tensor:
    """`table` on `device`, copied once per (table, device).

    The tables live on the CPU (float64, and `float(sigma)` must not touch the GPU); copying one to
    the GPU at every step would be a host-to-device copy from pageable memory, which synchronises
    the stream each time and stalls the sampling and training loops.
    """
    if table.device == device:
        return table
    key = (id(table), device)
    hit = _DEVICE_COPIES.get(key)
    if hit is not None and hit[0]() is table:
        return hit[1]
    copy = table.to(device)
    _DEVICE_COPIES[key] = (weakref.ref(table, lambda _, key=key: _DEVICE_COPIES.pop(key, None)), copy)
    return copy


def extract(table: Tensor, index: Tensor | int, like: Tensor) -> Tensor | float:
    """table[index] shaped to broadcast against `like`.

    A sampler steps the whole batch at one process step (an int): then the coefficient is a Python
    float read from the host table, so the step launches no indexing or casting work on the device.
    Per-sample steps (a [B] tensor, as in training) give [B, 1, 1, ...] in like's dtype and device.
    """
    if isinstance(index, int):
        return float(table[index])
    out = on_device(table, like.device)[index.to(like.device)]
    return out.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def expand_like(value: Tensor | float, like: Tensor) -> Tensor:
    """A coefficient from `extract` (host float or [B, 1, ...]) as a tensor of like's shape, without copies."""
    if isinstance(value, float):
        return like.new_full((1,) * like.ndim, value).expand_as(like)
    return value.expand_as(like)


@dataclass
class GaussianDiffusion:
    """A (possibly respaced) discrete diffusion process.

    Steps are indexed 0..N-1 here; `timestep_map[i]` is the original training timestep that the
    network is told, so a respaced process feeds models exactly what they were trained on.
    """

    alphas_cumprod: Tensor  # the primary table: respacing keeps it exactly at the kept steps
    timestep_map: Tensor
    learned_variance: bool = False  # model outputs 2C channels: eps and v in [-1, 1]

    def __post_init__(self) -> None:
        abar = self.alphas_cumprod.to(torch.float64)
        if abar.ndim != 1 or not bool(((abar > 0) & (abar < 1)).all()) or not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be a decreasing 1-D tensor with values in (0, 1)")
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.betas = 1.0 - abar / self.alphas_cumprod_prev
        self.log_betas = torch.log(self.betas)
        alphas = 1.0 - self.betas
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1).sqrt()
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at the first step; clip the log as guided-diffusion does.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self.sigmas = self.sqrt_recipm1_alphas_cumprod  # sigma of the equivalent VE process (k-diffusion)

    # construction ------------------------------------------------------------------------------
    @classmethod
    def from_schedule(cls, schedule: str = "cosine", num_timesteps: int = 1000, learned_variance: bool = False,
                      respacing: str | Sequence[int] | None = None) -> "GaussianDiffusion":
        base = cls.from_betas(make_betas(schedule, num_timesteps), learned_variance)
        return base.respace(respacing) if respacing else base

    @classmethod
    def from_betas(cls, betas: Tensor, learned_variance: bool = False) -> "GaussianDiffusion":
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with values in (0, 1)")
        return cls(torch.cumprod(1.0 - betas, 0), torch.arange(len(betas)), learned_variance)

    def respace(self, section_counts: str | Sequence[int]) -> "GaussianDiffusion":
        """A shorter process with alphabar exactly that of the kept steps (betas follow from it)."""
        kept = space_timesteps(self.num_timesteps, section_counts)
        return GaussianDiffusion(self.alphas_cumprod[kept], self.timestep_map[kept], self.learned_variance)

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def model_timesteps(self, index: Tensor) -> Tensor:
        """The original timesteps that the network sees for process steps `index`."""
        return on_device(self.timestep_map, index.device)[index]

    # forward process ----------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, index: Tensor | int, noise: Tensor) -> Tensor:
        return extract(self.sqrt_alphas_cumprod, index, x0) * x0 + extract(self.sqrt_one_minus_alphas_cumprod, index, x0) * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, index: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = extract(self.posterior_mean_coef1, index, x_t) * x0 + extract(self.posterior_mean_coef2, index, x_t) * x_t
        return mean, extract(self.posterior_variance, index, x_t), extract(self.posterior_log_variance_clipped, index, x_t)

    # parameter conversions ------------------------------------------------------------------------
    def x0_from_eps(self, x_t: Tensor, index: Tensor | int, eps: Tensor) -> Tensor:
        return extract(self.sqrt_recip_alphas_cumprod, index, x_t) * x_t - extract(self.sqrt_recipm1_alphas_cumprod, index, x_t) * eps

    def eps_from_x0(self, x_t: Tensor, index: Tensor | int, x0: Tensor) -> Tensor:
        return (extract(self.sqrt_recip_alphas_cumprod, index, x_t) * x_t - x0) / extract(self.sqrt_recipm1_alphas_cumprod, index, x_t)

    def v_from_eps(self, x0: Tensor, index: Tensor | int, eps: Tensor) -> Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho, 2022)."""
        return extract(self.sqrt_alphas_cumprod, index, x0) * eps - extract(self.sqrt_one_minus_alphas_cumprod, index, x0) * x0

    def eps_from_v(self, x_t: Tensor, index: Tensor | int, v: Tensor) -> Tensor:
        return extract(self.sqrt_one_minus_alphas_cumprod, index, x_t) * x_t + extract(self.sqrt_alphas_cumprod, index, x_t) * v

    def x0_from_v(self, x_t: Tensor, index: Tensor | int, v: Tensor) -> Tensor:
        return extract(self.sqrt_alphas_cumprod, index, x_t) * x_t - extract(self.sqrt_one_minus_alphas_cumprod, index, x_t) * v

    # reverse process ---------------------------------------------------------------------------
    def model_log_variance(self, index: Tensor | int, like: Tensor, var_values: Tensor | None) -> Tensor:
        """log Sigma of p(x_{t-1} | x_t): fixed beta-tilde, or learned interpolation of log beta and log beta-tilde."""
        min_log = extract(self.posterior_log_variance_clipped, index, like)
        if var_values is None:
            return expand_like(min_log, like)
        max_log = extract(self.log_betas, index, like)
        frac = (var_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, x_t: Tensor, index: Tensor | int, eps: Tensor, var_values: Tensor | None = None,
                        clip_denoised: bool = False) -> dict[str, Tensor]:
        """Mean, variance, log-variance and x0 prediction of the reverse step from an eps prediction."""
        log_var = self.model_log_variance(index, x_t, var_values)
        x0 = self.x0_from_eps(x_t, index, eps)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, posterior_variance, _ = self.q_posterior(x0, x_t, index)
        # fixed variance is beta-tilde itself, 0 at t = 0 (guided-diffusion's FIXED_SMALL): gradient guidance
        # (mu + Sigma g) must not move the last step; only the log, for the noise and the KL, is clipped
        variance = log_var.exp() if var_values is not None else expand_like(posterior_variance, x_t)
        return {"mean": mean, "variance": variance, "log_variance": log_var, "x0": x0}
