"""The benchmark report: summary tables and one self-contained HTML page over runs.py, plots.py and grids.py.

``python -m bench.report.html reports/<run-id> [more run dirs] [--out DIR]`` reads what the harness
wrote (``results.csv``, ``manifest.json``, ``samples/*.npz``) and writes ``summary.csv``,
``plots/*.png``, ``grids/*.png`` and ``index.html``. The page inlines every image as a data URI
and has no script, font or external link, so it can be mailed, attached to CI or opened offline
and shows exactly what was measured; every string from the run (prompts included) is escaped,
because prompt sets come from users and may hold markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import matplotlib

from bench.stats.analysis import SET_METRICS, Analysis, analyse, best_cells, load_per_sample
from bench.runner.failure import Parser, guarded
from guidance.effective_scale import EFFECTIVE_SCALE
from bench.report.calibrated import calibrated_html
from bench.report.calibrated import section as calibrated_section
from bench.report.runs import Run, load_run, run_labels
from bench.report.plots import TRADE_OFF, plot_fid_vs_clip, plot_metrics_vs_scale, plot_throughput
from bench.report.grids import Grid, make_grids
from bench.report.format import format_ci, format_span, n_caption, safe_name, format_number, format_scale, metric_name, percent_metric
from bench.report.compare import compare_grids_html
from bench.evaluators import FEATURE_NETS, METRICS
from bench.evaluators.registry import RegisteredMetric, column_spec
from bench.stats import quality_metrics, rank_methods
from bench.report.verdict import format_p, verdict

__all__ = ["build_report", "main"]

MAX_CATEGORIES = 30  # per category column on the page (all of them are in results_by_category.csv)




CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1300px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px;margin:10px 0;border-radius:4px}
.bad{background:#fde2e1;border-color:#d33}
.meta td{text-align:left;white-space:normal}
.grids{display:flex;flex-wrap:wrap;gap:18px}
figure{margin:0;flex:0 1 340px;max-width:340px;min-width:0}
figure img{display:block;max-width:100%;height:auto;image-rendering:pixelated}
figcaption{font-size:12px}ol.prompts{font-size:11.5px;margin:4px 0;padding-left:22px;color:#444;overflow-wrap:anywhere}
.verdict{background:#eef6ee;border:1px solid #6a6;padding:8px 12px;border-radius:4px}.verdict li{margin:3px 0}
table.cmp td{padding:2px;vertical-align:middle}table.cmp img{display:block;image-rendering:pixelated}
table.cmp td.caption{white-space:normal;text-align:left;max-width:260px;overflow-wrap:anywhere;font-size:12px}
.legend li{margin:2px 0}
img.plot{max-width:100%;margin:8px 0}
pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:12px}
.muted{color:#666;font-size:12.5px}.scroll{overflow-x:auto}
"""

# Belt and braces: even if markup slipped through escaping, the browser may run nothing and load
# nothing but inline data images and inline styles.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: object) -> str:
    """Escape any user-provided value for HTML text or attributes."""
    return html.escape(str(value), quote=True)


def _json(value: object) -> str:
    """Escaped, stable JSON for a <pre> block."""
    return _e(json.dumps(value, indent=2, sort_keys=True, default=str))


