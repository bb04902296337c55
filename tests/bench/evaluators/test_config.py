"""The scoring slice of the run config: the run config's own fields (declared there once, with their flags),
copied whole, and holding every file a registered evaluator reads."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import get_type_hints

import pytest

import bench.evaluators
import bench.runner.scoring
from bench.evaluators import METRICS
from bench.evaluators.config import ScoringConfig
from bench.runner.config import BenchConfig
from tests.paths import ROOT


def test_its_fields_are_the_run_configs_with_the_same_types():
    run, mine = get_type_hints(BenchConfig), get_type_hints(ScoringConfig)
    assert not set(mine) - set(run), "a scoring field that no flag sets"
    assert {name: run[name] for name in mine} == mine


def test_it_copies_the_run_configs_values_and_scoring_cannot_change_them():
    cfg = BenchConfig.from_preset("tiny", metrics=["fid", "cmmd"], features=["domain"], bootstrap=7,
                                  fid_inception_weights="/w/pt_inception.pth", clip_model="ViT-B-32",
                                  clip_pretrained="/w/clip.bin")
    scoring = cfg.scoring()
    assert dataclasses.asdict(scoring) == {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ScoringConfig)}
    assert scoring.feature_nets() == ["domain", "inception"]  # Inception weights add its network
    with pytest.raises(dataclasses.FrozenInstanceError):
        scoring.bootstrap = 0  # type: ignore[misc]
    scoring.metrics.append("kid")
    assert cfg.metrics == ["fid", "cmmd"]


def scoring_reads(path: Path) -> set[str]:
    """Attributes a module reads off a ScoringConfig: of a parameter annotated ScoringConfig, and of
    `resources.config` / `self.config` (the scoring resources' slice)."""
    reads = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = {a.arg for a in function.args.args
                  if isinstance(a.annotation, ast.Name) and a.annotation.id == "ScoringConfig"}
        for node in ast.walk(function):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in params:
                reads.add(node.attr)
            elif (isinstance(owner, ast.Attribute) and owner.attr == "config" and isinstance(owner.value, ast.Name)
                  and owner.value.id in ("resources", "self")):
                reads.add(node.attr)
    return reads


SCORING_MODULES = [ROOT / "bench" / "runner" / "scoring.py", *sorted((ROOT / "bench" / "evaluators").glob("*.py"))]


def test_every_field_scoring_reads_is_in_the_slice():
    """A metric, feature network or the scorer reading a setting the slice lacks would fail only when scoring
    (an AttributeError after the sampling); `files` name the preference metrics' fields."""
    names = {f.name for f in dataclasses.fields(ScoringConfig)} | {"feature_nets"}
    missing = {str(p.relative_to(ROOT)): sorted(scoring_reads(p) - names) for p in SCORING_MODULES
               if scoring_reads(p) - names}
    assert missing == {}
    assert {"fid_inception_weights", "dinov2_weights", "bootstrap"} <= set().union(*map(scoring_reads, SCORING_MODULES))
    for metric in METRICS.values():
        assert set(getattr(metric, "files", {})) <= names, metric.name


def test_the_read_check_sees_a_field_outside_the_slice(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def build(resources):\n    return resources.config.steps\n\n"
                      "def check(config: ScoringConfig):\n    return config.sampler\n")
    assert scoring_reads(module) == {"steps", "sampler"}


def test_scoring_and_the_evaluators_never_see_the_whole_run_config():
    """Not by import, nor through the task (which holds the run config as `task.cfg`)."""
    modules = [bench.runner.scoring] + [importlib.import_module(f"bench.evaluators.{m.name}")
                                        for m in pkgutil.iter_modules(bench.evaluators.__path__)]
    assert [m.__name__ for m in modules if hasattr(m, "BenchConfig")] == []
    tree = ast.parse((ROOT / "bench" / "runner" / "scoring.py").read_text())
    assert [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "cfg"] == []
