"""Quality and cost metrics, each a torchmetrics `Metric` so states sync across processes and merge.

Set metrics (FID, KID, CMMD, precision/recall) live in bench.evaluators; here are the per-sample scores
(CLIP score, label accuracy), the gathering of per-sample rows across processes, and throughput. CLIP
score uses an open_clip model that never guided the samples unless the user asks for it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from bench.evaluators import FEATURE_NETS, PRIMARY_NET, SET_METRICS, PromptDiversity
from bench.evaluators.base import HIGHER, LOWER
from bench.evaluators.reference import Reference
from guidance.zoo.encoders import EvalClassifier
from guidance.zoo.load import ZOO_DIR, EvalCLIPScorer, load_model

__all__ = ["Reference", "DomainFeatures", "domain_fid", "domain_kid", "CLIPScore", "LabelAccuracy", "Gathered",
           "clip_scores", "label_hits", "Throughput", "covered_seconds", "load_eval_classifier"]


class DomainFeatures(nn.Module):
    """FID feature network on this domain: uint8 images in, evaluation-classifier features out."""

    def __init__(self, classifier: EvalClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.config.features

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float() / 127.5 - 1)


def domain_fid(feature_net: DomainFeatures, reference: Reference) -> FrechetInceptionDistance:
    fid = FrechetInceptionDistance(feature=feature_net, reset_real_features=False)
    fid.real_features_sum = reference.sum.clone()
    fid.real_features_cov_sum = reference.cov_sum.clone()
    fid.real_features_num_samples = torch.tensor(reference.num_samples)
    return fid


def domain_kid(feature_net: DomainFeatures, reference: Reference, subset_size: int, subsets: int = 50) -> KernelInceptionDistance:
    kid = KernelInceptionDistance(feature=feature_net, subsets=subsets, subset_size=subset_size,
                                  reset_real_features=False)
    kid.real_features = [reference.features.clone()]
    return kid


def clip_scores(image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
    """Per image: 100 * max(cos(image, its caption), 0), from unit-length embeddings."""
    return 100 * (image_embeddings * text_embeddings).sum(-1).clamp(min=0)


@torch.no_grad()
def label_hits(classifier: EvalClassifier, subgroup_of: Tensor, group_of_subgroup: Tensor, images: Tensor,
               labels: Tensor) -> Tensor:
    """int64 [N, 3]: whether the evaluation classifier gets each image's identity, subgroup and group right."""
    identity_logits, subgroup_logits = classifier.heads(images.float())
    labels = labels.to(identity_logits.device)
    sub_true = subgroup_of.to(labels.device)[labels]
    sub_pred = subgroup_logits.argmax(-1)
    groups = group_of_subgroup.to(labels.device)
    return torch.stack([identity_logits.argmax(-1) == labels, sub_pred == sub_true,
                        groups[sub_pred] == groups[sub_true]], 1).long()


