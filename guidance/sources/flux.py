"""FLUX.1 (`FluxPipeline` folders): the transformer on packed latents, its conditions and its trajectory.

The suite samples unpacked latents [16, H, W] (the VAE's channels); the adapter packs them into 2 x 2
patches ([H W / 4, 64] tokens) for the transformer and unpacks its output, both permutations, so every
sampler and guidance method works on them unchanged. Conditions are FluxPipeline.encode_prompt's: T5
states (padded to `max_sequence_length`), the pooled CLIP vector and, for a guidance-distilled
transformer (FLUX.1-dev: `guidance_embeds`), the embedded guidance strength, at the pipeline's default
unless the `flux-distilled` method sets it. The trajectory is the pipeline's: sigmas linspace(1, 1/n, n)
shifted by mu, computed from the image sequence length by the pipeline's own `calculate_shift`.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from torch import Tensor

from guidance.guiders.flux_distilled import EMBEDDED
from guidance.process import RectifiedFlow
from guidance.protocols import ModelCond
from guidance.sources.families import FamilyNet

FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale: the embedded strength the other methods run at
MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's default T5 length (the text states are padded to it)


def pack(x: Tensor) -> Tensor:
    """[B, C, H, W] latents as FLUX's [B, H W / 4, 4 C] tokens of 2 x 2 patches (FluxPipeline._pack_latents)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(tokens: Tensor, h: int, w: int) -> Tensor:
    """The inverse of `pack` (FluxPipeline._unpack_latents, in latent units)."""
    b, _, channels = tokens.shape
    c = channels // 4
    return tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """FLUX's rotary position ids of the packed image tokens: (0, row, column) per token."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxNet(FamilyNet):
    """FluxTransformer2DModel(packed x, t / 1000, T5 states, pooled CLIP, embedded guidance) on unpacked latents."""

    @property
    def max_sequence_length(self) -> int:
        """The T5 length the states are padded to: the T5 tokenizer's model_max_length, at most the pipeline's
        default 512 (FLUX.1-dev ships 512; the tiny pipelines 32)."""
        return min(MAX_SEQUENCE_LENGTH, int(self.pipe.tokenizer_2.model_max_length))

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        _, _, h, w = x.shape
        text = cond["text"]
        out = self.network(hidden_states=pack(x), timestep=(t / 1000).to(x.dtype), guidance=cond.get(EMBEDDED),
                           pooled_projections=cond["pooled"], encoder_hidden_states=text,
                           txt_ids=torch.zeros(text.shape[1], 3, device=x.device, dtype=text.dtype),
                           img_ids=image_ids(h, w, x.device, x.dtype), return_dict=False)[0]
        return unpack(out, h, w)

    @property
    def distilled(self) -> bool:
        """Whether the transformer embeds the guidance strength (FLUX.1-dev; FLUX.1-schnell does not)."""
        return bool(self.network.config.get("guidance_embeds", False))

    def latent_shape(self) -> tuple[int, int, int]:
        """[VAE channels, side, side]: the side is the transformer config's `sample_size` where it has one (the
        tiny pipelines), else FluxPipeline's default (`default_sample_size`: 1024 x 1024 images)."""
        side = int(self.network.config.get("sample_size") or self.pipe.default_sample_size)
        return int(self.network.config.in_channels) // 4, side, side

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        embeds, pooled, _ = self.pipe.encode_prompt(list(texts), None, device=self.device,
                                                    max_sequence_length=self.max_sequence_length)
        cond = {"text": embeds, "pooled": pooled}
        if self.distilled:
            cond[EMBEDDED] = torch.full((len(texts),), FLUX_GUIDANCE, dtype=torch.float32, device=self.device)
        return cond

    def encode_null(self) -> ModelCond:
        return self.encode([""], None)


class FluxFlow(RectifiedFlow):
    """FluxPipeline's flow: its default trajectory is sigmas linspace(1, 1/n, n) through the scheduler's
    `set_timesteps(sigmas=..., mu=...)`, mu from the image sequence length (`calculate_shift` with the
    scheduler config's base / max sequence lengths and shifts). The process's own schedules use the shift
    that mu amounts to (exp(mu) for the exponential time shift)."""

    def __init__(self, scheduler: Any, image_seq_len: int) -> None:
        config = scheduler.config
        self.mu = calculate_shift(image_seq_len, config.get("base_image_seq_len", 256),
                                  config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                  config.get("max_shift", 1.15))
        dynamic = bool(config.get("use_dynamic_shifting"))
        exponential = config.get("time_shift_type", "exponential") == "exponential"
        shift = math.exp(self.mu) if dynamic and exponential else float(config.get("shift", 1.0))
        super().__init__(shift=shift, num_train_timesteps=int(config.num_train_timesteps))
        self.scheduler, self.dynamic = scheduler, dynamic

    def sigmas(self, steps: int, schedule: str = "default") -> list[float]:
        if schedule not in ("default", "flow"):
            return super().sigmas(steps, schedule)
        if steps < 1:
            raise ValueError(f"--steps {steps} is out of range; use at least 1")
        sched = copy.deepcopy(self.scheduler)
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), device="cpu",
                            **({"mu": self.mu} if self.dynamic else {}))
        return [self.t_to_sigma(float(t)) for t in sched.sigmas[:steps]] + [0.0]


def flux_process(net: FluxNet) -> tuple[FluxFlow, str, str]:
    """(process, prediction type, default sampler) of a FLUX pipeline at its sample size."""
    _, h, w = net.latent_shape()
    return FluxFlow(net.pipe.scheduler, (h // 2) * (w // 2)), "flow", "flow-euler"
