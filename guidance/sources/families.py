"""One adapter per pipeline family: the network as `net(x, t, cond)`, and how prompts become its condition.

Prompts go through the pipeline's own `encode_prompt` (so tokenisation, clip skip, padding and
pooling are diffusers'), once per batch; the unconditional condition (the empty prompt, SDXL's zeros
where `force_zeros_for_empty_prompt`, DiT's null class) is encoded once per device and dtype and
expanded to each batch. CFG's conditional and unconditional passes then run as one batched forward
(guidance.guiders.cfg concatenates them).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from guidance.protocols import ModelCond, cond_apply, cond_len


class FamilyNet(nn.Module):
    """A pipeline's denoising network as the suite calls networks, plus its condition encoding."""

    def __init__(self, pipe: Any, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.pipe = pipe  # not a submodule: its text encoders are not the denoiser's weights
        self._null: dict[tuple[str, torch.dtype], ModelCond] = {}

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def latent_shape(self) -> tuple[int, int, int]:
        """The latents the suite samples: [channels, side, side] from the network's config."""
        config = self.network.config
        return int(config.in_channels), int(config.sample_size), int(config.sample_size)

    @property
    def learned_variance(self) -> bool:
        """Whether the network also outputs variance channels (DiT), read from its config."""
        config = self.network.config
        out = config.out_channels if config.get("out_channels") is not None else config.in_channels
        return int(out) == 2 * int(config.in_channels)

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        raise NotImplementedError

    def encode_null(self) -> ModelCond:
        raise NotImplementedError

    def encode_negative(self, texts: Sequence[str]) -> ModelCond:
        """Negative prompts: the captions' encoding unless the pipeline encodes negatives otherwise (Sana)."""
        return self.encode(texts, None)

    def null_cond(self, cond: ModelCond) -> ModelCond:
        """The unconditional condition for a batch like `cond` (encoded once, expanded per batch)."""
        sample = cond if isinstance(cond, Tensor) else next(iter(cond.values()))
        key = (str(sample.device), sample.dtype)
        if key not in self._null:
            with torch.no_grad():
                self._null[key] = cond_apply(self.encode_null(), lambda v: v.to(sample.device))
        batch = cond_len(cond)
        return cond_apply(self._null[key], lambda v: v[:1].expand(batch, *v.shape[1:]))


class UNetNet(FamilyNet):
    """Stable Diffusion 1.x / 2.x: a UNet2DConditionModel on CLIP text states."""

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.network(x, t, encoder_hidden_states=cond, return_dict=False)[0]

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        embeds, _ = self.pipe.encode_prompt(list(texts), self.device, 1, False)
        return embeds

    def encode_null(self) -> ModelCond:
        return self.encode([""], None)


class SDXLNet(FamilyNet):
    """SDXL: two CLIP text encoders, the pooled projection and the size/crop time ids."""

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
        return self.network(x, t, encoder_hidden_states=cond["text"], added_cond_kwargs=added, return_dict=False)[0]

    def time_ids(self, batch: int, dtype: torch.dtype) -> Tensor:
        size = (self.network.config.sample_size * self.pipe.vae_scale_factor,) * 2
        proj = self.pipe.text_encoder_2.config.projection_dim
        ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=dtype, text_encoder_projection_dim=proj)
        return ids.to(self.device).expand(batch, -1)

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(list(texts), device=self.device, do_classifier_free_guidance=False)
        return {"text": embeds, "pooled": pooled, "time_ids": self.time_ids(len(texts), embeds.dtype)}

    def encode_null(self) -> ModelCond:
        _, embeds, _, pooled = self.pipe.encode_prompt([""], device=self.device, do_classifier_free_guidance=True)
        return {"text": embeds, "pooled": pooled, "time_ids": self.time_ids(1, embeds.dtype)}


class SD3Net(FamilyNet):
    """SD3: an MMDiT on CLIP-L, CLIP-G (and T5, zeros where text_encoder_3 is absent) states and pooled CLIP."""

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return self.network(hidden_states=x, timestep=t, encoder_hidden_states=cond["text"],
                            pooled_projections=cond["pooled"], return_dict=False)[0]

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        embeds, _, pooled, _ = self.pipe.encode_prompt(list(texts), None, None, device=self.device,
                                                       do_classifier_free_guidance=False)
        return {"text": embeds, "pooled": pooled}

    def encode_null(self) -> ModelCond:
        _, embeds, _, pooled = self.pipe.encode_prompt([""], None, None, device=self.device,
                                                       do_classifier_free_guidance=True)
        return {"text": embeds, "pooled": pooled}


class DiTNet(FamilyNet):
    """Class-conditional DiT: labels from the prompt set's label column, an integer caption, or the
    pipeline's id2label; the null class is the last embedding (1000 for ImageNet DiTs)."""

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.network(x, timestep=t, class_labels=cond, return_dict=False)[0]

    @property
    def num_classes(self) -> int:
        return int(self.network.config.num_embeds_ada_norm)

    def label_of(self, text: str) -> int:
        text = text.strip()
        if text.lstrip("-").isdigit():
            label = int(text)
        elif text in self.pipe.labels:
            label = int(self.pipe.labels[text])
        else:
            known = ", ".join(list(self.pipe.labels)[:3])
            raise ValueError(f"prompt {text!r} is neither a class id nor a label of the DiT pipeline's id2label "
                             f"(e.g. {known}); use a prompt set with a label column or class names from id2label")
        if not 0 <= label < self.num_classes:
            raise ValueError(f"class {label} (prompt {text!r}) is out of range 0..{self.num_classes - 1} of the DiT "
                             f"pipeline; fix the prompt set's labels")
        return label

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        if labels is None:
            labels = torch.tensor([self.label_of(t) for t in texts])
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise ValueError(f"label {int(bad[0])} is out of range 0..{self.num_classes - 1} of the DiT pipeline; "
                             f"fix the prompt set's label column")
        return labels.to(self.device, torch.long)

    def encode_null(self) -> ModelCond:
        return torch.full((1,), self.num_classes, dtype=torch.long, device=self.device)


NETS = {"sd": UNetNet, "sdxl": SDXLNet, "sd3": SD3Net, "dit": DiTNet}
