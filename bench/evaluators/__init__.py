"""Evaluators: metrics and the feature networks set metrics run on, each registered in
bench.evaluators.registry by the module that defines it. Importing this package imports every module of
it: the built-in metrics first, in the order their result columns are written, then any other module of
the package (a new metric is one new file here, its columns after the built-in ones).

Columns of the domain network keep their plain names (fid, kid_mean, precision, ...); other networks add
their name (fid_inception, fid_dinov2, precision_dinov2, ...). CMMD is always on the CLIP scorer's
embeddings, diversity on the first network of --features.
"""

from __future__ import annotations

import importlib
import pkgutil

# Metrics, in registration order = column order of results.csv and the report.
from bench.evaluators.fid import FrechetDistance
from bench.evaluators.kid import KernelDistance
from bench.evaluators.clip_score import CLIPScore
from bench.evaluators.accuracy import LabelAccuracy
from bench.evaluators.cmmd import CMMD
from bench.evaluators.prdc import PrecisionRecall
from bench.evaluators.diversity import PromptDiversity
from bench.evaluators.psnr import PSNRKnown
from bench.evaluators.seam import SeamScore
from bench.evaluators.consistency import ConsistencyPSNR
# Feature networks.
from bench.evaluators.domain import DomainNet
from bench.evaluators.inception import InceptionNet
from bench.evaluators.dinov2 import DEFAULT_ARCH as DINOV2_ARCH, DINOv2Net
from bench.evaluators.clip import CLIPNet
from bench.evaluators.base import FeatureNet, SetMetric
from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.registry import (FEATURE_NETS, METRICS, PRIMARY_NET, Column, ScoringBatch, column,
                                       default_metrics, metric_names)

for _module in pkgutil.iter_modules(__path__):  # registration is the side effect of importing a module
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FEATURE_NETS", "METRICS", "PRIMARY_NET", "Column", "ScoringBatch", "column", "default_metrics",
           "metric_names", "FeatureNet", "SetMetric", "PerImageMetric", "DINOV2_ARCH", "FrechetDistance",
           "KernelDistance", "CLIPScore", "LabelAccuracy", "CMMD", "PrecisionRecall", "PromptDiversity", "PSNRKnown",
           "SeamScore", "ConsistencyPSNR", "DomainNet", "InceptionNet", "DINOv2Net", "CLIPNet"]
