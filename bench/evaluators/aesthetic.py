"""The LAION aesthetic predictor v2 (christophschuhmann/improved-aesthetic-predictor): an MLP on the
L2-normalised CLIP ViT-L/14 image embedding, trained on SAC + LAION-Logos + AVA ratings (a 1-10 scale)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from bench.evaluators.config import ScoringConfig
from bench.evaluators.base import load_state_dict_file
from bench.evaluators.preference import (PreferenceMetric, check_folder, check_weights_file, clip_transform,
                                         load_pretrained, load_strict, require_transformers)
from bench.evaluators.registry import Column, register_metric
from guidance.checkpoints import CheckpointError

EMBED_DIM = 768  # CLIP ViT-L/14's projection width
WEIGHTS_FIX = ("pass --aesthetic-weights sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor) or the "
               "same state dict as .safetensors")
CLIP_FILES = {"config": ("config.json",), "weights": ("model.safetensors", "pytorch_model.bin")}
CLIP_FIX = "pass --aesthetic-clip LOCAL_FOLDER (openai/clip-vit-large-patch14 as transformers saves it)"


class AestheticMLP(nn.Module):
    """The authors' MLP: five linear layers with dropout between (no activations), keys layers.0 ... layers.7."""

    def __init__(self, input_size: int = EMBED_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128),
                                    nn.Dropout(0.2), nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16),
                                    nn.Linear(16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def l2_normalised(x: Tensor) -> Tensor:
    """The authors' `normalized`: x / ||x||, a zero vector left as it is."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class AestheticNetwork(nn.Module):
    """CLIP ViT-L/14's image embedding (CLIP's own preprocessing, as the authors' clip.load gives it) -> MLP."""

    def __init__(self, clip: Any, mlp: AestheticMLP) -> None:  # a transformers CLIPModel
        super().__init__()
        self.clip, self.mlp = clip, mlp
        self.preprocess = clip_transform(int(clip.config.vision_config.image_size))

    def forward(self, images: list[Image.Image], texts: list[str] | None = None) -> Tensor:
        device = self.clip.visual_projection.weight.device
        pixels = torch.stack([self.preprocess(im) for im in images]).to(device)
        pooled = self.clip.vision_model(pixel_values=pixels).pooler_output
        embedding = self.clip.visual_projection(pooled)  # CLIP's encode_image
        return self.mlp(l2_normalised(embedding.float())).squeeze(-1)


def load_aesthetic_mlp(state: dict[str, Tensor], path: Any, width: int = EMBED_DIM) -> AestheticMLP:
    mlp = AestheticMLP(width)
    load_strict(mlp, state, "--aesthetic-weights", path, "the aesthetic predictor's MLP")
    return mlp.eval()


@register_metric
class LAIONAesthetic(PreferenceMetric):
    """The prompt-free LAION aesthetic score."""

    name = "aesthetic"
    columns = {"aesthetic": Column(True, "LAION aesthetic", "predicted mean rating, 1-10 scale (not clamped)")}
    files = {"aesthetic_weights": "--aesthetic-weights", "aesthetic_clip": "--aesthetic-clip"}
    about = ("LAION aesthetic: the improved-aesthetic-predictor's MLP on the unit-length CLIP ViT-L/14 image "
             "embedding, a predicted 1-10 rating (prompt-free; higher is more aesthetic; about 5-6.5 on generated images).")

    @classmethod
    def check_files(cls, config: ScoringConfig) -> None:
        require_transformers("--metrics aesthetic")
        check_weights_file(config.aesthetic_weights, "--aesthetic-weights", WEIGHTS_FIX)
        check_folder(config.aesthetic_clip, "--aesthetic-clip", CLIP_FILES, CLIP_FIX)

    @classmethod
    def load_network(cls, config: ScoringConfig) -> nn.Module:
        path = check_weights_file(config.aesthetic_weights, "--aesthetic-weights", WEIGHTS_FIX)
        folder = check_folder(config.aesthetic_clip, "--aesthetic-clip", CLIP_FILES, CLIP_FIX)
        from transformers import CLIPModel  # noqa: PLC0415 (optional dependency)

        clip = load_pretrained(CLIPModel, folder, "--aesthetic-clip", CLIP_FIX)
        if clip.config.projection_dim != EMBED_DIM:
            raise CheckpointError(f"--aesthetic-clip {folder}: a {clip.config.projection_dim}-d CLIP, and the "
                                  f"predictor reads CLIP ViT-L/14's {EMBED_DIM}-d embedding; {CLIP_FIX}")
        mlp = load_aesthetic_mlp(load_state_dict_file(path, "--aesthetic-weights"), path)
        return AestheticNetwork(clip.eval(), mlp)
