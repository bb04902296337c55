"""The cascade task: `python -m bench run --task cascade --guidance cfg,clip --scales ...`.

GLIDE's second stage: the base model samples 32 px with the chosen guidance, then the diffusion
upsampler (from the model family's kit, bench.tasks.kits; the zoo's is bench/zoo/cascade.py) takes each
sample to 64 px,
unguided by default as in GLIDE (`--upsampler-scale S` > 1: CFG on the upsampler too). The
low-resolution input is noise-augmented to `--upsample-aug` (a timestep of the upsampler's
schedule), as the upsampler was trained (Ho et al. 2021). Bicubic upsampling of the very same 32 px
samples is the other stage (the variant), so the paired statistics compare the two on each prompt.

Scores at 64 px use the kit's evaluators at that resolution (the zoo's: an evaluation classifier trained
at 64 px and every 64 px render): a 32 px network cannot see what an upsampler adds, so FID/KID would
not tell it from bicubic. Consistency: PSNR of the 64 px output, area-downsampled, against the 32 px
sample it came from (bench.evaluators.consistency).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.runner.config import BenchConfig, SCALE_RANGE
from bench.evaluators.consistency import ConsistencyPSNR
from bench.runner.store import Cell, to_hwc_uint8
from bench.tasks.base import Evaluators, SampledBatch, Task
from bench.tasks.kits import kit_for
from bench.tasks.registry import register_task
from guidance.bundle import ModelBundle
from guidance.checkpoints import file_sha256
from guidance.guiders import make_guidance
from guidance.guiders.base import Guidance, GuidanceCost
from guidance.process import VPDiscrete
from guidance.protocols import Conditions, Denoiser
from guidance.samplers import sample
from guidance.upsample import truncated_sigmas, truncated_start

UPSAMPLE_STREAM = 0x0B5  # seed offset of the upsampler's sampling noise
STAGES = ("upsampler", "bicubic")


class UpsamplerModel(Protocol):
    """A diffusion upsampler conditioned on a noise-augmented low-resolution image (GLIDE, Ho et al. 2021)."""

    size: int  # output pixels
    low: int  # input pixels
    levels: int  # augmentation timesteps it was trained on
    denoiser: Denoiser
    process: VPDiscrete

    def condition(self, texts: list[str], low: Tensor, aug: int, indices: list[int], seed: int) -> Conditions:
        """Conditions for a low-resolution batch in [-1, 1], noise-augmented to timestep `aug` with each
        sample's own stream (seed, global indices)."""


class CascadeKit(Protocol):
    """What --task cascade needs from a model family (registered with bench.tasks.kits.register_kit)."""

    def upsampler_file(self, spec: str) -> Path: ...

    def features_file(self, spec: str) -> Path: ...

    def check(self, upsampler: Path, features: Path) -> None:
        """Refuse missing or wrong checkpoints in one line naming the flag, before anything loads."""

    def load_upsampler(self, path: Path, device: torch.device) -> UpsamplerModel: ...

    def evaluators(self, features: Path, device: torch.device) -> Evaluators: ...


def bicubic(images: Tensor, size: int) -> Tensor:
    return F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