def _img(path: Path, alt: str, cls: str = "") -> str:
    """An <img> with the PNG inlined, so the page needs no neighbouring files."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    class_attr = f' class="{cls}"' if cls else ""
    return f'<img{class_attr} src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(frame: pd.DataFrame) -> str:
    """An escaped table in a horizontally scrolling box, so wide summaries never get cut."""
    return f'<div class="scroll">{frame.to_html(escape=True, index=False, na_rep="–", border=0)}</div>'


def _display_summary(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Summary for people: ``mean [lo, hi]`` per metric (the paired bootstrap interval where the run
    has per-image scores, else Student-t over seed sets; set metrics also get their image-bootstrap
    interval), accuracies in percent, all-NaN metrics dropped (and named)."""
    keys = [k for k in ("run", "guidance") if k in summary.columns]
    out = summary[keys].copy()
    out["scale"] = summary["scale"].map(format_scale)
    out["n / cell"] = summary["n_samples"].map(lambda v: "?" if pd.isna(v) else str(int(v)))
    out["seed sets"] = summary["n_seed_sets"].astype(int).astype(str)
    if "n_prompts" in summary.columns:
        out["prompts"] = summary["n_prompts"].map(lambda v: "?" if pd.isna(v) else str(int(v)))
    absent = []
    for m in quality_metrics(summary):
        if summary[m].isna().all():
            absent.append(m)
            continue
        k = 100.0 if percent_metric(m) else 1.0
        name = metric_name(m) + (" (%)" if k == 100.0 else "")
        boot = f"{m}_boot_lo" in summary.columns and summary[f"{m}_boot_lo"].notna().any()
        per_image = boot and m not in SET_METRICS
        lo, hi = (f"{m}_boot_lo", f"{m}_boot_hi") if per_image else (f"{m}_lo", f"{m}_hi")
        out[name] = [format_ci(a * k, b * k, c * k) for a, b, c in zip(summary[m], summary[lo], summary[hi])]
        if boot and not per_image:
            out[f"{name}: images bootstrap"] = [f"[{format_number(b)}, {format_number(c)}]" for b, c in
                                                zip(summary[f"{m}_boot_lo"], summary[f"{m}_boot_hi"])]
    if EFFECTIVE_SCALE in summary.columns and summary[EFFECTIVE_SCALE].notna().any():
        out["effective CFG scale"] = [f"{format_number(m)} ± {format_number(sd)} (n={int(n)})" if n == n and n > 0 else "–" for m, sd, n in
                                      zip(summary[EFFECTIVE_SCALE], summary[f"{EFFECTIVE_SCALE}_sd"],
                                          summary[f"{EFFECTIVE_SCALE}_n"])]
    for col, name in [("s_per_img", "s / img"), ("network_passes_per_img", "net passes"),
                      ("guide_passes_per_img", "guide passes"), ("backward_passes_per_img", "bwd passes"),
                      ("peak_mem_mb", "peak MB")]:
        out[name] = summary[col].map(format_number)
    if summary["n_samples_note"].astype(bool).any():
        out["note"] = summary["n_samples_note"]
    return out, absent


def _plot_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with per-sample metrics' error bars taken from the paired bootstrap where present."""
    out = summary.copy()
    for m in quality_metrics(out):
        if m not in SET_METRICS and f"{m}_boot_lo" in out.columns and out[f"{m}_boot_lo"].notna().any():
            out[f"{m}_lo"], out[f"{m}_hi"] = out[f"{m}_boot_lo"], out[f"{m}_boot_hi"]
    return out


