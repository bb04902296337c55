"""How scales and numbers are written in file names, labels and report text: one rule for the store and the report."""

from __future__ import annotations

import math
import re

import pandas as pd

from bench.evaluators import registry


def format_scale(scale: float) -> str:
    """Shortest repr of a guidance scale without a trailing ``.0`` (1.0 -> "1", 2.5 -> "2.5").

    Used in sample file names, so the runner and the report must agree on it.
    """
    text = repr(float(scale))
    return text[:-2] if text.endswith(".0") else text


def format_number(value: object) -> str:
    """A compact number for tables and sentences: enough digits to compare, no more ("–" for NaN)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if v != v:
        return "–"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def metric_name(metric: str) -> str:
    """A result column's name for people, as its metric declares it (the column name when none does)."""
    return registry.label(metric)


def percent_metric(metric: str) -> bool:
    """Columns stored as fractions and shown in percent (differences in percentage points), as declared."""
    return registry.percent(metric)


def format_ci(mean: float, lo: float, hi: float) -> str:
    """``mean [lo, hi]``; just the mean when there is no interval (one seed set)."""
    if math.isnan(mean):
        return "–"
    if math.isnan(lo) or math.isnan(hi):
        return format_number(mean)
    return f"{format_number(mean)} [{format_number(lo)}, {format_number(hi)}]"


def format_span(values: pd.Series) -> str:
    """``64`` or ``32–64`` for a set of counts."""
    vals = sorted({int(v) for v in values.dropna()})
    if not vals:
        return "?"
    return str(vals[0]) if len(vals) == 1 else f"{vals[0]}–{vals[-1]}"


def n_caption(summary: pd.DataFrame) -> str:
    """Sample count per cell for plot titles: FID is biased at small n, so it must be visible."""
    return (
        f"n = {format_span(summary['n_samples'])} images per cell, {format_span(summary['n_seed_sets'])} seed sets"
        " (FID is biased at small n: compare only runs with equal n)"
    )


def safe_name(text: str) -> str:
    """A file-name-safe form of a user string (guidance name, run id)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"
