"""How scales and numbers are written in file names, labels and report text: one rule for the store and the report."""

from __future__ import annotations

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
