"""Samplers as plain functions over a denoiser, a process and a guidance method.

`ddpm_step` and `ddim_step` are the single steps (public, so a step can be compared with another
implementation's); `sample` runs a whole trajectory with per-sample random streams. Gradient
guidance is applied as Dhariwal & Nichol do: ancestral steps shift the mean by Sigma * g (Sigma the
step's variance, fixed or learned); DDIM corrects the score, eps - sqrt(1 - abar) * g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor

from guidance.diffusion import GaussianDiffusion
from guidance.guiders.base import Guidance, Prediction, StepInfo
from guidance.protocols import Conditions, Denoiser
from guidance.rng import SampleNoise

SamplerName = Literal["ddpm", "ddim"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")


class NonFiniteSampleError(FloatingPointError):
    """Sampling produced NaN or Inf; the message names the guidance, scale and step."""


@dataclass
class StepOutput:
    x_prev: Tensor
    x0: Tensor  # the (guided) x0 prediction at this step
    eps: Tensor  # the (guided) eps prediction


def step_info(diffusion: GaussianDiffusion, index: int, batch: int, device: torch.device) -> StepInfo:
    t = torch.full((batch,), int(diffusion.timestep_map[index]), dtype=torch.long, device=device)
    return StepInfo(index=index, t=t, sigma=float(diffusion.sigmas[index]), diffusion=diffusion)


def _predict(model: Denoiser, guidance: Guidance, x: Tensor, step: StepInfo, cond: Conditions) -> Prediction:
    pred = guidance.predict(model, x, step, cond)
    var = None if pred.var_values is None else pred.var_values.to(x.dtype)
    return Prediction(pred.eps.to(x.dtype), var)


def ddpm_step(model: Denoiser, diffusion: GaussianDiffusion, guidance: Guidance, x: Tensor, index: int,
              cond: Conditions, noise: Tensor | None, clip_denoised: bool = True) -> StepOutput:
    """One ancestral step x_t -> x_{t-1}; gradient guidance shifts the mean by Sigma * g."""
    step = step_info(diffusion, index, x.shape[0], x.device)
    pred = _predict(model, guidance, x, step, cond)
    out = diffusion.p_mean_variance(x, index, pred.eps, pred.var_values, clip_denoised)
    mean = out["mean"]
    grad = guidance.gradient(x, step, cond)
    if grad is not None:
        mean = mean + out["variance"] * grad
    if index == 0 or noise is None:
        x_prev = mean
    else:
        x_prev = mean + (0.5 * out["log_variance"]).exp() * noise
    return StepOutput(x_prev, out["x0"], pred.eps)


def ddim_step(model: Denoiser, diffusion: GaussianDiffusion, guidance: Guidance, x: Tensor, index: int,
              cond: Conditions, noise: Tensor | None = None, eta: float = 0.0, clip_denoised: bool = True) -> StepOutput:
    """One DDIM step (Song et al., 2021); gradient guidance corrects eps by -sqrt(1 - abar) * g."""
    step = step_info(diffusion, index, x.shape[0], x.device)
    eps = _predict(model, guidance, x, step, cond).eps
    grad = guidance.gradient(x, step, cond)
    # the batch shares the step, so the coefficients are host floats: no device work for them
    abar, abar_prev = float(diffusion.alphas_cumprod[index]), float(diffusion.alphas_cumprod_prev[index])
    if grad is not None:
        eps = eps - math.sqrt(1 - abar) * grad
    x0 = diffusion.x0_from_eps(x, index, eps)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
        eps = diffusion.eps_from_x0(x, index, x0)
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    x_prev = x0 * math.sqrt(abar_prev) + math.sqrt(1 - abar_prev - sigma**2) * eps
    if eta > 0 and index > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, x0, eps)


def sample(model: Denoiser, diffusion: GaussianDiffusion, guidance: Guidance, cond: Conditions,
           shape: Sequence[int], sample_indices: Sequence[int], seed: int = 0, sampler: SamplerName = "ddim",
           eta: float = 0.0, x_T: Tensor | None = None, clip_denoised: bool = True, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None, progress: bool = False,
           callback: Callable[[int, StepOutput], None] | None = None) -> Tensor:
    """Run a full reverse trajectory for a batch; sample b uses the stream of `sample_indices[b]`.

    `shape` is one sample's shape (C, H, W). `x_T` overrides the initial noise. NaN or Inf anywhere
    raises NonFiniteSampleError naming the first bad step, checked once at the end (no host sync
    inside the loop).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    if len(cond) != len(sample_indices):
        raise ValueError(f"{len(cond)} conditions for {len(sample_indices)} sample indices")
    device = torch.device(device) if device is not None else cond.model.device
    noise = SampleNoise(seed, sample_indices, device)
    x = noise.randn(shape, dtype) if x_T is None else x_T.to(device=device, dtype=dtype)
    cond = cond.to(device)
    guidance.reset()
    peaks: list[Tensor] = []  # max |x| per step (NaN propagates), read once at the end: no host sync per step
    steps = range(diffusion.num_timesteps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{sampler} {guidance.name}", leave=False)
    for index in steps:
        needs_noise = index > 0 and (sampler == "ddpm" or eta > 0)
        step_noise = noise.randn(shape, dtype) if needs_noise else None
        if sampler == "ddpm":
            out = ddpm_step(model, diffusion, guidance, x, index, cond, step_noise, clip_denoised)
        else:
            out = ddim_step(model, diffusion, guidance, x, index, cond, step_noise, eta, clip_denoised)
        x = out.x_prev
        peaks.append(x.abs().amax())
        if callback is not None:
            callback(index, out)
    bad = (~torch.isfinite(torch.stack(peaks))).nonzero() if peaks else []
    if len(bad):
        bad_step = diffusion.num_timesteps - 1 - int(bad[0])
        raise NonFiniteSampleError(
            f"NaN/Inf in samples with guidance {guidance.name!r} at scale {guidance.scale}, first at step "
            f"{bad_step} (timestep {int(diffusion.timestep_map[bad_step])}); lower the scale or check the model")
    return x
