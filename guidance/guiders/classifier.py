"""Classifier guidance (Dhariwal & Nichol, 2021): the gradient of a noise-aware classifier."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from guidance.guiders.base import GradientGuidance, StepInfo, at_least_fp32, register
from guidance.protocols import Conditions, NoiseAwareClassifier


@register()
class ClassifierGuidance(GradientGuidance):
    """g = s * grad_x log p(y | x_t, t) from a classifier trained on noised images.

    Applied by the sampler as a mean shift Sigma * g (DDPM) or a score correction eps - s * g (others).
    On an exact model, classifier guidance at s - 1 on the conditional model equals CFG at s.
    """

    name = "classifier"
    quick_scales = (1.0, 5.0, 10.0)
    full_scales = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    needs = frozenset({"classifier", "labels"})
    reference = "Dhariwal & Nichol 2021, arXiv:2105.05233 (Algorithms 1 and 2)"

    def __init__(self, classifier: NoiseAwareClassifier, scale: float = 1.0) -> None:
        super().__init__(scale)
        self.classifier = classifier

    def log_prob(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        log_probs = torch.log_softmax(at_least_fp32(self.classifier(x, t)), dim=-1)
        return log_probs[torch.arange(len(labels), device=labels.device), labels]

    def objective(self, step: StepInfo, cond: Conditions) -> Callable[[Tensor], Tensor]:
        labels = cond.require("labels", self.name)
        return lambda x_in: self.log_prob(x_in, step.t, labels)
