"""Inpainting with any denoiser and sampler: the training-free replacement method (with RePaint's
resampling) and GLIDE's model-based sampler.

- "replace" (Sohl-Dickstein et al. 2015, Song et al. 2021): after every sampler step the known
  region of the state is replaced by a fresh draw from q(x_t | x_0) at the step's new level. It
  needs no training and works for every model, but the model never sees the known region except
  through the noisy state, so the fill ignores global context and seams show at the edge.
- "repaint" (Lugmayr et al. 2022): the same, and every `jump` steps the state is noised back
  `jump` levels (q(x_{t+j} | x_t)) and denoised again, `resample` times in all: more NFE, better
  harmonised fills.
- "model" (GLIDE): a model trained with the masked image and mask as extra input channels
  (guidance.zoo.conditioned) sees the known region at every step, and the known region is written
  into the x0 estimate at every evaluation (GLIDE's `denoised_fn`).

Every method ends by pasting the known region, so the result keeps it exactly. Samplers run one
step at a time through their registered functions: a multistep solver (DPM++ 2M) then takes its
first-order step, as its own first step does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from guidance.guiders.base import Guidance
from guidance.prediction import Prediction
from guidance.process import NoiseLevel, Process
from guidance.protocols import Conditions, Denoiser
from guidance.rng import SampleNoise
from guidance.samplers.base import Denoise
from guidance.samplers.loop import NonFiniteSampleError, check_pairing, sampler_spec

METHODS = ("model", "replace", "repaint")
REPLACE_STREAM = 0x5EED_1A7  # offset of the seed whose streams draw q(x_t | x_0) for the known region


@dataclass(frozen=True)
class Resampling:
    """RePaint's schedule: every `jump` steps go back `jump` levels, `resample` passes in all (1: none)."""

    jump: int = 10
    resample: int = 1

    def __post_init__(self) -> None:
        if self.jump < 1 or self.resample < 1:
            raise ValueError(f"RePaint needs jump >= 1 and resample >= 1 (got jump {self.jump}, resample "
                             f"{self.resample}); e.g. --repaint 5,2")

    def moves(self, steps: int) -> list[tuple[int, int]]:
        """(from, to) level indices: to = from + 1 denoises one step, to < from noises back."""
        moves, done, i = [], {}, 0
        while i < steps:
            moves.append((i, i + 1))
            i += 1
            if self.resample > 1 and i < steps and i % self.jump == 0 and done.get(i, 0) < self.resample - 1:
                done[i] = done.get(i, 0) + 1
                moves.append((i, i - self.jump))
                i -= self.jump
        return moves

    def denoising_steps(self, steps: int) -> int:
        return sum(1 for a, b in self.moves(steps) if b > a)


class KnownX0(Denoise):
    """GLIDE's inpainting evaluation: the guided (and clipped) prediction with its x0 overwritten by
    the known image where `keep` is 1."""

    def __init__(self, inner: Denoise, known: Tensor, keep: Tensor) -> None:
        super().__init__(inner.model, inner.guidance, inner.cond, inner.trajectory, inner.clip_denoised)
        self.known, self.keep = known, keep

    def _overwrite(self, pred: Prediction) -> Prediction:
        return pred.with_x0(torch.lerp(pred.x0, self.known.to(pred.x0.dtype), self.keep.to(pred.x0.dtype)))

    def guided(self, x: Tensor, level: NoiseLevel) -> tuple[Prediction, Tensor | None]:
        pred, grad = super().guided(x, level)
        return self._overwrite(pred), grad

    def __call__(self, x: Tensor, level: NoiseLevel) -> Prediction:
        return self._overwrite(super().__call__(x, level))


def noised(known: Tensor, level: NoiseLevel, noise: Tensor) -> Tensor:
    """A draw from q(x_t | x_0 = known) at `level`, in model coordinates."""
    if math.isinf(level.sigma):
        return noise * level.s
    return known * level.alpha + noise * level.s


