"""The embedded zoo as a model source: `--model emoji` (the shipped weights) or a directory of
zoo-format checkpoints (the fallback for a spec without a registered prefix); and its evaluators (the
emoji evaluation CLIP and classifier, labels and reference features), the default ones of every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from guidance.bundle import ModelBundle
from guidance.checkpoints import CheckpointError, check_kind
from guidance.evaluation import DomainEvaluators, register_domain_evaluators
from guidance.sources.registry import ModelSource, register_source
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import EVAL_CLIP_LABEL, ZOO_DIR, ZOO_DOMAIN, load_eval_classifier, load_eval_clip, load_zoo

ZOO_NAME = "emoji"  # --model's name for the embedded zoo


def model_dir(spec: str) -> Path:
    """The directory a zoo spec names: the embedded weights for 'emoji', else the spec itself."""
    return ZOO_DIR if spec == ZOO_NAME else Path(spec)


def load(spec: str, device: torch.device | str = "cpu", sampler: str | None = None) -> ModelBundle:
    """The zoo's bundle; its trajectory follows the run's sampler and schedule, so `sampler` is not needed."""
    return load_zoo(model_dir(spec), device)


def check(spec: str, batch_size: int) -> None:
    """A directory of zoo checkpoints holds a UNet checkpoint (its header read, nothing loaded)."""
    if spec == ZOO_NAME:
        return
    fix = f"pass '{ZOO_NAME}', a directory of zoo checkpoints (unet.safetensors, ...) or diffusers:PATH"
    if not Path(spec).is_dir():
        raise CheckpointError(f"model directory not found; {fix}")
    check_kind(Path(spec) / "unet.safetensors", "unet", fix)


SOURCE = register_source(ModelSource("", load, f"'{ZOO_NAME}' (the embedded zoo) or a directory of zoo checkpoints",
                                     check=check, domain=ZOO_DOMAIN))


def emoji_images(size: int = 32) -> Iterator[Tensor]:
    """The rendered emoji dataset as uint8 [N, 3, H, W] batches (needs the fonts; cached by its builder)."""
    yield from torch.from_numpy(build_emoji_dataset(size, progress=False).images).permute(0, 3, 1, 2).split(256)


EVALUATORS = register_domain_evaluators(DomainEvaluators(
    domain=ZOO_DOMAIN, clip_label=EVAL_CLIP_LABEL,
    clip_weights=ZOO_DIR / "eval_clip.safetensors", classifier_weights=ZOO_DIR / "eval_classifier.safetensors",
    reference_features=ZOO_DIR / "reference_features.safetensors",
    reference_clip_features=ZOO_DIR / "reference_clip_features.safetensors", reference_name="zoo:emoji-32px", image_size=32,
    load_clip=lambda device: load_eval_clip(device=device), load_classifier=lambda device: load_eval_classifier(device=device),
    labels=lambda: json.loads((ZOO_DIR / "labels.json").read_text()), real_images=emoji_images,
    real_images_checksum=lambda size: build_emoji_dataset(size, progress=False).checksum), default=True)
