"""How a guidance scale is written in file names and labels: one rule for the sample store and the report."""

from __future__ import annotations


def format_scale(scale: float) -> str:
    """Shortest repr of a guidance scale without a trailing ``.0`` (1.0 -> "1", 2.5 -> "2.5").

    Used in sample file names, so the runner and the report must agree on it.
    """
    text = repr(float(scale))
    return text[:-2] if text.endswith(".0") else text
