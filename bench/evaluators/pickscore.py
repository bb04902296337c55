"""PickScore (Kirstain et al. 2023, yuvalkirstain/PickScore): a CLIP ViT-H-14 fine-tuned on Pick-a-Pic
preferences, read as a transformers CLIPModel folder with its CLIPProcessor; the score is
logit_scale.exp() x cos(image, prompt), as the authors' inference code computes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor, nn

from bench.evaluators.config import ScoringConfig
from bench.evaluators.preference import (PreferenceMetric, check_folder, load_pretrained, pil_image_processor,
                                         require_transformers)
from bench.evaluators.registry import Column, register_metric
from guidance.checkpoints import CheckpointError

MODEL_FILES = {"config": ("config.json",), "weights": ("model.safetensors", "pytorch_model.bin")}
PROCESSOR_FILES = {"image processor config": ("preprocessor_config.json", "processor_config.json"),
                   "tokenizer": ("tokenizer.json", "vocab.json")}
MODEL_FIX = "pass --pickscore-model LOCAL_FOLDER (yuvalkirstain/PickScore_v1 as transformers saves it)"
PROCESSOR_FIX = ("pass --pickscore-processor LOCAL_FOLDER (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's processor "
                 "files, as the authors load it), or put those files in --pickscore-model's folder")
MAX_TOKENS = 77


class PickScoreNetwork(nn.Module):
    """CLIPModel + its processor: images resized (shortest side to 224, bicubic, PIL), centre-cropped and
    normalised by the processor's own config; prompts padded and truncated to 77 tokens."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any) -> None:
        super().__init__()
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor

    def pixels(self, images: list[Image.Image]) -> Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def forward(self, images: list[Image.Image], texts: list[str]) -> Tensor:
        device = self.model.logit_scale.device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        vision = self.model.vision_model(pixel_values=self.pixels(images).to(device))
        text = self.model.text_model(input_ids=tokens["input_ids"].to(device),
                                     attention_mask=tokens["attention_mask"].to(device))
        zi = nn.functional.normalize(self.model.visual_projection(vision.pooler_output), dim=-1)
        zt = nn.functional.normalize(self.model.text_projection(text.pooler_output), dim=-1)
        return self.model.logit_scale.exp() * (zi * zt).sum(-1)


def processor_folder(config: ScoringConfig) -> Path:
    """--pickscore-processor, or the model folder when it holds the processor's files."""
    folder = config.pickscore_processor or config.pickscore_model
    flag = "--pickscore-processor" if config.pickscore_processor else "--pickscore-model"
    return check_folder(folder, flag, PROCESSOR_FILES, PROCESSOR_FIX)


def load_pickscore(model_dir: Path, processor_dir: Path) -> PickScoreNetwork:
    from transformers import CLIPModel, CLIPProcessor  # noqa: PLC0415 (optional dependency)

    model = load_pretrained(CLIPModel, model_dir, "--pickscore-model", MODEL_FIX)
    try:
        tokenizer = CLIPProcessor.from_pretrained(processor_dir, local_files_only=True).tokenizer
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"--pickscore-processor {processor_dir}: not a loadable CLIPProcessor folder "
                              f"({str(err).splitlines()[0][:140]}); {PROCESSOR_FIX}") from None
    return PickScoreNetwork(model.eval(), tokenizer, pil_image_processor(processor_dir, "--pickscore-processor",
                                                                        PROCESSOR_FIX))


@register_metric
class PickScore(PreferenceMetric):
    """PickScore v1: Pick-a-Pic's preference model."""

    name = "pickscore"
    columns = {"pickscore": Column(True, "PickScore", "logit_scale x cosine similarity (logit_scale = 100 for "
                                                      "PickScore_v1)", (-100.0, 100.0))}
    files = {"pickscore_model": "--pickscore-model", "pickscore_processor": "--pickscore-processor"}
    about = ("PickScore: exp(logit_scale) × cos(image, prompt) under PickScore_v1's CLIP-H (logit_scale = 100; higher "
             "is preferred by people; about 18-23 on generated images).")

    @classmethod
    def check_files(cls, config: ScoringConfig) -> None:
        require_transformers("--metrics pickscore")
        check_folder(config.pickscore_model, "--pickscore-model", MODEL_FILES, MODEL_FIX)
        processor_folder(config)

    @classmethod
    def load_network(cls, config: ScoringConfig) -> nn.Module:
        return load_pickscore(check_folder(config.pickscore_model, "--pickscore-model", MODEL_FILES, MODEL_FIX),
                              processor_folder(config))
