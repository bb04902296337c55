"""Quality and cost metrics, each a torchmetrics `Metric` so states sync across processes and merge.

FID and KID are torchmetrics' own, fed the domain feature network (the evaluation classifier's
penultimate layer) against committed reference statistics, or Inception with local weights. CLIP
score uses an open_clip model that never guided the samples unless the user asks for it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from guidance.zoo.encoders import EvalClassifier
from guidance.zoo.load import ZOO_DIR, EvalCLIPScorer, load_model
from guidance.zoo.store import CheckpointError

METRICS = ("fid", "kid", "clip_score", "accuracy")


class DomainFeatures(nn.Module):
    """FID feature network on this domain: uint8 images in, evaluation-classifier features out."""

    def __init__(self, classifier: EvalClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.config.features

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images.float() / 127.5 - 1)


@dataclass
class Reference:
    """Statistics of the real images: features (for KID) and FID's float64 sums."""

    features: Tensor
    sum: Tensor
    cov_sum: Tensor
    num_samples: int

    @classmethod
    def load(cls, path: str | Path = ZOO_DIR / "reference_features.safetensors") -> "Reference":
        if not Path(path).is_file():
            raise CheckpointError(f"reference statistics not found: {path}; run `python -m guidance.zoo.reference`")
        data = load_file(str(path))
        return cls(data["features"].float(), data["sum"], data["cov_sum"], int(data["num_samples"]))


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


def inception_fid(weights_path: str) -> FrechetInceptionDistance:
    """FID on Inception-v3 pool features from a local weights file (nothing is downloaded).

    torchmetrics' Inception comes from torch-fidelity, which unpickles the file with weights_only=False.
    So the file (a torch state dict, or .safetensors) is copied to a private directory and loaded there
    with weights_only=True first: only a copy that holds nothing but tensors reaches torch-fidelity.
    """
    import importlib.util
    import tempfile

    path = Path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"Inception weights not found: {weights_path}; pass a local FID Inception "
                              f"checkpoint (pt_inception-2015-12-05) with --fid-inception-weights")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ValueError("FID on Inception features needs torch-fidelity (torchmetrics' Inception-v3); "
                         "install it with `pip install -e '.[fid]'` or drop --fid-inception-weights")
    with tempfile.TemporaryDirectory() as private:
        checked = Path(private) / "inception.pt"
        try:
            if path.suffix == ".safetensors":
                torch.save(load_file(str(path)), checked)
            else:
                shutil.copyfile(path, checked)
                torch.load(checked, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable or unsafe file: one clear error naming the file
            raise CheckpointError(f"--fid-inception-weights {weights_path} is not a plain tensor state dict "
                                  f"({type(err).__name__}; torch.load(weights_only=True) refuses it); pass "
                                  f"torch-fidelity's pt_inception-2015-12-05 weights, or the same as .safetensors") from None
        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(checked))


class CLIPScore(Metric):
    """Mean of 100 * max(cos(image, caption), 0) under an open_clip model (torchmetrics' convention)."""

    full_state_update = False

    def __init__(self, scorer: EvalCLIPScorer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scorer = scorer
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, texts: Sequence[str]) -> None:
        zi = self.scorer.encode_images(images.to(self.score_sum.device))
        zt = self.scorer.encode_texts(list(texts))
        self.score_sum += (100 * (zi * zt).sum(-1).clamp(min=0)).double().sum()
        self.count += len(images)

    def compute(self) -> Tensor:
        return self.score_sum / self.count.clamp(min=1)


class LabelAccuracy(Metric):
    """Top-1 identity, subgroup and group accuracy of the evaluation classifier on generated images."""

    full_state_update = False

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
        identity_logits, subgroup_logits = self.classifier.heads(images.float())
        labels = labels.to(identity_logits.device)
        sub_true = self.subgroup_of.to(labels.device)[labels]
        sub_pred = subgroup_logits.argmax(-1)
        groups = self.group_of_subgroup.to(labels.device)
        self.correct_identity += (identity_logits.argmax(-1) == labels).sum()
        self.correct_subgroup += (sub_pred == sub_true).sum()
        self.correct_group += (groups[sub_pred] == groups[sub_true]).sum()
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
