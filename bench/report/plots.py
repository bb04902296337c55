"""The report's plots (matplotlib, no pyplot: no global backend state, Agg canvas on save), each titled
with its n, since FID is biased at small n."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save

from bench.report.format import n_caption, format_scale
from bench.evaluators.registry import declared_columns
from bench.stats import pareto_front, quality_metrics


TRADE_OFF = ("clip_score", "fid")  # the ranking's and the trade-off plot's axes


@dataclass
class _Series:
    label: str
    color: object
    linestyle: str
    marker: str
    data: pd.DataFrame


def _series(summary: pd.DataFrame) -> list[_Series]:
    """One curve per guidance (per run when several): colour by guidance, line style by run."""
    palette = [f"C{i}" for i in range(10)]  # matplotlib's default colour cycle
    guidances = list(dict.fromkeys(summary["guidance"]))
    runs = list(dict.fromkeys(summary["run"])) if "run" in summary.columns else [None]
    styles, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D", "v"]
    out = []
    for ri, run in enumerate(runs):
        for gi, g in enumerate(guidances):
            mask = summary["guidance"] == g
            if run is not None:
                mask &= summary["run"] == run
            data = summary[mask].sort_values("scale")
            if data.empty:
                continue
            label = g if run is None else f"{g} ({run})"
            out.append(_Series(label, palette[gi % 10], styles[ri % 4], markers[ri % 5], data))
    return out


def _yerr(data: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error bars from CI columns; zero where there is no interval."""
    mean = data[metric].to_numpy(float)
    lo = np.nan_to_num(mean - data[f"{metric}_lo"].to_numpy(float), nan=0.0)
    hi = np.nan_to_num(data[f"{metric}_hi"].to_numpy(float) - mean, nan=0.0)
    return np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])


def _save(fig: Figure, path: Path) -> Path:
    """PNG without the Software metadata chunk, so reruns give identical files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def _placeholder(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fid_vs_clip(summary: pd.DataFrame, path: Path) -> Path:
    """GLIDE Fig. 6 style trade-off: x = CLIP score, y = FID, points labelled by scale."""
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for s in _series(summary):
        d = s.data[s.data["clip_score"].notna() & s.data["fid"].notna()]
        if d.empty:
            continue
        drawn = True
        ax.errorbar(
            d["clip_score"], d["fid"], xerr=_yerr(d, "clip_score"), yerr=_yerr(d, "fid"),
            color=s.color, linestyle=s.linestyle, marker=s.marker, capsize=3, label=s.label,
        )
        for _, row in d.iterrows():
            ax.annotate(format_scale(row["scale"]), (row["clip_score"], row["fid"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=8, color=s.color)
    if drawn:
        front = summary[pareto_front(summary)]
        ax.scatter(front["clip_score"], front["fid"], s=160, facecolors="none", edgecolors="0.3",
                   linewidths=1, label="Pareto front")
        ax.set_xlabel("CLIP score (higher is better)")
        ax.set_ylabel("FID (lower is better)")
        ax.text(0.98, 0.02, "better: lower right", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color="0.4")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        _placeholder(ax, "FID or CLIP score not computed in this run")
    ax.set_title(f"FID vs CLIP score across guidance scales (labels: scale)\n{n_caption(summary)}", fontsize=9)
    return _save(fig, path)


def plot_metrics_vs_scale(summary: pd.DataFrame, path: Path) -> Path:
    """Each quality metric against scale with its CI band, one line per guidance."""
    metrics = [m for m in quality_metrics(summary) if summary[m].notna().any()]
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    if not metrics:
        _placeholder(axes[0], "no quality metric computed in this run")
    for ax, m in zip(axes, metrics):
        for s in _series(summary):
            d = s.data[s.data[m].notna()]
            if d.empty:
                continue
            ax.errorbar(d["scale"], d[m], yerr=_yerr(d, m), color=s.color, linestyle=s.linestyle,
                        marker=s.marker, capsize=2, markersize=4, label=s.label)
            if len(d) > 1:
                ax.fill_between(d["scale"], d[f"{m}_lo"], d[f"{m}_hi"], color=s.color, alpha=0.15, lw=0)
        spec = declared_columns()[m]
        ax.set_title(f"{spec.label} ({spec.direction} is better)", fontsize=9)
        ax.set_xlabel("guidance scale")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:  # one legend for all panels, below them, so no curve is hidden
        fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 6), fontsize=8)
    fig.suptitle("Quality metrics vs guidance scale (bands: 95% CI; paired bootstrap over prompts where per-image "
                 f"scores exist, else over seed sets)\n{n_caption(summary)}", fontsize=10)
    return _save(fig, path)


def plot_throughput(summary: pd.DataFrame, path: Path) -> Path:
    """Cost per image: seconds, and network / guide / backward passes, per guidance and scale."""
    keyed = [(s, row) for s in _series(summary) for _, row in s.data.iterrows()]
    rows = [row for _, row in keyed]
    many = len(rows) > 12 or "run" in summary.columns  # then rotate single-line labels
    labels = [f"{s.label}{' ' if many else chr(10)}s={format_scale(r['scale'])}" for s, r in keyed]
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6.0, 0.7 * len(rows) + 2), 7.5), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.bar(x, [r["s_per_img"] for r in rows], color=[s.color for s, _ in keyed])
    ax1.set_ylabel("seconds per image")
    ax1.grid(axis="y", alpha=0.3)
    passes = [("network_passes_per_img", "network"), ("guide_passes_per_img", "guide"),
              ("backward_passes_per_img", "backward")]
    width = 0.8 / len(passes)
    for i, (col, name) in enumerate(passes):
        ax2.bar(x + (i - 1) * width, [r[col] for r in rows], width, label=f"{name} passes", color=f"C{i + 7}")
    ax2.set_ylabel("passes per image")
    ax2.legend(fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(x, labels, rotation=60 if many else 0, ha="right" if many else "center", fontsize=7)
    fig.suptitle(f"Throughput per guidance and scale\n{n_caption(summary)}", fontsize=10)
    return _save(fig, path)
