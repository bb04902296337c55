"""The zoo's domain feature network: the emoji evaluation classifier's penultimate layer (256 features)."""

from __future__ import annotations

from torch import Tensor

from bench.evaluators.base import FeatureNet, file_digest
from bench.evaluators.registry import Resources, register_feature_net
from guidance.zoo.encoders import EvalClassifier
from guidance.zoo.load import ZOO_DIR


@register_feature_net
class DomainNet(FeatureNet):
    """uint8 images -> evaluation-classifier features; the classifier resizes to its training size (32 px,
    bilinear with antialiasing). FID here is in these feature units, not comparable with Inception FID."""

    name = "domain"
    units = "emoji evaluation-classifier penultimate features (256-d)"

    def __init__(self, classifier: EvalClassifier, weights: str | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.dim = classifier.config.features
        self.size = classifier.config.image_size
        self.weights = weights or str(ZOO_DIR / "eval_classifier.safetensors")

    @classmethod
    def build(cls, resources: Resources) -> "DomainNet":
        return cls(resources.classifier, getattr(resources, "classifier_weights", None))

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float() / 127.5 - 1)

    def fingerprint(self) -> str:
        return f"domain:{file_digest(self.weights)}"