def _display_ranking(ranking: pd.DataFrame) -> pd.DataFrame:
    out = ranking.copy()
    out["best_scale"] = out["best_scale"].map(lambda v: "–" if pd.isna(v) else format_scale(v))
    out["on_front"] = out["on_front"].map(lambda v: "yes" if v else "no")
    for col in (*TRADE_OFF, "s_per_img", "distance"):
        out[col] = out[col].map(format_number)
    if "p_rank1" in out.columns:
        out["p_rank1"] = out["p_rank1"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    return out.rename(columns={"best_scale": "best scale", **{m: metric_name(m) for m in TRADE_OFF},
                               "on_front": "on overall front", "s_per_img": "s / img",
                               "distance": "distance to ideal", "p_rank1": "P(rank 1)",
                               "vs_rank1": "vs rank 1 (Holm)"})


def _in_units(metric: str, value: float) -> str:
    return format_number(value * 100 if percent_metric(metric) else value)


def _display_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """comparisons.csv for people: one row per pair and metric, differences in display units."""
    rows = []
    for _, r in table.iterrows():
        m = r["metric"]
        rows.append({
            "metric": metric_name(m) + (" (points)" if percent_metric(m) else ""), "kind": r["kind"],
            "a": f"{r['a_guidance']} {format_scale(r['a_scale'])}", "b": f"{r['b_guidance']} {format_scale(r['b_scale'])}",
            "a - b [95% CI]": f"{_in_units(m, r['diff'])} [{_in_units(m, r['lo'])}, {_in_units(m, r['hi'])}]",
            "p": format_p(r["p"]), "Holm p": format_p(r["p_holm"]),
            "significant": {"a": "yes: a better", "b": "yes: b better"}.get(r["better"], "no"),
            "method": r["method"],
        })
    return pd.DataFrame(rows)


def _display_matched(matched: pd.DataFrame) -> pd.DataFrame:
    """matched_alignment.csv for people: each method at each CLIP level, or why it is not there."""
    metrics = [c[:-len("_interval")] for c in matched.columns if c.endswith("_interval")]
    rows = []
    for _, r in matched.iterrows():
        row = {"CLIP level": format_number(r["clip_level"]), "level": r["level_source"], "guidance": r["guidance"]}
        reached = r["status"] == "reached"
        row["scale at level"] = (f"{format_number(r['scale_at'])}" + ("" if pd.isna(r["scale_lo"]) else
                                 f" [{format_number(r['scale_lo'])}, {format_number(r['scale_hi'])}]")) if reached else r["status"]
        for m in metrics:
            row[metric_name(m)] = format_ci(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) if reached else r["status"]
        for column, label in (("network_passes_per_img", "passes / img"), ("backward_passes_per_img", "backward / img"),
                              ("s_per_img", "s / img")):
            if column in matched.columns:
                row[label] = format_number(r[column]) if reached else "–"
        if pd.notna(r.get("reached_share", math.nan)):
            row["share of resamples reaching it"] = f"{r['reached_share']:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _category_tables(table: pd.DataFrame) -> str:
    """One table per category column and metric: rows are categories, columns are cells."""
    counts = table.groupby("category_column", sort=False)["category"].nunique()
    parts = [f'<p class="muted">{_e(col)}: {n} categories, too many to show here; see results_by_category.csv.</p>'
             for col, n in counts.items() if n > MAX_CATEGORIES]
    shown = table[table["category_column"].map(counts) <= MAX_CATEGORIES]
    for (col, m), part in shown.groupby(["category_column", "metric"], sort=False):
        k = 100.0 if percent_metric(m) else 1.0
        part = part.assign(cell=[f"{g} {format_scale(s)}" for g, s in zip(part["guidance"], part["scale"])],
                           text=[format_ci(a * k, b * k, c * k) for a, b, c in zip(part["mean"], part["lo"], part["hi"])])
        wide = part.pivot_table(index=["category", "n"], columns="cell", values="text", aggfunc="first", sort=False)
        wide = wide.rename_axis(columns=None).reset_index().rename(columns={"n": "prompts"})
        parts.append(f"<h3>{_e(metric_name(m))}{' (%)' if k == 100.0 else ''} by {_e(col)}</h3>{_table(wide)}")
    return "".join(parts)


def _run_meta(run: Run, label: str) -> str:
    """Header rows for one run: id, date, device, models, wall time, CLIP scorer."""
    m, cfg = run.manifest, run.manifest.get("config") or {}
    models = m.get("models") or {}
    models_txt = ", ".join(f"{_e(k)}: <code>{_e(str(v)[:12])}</code>" for k, v in models.items()) or "–"
    wall = m.get("wall_time_s")
    wall_txt = f"{float(wall):.1f} s" if isinstance(wall, (int, float)) else _e(wall if wall is not None else "–")
    scorer = str(m.get("clip_scorer", "–"))
    rows = [
        ("run", _e(label)), ("directory", _e(run.dir)), ("created", _e(m.get("created", "–"))),
        ("device", _e(m.get("device") or cfg.get("device", "–"))),  # the device name, else the option
        ("sampler", _e(f"{cfg.get('sampler', '–')}, {cfg.get('steps', '–')} steps")),
        ("prompts", _e(cfg.get("prompts", "–"))), ("models", models_txt), ("wall time", wall_txt),
        ("CLIP scorer", _e(scorer)), ("git commit", _e(str(m.get("git_commit", "–"))[:12])),
        ("config hash", _e(str(m.get("config_hash", "–"))[:12])),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _warnings(runs: Sequence[Run], labels: Sequence[str], summary: pd.DataFrame) -> list[str]:
    """Banners for results that must not be read at face value."""
    out = []
    for run, label in zip(runs, labels):
        scorer = str(run.manifest.get("clip_scorer", ""))
        if scorer.startswith("GUIDING"):
            out.append(
                f"CLIP score of run {_e(label)} is inflated: it was scored by the guiding CLIP "
                f"({_e(scorer)}), which the CLIP-guided samples were optimised against."
            )
    if len(runs) > 1:
        per_run = {lbl: format_span(summary.loc[summary["run"] == lbl, "n_samples"]) for lbl in labels}
        if len(set(per_run.values())) > 1:
            detail = ", ".join(f"{_e(k)}: n = {_e(v)}" for k, v in per_run.items())
            out.append(f"FID is not comparable between these runs: they use different numbers of images per "
                       f"cell ({detail}); FID is biased at small n.")
        scorers = {str(r.manifest.get("clip_scorer", "")) for r in runs}
        if len(scorers) > 1:
            out.append("CLIP scores are not comparable between these runs: they were scored by different CLIP "
                       f"models ({_e(', '.join(sorted(scorers)))}).")
    if summary["n_samples_note"].astype(bool).any():
        out.append("Some cells have a different number of images per seed set; the minimum is shown "
                   "(see the note column of the summary).")
    return out


def _grid_html(grids: Sequence[Grid], several: bool) -> str:
    parts, current = [], None
    for g in grids:
        key = (g.run, g.guidance) if several else g.guidance
        if key != current:
            if current is not None:
                parts.append("</div>")
            title = f"{g.guidance} ({g.run})" if several else g.guidance
            parts.append(f'<h3>{_e(title)}</h3><div class="grids">')
            current = key
        caption = f"scale {_e(format_scale(g.scale))}"
        if g.png is None:
            note = f'<span class="muted">{_e(g.note)}</span>'
            parts.append(f"<figure><figcaption>{caption}: {note}</figcaption></figure>")
            continue
        prompts = "".join(f"<li>{_e(p)}</li>" for p in g.prompts)
        alt = f"samples of {g.guidance} at scale {format_scale(g.scale)}"
        order = f"rows: {_e(', '.join(g.rows))}; captions by column" if g.rows else "prompts in reading order"
        parts.append(f"<figure>{_img(g.png, alt)}<figcaption>{caption}, seed set 0, first "
                     f"{g.shown} images; {order}:</figcaption>"
                     f'<ol class="prompts">{prompts}</ol></figure>')
    if current is not None:
        parts.append("</div>")
    return "".join(parts)


def computed_metrics(summary: pd.DataFrame) -> list[type[RegisteredMetric]]:
    """The registered metrics with at least one value in the summary (network-suffixed columns count)."""
    present = {id(column_spec(c)) for c in summary.columns if column_spec(c) is not None and summary[c].notna().any()}
    return [m for m in METRICS.values() if any(id(c) in present for c in m.columns.values())]


def trade_off_computed(summary: pd.DataFrame) -> bool:
    """Whether the run has both axes of the FID-vs-CLIP trade-off (the ranking and its plot need both)."""
    return all(c in summary.columns and summary[c].notna().any() for c in TRADE_OFF)


def _legend(runs: Sequence[Run], summary: pd.DataFrame) -> str:
    """Units of the numbers on the page, one line per metric the runs computed (as each declares itself)
    and per feature network set metrics ran on, so no domain FID is read as an Inception FID."""
    computed = computed_metrics(summary)
    items = [m.legend() for m in computed]
    if any("features" in m.needs or m.name == "cmmd" for m in computed):
        nets: dict[str, None] = {}
        for r in runs:
            cfg = r.manifest.get("config") or {}
            nets.update(dict.fromkeys(cfg.get("features") or []))
            if cfg.get("fid_inception_weights"):
                nets["inception"] = None
        known = [n for n in nets if n in FEATURE_NETS]
        if known:
            items.append("Feature networks of set metrics (columns of networks other than domain end in its name): "
                         + "; ".join(f"{n}: {FEATURE_NETS[n].units}" for n in known) + ".")
    if computed:
        items.append("Intervals are 95%: paired bootstrap over prompts for per-image metrics (Wilson with the "
                     "clustering's design effect where every image scored 0 or 1), bootstrap over images and "
                     "Student-t over seed sets for set metrics. Method: docs/statistics.md.")
    return '<ul class="legend muted">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


@dataclass
class _RunStats:
    """One run's statistics and comparison grids for the page."""

    label: str
    analysis: Analysis
    compare: str  # HTML of the comparison grids
    calibrated: str = ""  # HTML of the calibrated comparison (--calibrate), '' when not run


def _stats_sections(stats: Sequence[_RunStats], several: bool) -> dict[str, str]:
    """HTML of the verdict, matched-alignment, comparisons, per-category and comparison-grid sections."""
    out = {"verdict": [], "matched": [], "comparisons": [], "categories": [], "compare": [], "calibrated": []}
    for st in stats:
        head = f"<h3>{_e(st.label)}</h3>" if several else ""
        a = st.analysis
        out["verdict"].append(head + '<ul class="verdict">' + "".join(f"<li>{_e(v)}</li>" for v in verdict(a))
                              + "</ul>")
        if a.matched.empty:
            out["matched"].append(head + '<p class="muted">No cell reaches a CLIP level to match on.</p>')
        else:
            out["matched"].append(head + _table(_display_matched(a.matched)))
        out["comparisons"].append(head + (_table(_display_comparisons(a.comparisons)) if not a.comparisons.empty
                                          else '<p class="muted">No pairs of cells to compare.</p>'))
        if a.by_category is not None and not a.by_category.empty:
            out["categories"].append(head + _category_tables(a.by_category))
        elif not a.paired:
            out["categories"].append(head + '<p class="muted">Per-category results need per_sample.csv, which this '
                                     'run does not have (paired statistics unavailable).</p>')
        else:
            out["categories"].append(head + '<p class="muted">The prompt set has no category columns.</p>')
        out["compare"].append(st.compare or head + '<p class="muted">No saved samples to compare.</p>')
        out["calibrated"].append(head + st.calibrated if st.calibrated else "")
    return {k: calibrated_section(v) if k == "calibrated" else "".join(v) for k, v in out.items()}


def _page(runs: Sequence[Run], labels: Sequence[str], summary: pd.DataFrame, ranking: pd.DataFrame,
          plots: Sequence[tuple[Path, str]], grids: Sequence[Grid], stats: Sequence[_RunStats]) -> str:
    several = len(runs) > 1
    title = "Guidance benchmark: " + ", ".join(labels)
    shown, absent = _display_summary(summary)
    sections = _stats_sections(stats, several)
    warn = "".join(f'<div class="warn bad">{w}</div>' for w in _warnings(runs, labels, summary))
    meta = "".join(_run_meta(r, lbl) for r, lbl in zip(runs, labels))
    configs = "".join(
        f"<h3>{_e(lbl)}</h3><pre>{_json(r.manifest.get('config', {}))}</pre>"
        f"<details><summary>versions</summary><pre>{_json(r.manifest.get('versions', {}))}</pre></details>"
        for r, lbl in zip(runs, labels)
    )
    absent_txt = f'<p class="muted">Not computed: {_e(", ".join(absent))}.</p>' if absent else ""
    ranking_html = matched_html = ""  # sections on metrics the runs did not compute are left out
    if trade_off_computed(summary):
        ranking_html = f"""<h2>Method ranking</h2>
<p class="muted">Per guidance, the scale on its own FID-vs-CLIP Pareto front nearest the ideal corner
(best CLIP and best FID of the table, min-max normalised); rank 1 is nearest. "On overall front": no other
method beats that point on both FID and CLIP score. P(rank 1): share of bootstrap resamples (prompts for CLIP
score, seed sets for FID) in which the method comes first.</p>
{_table(_display_ranking(ranking))}"""
    if TRADE_OFF[0] in summary.columns and summary[TRADE_OFF[0]].notna().any():
        matched_html = f"""<h2>Comparison at matched alignment</h2>
<p class="muted">Each method read where its CLIP score equals the baseline's at each baseline scale, interpolated
linearly along its scale curve ("Guidance Matters", arXiv:2602.22570: compare methods at equal effect, not equal
nominal scale). "not reached": the method's CLIP score stays below the level at every scale; "exceeded at lowest
scale": it is above the level already at its lowest scale.</p>
{sections["matched"]}"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<h2>Verdict</h2>
{sections["verdict"]}
{_legend(runs, summary)}
{meta}
{warn}
<p class="muted">{_e(n_caption(summary))}.</p>
{ranking_html}
<h2>Summary</h2>
{_table(shown)}
{absent_txt}
{matched_html}
<h2>Pairwise comparisons</h2>
<p class="muted">a − b per metric: each scale against its method's lowest, and each method's chosen scale against
the others'. Significant: Holm-adjusted p below 0.05 over the comparisons of that metric.</p>
{sections["comparisons"]}
{sections["calibrated"]}
<h2>Per category</h2>
{sections["categories"]}
<h2>Plots</h2>
{"".join(_img(p, alt, "plot") for p, alt in plots)}
<h2>Comparison grids</h2>
<p class="muted">One row per prompt, same initial noise in every column: what changes along a row is guidance
alone.</p>
{sections["compare"]}
<h2>Samples</h2>
{_grid_html(grids, several)}
<h2>Configuration</h2>
{configs}
</body></html>
"""


def _default_out(run_dirs: Sequence[Path]) -> Path:
    """The run's own dir, or ``reports/compare-<timestamp>`` next to the first run."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    base = Path(run_dirs[0]).resolve().parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def _write_tables(analyses: Sequence[Analysis], labels: Sequence[str] | None, out: Path) -> None:
    """comparisons.csv, matched_alignment.csv and results_by_category.csv (a run column when several)."""
    def joined(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
        present = [(f, lbl) for f, lbl in zip(frames, labels or [None] * len(frames)) if f is not None]
        if not present:
            return None
        if labels is None:
            return present[0][0]
        return pd.concat([f.assign(run=lbl)[["run", *f.columns]] for f, lbl in present], ignore_index=True)

    for name, attr in (("comparisons.csv", "comparisons"), ("matched_alignment.csv", "matched"),
                       ("results_by_category.csv", "by_category")):
        table = joined([getattr(a, attr) for a in analyses])
        if table is not None:
            table.to_csv(out / name, index=False)


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write summary.csv, plots, grids and a self-contained index.html; return the index path."""
    if not run_dirs:
        raise ValueError("build_report needs at least one run directory")
    run_dirs = [Path(d) for d in run_dirs]
    runs = [load_run(d) for d in run_dirs]
    labels = run_labels(runs)
    several = len(runs) > 1
    frames = []
    for run, label in zip(runs, labels):
        frame = run.results.copy()
        if several:
            frame.insert(0, "run", label)
        frames.append(frame)
    analyses = [analyse(run.results, load_per_sample(run.dir)) for run in runs]
    summary = pd.concat([a.summary.assign(run=label) if several else a.summary for a, label in zip(analyses, labels)],
                        ignore_index=True)
    if several:
        summary = summary[["run"] + [c for c in summary.columns if c != "run"]]
    ranking = rank_methods(summary) if several else analyses[0].ranking
    out = Path(out_dir) if out_dir is not None else _default_out(run_dirs)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory for the report")
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    _write_tables(analyses, labels if several else None, out)
    with matplotlib.rc_context({"text.parse_math": False}):  # run ids and prompts are text: '$' is not mathtext
        shown = _plot_summary(summary)
        plots = [(plot_fid_vs_clip(shown, out / "plots" / "fid_vs_clip.png"), "FID versus CLIP score")
                 ] if trade_off_computed(shown) else []
        plots += [
            (plot_metrics_vs_scale(shown, out / "plots" / "metrics_vs_scale.png"), "quality metrics versus scale"),
            (plot_throughput(shown, out / "plots" / "throughput.png"), "throughput per guidance and scale"),
        ]
    grids = []
    for number, (run, label) in enumerate(zip(runs, labels), 1):
        # numbered: labels that differ only in characters safe_name replaces ("my run", "my_run") stay apart
        grids += make_grids(run, label, f"run{number}_{safe_name(label)}__" if several else "", out)
    stats = [_RunStats(label, a, compare_grids_html(run.dir, run.results, best_cells(a.summary, a.ranking),
                                                    label if several else ""), calibrated_html(run.dir))
             for run, label, a in zip(runs, labels, analyses)]
    index = out / "index.html"
    index.write_text(_page(runs, labels, summary, ranking, plots, grids, stats), encoding="utf-8")
    return index


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the report of one or several runs and print the index path."""
    parser = Parser(prog="python -m bench.report.html", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (reports/<run-id>)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: the run dir, or reports/compare-<timestamp>)")
    args = parser.parse_args(argv)
    print(build_report(args.run_dirs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
