"""The verdict in words: which differences of a run are significant, which are not, at which n.

Plain sentences (the report escapes them), built from an Analysis, so the page's first lines say
what the tables below support, e.g. "cfg 3 beats cfg 1 on CLIP score by +9.66 [6.1, 13.2]
(p=0.001, Holm p=0.002, n=20 prompts x 3 seed sets)".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.stats.analysis import SEED_T, Analysis
from bench.evaluators.registry import higher_is_better, set_columns
from bench.report.format import format_number, format_scale, metric_name, percent_metric
from bench.stats.bootstrap import bootstrap_p

__all__ = ["verdict", "format_p"]

MAX_NOT_SIGNIFICANT = 6


def format_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _cell(guidance: str, scale: float) -> str:
    return f"{guidance} {format_scale(scale)}"


def _amount(metric: str, value: float, signed: bool = False) -> str:
    """A value in display units: accuracies in percent (differences in points)."""
    v = value * 100 if percent_metric(metric) else value
    text = format_number(v)
    return f"+{text}" if signed and v > 0 else text


def _n(row: pd.Series) -> str:
    if row["method"] == SEED_T:
        return f"paired t over {int(row['n_seed_sets'])} seed sets"
    return f"n={int(row['n_prompts'])} prompts x {int(row['n_seed_sets'])} seed sets"


def _interval(row: pd.Series) -> str:
    m = row["metric"]
    unit = " points" if percent_metric(m) else ""
    return (f"{_amount(m, row['diff'], True)}{unit} [{_amount(m, row['lo'], True)}, {_amount(m, row['hi'], True)}]")


def _significant(row: pd.Series) -> str:
    a, b = _cell(row["a_guidance"], row["a_scale"]), _cell(row["b_guidance"], row["b_scale"])
    verb = "beats" if row["better"] == "a" else "is worse than"
    direction = "" if higher_is_better(row["metric"]) else " (lower is better)"
    return (f"{a} {verb} {b} on {metric_name(row['metric'])}{direction} by {_interval(row)} "
            f"(p={format_p(row['p'])}, Holm p={format_p(row['p_holm'])}, {_n(row)}).")


def _not_significant(rows: pd.DataFrame) -> str:
    parts = [f"{_cell(r['a_guidance'], r['a_scale'])} vs {_cell(r['b_guidance'], r['b_scale'])} on "
             f"{metric_name(r['metric'])} ({_interval(r)}, Holm p={format_p(r['p_holm'])})"
             for _, r in rows.head(MAX_NOT_SIGNIFICANT).iterrows()]
    more = len(rows) - MAX_NOT_SIGNIFICANT
    tail = f"; and {more} more (comparisons.csv)" if more > 0 else ""
    return f"Not significant ({len(rows)} of the comparisons): " + "; ".join(parts) + tail + "."


def _scope(analysis: Analysis) -> str:
    level = f"{analysis.confidence:.0%}"
    if not analysis.paired:
        return (f"Paired statistics unavailable: this run has no per_sample.csv (it predates per-image scores), so "
                f"every metric has only {level} Student-t intervals over {analysis.n_seed_sets} seed sets, and cells "
                f"are compared paired by seed set (t-test on the per-seed-set differences). Re-score the run for "
                f"paired bootstrap statistics over prompts.")
    summary = analysis.summary
    sets = [metric_name(m) for m in set_columns() if m in summary.columns and summary[m].notna().any()]
    by_seed_set = f"; set metrics ({', '.join(sets)}) are compared paired by seed set" if sets else ""
    return (f"Paired statistics over n={analysis.n_prompts} prompts x {analysis.n_seed_sets} seed sets: {level} "
            f"bootstrap intervals from {analysis.b} resamples of the prompts (shared by every cell, so differences "
            f"are paired); p-values Holm-adjusted over the comparisons of each metric{by_seed_set}.")


def _floor(analysis: Analysis) -> str:
    """Why nothing can be significant when there are too few prompts for the bootstrap to resolve p < 0.05."""
    if not analysis.paired or not analysis.n_prompts:
        return ""
    floor = float(bootstrap_p(np.ones(analysis.b), analysis.n_prompts)[0])
    if floor < 1.0 - analysis.confidence:
        return ""
    return (f" With {analysis.n_prompts} prompts no paired difference can reach p < {1 - analysis.confidence:.2g} "
            f"(smallest possible p: {format_p(floor)}): use more prompts.")


def _rank(analysis: Analysis) -> str | None:
    ranking = analysis.ranking
    if ranking.empty or pd.isna(ranking.iloc[0]["best_scale"]):
        return None
    top = ranking.iloc[0]
    where = f"{top['guidance']} at scale {format_scale(top['best_scale'])}"
    if len(ranking) == 1:
        return f"Only one method ({where}): the ranking has nothing to compare it with."
    share = top.get("p_rank1", math.nan)
    sure = ("" if pd.isna(share) else
            f"; bootstrap probability of being rank 1: {share:.2f}" +
            (" (a clear winner)" if share >= 0.95 else " (not a sure winner)"))
    return f"Rank 1 by the FID-vs-CLIP trade-off: {where}{sure}."


def verdict(analysis: Analysis) -> list[str]:
    """Sentences, most important first: scope, significant differences, the rest, the ranking."""
    lines = [_scope(analysis)]
    table = analysis.comparisons
    if not table.empty:
        significant = table[table["significant"]]
        lines += [_significant(r) for _, r in significant.iterrows()]
        rest = table[~table["significant"] & table["p_holm"].notna()]
        if not rest.empty:
            lines.append(_not_significant(rest))
        if significant.empty:
            lines.append("No difference between the compared cells is significant at this n." + _floor(analysis))
    rank = _rank(analysis)
    if rank:
        lines.append(rank)
    return lines
