"""The worked task example of docs/extending.md runs as printed: registered by its module alone, sampled
and scored through the one runner."""

from __future__ import annotations

import re
import types

import pandas as pd

from bench.runner.config import BenchConfig
from bench.runner.run import run_benchmark
from bench.tasks import TASKS
from tests.paths import ROOT


def test_the_documented_task_runs_as_printed(tmp_path):
    text = (ROOT / "docs" / "extending.md").read_text()
    code = re.search(r"Put it in\n`bench/tasks/reseed.py`:\n\n```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("bench.tasks.reseed")
    try:
        exec(compile(code, "docs/extending.md", "exec"), module.__dict__)  # noqa: S102 (our own docs)
        assert "reseed" in TASKS
        cfg = BenchConfig.from_preset("tiny", task="reseed", guidance=["cfg"], scales={"cfg": [3.0]}, prompt_limit=2,
                                      seeds=[0, 1], steps=1, metrics=["clip_score"], out=str(tmp_path), bootstrap=0)
        results = pd.read_csv(run_benchmark(cfg, progress=False) / "results.csv")
        assert len(results) == 2 and results["clip_score"].notna().all()
    finally:
        TASKS.pop("reseed", None)
