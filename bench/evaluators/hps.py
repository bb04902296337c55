"""HPSv2 / HPSv2.1 (Wu et al. 2023, tgxs002/HPSv2): open_clip ViT-H-14 fine-tuned on human preferences;
the score is 100 x cos(image, prompt) of its embeddings, as the authors' benchmark reports it."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from bench.evaluators.config import ScoringConfig
from bench.evaluators.base import load_state_dict_file
from bench.evaluators.preference import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreferenceMetric, check_weights_file,
                                         load_strict)
from bench.evaluators.registry import Column, register_metric

ARCH = "ViT-H-14"
HPS_FIX = ("pass --hps-weights HPS_v2_compressed.pt or HPS_v2.1_compressed.pt (xswu/HPSv2), or the same state "
           "dict as .safetensors")


def resize_max_size(x: Tensor, size: int) -> Tensor:
    """The authors' ResizeMaxSize: the longer side to `size` (bicubic, on the [0, 1] tensor; torchvision's
    antialiasing default), then zero padding to a centred square."""
    height, width = x.shape[-2:]
    scale = size / float(max(height, width))
    if scale == 1.0:
        return x
    new = (round(height * scale), round(width * scale))
    x = TF.resize(x, list(new), InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - new[0], size - new[1]
    return TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)


class HPSNetwork(nn.Module):
    """open_clip CLIP with the HPS weights, its tokenizer, and the authors' validation preprocessing
    (light_augmentation: to tensor, ResizeMaxSize, OpenAI CLIP mean and std)."""

    def __init__(self, clip: open_clip.model.CLIP, tokenizer: Any) -> None:
        super().__init__()
        self.clip, self.tokenizer = clip, tokenizer
        self.size = int(clip.visual.image_size[0] if isinstance(clip.visual.image_size, tuple) else clip.visual.image_size)

    def preprocess(self, image: Image.Image) -> Tensor:
        x = resize_max_size(TF.to_tensor(image.convert("RGB")), self.size)
        return TF.normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def forward(self, images: list[Image.Image], texts: list[str]) -> Tensor:
        device = self.clip.logit_scale.device
        pixels = torch.stack([self.preprocess(im) for im in images]).to(device)
        zi = nn.functional.normalize(self.clip.encode_image(pixels), dim=-1)
        zt = nn.functional.normalize(self.clip.encode_text(self.tokenizer(texts).to(device)), dim=-1)
        return 100 * (zi * zt).sum(-1)


def build_hps(state: dict[str, Tensor], config: dict[str, Any] | None = None, flag: str = "--hps-weights",
              path: Any = "") -> HPSNetwork:
    """ViT-H-14 (or a smaller open_clip config of the same kind, for tests) holding an HPS state dict."""
    config = config or open_clip.get_model_config(ARCH)
    clip = open_clip.model.CLIP(**config)
    load_strict(clip, state, flag, path, f"open_clip {ARCH} (HPS)", ignore=("attn_mask",))
    return HPSNetwork(clip.eval(), open_clip.get_tokenizer(ARCH))


@register_metric
class HPSv2(PreferenceMetric):
    """Human Preference Score v2 / v2.1 (the version is the weights file's)."""

    name = "hpsv2"
    columns = {"hpsv2": Column(True, "HPSv2", "100 x cosine similarity of HPS image and prompt embeddings",
                               (-100.0, 100.0))}
    files = {"hps_weights": "--hps-weights"}
    about = ("HPSv2: 100 × cos(image, prompt) under HPS's fine-tuned ViT-H-14 (v2 or v2.1: the weights file "
             "says which; higher is preferred by people; about 20-35 on generated images).")

    @classmethod
    def check_files(cls, config: ScoringConfig) -> None:
        check_weights_file(config.hps_weights, "--hps-weights", HPS_FIX)

    @classmethod
    def load_network(cls, config: ScoringConfig) -> nn.Module:
        path = check_weights_file(config.hps_weights, "--hps-weights", HPS_FIX)
        return build_hps(load_state_dict_file(path, "--hps-weights"), flag="--hps-weights", path=path)
