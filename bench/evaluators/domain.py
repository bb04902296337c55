"""The domain feature network: the default evaluators' classifier's penultimate layer (the zoo's emoji
evaluation classifier: 256 features)."""

from __future__ import annotations

from torch import Tensor, nn

from bench.evaluators.base import FeatureNet, file_digest
from bench.evaluators.registry import Resources, register_feature_net
from guidance.evaluation import domain_evaluators


@register_feature_net
class DomainNet(FeatureNet):
    """uint8 images -> evaluation-classifier features; the classifier resizes to its training size (32 px,
    bilinear with antialiasing). FID here is in these feature units, not comparable with Inception FID."""

    name = "domain"
    units = "emoji evaluation-classifier penultimate features (256-d)"

    def __init__(self, classifier: nn.Module, weights: str | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.dim = classifier.config.features
        self.size = classifier.config.image_size
        self.weights = weights or str(domain_evaluators().classifier_weights)

    @classmethod
    def build(cls, resources: Resources) -> "DomainNet":
        return cls(resources.classifier, getattr(resources, "classifier_weights", None))

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float() / 127.5 - 1)

    def fingerprint(self) -> str:
        return f"domain:{file_digest(self.weights)}"
