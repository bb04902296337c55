"""The cascade task: `python -m bench run --task cascade --guidance cfg,clip --scales ...`.

GLIDE's second stage: the base model samples 32 px with the chosen guidance, then the diffusion
upsampler (guidance.zoo.conditioned, trained by guidance.zoo.train_cond) takes each sample to 64 px,
unguided by default as in GLIDE (`--upsampler-scale S` > 1: CFG on the upsampler too). The
low-resolution input is noise-augmented to `--upsample-aug` (a timestep of the upsampler's
schedule), as the upsampler was trained (Ho et al. 2021). Bicubic upsampling of the very same 32 px
samples is the other stage (the variant), so the paired statistics compare the two on each prompt.

Scores at 64 px use the evaluation classifier trained at 64 px (eval_classifier_64) for FID/KID and
accuracy: a 32 px network cannot see what an upsampler adds, so FID/KID would not tell it from
bicubic. The reference is every 64 px render of the dataset. Consistency: PSNR of the 64 px output,
area-downsampled, against the 32 px sample it came from (bench.evaluators.consistency).
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from bench.runner.config import BenchConfig, SCALE_RANGE
from bench.evaluators.base import FeatureNet
from bench.evaluators.consistency import ConsistencyPSNR
from bench.evaluators.reference import ReferenceSource
from bench.runner.store import Cell, to_hwc_uint8
from bench.runner.preflight import check_checkpoint
from bench.tasks.base import Evaluators, SampledBatch, Task
from bench.tasks.registry import register_task
from guidance.bundle import ModelBundle
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import make_guidance
from guidance.guiders.base import Guidance, GuidanceCost
from guidance.protocols import Conditions
from guidance.rng import SampleNoise
from guidance.samplers import sample
from guidance.upsample import truncated_sigmas, truncated_start
from guidance.zoo.conditioned import upsample_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.sources.zoo_source import model_dir
from guidance.zoo.load import ZOO_DIR, load_conditioned, load_model, sampling_process, training_process
from guidance.checkpoints import file_sha256
from guidance.zoo.text import CaptionTokenizer

UPSAMPLER_FILE, FEATURES_FILE = "upsampler.safetensors", "eval_classifier_64.safetensors"
REFERENCE_64 = ZOO_DIR / "reference_features_64.safetensors"  # rendered_features(), committed
AUG_STREAM = 0xA06  # seed offset of the augmentation noise's per-sample streams
UPSAMPLE_STREAM = 0x0B5  # seed offset of the upsampler's sampling noise
STAGES = ("upsampler", "bicubic")


class Upsampler:
    """The upsampler as a denoiser, its process and tokenizer, and how it conditions on a 32 px batch."""

    def __init__(self, path: Path, device: torch.device) -> None:
        net = load_conditioned(path, device, "upsampler",
                               "train it with `python -m guidance.zoo.train_cond --models upsampler` or pass "
                               "--upsampler PATH", lambda n: n.aug_emb is not None,
                               "a conditioned UNet with noise augmentation")
        self.net, self.size = net, net.config.image_size
        self.low = int(net.config.extra.get("low_resolution", self.size // 2))
        self.levels = int(net.config.extra.get("aug_levels", 250))
        self.denoiser = NetworkDenoiser(net, "eps", net.learned_variance)
        self.process = sampling_process(net)
        self.diffusion = training_process(net)
        self.tokenizer = CaptionTokenizer(net.vocab.cpu(), net.config.context_length)

    def condition(self, texts: list[str], low: Tensor, aug: int, indices: list[int], seed: int) -> Conditions:
        t = torch.full((len(low),), aug, dtype=torch.long, device=low.device)
        noise = SampleNoise(seed + AUG_STREAM, indices, low.device).randn(low.shape[1:])
        noised = self.diffusion.q_sample(low.float(), t, noise) if aug > 0 else low.float()
        tokens = self.tokenizer(texts).to(low.device)
        return Conditions(upsample_condition(tokens, noised, self.size, t))


def bicubic(images: Tensor, size: int) -> Tensor:
    return F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


@torch.no_grad()
def rendered_features(classifier: torch.nn.Module, device: torch.device) -> Tensor:
    """The 64 px network's features of every 64 px render (needs the emoji fonts)."""
    dataset = build_emoji_dataset(int(classifier.config.image_size), progress=False)
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return torch.cat([classifier.features(c.to(device)) for c in images.split(256)]).float().cpu()


def committed_features(features_path: Path) -> Tensor | None:
    """REFERENCE_64's features if it was computed with the weights at `features_path`, else None."""
    if not REFERENCE_64.is_file():
        return None
    with safe_open(str(REFERENCE_64), "pt") as f:
        if (f.metadata() or {}).get("weights_sha256") != file_sha256(features_path):
            return None
        return f.get_tensor("features")


def renders_source(size: int, features_path: Path) -> ReferenceSource:
    """Every render of the emoji dataset at `size` px: the cascade's reference. The domain network reads
    the committed features of those renders when they are of its weights (no fonts needed)."""
    def batches(net: FeatureNet) -> Iterator[Tensor]:
        yield from torch.from_numpy(build_emoji_dataset(size, progress=False).images).permute(0, 3, 1, 2).split(256)

    files = {"domain": REFERENCE_64} if committed_features(features_path) is not None else {}
    return ReferenceSource(f"zoo:emoji-{size}px", lambda: build_emoji_dataset(size, progress=False).checksum, batches,
                           files=files)


@register_task("cascade")
class Cascade(Task):
    axes = ("stage",)
    metrics = (ConsistencyPSNR.name,)
    grid_rows = ("base 32 px (nearest)", "output", "bicubic")

    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__(cfg)
        self.upsampler: Upsampler | None = None

    def root(self) -> Path:
        return model_dir(self.cfg.model)

    def upsampler_path(self) -> Path:
        return Path(self.cfg.upsampler) if self.cfg.upsampler else self.root() / UPSAMPLER_FILE

    def features_path(self) -> Path:
        return Path(self.cfg.cascade_features) if self.cfg.cascade_features else self.root() / FEATURES_FILE

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
        check_checkpoint(self.upsampler_path(), "--upsampler", "conditioned_unet", "train it with `python -m "
                         "guidance.zoo.train_cond --models upsampler` or pass --upsampler PATH")
        check_checkpoint(self.features_path(), "--cascade-features", "eval_classifier", "train it with `python -m "
                         "guidance.zoo.train_cond --models eval_classifier_64` or pass --cascade-features PATH")

    def variants(self) -> list[tuple[str, ...]]:
        return [(stage,) for stage in STAGES]

    def prepare(self, bundle: ModelBundle, device: torch.device) -> None:
        up = Upsampler(self.upsampler_path(), device)
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
        path = self.features_path()
        classifier = load_model(path, "eval_classifier", device)
        return Evaluators(classifier, str(path), renders_source(int(classifier.config.image_size), path))

    @classmethod
    def grid(cls, images: np.ndarray, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
        low = from_uint8(extras["low_res"])
        size = images.shape[1]
        nearest = to_hwc_uint8(F.interpolate(low, size=(size, size), mode="nearest"))
        return [nearest, images, to_hwc_uint8(bicubic(low, size))]
