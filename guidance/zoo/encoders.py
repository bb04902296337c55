"""The zoo's guiding and evaluation networks built on the timestep-conditioned EncoderTower.

- NoiseAwareClassifier: p(identity | x_t, t), drives classifier guidance.
- NoisedCLIPModel: GLIDE's noised CLIP, image tower sees (x_t, t); drives CLIP guidance.
- EvalClassifier: clean-image identity classifier whose penultimate features serve FID on emoji.
The evaluation CLIP is an open_clip model (a different architecture and seed from the guiding CLIP).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guidance.zoo.nn import EncoderTower, TextTransformer
from guidance.zoo.text import CONTEXT_LENGTH, split_tokens


@dataclass
class EncoderConfig:
    image_size: int = 32
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    blocks: int = 2
    features: int = 256
    num_classes: int = 1870
    num_subgroups: int = 99
    # text tower (noised CLIP only)
    vocab_size: int = 2048
    context_length: int = CONTEXT_LENGTH
    text_width: int = 192
    text_layers: int = 3
    text_heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        data = dict(data)
        data["channel_mult"] = tuple(data.get("channel_mult", cls.channel_mult))
        return cls(**data)


def _tower(c: EncoderConfig) -> EncoderTower:
    return EncoderTower(3, c.channels, c.channel_mult, c.blocks, c.features)


class _TwoHeadClassifier(nn.Module):
    """A timestep-conditioned trunk with identity and subgroup heads (the subgroup head helps training)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = _tower(config)
        self.identity = nn.Linear(config.features, config.num_classes)
        self.subgroup = nn.Linear(config.features, config.num_subgroups)


class NoiseAwareClassifier(_TwoHeadClassifier):
    """`classifier(x_t, t)` -> identity logits, for any noise level t."""

    def heads(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        h = F.silu(self.trunk(x, t))
        return self.identity(h), self.subgroup(h)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.heads(x, t)[0]


class NoisedCLIPModel(nn.Module):
    """NoisedCLIP protocol: encode_image(x_t, t), encode_text(packed tokens), logit_scale."""

    # guidance calls encode_image / encode_text, never forward: torch.compile these towers (guidance/accelerate.py)
    compiled_parts: ClassVar[tuple[str, ...]] = ("image", "text")

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.image = _tower(c)
        self.text = TextTransformer(c.vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads)
        self.text_proj = nn.Linear(c.text_width, c.features, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1/0.07), as CLIP starts
        self.register_buffer("vocab", torch.zeros(c.vocab_size - 2, dtype=torch.long))

    def encode_image(self, x: Tensor, t: Tensor) -> Tensor:
        return self.image(x, t)

    def encode_text(self, tokens: Tensor) -> Tensor:
        ids, eot = split_tokens(tokens)
        return self.text_proj(self.text(ids, eot)[1])


class EvalClassifier(_TwoHeadClassifier):
    """Clean-image identity classifier; `features` are FID's feature space on this domain.

    Accepts images in [-1, 1] at any size (resized to the training size), so torchmetrics can probe
    it at 299x299 like Inception.
    """

    def features(self, x: Tensor) -> Tensor:
        size = self.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return F.silu(self.trunk(x, torch.zeros(len(x), device=x.device)))

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.identity(h), self.subgroup(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.heads(x)[0]


def eval_clip_config(embed_dim: int = 256) -> dict:
    """open_clip model config of the evaluation CLIP: a small ViT and text transformer over full BPE."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 192, "patch_size": 4, "head_width": 48},
        "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 4},
    }


# open_clip reads this beside the model config: images in [0, 1] map to [-1, 1], as the zoo trains.
EVAL_CLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
