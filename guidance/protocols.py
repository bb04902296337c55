"""What the sampler and guidance modules need from models, and what a batch of conditions holds.

The embedded zoo models, the analytic Gaussian-mixture models in the tests and external models all
plug in through these protocols, so nothing in the sampler or the guidance modules names a class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """eps-prediction network: `model(x_t, t, cond)` -> [B, C or 2C, ...].

    With `learned_variance`, the extra C channels are v in [-1, 1] (Nichol & Dhariwal). `cond` is
    whatever tensor the model conditions on (caption tokens, class labels); `null_cond` gives the
    "dropped caption" condition that classifier-free guidance uses as its unconditional branch.
    """

    learned_variance: bool

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor: ...

    def null_cond(self, cond: Tensor) -> Tensor: ...


@runtime_checkable
class NoiseAwareClassifier(Protocol):
    """p(y | x_t, t) as logits [B, num_classes]; trained on noised images at every t."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


@runtime_checkable
class NoisedCLIP(Protocol):
    """A CLIP whose image tower sees noised x_t and t (GLIDE); embeddings need not be normalised."""

    logit_scale: Tensor  # log of the temperature, as in CLIP

    def encode_image(self, x: Tensor, t: Tensor) -> Tensor: ...

    def encode_text(self, tokens: Tensor) -> Tensor: ...


@dataclass
class Conditions:
    """Per-sample conditioning for one batch; each field is batched along dim 0 or None.

    `model`: what the denoiser takes; `labels`: class indices for classifier guidance;
    `clip_tokens`: the caption tokenised for the guiding CLIP; `negative`: a negative-prompt
    condition that replaces the unconditional branch of CFG when given.
    """

    model: Tensor
    labels: Tensor | None = None
    clip_tokens: Tensor | None = None
    negative: Tensor | None = None

    def __len__(self) -> int:
        return int(self.model.shape[0])

    def to(self, device: torch.device | str) -> "Conditions":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def __getitem__(self, index: slice | Tensor) -> "Conditions":
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)
                                if getattr(self, f.name) is not None})

    def require(self, name: str, guidance: str) -> Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"guidance {guidance!r} needs conditions.{name}, but the batch has none; "
                             f"{'use a prompt set with labels' if name == 'labels' else 'provide ' + name}")
        return value
