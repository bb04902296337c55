"""What scoring reads of a run's settings: its slice of the run config, so that scoring, the metrics and the
feature networks depend on the evaluator options alone, not on how the samples were drawn.

The fields are the run config's own (bench.runner.config.BenchConfig declares each once, with its flag and
default); `ScoringConfig.of` copies them, and a test holds the names and types equal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ScoringConfig:
    """The metrics, their evaluators' local files, the reference, and the bootstrap of one scoring."""

    metrics: list[str]
    features: list[str]
    model: str  # --score-with-guiding-clip scores with the model's own guiding CLIP
    clip_model: str | None
    clip_pretrained: str | None
    score_with_guiding_clip: bool
    fid_inception_weights: str | None
    dinov2_weights: str | None
    dinov2_arch: str
    hps_weights: str | None
    pickscore_model: str | None
    pickscore_processor: str | None
    image_reward_model: str | None
    aesthetic_weights: str | None
    aesthetic_clip: str | None
    reference: str | None
    reference_images: str | None
    bootstrap: int
    batch_size: int

    @classmethod
    def of(cls, settings: Any) -> "ScoringConfig":
        """The slice of `settings` (a BenchConfig, or anything with these attributes); lists are copied, so
        scoring never changes the run's own."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls)}
        return cls(**{k: list(v) if isinstance(v, list) else v for k, v in values.items()})

    def feature_nets(self) -> list[str]:
        """The networks set metrics run on: --features, plus inception when its weights are given."""
        nets = list(self.features)
        if self.fid_inception_weights and "inception" not in nets:
            nets.append("inception")
        return nets
