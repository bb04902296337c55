"""The zoo's networks (guidance.zoo) at GLIDE-base size, with random weights, for `bench.tools.limit`:
the speed of guided sampling at GLIDE's FLOPs per forward, not samples, is what they are for."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidance.protocols import Conditions
from guidance.zoo.encoders import EncoderConfig, NoiseAwareClassifier, NoisedCLIPModel
from guidance.zoo.unet import TextUNet, UNetConfig


@dataclass(frozen=True)
class SizeConfig:
    unet: UNetConfig
    guide: EncoderConfig  # classifier and noised-CLIP image towers (ADM's classifier is about half a UNet)


CONFIGS = {
    "glide-base": SizeConfig(
        UNetConfig(image_size=64, channels=192, channel_mult=(1, 2, 3, 4), blocks=3, attention_resolutions=(32, 16, 8),
                   head_channels=64, dropout=0.0, vocab_size=50257, context_length=128, text_width=512,
                   text_layers=16, text_heads=8),
        EncoderConfig(image_size=64, channels=128, channel_mult=(1, 2, 3, 4), blocks=3, features=512, num_classes=1000,
                      vocab_size=50257, context_length=77, text_width=512, text_layers=12, text_heads=8)),
    "zoo": SizeConfig(UNetConfig(dropout=0.0), EncoderConfig()),
    "tiny": SizeConfig(UNetConfig(image_size=16, channels=16, channel_mult=(1, 2), blocks=1, attention_resolutions=(8,),
                                  dropout=0.0, vocab_size=64, context_length=8, text_width=32, text_layers=1),
                       EncoderConfig(image_size=16, channels=8, channel_mult=(1, 2), blocks=1, features=32,
                                     num_classes=10, vocab_size=64, context_length=8, text_width=32, text_layers=1)),
}


def build_models(size: SizeConfig, device: torch.device) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {"unet": TextUNet(size.unet), "classifier": NoiseAwareClassifier(size.guide),
              "clip": NoisedCLIPModel(size.guide)}
    return {name: m.to(device).eval().requires_grad_(False) for name, m in models.items()}


def random_tokens(batch: int, context: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Packed tokens [B, L+1] (ids then EOT position) with every position used: the worst case."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (batch, context), generator=g)
    return torch.cat([ids, torch.full((batch, 1), context - 1)], 1).to(device)


def conditions(size: SizeConfig, batch: int, device: torch.device) -> Conditions:
    return Conditions(model=random_tokens(batch, size.unet.context_length, size.unet.vocab_size, device),
                      labels=torch.arange(batch, device=device) % size.guide.num_classes,
                      clip_tokens=random_tokens(batch, size.guide.context_length, size.guide.vocab_size, device))