def renoise(x: Tensor, frm: NoiseLevel, to: NoiseLevel, noise: Tensor) -> Tensor:
    """q(x_to | x_frm) for a noisier `to`: x / alpha gains variance sigma_to^2 - sigma_frm^2."""
    if math.isinf(to.sigma):
        raise ValueError("RePaint cannot jump back to sigma = inf (a flow or zero-SNR model's first level); "
                         "lower --repaint's jump or use more steps")
    return (x * frm.recip_alpha + math.sqrt(to.sigma**2 - frm.sigma**2) * noise) * to.alpha


def check_inputs(known: Tensor, hole: Tensor, shape: Sequence[int]) -> None:
    if tuple(known.shape[1:]) != tuple(shape):
        raise ValueError(f"source images are {tuple(known.shape[1:])} but the model samples {tuple(shape)}; "
                         f"resize the sources to the model's size")
    if hole.shape[0] != known.shape[0] or hole.shape[1] != 1 or hole.shape[-2:] != known.shape[-2:]:
        raise ValueError(f"masks {tuple(hole.shape)} do not fit the sources {tuple(known.shape)}: give one "
                         f"[1, H, W] mask per source")


def inpaint(model: Denoiser, process: Process, sigmas: Sequence[float], guidance: Guidance, cond: Conditions,
            known: Tensor, hole: Tensor, sample_indices: Sequence[int], method: str = "replace", seed: int = 0,
            sampler: str = "ddim", eta: float | None = None, resampling: Resampling = Resampling(),
            clip_denoised: bool = True, device: torch.device | str | None = None) -> Tensor:
    """Fill `hole` (1 = regenerate, [B, 1, H, W]) of `known` ([B, C, H, W], the model's x0 space).

    "model" needs a denoiser that reads the known region itself (its `cond.model` carries it); any
    denoiser runs "replace" and "repaint". Noise streams are per sample (guidance.rng), as `sample`'s.
    """
    if method not in METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; valid: {', '.join(METHODS)}")
    spec = sampler_spec(sampler)
    check_pairing(spec, guidance)
    check_inputs(known, hole, known.shape[1:])
    sigmas = [float(s) for s in sigmas]
    if len(sigmas) < 2 or sigmas[-1] != 0 or any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError("sigmas must be a descending list ending with 0 (process.sigmas(steps, schedule) makes one)")
    options = {}
    if "eta" in spec.options:
        options["eta"] = spec.default_eta if eta is None else float(eta)
    device = torch.device(device) if device is not None else cond.device
    known, keep = known.to(device).float(), (1 - hole).to(device).float()
    levels = process.levels(sigmas)
    shape = tuple(known.shape[1:])
    noise = SampleNoise(seed, sample_indices, device)
    known_noise = SampleNoise(seed + REPLACE_STREAM, sample_indices, device)
    x = noise.randn(shape) * process.initial_scale(levels[0])
    cond = cond.to(device)
    guidance.reset()
    denoise = Denoise(model, guidance, cond, sigmas, clip_denoised)
    if method == "model":
        denoise = KnownX0(denoise, known, keep)
    moves = resampling.moves(len(levels) - 1) if method == "repaint" else [(i, i + 1) for i in range(len(levels) - 1)]
    peaks = []
    for frm, to in moves:
        if to < frm:
            x = renoise(x, levels[frm], levels[to], known_noise.randn(shape))
            continue
        x = spec.fn(denoise, x, [levels[frm], levels[to]], lambda: noise.randn(shape), None, **options)
        if method != "model" and levels[to].sigma > 0:
            x = torch.lerp(x, noised(known, levels[to], known_noise.randn(shape)), keep)
        peaks.append(x.abs().amax())
    if not bool(torch.isfinite(torch.stack(peaks)).all()):
        raise NonFiniteSampleError(f"NaN/Inf while inpainting with guidance {guidance.name!r} at scale "
                                   f"{guidance.scale}; lower the scale or check the model")
    return torch.lerp(x, known, keep)


def nfe(method: str, steps_sigmas: Sequence[float], sampler: str, resampling: Resampling = Resampling()) -> int:
    """Model evaluations per trajectory: the sampler's, times RePaint's extra passes."""
    spec = sampler_spec(sampler)
    if method != "repaint":
        return spec.nfe(steps_sigmas)
    sigmas = list(steps_sigmas)
    return sum(spec.nfe([sigmas[a], sigmas[b]]) for a, b in resampling.moves(len(sigmas) - 1) if b > a)
