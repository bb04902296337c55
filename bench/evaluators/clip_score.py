"""CLIP score: 100 * max(cos(image, its caption), 0) under the scoring CLIP (torchmetrics' convention)."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.registry import Column, Resources, ScoringBatch, register_metric

CLIP_IMAGE_EMBEDDINGS = "clip_image_embeddings"  # batch memo key: the clip feature network reads it too


def clip_scores(image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
    """Per image: 100 * max(cos(image, its caption), 0), from unit-length embeddings."""
    return 100 * (image_embeddings * text_embeddings).sum(-1).clamp(min=0)


def clip_image_embeddings(scorer, batch: ScoringBatch) -> Tensor:  # noqa: ANN001 (an EvalCLIPScorer)
    """The scorer's unit-length image embeddings of a batch, computed once per batch."""
    return batch.memo(CLIP_IMAGE_EMBEDDINGS, lambda: scorer.encode_images(batch.pixels))


@register_metric
class CLIPScore(PerImageMetric):
    """Alignment of each image with its own caption; compare it only between runs scored by the same CLIP."""

    name = "clip_score"
    columns = {"clip_score": Column(True, "CLIP score", "100 x cosine similarity, floored at 0", (0.0, 100.0))}
    needs = frozenset({"clip"})
    about = ("CLIP score: 100 × max(cos, 0) between the scoring CLIP's image and prompt embeddings (0–100, higher "
             "is more aligned); compare it only between runs scored by the same CLIP model.")

    def __init__(self, scorer, device: torch.device | str = "cpu") -> None:  # noqa: ANN001 (an EvalCLIPScorer)
        super().__init__(device)
        self.scorer = scorer

    @classmethod
    def build(cls, resources: Resources) -> "CLIPScore":
        return cls(resources.scorer, resources.device)

    def scores(self, batch: ScoringBatch) -> Tensor:
        zi = clip_image_embeddings(self.scorer, batch)
        return clip_scores(zi, self.scorer.encode_texts([str(t) for t in batch.texts])).unsqueeze(1)
