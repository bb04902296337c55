"""Which metrics apply to a run: each metric's declared needs against the model's domain, the flags and the
task, decided before any sampling."""

from __future__ import annotations

import pytest

from bench.evaluators.registry import METRICS
from bench.runner.applicability import applicable_metrics
from bench.runner.config import BenchConfig


def test_the_zoos_evaluators_apply_only_to_emoji_models(tmp_path):
    """On a user's model the emoji label table, reference and domain network know nothing of its images:
    accuracy is dropped, set metrics wait for --reference, and the domain network is refused with it."""
    notes: list[str] = []
    cfg = BenchConfig.from_preset("tiny")
    assert applicable_metrics(cfg, "emoji", notes.append) is cfg and not notes
    user = applicable_metrics(cfg, "user", notes.append)
    assert "clip_score" in user.metrics and {"accuracy", "fid"} <= set(cfg.metrics)
    assert not any(METRICS[m].needs & {"reference", "features", "labels", "domain:zoo"} for m in user.metrics)
    assert any("accuracy skipped" in n for n in notes) and any("--reference DIR" in n for n in notes)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="--features domain is the emoji evaluation classifier"):
        applicable_metrics(BenchConfig.from_preset("tiny", reference=str(tmp_path)), "user", notes.append)
    kept = applicable_metrics(BenchConfig.from_preset("tiny", reference=str(tmp_path), features=["clip"]), "user",
                              notes.append)
    assert "fid" in kept.metrics and "cmmd" in kept.metrics and "accuracy" not in kept.metrics
    with pytest.raises(ValueError, match="no metric applies"):
        applicable_metrics(BenchConfig.from_preset("tiny", metrics=["fid", "accuracy"]), "user", notes.append)
