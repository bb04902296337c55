"""Evaluation models of an image domain, registered by the model source that ships them.

A model source may ship, beside what samples, the networks that score its images: a CLIP scorer, a
classifier whose penultimate features are FID's space on that domain and whose heads give accuracy, the
label tables those heads read, and the committed features of the domain's real images. The harness asks
this registry for them (`domain_evaluators()`), never the source's own modules; the default is the one
registered with `default=True` (the embedded zoo's, whose evaluators are what a fresh clone scores with).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch
from torch import Tensor, nn

from guidance.checkpoints import CheckpointError


class EvalCLIPScorer(nn.Module):
    """Wraps an open_clip model for scoring: images in [-1, 1], captions as strings."""

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: dict, name: str) -> None:
        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.register_buffer("mean", torch.tensor(preprocess.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1))
        self.image_size = int(preprocess.get("size", 32) if not isinstance(preprocess.get("size"), (list, tuple))
                              else preprocess["size"][0])

    def encode_images(self, images: Tensor) -> Tensor:
        x = (images.float() + 1) / 2
        if x.shape[-1] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                                align_corners=False, antialias=True)
        return self.model.encode_image((x - self.mean) / self.std, normalize=True)

    def encode_texts(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts).to(self.mean.device)
        return self.model.encode_text(tokens, normalize=True)


def load_open_clip_scorer(arch: str, pretrained: str | None, device: torch.device | str = "cpu") -> EvalCLIPScorer:
    """Any open_clip architecture with a local pretrained file (--clip-model / --clip-pretrained)."""
    if pretrained is None or not Path(pretrained).is_file():
        raise CheckpointError(f"open_clip model {arch!r} needs a local pretrained file (--clip-pretrained PATH); "
                              f"got {pretrained!r}; weights cannot be downloaded here")
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    tokenizer = open_clip.get_tokenizer(arch)
    preprocess = {"mean": model.visual.image_mean, "std": model.visual.image_std, "size": model.visual.image_size}
    return EvalCLIPScorer(model.eval(), tokenizer, preprocess, f"open_clip:{arch}").to(device)


@dataclass(frozen=True)
class DomainEvaluators:
    """What scores images of one domain. Loaders take the device; paths key caches and manifests."""

    domain: str  # the bundle's `domain` these evaluators know
    clip_label: str  # how manifests and reports name its CLIP scorer
    clip_weights: Path
    classifier_weights: Path
    reference_features: Path  # the classifier's features of the domain's real images (committed)
    reference_clip_features: Path  # the same images embedded by its CLIP (CMMD)
    reference_name: str  # how manifests name that reference
    image_size: int  # the size of those real images
    load_clip: Callable[[torch.device | str], EvalCLIPScorer]
    load_classifier: Callable[[torch.device | str], nn.Module]  # .features(x in [-1, 1]), .heads(x), .config
    labels: Callable[[], dict]  # identity_subgroup, identity_group, *_names: what accuracy checks against
    real_images: Callable[[int], Iterator[Tensor]]  # the domain's real images at a size, uint8 [B, 3, H, W]
    real_images_checksum: Callable[[int], str]


_REGISTRY: dict[str, DomainEvaluators] = {}
_DEFAULT: list[str] = []


def register_domain_evaluators(evaluators: DomainEvaluators, default: bool = False) -> DomainEvaluators:
    """Called once by the module of the source that ships them."""
    _REGISTRY[evaluators.domain] = evaluators
    if default:
        _DEFAULT[:] = [evaluators.domain]
    return evaluators


def domain_evaluators(domain: str | None = None) -> DomainEvaluators:
    """The evaluators of `domain`, or the default ones (None, or a domain nobody registered)."""
    # loading the model sources registers what each ships (the zoo's evaluators with the zoo's source); the
    # sources import this module, so a top-level import would be circular
    import guidance.models  # noqa: F401

    if domain in _REGISTRY:
        return _REGISTRY[domain]
    if not _DEFAULT:
        raise LookupError("no default evaluators are registered (the embedded zoo registers them)")
    return _REGISTRY[_DEFAULT[0]]


def default_domain() -> str:
    """The domain the default evaluators know (a model of another domain gets notes, not its metrics)."""
    return domain_evaluators().domain
