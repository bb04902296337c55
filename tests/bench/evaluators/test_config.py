"""The scoring slice of the run config: the run config's own fields (declared there once, with their flags),
copied whole, and holding every file a registered evaluator reads."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import get_type_hints

import pytest

import bench.evaluators
import bench.runner.scoring
from bench.evaluators import METRICS
from bench.evaluators.config import ScoringConfig
from bench.runner.config import BenchConfig


def test_its_fields_are_the_run_configs_with_the_same_types():
    run, mine = get_type_hints(BenchConfig), get_type_hints(ScoringConfig)
    assert not set(mine) - set(run), "a scoring field that no flag sets"
    assert {name: run[name] for name in mine} == mine


def test_it_copies_the_run_configs_values_and_cannot_be_changed_by_scoring():
    cfg = BenchConfig.from_preset("tiny", metrics=["fid", "cmmd"], features=["domain"], bootstrap=7,
                                  fid_inception_weights="/w/pt_inception.pth", clip_model="ViT-B-32",
                                  clip_pretrained="/w/clip.bin")
    scoring = cfg.scoring()
    assert dataclasses.asdict(scoring) == {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ScoringConfig)}
    assert scoring.feature_nets() == ["domain", "inception"]  # Inception weights add its network
    with pytest.raises(dataclasses.FrozenInstanceError):
        scoring.bootstrap = 0  # type: ignore[misc]


def test_every_evaluator_reads_its_files_from_the_slice():
    """A preference metric's `files` name config fields: each must reach scoring."""
    names = {f.name for f in dataclasses.fields(ScoringConfig)}
    for metric in METRICS.values():
        assert set(getattr(metric, "files", {})) <= names, metric.name


def test_scoring_and_the_evaluators_never_see_the_whole_run_config():
    modules = [bench.runner.scoring] + [importlib.import_module(f"bench.evaluators.{m.name}")
                                        for m in pkgutil.iter_modules(bench.evaluators.__path__)]
    assert [m.__name__ for m in modules if hasattr(m, "BenchConfig")] == []
