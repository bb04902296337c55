"""Run a whole trajectory: initial noise from per-sample streams, the chosen sampler, a NaN check.

Sample b uses the random stream of its global index `sample_indices[b]` for its initial noise and
for every step's noise, so a sample is the same whatever the batch size, the batch it lands in or
the process that draws it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from guidance.guiders.base import Guidance, pairing_refusal
from guidance.prediction import Prediction
from guidance.process import NoiseLevel, Process
from guidance.protocols import Conditions, Denoiser
from guidance.rng import SampleNoise
from guidance.samplers.base import SAMPLERS, Denoise, SamplerSpec


class NonFiniteSampleError(FloatingPointError):
    """Sampling produced NaN or Inf; the message names the guidance, scale and step."""


def sampler_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)} (--sampler list describes them)")
    return SAMPLERS[name]


def check_pairing(spec: SamplerSpec, guidance: Guidance | type[Guidance]) -> None:
    """Refuse a guidance (an instance, or its class before any is built) the sampler cannot apply, with the fix."""
    refusal = pairing_refusal(guidance, spec.name, spec.renoise, renoising_samplers())
    if refusal is not None:
        raise ValueError(refusal)


def renoising_samplers() -> tuple[str, ...]:
    """The samplers that can renoise with the unconditional prediction (CFG++ needs one)."""
    return tuple(n for n, s in SAMPLERS.items() if s.renoise)


def one_step(sampler: str, denoise: Denoise, x: Tensor, level: NoiseLevel, next_level: NoiseLevel,
             noise: Tensor | None = None, **options: float) -> tuple[Tensor, Prediction]:
    """One step of a registered sampler from `level` to `next_level`: (x_next, the prediction it used).

    Public so that a step can be compared with another implementation's; `noise` is the step's noise
    (None: zeros, i.e. the mean of a stochastic step). Multistep solvers take their first-order step."""
    seen: list[Prediction] = []
    z = torch.zeros_like(x) if noise is None else noise
    x_next = sampler_spec(sampler).fn(denoise, x, [level, next_level], lambda: z,
                                      lambda _i, _x, pred: seen.append(pred), **options)
    return x_next, seen[0]


def sample(model: Denoiser, process: Process, sigmas: Sequence[float], guidance: Guidance, cond: Conditions,
           shape: Sequence[int], sample_indices: Sequence[int], seed: int = 0, sampler: str = "ddim",
           eta: float | None = None, x_T: Tensor | None = None, clip_denoised: bool = True,
           dtype: torch.dtype = torch.float32, device: torch.device | str | None = None, progress: bool = False,
           callback: Callable[[int, Tensor, Prediction], None] | None = None, noise_mode: str = "device") -> Tensor:
    """Sample a batch from `sigmas[0]` down to `sigmas[-1]` (0, or above 0 where a scheduler ends there, as
    diffusers' DDIM with set_alpha_to_one false does); `shape` is one sample's shape.

    `eta` is the sampler's noise option (DDIM, Euler ancestral; None: its default). `x_T` overrides
    the initial noise; `noise_mode` says where the per-sample generators live (guidance.rng.NOISE_MODES).
    NaN or Inf anywhere raises NonFiniteSampleError naming the first bad step,
    checked once at the end (no host sync inside the loop).
    """
    spec = sampler_spec(sampler)
    check_pairing(spec, guidance)
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) < 2 or sigmas[-1] < 0 or any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError("sigmas must be a descending list ending at or above 0 (process.sigmas(steps, schedule) "
                         "makes one)")
    if len(cond) != len(sample_indices):
        raise ValueError(f"{len(cond)} conditions for {len(sample_indices)} sample indices")
    options = {}
    if "eta" in spec.options:
        options["eta"] = spec.default_eta if eta is None else float(eta)
    elif eta:
        raise ValueError(f"sampler {sampler!r} takes no --eta; samplers with one: "
                         f"{', '.join(n for n, s in SAMPLERS.items() if 'eta' in s.options)}")
    device = torch.device(device) if device is not None else cond.device
    levels = process.levels(sigmas)
    noise = SampleNoise(seed, sample_indices, device, noise_mode)
    if x_T is None:
        x = noise.randn(shape, dtype)
        scale = process.initial_scale(levels[0])
        if scale != 1.0:
            x = x * scale
    else:
        x = x_T.to(device=device, dtype=dtype)
    cond = cond.to(device)
    guidance.reset()
    peaks: list[Tensor] = []  # max |x| per step (NaN propagates), read once at the end: no host sync per step
    bar = None
    if progress:
        bar = tqdm(total=len(sigmas) - 1, desc=f"{sampler} {guidance.name}", leave=False)

    def after_step(i: int, x_next: Tensor, pred: Prediction) -> None:
        peaks.append(x_next.abs().amax())
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(i, x_next, pred)

    denoise = Denoise(model, guidance, cond, sigmas, clip_denoised)
    x = spec.fn(denoise, x, levels, lambda: noise.randn(shape, dtype), after_step, **options)
    if bar is not None:
        bar.close()
    bad = (~torch.isfinite(torch.stack(peaks))).nonzero() if peaks else []
    if len(bad):
        step = int(bad[0])
        raise NonFiniteSampleError(
            f"NaN/Inf in samples with guidance {guidance.name!r} at scale {guidance.scale}, first at step {step} of "
            f"{len(sigmas) - 1} (sigma {sigmas[step]:.4g}); lower the scale or check the model")
    return x
