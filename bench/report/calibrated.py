"""The report's calibrated-comparison section: each method against plain CFG at its own effective scale and
NFE (calibrated.csv, written by `--calibrate`; bench.runner.calibration), every value escaped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.runner.calibration import CALIBRATED_FILE, TIMING_FILE
from bench.report.format import format_number, format_scale, metric_name, percent_metric
from bench.report.verdict import format_p

__all__ = ["calibrated_html", "display_calibrated", "section"]


def _ci(mean: float, lo: float, hi: float, k: float = 1.0) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(lo) or math.isnan(hi):
        return format_number(mean * k)
    return f"{format_number(mean * k)} [{format_number(lo * k)}, {format_number(hi * k)}]"


def display_calibrated(table: pd.DataFrame) -> pd.DataFrame:
    """calibrated.csv for people: a method's effective scale and NFE, then per metric the difference and the
    win rate with their intervals and Holm-adjusted p-values."""
    rows = []
    for r in table.itertuples(index=False):
        k = 100.0 if percent_metric(r.metric) else 1.0
        unit = " (pp)" if k == 100.0 else ""
        rows.append({
            "method": r.guidance, "scale": format_scale(r.scale),
            "effective CFG scale": f"{format_number(r.effective_scale)} ± {format_number(r.effective_scale_sd)}",
            "NFE ratio": format_number(r.nfe_ratio), "steps (method → cfg)": f"{int(r.steps)} → {int(r.cfg_steps)}",
            "metric": metric_name(r.metric) + unit,
            "method − cfg": _ci(r.diff, r.diff_lo, r.diff_hi, k), "p (Holm)": format_p(float(r.diff_p_holm)),
            "win rate (%)": _ci(r.win_rate, r.win_lo, r.win_hi, 100.0), "win p (Holm)": format_p(float(r.win_p_holm)),
            "better": r.better if isinstance(r.better, str) and r.better else "–",
            "n (prompts)": f"{int(r.n)} ({int(r.n_prompts)})",
        })
    return pd.DataFrame(rows)


def calibrated_html(run_dir: Path) -> str:
    """The section's body for one run ('' when the run was not calibrated)."""
    path = Path(run_dir) / CALIBRATED_FILE
    if not path.is_file():
        return ""
    table = pd.read_csv(path)
    if table.empty:
        return '<p class="muted">No method cell had an effective scale to calibrate CFG to.</p>'
    timing_path = Path(run_dir) / TIMING_FILE
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    cost = ""
    if timing.get("cpu_s_run"):
        ratio = (timing["cpu_s_run"] + timing["cpu_s_calibration"]) / timing["cpu_s_run"]
        cost = (f'<p class="muted">Calibration: {int(timing["images"])} images in {int(timing["calibrated_cells"])} '
                f'cells, {format_number(timing["cpu_s_calibration"])} CPU s on top of the run\'s '
                f'{format_number(timing["cpu_s_run"])} (x{ratio:.2f} in all).</p>')
    shown = display_calibrated(table)
    return cost + '<div class="scroll">' + shown.to_html(escape=True, index=False, na_rep="–", border=0) + "</div>"


def section(bodies: list[str]) -> str:
    """The whole section, or '' when no run of the report was calibrated."""
    if not any(bodies):
        return ""
    return ("<h2>Calibrated comparison (method vs CFG at equal effective scale and NFE)</h2>\n"
            '<p class="muted">GA-Eval ("Guidance Matters", arXiv:2602.22570): each sample is redrawn by plain CFG '
            "from the same noise at that sample's effective CFG scale (the trajectory mean of the method's change "
            "to the noise prediction projected on eps_c − eps_u, in units of eps_c − eps_u) with steps × the "
            "method's NFE ratio. Win rate: share of images on which the method scores better, ties split; "
            "intervals: paired bootstrap over prompts (95%); Holm over each metric's rows. docs/statistics.md.</p>\n"
            + "".join(bodies))
