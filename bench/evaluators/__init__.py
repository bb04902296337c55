"""Evaluators chosen in the config: feature networks for set metrics, and the metrics computed on them.

Columns of the domain network keep their plain names (fid, kid_mean, precision, ...); other networks add
their name (fid_inception, fid_dinov2, precision_dinov2, ...). CMMD is always on the CLIP scorer's
embeddings, diversity on the first network of --features.
"""

from __future__ import annotations

from bench.evaluators.base import HIGHER, LOWER, FeatureNet, SetMetric
from bench.evaluators.clip import CLIPNet
from bench.evaluators.cmmd import CMMD
from bench.evaluators.dinov2 import DEFAULT_ARCH as DINOV2_ARCH, DINOv2Net
from bench.evaluators.diversity import PromptDiversity
from bench.evaluators.domain import DomainNet
from bench.evaluators.fid import FrechetDistance
from bench.evaluators.inception import InceptionNet
from bench.evaluators.kid import KernelDistance
from bench.evaluators.prdc import PrecisionRecall

FEATURE_NETS: dict[str, type[FeatureNet]] = {c.name: c for c in (DomainNet, InceptionNet, DINOv2Net, CLIPNet)}
SET_METRICS: dict[str, type[SetMetric]] = {c.name: c for c in (FrechetDistance, KernelDistance, PrecisionRecall, CMMD)}
PER_NETWORK = ("fid", "kid", "prdc")  # computed on every network of --features
METRIC_NAMES = ("fid", "kid", "clip_score", "accuracy", "cmmd", "prdc", "diversity")
PRIMARY_NET = "domain"  # its columns keep the plain names


def column(name: str, net: str) -> str:
    """Result column of a metric column on a network: plain for the domain network, else suffixed."""
    return name if net == PRIMARY_NET else f"{name}_{net}"


__all__ = ["FEATURE_NETS", "SET_METRICS", "PER_NETWORK", "METRIC_NAMES", "HIGHER", "LOWER", "FeatureNet", "SetMetric",
           "DINOV2_ARCH", "PromptDiversity", "column"]