@register_task("cascade")
class Cascade(Task):
    axes = ("stage",)
    metrics = (ConsistencyPSNR.name,)
    grid_rows = ("base 32 px (nearest)", "output", "bicubic")

    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__(cfg)
        self.upsampler: UpsamplerModel | None = None

    @property
    def kit(self) -> CascadeKit:
        return kit_for(self.name, self.cfg.model, "an upsampler and evaluators at its resolution")  # type: ignore[return-value]

    def upsampler_path(self) -> Path:
        return Path(self.cfg.upsampler) if self.cfg.upsampler else self.kit.upsampler_file(self.cfg.model)

    def features_path(self) -> Path:
        return Path(self.cfg.cascade_features) if self.cfg.cascade_features else self.kit.features_file(self.cfg.model)

    def validate(self) -> None:
        """The options' numbers and the two checkpoints' headers, before anything loads (NaN compares false
        and would pass a bound)."""
        cfg = self.cfg
        if not math.isfinite(cfg.upsampler_scale) or not 1 <= cfg.upsampler_scale <= SCALE_RANGE[1]:
            raise ValueError(f"--upsampler-scale {cfg.upsampler_scale} is out of range; use a finite scale in "
                             f"[1, {SCALE_RANGE[1]:g}] (1: unguided)")
        if cfg.upsample_aug < 0:
            raise ValueError(f"--upsample-aug {cfg.upsample_aug} is out of range; use a timestep of 0 or more")
        if cfg.upsample_steps < 1:
            raise ValueError(f"--upsample-steps {cfg.upsample_steps} is out of range; use 1 or more")
        if not 0 < cfg.upsample_start <= 999:
            raise ValueError(f"--upsample-start {cfg.upsample_start} is out of range; use a timestep in 1..999 "
                             f"(999: from pure noise)")
        self.kit.check(self.upsampler_path(), self.features_path())

    def variants(self) -> list[tuple[str, ...]]:
        return [(stage,) for stage in STAGES]

    def prepare(self, bundle: ModelBundle, device: torch.device) -> None:
        up = self.kit.load_upsampler(self.upsampler_path(), device)
        if bundle.sample_shape[-1] != up.low:
            raise ValueError(f"the upsampler takes {up.low} px, but {bundle.source} samples "
                             f"{bundle.sample_shape[-1]} px; pass a matching --upsampler")
        if not 0 <= self.cfg.upsample_aug < up.levels:
            raise ValueError(f"--upsample-aug {self.cfg.upsample_aug} is outside the upsampler's training range "
                             f"0..{up.levels - 1}")
        self.upsampler = up

    def task_key(self, cell: Cell) -> dict:
        key = {"task": self.name, "stage": cell.variant[0]}
        if cell.variant[0] == "upsampler":
            key.update(upsampler=file_sha256(self.upsampler_path()), upsampler_scale=self.cfg.upsampler_scale,
                       upsample_aug=self.cfg.upsample_aug, upsample_steps=self.cfg.upsample_steps,
                       upsample_start=self.cfg.upsample_start)
        return key

    def cost(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, negative: bool) -> GuidanceCost:
        """The base model's work, plus the upsampler's passes (two per step under CFG) for its stage."""
        base = super().cost(bundle, cell, guidance, negative)
        if cell.variant[0] != "upsampler":
            return base
        passes = self.cfg.upsample_steps * (2 if self.cfg.upsampler_scale > 1 else 1)
        return GuidanceCost(base.network_passes + passes, base.guide_passes, base.backward_passes)

    def sample_batch(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, cond: Conditions, indices: list[int],
                     texts: list[str], device: torch.device) -> SampledBatch:
        cfg, up = self.cfg, self.upsampler
        sigmas = bundle.process.sigmas(cfg.steps, cfg.schedule)
        x32 = bundle.decode(sample(bundle.denoiser, bundle.process, sigmas, guidance, cond, bundle.sample_shape,
                                   indices, seed=cell.seed, sampler=cfg.sampler, eta=cfg.eta,
                                   clip_denoised=bundle.clip_denoised, device=device))
        low = to_hwc_uint8(x32)
        x32 = from_uint8(low).to(device)  # the 8-bit image a user would upsample
        if cell.variant[0] == "bicubic":
            return SampledBatch(bicubic(x32, up.size), {"low_res": low})
        up_guidance = make_guidance("cfg", cfg.upsampler_scale) if cfg.upsampler_scale > 1 else make_guidance("none", 0.0)
        up_cond = up.condition(texts, x32, cfg.upsample_aug, indices, cell.seed)
        up_sigmas = truncated_sigmas(up.process, cfg.upsample_steps, cfg.upsample_start)
        x_start = truncated_start(up.process, up_sigmas, bicubic(x32, up.size), indices, cell.seed + UPSAMPLE_STREAM)
        x64 = sample(up.denoiser, up.process, up_sigmas, up_guidance, up_cond, (3, up.size, up.size), indices,
                     seed=cell.seed + UPSAMPLE_STREAM, sampler="ddim", x_T=x_start, device=device)
        return SampledBatch(x64, {"low_res": low})

    def evaluators(self, device: torch.device) -> Evaluators:
        return self.kit.evaluators(self.features_path(), device)

    @classmethod
    def grid(cls, images: np.ndarray, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
        low = from_uint8(extras["low_res"])
        size = images.shape[1]
        nearest = to_hwc_uint8(F.interpolate(low, size=(size, size), mode="nearest"))
        return [nearest, images, to_hwc_uint8(bicubic(low, size))]
