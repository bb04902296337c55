"""Label accuracy: whether the zoo's evaluation classifier gets each image's emoji identity, subgroup and
group right (the prompt's label, as sampled)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.registry import Column, Resources, ScoringBatch, register_metric

FRACTION = "fraction of images"


@torch.no_grad()
def label_hits(classifier, subgroup_of: Tensor, group_of_subgroup: Tensor, images: Tensor,  # noqa: ANN001
               labels: Tensor) -> Tensor:
    """int64 [N, 3]: whether the evaluation classifier gets each image's identity, subgroup and group right."""
    identity_logits, subgroup_logits = classifier.heads(images.float())
    labels = labels.to(identity_logits.device)
    sub_true = subgroup_of.to(labels.device)[labels]
    sub_pred = subgroup_logits.argmax(-1)
    groups = group_of_subgroup.to(labels.device)
    return torch.stack([identity_logits.argmax(-1) == labels, sub_pred == sub_true,
                        groups[sub_pred] == groups[sub_true]], 1).long()


@register_metric
class LabelAccuracy(PerImageMetric):
    """Top-1 identity, subgroup and group accuracy of the evaluation classifier on generated images."""

    name = "accuracy"
    columns = {f"acc_{level}": Column(True, f"accuracy: {level}", FRACTION, (0.0, 1.0), percent=True)
               for level in ("identity", "subgroup", "group")}
    needs = frozenset({"labels", "domain:zoo"})
    row_dtype = torch.int64
    about = ("Accuracy: share of images the evaluation classifier assigns the prompt's identity / subgroup / group, "
             "in % (differences in percentage points).")

    def __init__(self, classifier, subgroup_of: Sequence[int] | Tensor, group_of_subgroup: Sequence[int] | Tensor,  # noqa: ANN001
                 device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.classifier = classifier
        self.subgroup_of = torch.as_tensor(subgroup_of)
        self.group_of_subgroup = torch.as_tensor(group_of_subgroup)

    @classmethod
    def build(cls, resources: Resources) -> "LabelAccuracy":
        return cls(resources.classifier, *resources.label_tables, device=resources.device)

    def scores(self, batch: ScoringBatch) -> Tensor:
        if batch.labels is None:
            raise ValueError("accuracy needs each image's label; this prompt set has none")
        return label_hits(self.classifier, self.subgroup_of, self.group_of_subgroup, batch.pixels, batch.labels)

    def cell_value(self, values: Tensor, chunk: int) -> float:
        """Share of hits (a count over n, in float32 as the result tables have always held it)."""
        return float(values.sum() / torch.tensor(len(values)).clamp(min=1))
