"""What the samplers and guidance methods need from models, and what a batch of conditions holds.

The one model contract is k-diffusion's, in noise-level space: `denoiser(x, level, cond)` returns the
model's prediction at that noise level (guidance.prediction.Prediction: x0 and eps on demand, in
whatever space the network predicts). Networks of any prediction type and process plug in through
`guidance.denoisers.NetworkDenoiser`; the analytic Gaussian mixture in the tests does too, so
nothing in the samplers or the guidance methods names a class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

from guidance.internals import AttentionProbe, NormalizedAttention, Perturbation, PerturbedPass
from guidance.prediction import Prediction
from guidance.process import NoiseLevel

# What a denoiser conditions on: one tensor (caption tokens, class labels), or several (SDXL's text
# states, pooled text and time ids), each batched along dim 0.
ModelCond = Union[Tensor, Mapping[str, Tensor]]


def cond_cat(parts: list[ModelCond]) -> ModelCond:
    """Concatenate conditions along the batch (CFG's batched conditional and unconditional pass)."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)  # type: ignore[arg-type]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # type: ignore[index]


def cond_apply(cond: ModelCond, fn) -> ModelCond:  # noqa: ANN001
    return fn(cond) if isinstance(cond, Tensor) else {k: fn(v) for k, v in cond.items()}


def cond_where(keep: Sequence[bool], cond: ModelCond, other: ModelCond) -> ModelCond:
    """Per row: `cond` where `keep`, else `other` (a batch where only some samples have a negative
    prompt takes the null condition in the other rows)."""
    def pick(a: Tensor, b: Tensor) -> Tensor:
        mask = torch.tensor(list(keep), dtype=torch.bool, device=a.device).view(-1, *[1] * (a.dim() - 1))
        return torch.where(mask, a, b)

    if isinstance(cond, Tensor):
        return pick(cond, other)  # type: ignore[arg-type]
    return {k: pick(v, other[k]) for k, v in cond.items()}  # type: ignore[index]


def cond_len(cond: ModelCond) -> int:
    return int(cond.shape[0]) if isinstance(cond, Tensor) else int(next(iter(cond.values())).shape[0])


@runtime_checkable
class Denoiser(Protocol):
    """`model(x, level, cond)` -> Prediction at noise level `level`, x in the model's coordinates.

    `null_cond` gives the "dropped caption" condition that classifier-free guidance uses as its
    unconditional branch. A learned-range variance (Nichol & Dhariwal) rides on the prediction.
    """

    def __call__(self, x: Tensor, level: NoiseLevel, cond: ModelCond) -> Prediction: ...

    def null_cond(self, cond: ModelCond) -> ModelCond: ...


@runtime_checkable
class Perturbable(Protocol):
    """A denoiser whose network's attention layers or blocks can be damaged on batch rows `rows` for
    the passes inside `with model.perturbed(spec, rows): ...` (PAG, SEG, SLG; guidance.internals)."""

    def perturbed(self, perturbation: Perturbation | NormalizedAttention | AttentionProbe, rows: slice) -> PerturbedPass: ...


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

    `model`: what the denoiser takes (a tensor or a dict of tensors); `labels`: class indices for
    classifier guidance; `clip_tokens`: the caption tokenised for the guiding CLIP; `negative`: a
    negative-prompt condition that replaces the unconditional branch of CFG when given.
    """

    model: ModelCond
    labels: Tensor | None = None
    clip_tokens: Tensor | None = None
    negative: ModelCond | None = None

    def __len__(self) -> int:
        return cond_len(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.device if isinstance(self.model, Tensor) else next(iter(self.model.values())).device

    def to(self, device: torch.device | str) -> "Conditions":
        return replace(self, **{f.name: cond_apply(getattr(self, f.name), lambda v: v.to(device)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def __getitem__(self, index: slice | Tensor) -> "Conditions":
        return replace(self, **{f.name: cond_apply(getattr(self, f.name), lambda v: v[index]) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def require(self, name: str, guidance: str) -> Tensor:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"guidance {guidance!r} needs conditions.{name}, but the batch has none; "
                             f"{'use a prompt set with labels' if name == 'labels' else 'provide ' + name}")
        return value