class Gathered(Metric):
    """Per-sample rows (features, scores) of this process, gathered in rank order across a torchrun group:
    with each process scoring a contiguous run of chunks, `compute` gives every row in file order."""

    full_state_update = False

    def __init__(self, width: int, dtype: torch.dtype = torch.float32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.width, self.row_dtype = width, dtype
        self.add_state("rows", [], dist_reduce_fx="cat")

    def update(self, rows: Tensor) -> None:
        self.rows.append(rows.to(self.row_dtype).reshape(len(rows), self.width))

    def compute(self) -> Tensor:
        return dim_zero_cat(self.rows)

    def gathered(self) -> Tensor:
        """Every process's rows; a process that scored nothing still sends one (empty) tensor."""
        empty = torch.zeros(0, self.width, dtype=self.row_dtype, device=self.device)
        self.rows = [torch.cat([empty, *self.rows])]
        return self.compute().reshape(-1, self.width)  # compute squeezes a single row's one value to a scalar


class CLIPScore(Metric):
    """Mean of 100 * max(cos(image, caption), 0) under an open_clip model (torchmetrics' convention)."""

    full_state_update = False
    columns = {"clip_score": HIGHER}
    units = "100 x cosine similarity, floored at 0"

    def __init__(self, scorer: EvalCLIPScorer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scorer = scorer
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, texts: Sequence[str]) -> None:
        zi = self.scorer.encode_images(images.to(self.score_sum.device))
        self.score_sum += clip_scores(zi, self.scorer.encode_texts(list(texts))).double().sum()
        self.count += len(images)

    def compute(self) -> Tensor:
        return self.score_sum / self.count.clamp(min=1)


class LabelAccuracy(Metric):
    """Top-1 identity, subgroup and group accuracy of the evaluation classifier on generated images."""

    full_state_update = False
    columns = {"acc_identity": HIGHER, "acc_subgroup": HIGHER, "acc_group": HIGHER}
    units = "fraction of images"

    def __init__(self, classifier: EvalClassifier, subgroup_of: Sequence[int], group_of_subgroup: Sequence[int],
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier
        self.subgroup_of = torch.tensor(list(subgroup_of))
        self.group_of_subgroup = torch.tensor(list(group_of_subgroup))
        for name in ("identity", "subgroup", "group"):
            self.add_state(f"correct_{name}", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, labels: Tensor) -> None:
        hits = label_hits(self.classifier, self.subgroup_of, self.group_of_subgroup, images, labels)
        self.correct_identity += hits[:, 0].sum()
        self.correct_subgroup += hits[:, 1].sum()
        self.correct_group += hits[:, 2].sum()
        self.total += len(labels)

    def compute(self) -> dict[str, Tensor]:
        n = self.total.clamp(min=1)
        return {"acc_identity": self.correct_identity / n, "acc_subgroup": self.correct_subgroup / n,
                "acc_group": self.correct_group / n}


def covered_seconds(intervals: Tensor) -> float:
    """Length of the union of [start, end] intervals [N, 2]: the wall time during which at least one
    process sampled, whether the processes ran side by side, one after another, or partly both."""
    total, start, end = 0.0, None, None
    for lo, hi in sorted(intervals.tolist()):
        if end is None or lo > end:
            total += 0.0 if end is None else end - start
            start, end = lo, hi
        else:
            end = max(end, hi)
    return total + (0.0 if end is None else end - start)


class Throughput(Metric):
    """Images, seconds and work per image across the processes or jobs that sampled a cell.

    Work adds up. The wall time is the union of every process's sampling intervals (wall-clock
    [start, end] per batch), so img/s is the throughput of the whole group for a torchrun group or
    shard jobs run at once, and of one job at a time for shard jobs run in turn. Timings recorded
    without intervals (older runs) fall back to the slowest process's seconds, i.e. side by side.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("images", "network_passes", "guide_passes", "backward_passes", "untimed_parts"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("seconds", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("peak_mem_mb", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("intervals", [], dist_reduce_fx="cat")

    def update(self, images: int, seconds: float, network_passes: float, guide_passes: float,
               backward_passes: float, peak_mem_mb: float, intervals: list[list[float]] | None = None) -> None:
        self.images += images
        self.seconds += seconds
        self.network_passes += network_passes
        self.guide_passes += guide_passes
        self.backward_passes += backward_passes
        self.peak_mem_mb = torch.maximum(self.peak_mem_mb, torch.tensor(float(peak_mem_mb), dtype=torch.float64))
        if intervals:
            self.intervals.append(torch.tensor(intervals, dtype=torch.float64).reshape(-1, 2))
        elif images:
            self.untimed_parts += 1

    def wall_seconds(self) -> Tensor:
        if self.untimed_parts > 0 or not self.intervals:
            return self.seconds
        return torch.tensor(covered_seconds(dim_zero_cat(self.intervals)), dtype=torch.float64)

    def compute(self) -> dict[str, Tensor]:
        n = self.images.clamp(min=1)
        wall = self.wall_seconds()
        return {"img_per_s": self.images / wall.clamp(min=1e-9), "s_per_img": wall / n,
                "network_passes_per_img": self.network_passes / n, "guide_passes_per_img": self.guide_passes / n,
                "backward_passes_per_img": self.backward_passes / n, "peak_mem_mb": self.peak_mem_mb}


def load_eval_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> EvalClassifier:
    return load_model(Path(path) if path else ZOO_DIR / "eval_classifier.safetensors", "eval_classifier", device)  # type: ignore[return-value]


@functools.cache
def metric_directions() -> dict[str, str]:
    """Each result column's direction ("higher" or "lower" is better), as its metric class declares it."""
    return {c: d for m in (*SET_METRICS.values(), PromptDiversity, CLIPScore, LabelAccuracy) for c, d in m.columns.items()}


def set_columns() -> tuple[str, ...]:
    """Result columns computed once per cell over its image set (not spreads such as kid_std)."""
    return tuple(c for m in (*SET_METRICS.values(), PromptDiversity) for c in m.columns if not c.endswith("_std"))


def per_image_columns() -> tuple[str, ...]:
    """Result columns that are means of a per-image score (per_sample.csv holds the scores)."""
    return (*CLIPScore.columns, *LabelAccuracy.columns)


def higher_is_better(column: str) -> bool:
    """Whether a larger value of a result column is better; network-suffixed columns (fid_dinov2,
    precision_clip) take their metric's direction. Unknown columns (a user's per-image score) count as
    higher-is-better."""
    directions = metric_directions()
    for net in FEATURE_NETS:
        if net != PRIMARY_NET and column.endswith(f"_{net}") and column[: -len(net) - 1] in directions:
            column = column[: -len(net) - 1]
    return directions.get(column, HIGHER) != LOWER
