"""CLIP image embeddings (unit length) of the CLIP scorer: CMMD's feature space."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from bench.evaluators.base import FeatureNet
from bench.evaluators.clip_score import clip_image_embeddings
from bench.evaluators.registry import Resources, ScoringBatch, register_feature_net
from guidance.evaluation import EvalCLIPScorer


@register_feature_net
class CLIPNet(FeatureNet):
    """uint8 images -> the scorer's normalised image embeddings (the scorer resizes to its input size,
    bicubic with antialiasing, and applies its own mean and std)."""

    name = "clip"
    units = "unit-length CLIP image embeddings of the scoring CLIP"

    def __init__(self, scorer: EvalCLIPScorer, weights_id: str) -> None:
        super().__init__()
        self.scorer = scorer
        self.size = scorer.image_size
        self.weights_id = weights_id
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.size, self.size, device=scorer.mean.device)
            self.dim = int(scorer.encode_images(probe).shape[-1])

    @classmethod
    def build(cls, resources: Resources) -> "CLIPNet":
        return cls(resources.scorer, resources.scorer_weights_id())

    def features(self, batch: ScoringBatch) -> Tensor:
        """The batch's CLIP image embeddings, shared with the CLIP score (computed once)."""
        return clip_image_embeddings(self.scorer, batch)

    def forward(self, images: Tensor) -> Tensor:
        return self.scorer.encode_images(images.float().to(self.scorer.mean.device) / 127.5 - 1).float()

    def fingerprint(self) -> str:
        return clip_fingerprint(self.weights_id)


def clip_fingerprint(weights_id: str) -> str:
    """A CLIP network's fingerprint from its weights id, known before the network is built."""
    return "clip:" + hashlib.sha256(weights_id.encode()).hexdigest()[:32]
