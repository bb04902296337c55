"""Run directories as the harness wrote them: the manifest and results.csv, checked, named for the page."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.evaluators.registry import column_spec
from bench.stats import THROUGHPUT_METRICS


REQUIRED_COLUMNS = ("guidance", "scale", "seed_set")
FLOAT_COLUMNS = ("scale", *THROUGHPUT_METRICS, "wall_s")  # always there (NaN where a run lacks them)


@dataclass
class Run:
    """One run directory as the harness wrote it."""

    dir: Path
    manifest: dict
    results: pd.DataFrame

    @property
    def run_id(self) -> str:
        """The manifest's run id, else the directory name."""
        return str(self.manifest.get("run_id") or self.dir.name)


def read_results(path: Path) -> pd.DataFrame:
    """results.csv as a DataFrame with numeric columns checked, errors naming the file."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed results.csv ({e}); re-run `invoke bench`") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: results.csv lacks the column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{path}: results.csv has no rows; did the run finish?")
    for col in FLOAT_COLUMNS + ("n_samples",) + tuple(c for c in frame.columns if column_spec(c) is not None):
        if col not in frame.columns:
            frame[col] = math.nan  # cost columns a run did not record; metrics it did not compute stay absent
            continue
        try:
            frame[col] = pd.to_numeric(frame[col]).astype(float)
        except (ValueError, TypeError):
            raise ValueError(f"{path}: column {col!r} holds non-numeric values") from None
    frame["guidance"] = frame["guidance"].astype(str)
    return frame


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; a missing or malformed file raises an error naming that file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a directory; pass a run directory such as reports/<run-id>")
    results_path = run_dir / "results.csv"
    manifest_path = run_dir / "manifest.json"
    if not results_path.is_file():
        raise FileNotFoundError(
            f"{results_path}: no results.csv; is this a bench run directory? run `invoke bench` first"
        )
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no manifest.json; is this a bench run directory?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{manifest_path}: malformed manifest.json ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: manifest.json must hold a JSON object, got {type(manifest).__name__}")
    return Run(dir=run_dir, manifest=manifest, results=read_results(results_path))


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Distinct labels for the ``run`` column: run ids, disambiguated by directory if needed."""
    labels = [r.run_id for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.run_id} ({r.dir})" for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels
