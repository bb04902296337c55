"""The model bundle: everything a benchmark needs from one model source, behind one interface.

A bundle gives the denoiser and its process, the shape of one sample (in the denoiser's space:
pixels, or a VAE's latents), how prompts become conditions (encoded once per batch, not per step),
how samples become images, the guiding models it offers, and a fingerprint of the weights that
shape samples (the resume key). The harness, perf, limit, cards and the gate use only this, so a
new model source is one adapter that returns a bundle (the zoo's is guidance.zoo.load.Zoo).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from guidance.accelerate import Acceleration
from guidance.process import Process
from guidance.protocols import Conditions, Denoiser


@runtime_checkable
class ModelBundle(Protocol):
    denoiser: Denoiser
    process: Process
    sample_shape: tuple[int, ...]  # one sample, in the denoiser's space
    clip_denoised: bool  # x0 lives in [-1, 1] (pixels): samplers may clip it
    source: str  # where it was loaded from, for manifests
    domain: str  # what its images show ("emoji" for the zoo): evaluators trained on a domain apply only to it
    text_attention: bool  # its network attends to the prompt's tokens (NAG's hook; not a class-label model)
    embedded_guidance: bool  # its network takes the guidance strength as an input (FLUX.1-dev)

    def conditions(self, texts: Sequence[str], labels: Tensor | None = None,
                   negative: Sequence[str | None] | None = None) -> Conditions:
        """The batch's conditions (model, guiding-model and label inputs) from captions and labels;
        `negative`: per-sample negative prompts (None in a row: that row's null condition)."""
        ...

    def decode(self, x: Tensor) -> Tensor:
        """Samples -> images [B, 3, H, W] in [-1, 1] (identity for pixel models)."""
        ...

    def guiding_models(self) -> dict[str, Any]:
        """Guiding models by role ("classifier", "clip", "weak"), None where the bundle has none."""
        ...

    def guiding_classes(self) -> int | None:
        """How many classes the guiding classifier knows (None: no classifier, or not known)."""
        ...

    def accelerate(self, acceleration: Acceleration, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Apply the run's speed-ups to every network that samples or guides."""
        ...

    def fingerprint(self) -> str:
        """Hash of the weights that shape samples (a rerun with other weights must not reuse samples)."""
        ...

    def checksums(self) -> dict[str, str]:
        """Per-file checksums of everything loaded, for the manifest."""
        ...
