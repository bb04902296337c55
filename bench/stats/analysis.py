"""A run's paired statistics: cell intervals, comparisons, matched alignment, per-category results.

Reads what a run wrote (``results.csv``: one row per cell and seed set; ``per_sample.csv``: one row
per image) and writes ``summary.csv`` (the seed-set summary plus ``<metric>_boot_lo/_boot_hi``
columns), ``comparisons.csv``, ``matched_alignment.csv`` and ``results_by_category.csv``. Per-sample
metrics use the paired cluster bootstrap over prompts (bench/stats/bootstrap.py); set metrics (FID,
KID, CMMD) have no per-image value, so they keep the spread over seed sets (differences paired by
seed set, whose noise every cell shares) beside the image bootstrap that scoring computes per cell.
Without per_sample.csv (older runs) only the seed-set tables are made. docs/statistics.md has the
methods and their assumptions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as _sps

from bench.evaluators.registry import higher_is_better, label, per_image_columns, set_columns
from bench.stats import mean_ci, rank_methods, summarize
from bench.stats.bootstrap import (DEFAULT_B, DEFAULT_SEED, Clustered, bootstrap_p, design_wilson, holm,
                                   percentile_interval, resample_counts)
from bench.stats.matched import REACHED, first_crossing, interpolate, status
from guidance.effective_scale import EFFECTIVE_SCALE

__all__ = [
    "PER_SAMPLE_FILE", "Analysis", "PairedData", "load_per_sample", "paired_data", "cell_table", "paired_difference",
    "comparisons", "vs_rank1", "ranking_with_confidence", "best_cells", "rank1_share", "matched_alignment",
    "by_category", "analyse", "write_analysis", "higher_is_better",
]

PER_SAMPLE_FILE = "per_sample.csv"
CELL = ("guidance", "scale")
CLUSTER = "prompt_index"
REQUIRED = ("guidance", "scale", "seed_set", "prompt_index")
ID_COLUMNS = frozenset({"run", "guidance", "scale", "seed_set", "seed", "noise_seed", "index", "prompt_index", "prompt",
                        "text", "caption", "label", "sample", "sample_index", "batch", "path", "file_path"})
SET_METRICS = set_columns()
PER_IMAGE_METRICS = per_image_columns()  # results.csv holds their means
ALIGNMENT = "clip_score"  # the axis methods are matched on
COST_COLUMNS = ("network_passes_per_img", "backward_passes_per_img", "s_per_img")  # shown beside quality
BASELINE = "cfg"  # the method whose scales define the matched alignment levels, when present
WILSON = "wilson (design effect)"
BOOTSTRAP = "paired bootstrap over prompts"
SEED_T = "paired t over seed sets"
# a t-test on 2 seed sets (1 degree of freedom) rests wholly on the normality of two differences, which
# set metrics that take few values (precision, density, coverage at small n) break: no p-value below 3
MIN_SEED_SETS_FOR_T = 3


# --------------------------------------------------------------------------- inputs


def load_per_sample(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's per_sample.csv, or None when the run has none (made before it was written)."""
    path = Path(run_dir) / PER_SAMPLE_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed {PER_SAMPLE_FILE} ({e}); delete it, or re-run the run's `invoke bench` command (it resumes and re-scores)") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks the column(s) {missing}; found {list(frame.columns)}")
    try:
        frame["scale"] = pd.to_numeric(frame["scale"]).astype(float)
        frame["prompt_index"] = pd.to_numeric(frame["prompt_index"]).astype(int)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: scale and prompt_index must be numbers") from None
    frame["guidance"] = frame["guidance"].astype(str)
    return frame


def per_sample_metrics(frame: pd.DataFrame) -> list[str]:
    """Numeric per-image columns (CLIP score, accuracies, any per-image score); the effective scale is a
    property of the sampling, not a score, and is summarised apart (`effective_scales`)."""
    return [c for c in frame.columns if c not in ID_COLUMNS and c != EFFECTIVE_SCALE
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def effective_scales(per_sample: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per cell: the mean over its samples of each sample's effective CFG scale (its trajectory mean),
    their standard deviation and how many samples had one (None when the run recorded none)."""
    if per_sample is None or EFFECTIVE_SCALE not in per_sample.columns:
        return None
    grouped = per_sample.groupby(list(CELL), sort=False)[EFFECTIVE_SCALE]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    return table.rename(columns={"mean": EFFECTIVE_SCALE, "std": f"{EFFECTIVE_SCALE}_sd",
                                 "count": f"{EFFECTIVE_SCALE}_n"})


def category_columns(frame: pd.DataFrame) -> list[str]:
    """Text columns that describe the prompt (PartiPrompts Category, GenEval tag, emoji group...): one
    value per prompt, and fewer values than prompts (else it names prompts, not categories)."""
    out = []
    n_prompts = frame[CLUSTER].nunique()
    for c in frame.columns:
        if c in ID_COLUMNS or pd.api.types.is_numeric_dtype(frame[c]):
            continue
        values = frame[c].fillna("(none)").astype(str)
        if values.groupby(frame[CLUSTER]).nunique().max() == 1 and values.nunique() < max(n_prompts, 2):
            out.append(c)
    return out


def set_metrics(results: pd.DataFrame) -> list[str]:
    """Metrics computed once per cell and seed set over its whole image set."""
    named = [m for m in SET_METRICS if m in results.columns and pd.to_numeric(results[m], errors="coerce").notna().any()]
    booted = [c[: -len("_boot_lo")] for c in results.columns if c.endswith("_boot_lo")]
    return named + [m for m in booted if m not in named and m in results.columns]


# --------------------------------------------------------------------------- paired data


@dataclass
class PairedData:
    """Per-sample metrics of one run as clustered tables on one prompt axis, and the resample weights
    every cell shares."""

    cells: list[tuple[str, float]]
    clusters: np.ndarray
    metrics: dict[str, Clustered]
    proportions: set[str]
    categories: dict[str, np.ndarray]  # category column -> category of each cluster
    n_seed_sets: int
    weights: np.ndarray  # [B, P]
    seed: int
    confidence: float
    _reps: dict[str, np.ndarray] = field(default_factory=dict)

    def reps(self, metric: str) -> np.ndarray:
        """Bootstrap cell means [B, C] of a metric (computed once)."""
        if metric not in self._reps:
            self._reps[metric] = self.metrics[metric].replicates(self.weights)
        return self._reps[metric]

    @property
    def n_prompts(self) -> int:
        return len(self.clusters)


def paired_data(per_sample: pd.DataFrame, cells: Sequence[tuple[str, float]] = (), b: int = DEFAULT_B,
                seed: int = DEFAULT_SEED, confidence: float = 0.95) -> PairedData | None:
    """Build the clustered tables; ``cells`` fixes their order (cells only per_sample has come last)."""
    if per_sample is None or per_sample.empty:
        return None
    present = [tuple(k) for k in per_sample[list(CELL)].drop_duplicates().itertuples(index=False)]
    order = [c for c in cells if c in set(present)] + [c for c in present if c not in set(cells)]
    clusters = np.sort(per_sample[CLUSTER].unique())
    metrics = {m: Clustered.of(per_sample, m, CELL, CLUSTER, cells=order, clusters=clusters)
               for m in per_sample_metrics(per_sample)}
    proportions = {m for m in metrics if set(per_sample[m].dropna().unique()) <= {0, 1}}
    first = per_sample.drop_duplicates(CLUSTER).set_index(CLUSTER)
    categories = {c: first[c].reindex(clusters).fillna("(none)").astype(str).to_numpy()
                  for c in category_columns(per_sample)}
    return PairedData(order, clusters, metrics, proportions, categories, int(per_sample["seed_set"].nunique()),
                      resample_counts(len(clusters), b, seed), seed, confidence)


def _interval_rows(clustered: Clustered, reps: np.ndarray, proportion: bool, confidence: float) -> list[dict]:
    """Mean, interval and counts per cell; a proportion whose bootstrap interval collapses to a point
    (every image 0, or every resample equal) gets the design-effect Wilson interval instead."""
    means = clustered.means()
    n_clusters = int((clustered.counts.sum(0) > 0).sum())
    lo, hi = percentile_interval(reps, confidence, n_clusters)
    var = np.nanvar(reps, axis=0) if len(reps) > 1 else np.full(len(means), np.nan)
    rows = []
    for i in range(len(clustered.cells)):
        n_prompts, n_images = clustered.cluster_counts(i)
        row = {"mean": means[i], "lo": lo[i], "hi": hi[i], "interval": BOOTSTRAP, "n": n_prompts, "n_images": n_images}
        if n_prompts < 2:  # one prompt: resampling it says nothing about the spread
            row["lo"], row["hi"], row["interval"] = math.nan, math.nan, "none (one prompt)"
        if proportion and n_images and not (row["hi"] > row["lo"]):
            row["lo"], row["hi"] = design_wilson(means[i], var[i], n_images, n_prompts, confidence)
            row["interval"] = WILSON
        rows.append(row)
    return rows


def cell_table(paired: PairedData) -> pd.DataFrame:
    """Tidy per-sample metric intervals per cell: guidance, scale, metric, mean, lo, hi, interval, n..."""
    rows = []
    for m, clustered in paired.metrics.items():
        for (g, s), row in zip(clustered.cells, _interval_rows(clustered, paired.reps(m), m in paired.proportions,
                                                               paired.confidence)):
            rows.append({"guidance": g, "scale": s, "metric": m, **row, "n_seed_sets": paired.n_seed_sets})
    return pd.DataFrame(rows, columns=["guidance", "scale", "metric", "mean", "lo", "hi", "interval", "n", "n_images",
                                       "n_seed_sets"])


# --------------------------------------------------------------------------- summary


def _combine_boot(cell: pd.DataFrame, m: str) -> tuple[float, float]:
    """Image-bootstrap interval of a set metric's seed-set mean from each seed set's own interval:
    each side's half-widths add in quadrature over independent seed sets, divided by their number."""
    values = pd.to_numeric(cell[m], errors="coerce")
    lo = pd.to_numeric(cell[f"{m}_boot_lo"], errors="coerce")
    hi = pd.to_numeric(cell[f"{m}_boot_hi"], errors="coerce")
    ok = values.notna() & lo.notna() & hi.notna()
    if not ok.any():
        return math.nan, math.nan
    k = int(ok.sum())
    mean = float(values[ok].mean())
    down = math.sqrt(float(((values - lo)[ok].clip(lower=0) ** 2).sum())) / k
    up = math.sqrt(float(((hi - values)[ok].clip(lower=0) ** 2).sum())) / k
    return mean - down, mean + up


def full_summary(results: pd.DataFrame, cells: pd.DataFrame | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """summarize()'s table plus, per cell, set metrics it does not know (CMMD, precision...) with
    their seed-set intervals, ``<m>_boot_lo/_boot_hi`` (images bootstrap for set metrics, paired
    prompt bootstrap for per-sample ones) and ``n_prompts``. Existing columns are unchanged."""
    summary = summarize(results, confidence)
    keys = [k for k in ("run", *CELL) if k in summary.columns]
    extra: dict[tuple, dict[str, float]] = {}
    for key, cell in results.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = extra.setdefault(key, {})
        for m in set_metrics(results):
            if m not in summary.columns:
                row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean_ci(pd.to_numeric(cell[m], errors="coerce"), confidence)
            if f"{m}_boot_lo" in cell.columns and f"{m}_boot_hi" in cell.columns:
                row[f"{m}_boot_lo"], row[f"{m}_boot_hi"] = _combine_boot(cell, m)
    if cells is not None and not cells.empty and "run" not in keys:
        for (g, s, m), group in cells.groupby(["guidance", "scale", "metric"], sort=False):
            row = extra.setdefault((g, s), {})
            first = group.iloc[0]
            row[f"{m}_boot_lo"], row[f"{m}_boot_hi"] = float(first["lo"]), float(first["hi"])
            row["n_prompts"] = float(first["n"])
    if not extra:
        return summary
    add = pd.DataFrame([{**dict(zip(keys, k)), **v} for k, v in extra.items()])
    add = add[keys + [c for c in add.columns if c not in keys and c not in summary.columns]]
    return summary.merge(add, on=keys, how="left")


# --------------------------------------------------------------------------- ranking


def _seed_set_reps(results: pd.DataFrame, metric: str, cells: Sequence[tuple], b: int, seed: int) -> np.ndarray:
    """Cell means of a results.csv metric under resampled seed sets (same draw for every cell) [B, C]."""
    if metric not in results.columns:
        return np.full((b, len(cells)), np.nan)
    frame = results.assign(**{metric: pd.to_numeric(results[metric], errors="coerce")})
    clustered = Clustered.of(frame, metric, CELL, "seed_set", cells=cells)
    if len(clustered.clusters) == 0:
        return np.full((b, len(cells)), np.nan)
    return clustered.replicates(resample_counts(len(clustered.clusters), b, seed + 1))


def rank1_share(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Share of replicates [B, C] in which each group is rank 1 under rank_methods' rule: nearest to
    the ideal corner (best x, best y over the table, min-max normalised) at its best cell. The nearest
    cell of a group is never dominated within it, so its own-front filter changes nothing here."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    valid = np.isfinite(x) & np.isfinite(y)

    def norm(v: np.ndarray) -> np.ndarray:
        vv = np.where(valid, v, np.nan)
        with warnings.catch_warnings():  # a replicate with no valid cell: all-NaN, handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(vv, 1, keepdims=True), np.nanmax(vv, 1, keepdims=True)
        span = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(span > 0, (v - lo) / span, 0.0)

    dist = np.where(valid, np.hypot(1.0 - norm(x), norm(y)), np.inf)
    names = list(dict.fromkeys(groups))
    per_group = np.stack([dist[:, [i for i, g in enumerate(groups) if g == name]].min(1) for name in names], 1)
    winner = np.argmin(per_group, 1)
    decided = np.isfinite(per_group.min(1))
    total = max(int(decided.sum()), 1)
    return {name: float(((winner == i) & decided).sum()) / total if decided.any() else math.nan
            for i, name in enumerate(names)}


def ranking_with_confidence(summary: pd.DataFrame, results: pd.DataFrame, paired: PairedData | None,
                            b: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """rank_methods' table plus ``p_rank1``: how often each method is rank 1 when the data are
    resampled (prompts for CLIP score when per_sample.csv exists, else seed sets; seed sets for FID)."""
    ranking = rank_methods(summary)
    cells = [(str(g), float(s)) for g, s in zip(summary["guidance"], summary["scale"])]
    if paired is not None and ALIGNMENT in paired.metrics:
        order = {c: i for i, c in enumerate(paired.cells)}
        x = np.stack([paired.reps(ALIGNMENT)[:, order[c]] if c in order else np.full(len(paired.weights), np.nan)
                      for c in cells], 1)
        b = len(x)
    else:
        x = _seed_set_reps(results, ALIGNMENT, cells, b, seed)
    y = _seed_set_reps(results, "fid", cells, b, seed)
    share = rank1_share(x, y, [g for g, _ in cells])
    ranking["p_rank1"] = ranking["guidance"].map(share).astype(float)
    return ranking


def best_cells(summary: pd.DataFrame, ranking: pd.DataFrame) -> list[tuple[str, float]]:
    """Each method's chosen cell in ranking order: its trade-off best scale, else (no FID or no CLIP
    score) its cell with the highest CLIP score."""
    out = []
    for _, row in ranking.iterrows():
        g = str(row["guidance"])
        if pd.notna(row["best_scale"]):
            out.append((g, float(row["best_scale"])))
            continue
        own = summary[summary["guidance"] == g]
        if ALIGNMENT in own.columns and own[ALIGNMENT].notna().any():
            out.append((g, float(own.loc[own[ALIGNMENT].idxmax(), "scale"])))
    return out


# --------------------------------------------------------------------------- comparisons


def comparison_pairs(summary: pd.DataFrame, ranking: pd.DataFrame) -> list[tuple[str, tuple, tuple]]:
    """(kind, cell a, cell b): every scale against its method's lowest, and every method's chosen
    cell against every other's (the better-ranked one as a)."""
    pairs = []
    for g, group in summary.groupby("guidance", sort=False):
        scales = sorted(float(s) for s in group["scale"])
        pairs += [("vs lowest scale", (str(g), s), (str(g), scales[0])) for s in scales[1:]]
    bests = best_cells(summary, ranking)
    pairs += [("best vs best", a, b) for i, a in enumerate(bests) for b in bests[i + 1:]]
    return pairs


def _paired_t(results: pd.DataFrame, metric: str, a: tuple, b: tuple, confidence: float) -> dict | None:
    """Difference of a set metric between two cells, paired by seed set (same noise in both)."""
    def values(cell: tuple) -> pd.Series:
        rows = results[(results["guidance"] == cell[0]) & (results["scale"] == cell[1])]
        return pd.to_numeric(rows.set_index("seed_set")[metric], errors="coerce")

    va, vb = values(a), values(b)
    common = va.index.intersection(vb.index)
    d = (va[common] - vb[common]).dropna()
    if d.empty:
        return None
    mean, lo, hi = mean_ci(d, confidence)
    k = len(d)
    sem = float(d.std(ddof=1)) / math.sqrt(k) if k > 1 else math.nan
    scale = max(float(va[common].abs().mean()), float(vb[common].abs().mean()), 1e-12)
    if k < MIN_SEED_SETS_FOR_T:
        p = math.nan
    elif sem <= 1e-6 * scale:  # every seed set differs alike (a discrete metric at small n): no spread, no test
        p, lo, hi = (1.0, lo, hi) if mean == 0 else (math.nan, math.nan, math.nan)
    else:
        p = float(2 * _sps.t.sf(abs(mean) / sem, df=k - 1))
    return {"a_mean": float(va[common].mean()), "b_mean": float(vb[common].mean()), "diff": mean, "lo": lo, "hi": hi,
            "p": p, "method": SEED_T, "n_prompts": math.nan, "n_seed_sets": k}


def paired_difference(paired: PairedData, metric: str, a: tuple, b: tuple) -> dict | None:
    """Difference of a per-sample metric between two cells over the prompts both have, paired."""
    clustered = paired.metrics[metric]
    order = {c: i for i, c in enumerate(clustered.cells)}
    if a not in order or b not in order:
        return None
    ia, ib = order[a], order[b]
    common = (clustered.counts[ia] > 0) & (clustered.counts[ib] > 0)
    n = int(common.sum())
    if n < 2:  # one shared prompt: no spread to resample
        return None
    point = clustered.replicates(np.ones((1, len(clustered.clusters))), [ia, ib], common)[0]
    reps = clustered.replicates(paired.weights, [ia, ib], common)
    diff = reps[:, 0] - reps[:, 1]
    lo, hi = percentile_interval(diff, paired.confidence, n)
    return {"a_mean": point[0], "b_mean": point[1], "diff": point[0] - point[1], "lo": lo[0], "hi": hi[0],
            "p": float(bootstrap_p(diff, n)[0]), "method": BOOTSTRAP, "n_prompts": n, "n_seed_sets": paired.n_seed_sets}


COMPARISON_COLUMNS = ["metric", "kind", "a_guidance", "a_scale", "b_guidance", "b_scale", "a_mean", "b_mean", "diff",
                      "lo", "hi", "p", "p_holm", "significant", "better", "method", "n_prompts", "n_seed_sets"]


def comparisons(summary: pd.DataFrame, ranking: pd.DataFrame, results: pd.DataFrame, paired: PairedData | None,
                confidence: float = 0.95) -> pd.DataFrame:
    """Pairwise differences (a - b) with intervals and p-values; Holm's adjustment over each metric's
    rows; ``better`` names the significantly better cell (a or b), if any."""
    pairs = comparison_pairs(summary, ranking)
    rows = []
    per_sample = list(paired.metrics) if paired is not None else []
    by_seed_set = set_metrics(results)
    if paired is None:  # an older run: its per-image metrics' seed-set means, paired by seed set like FID
        by_seed_set = [m for m in PER_IMAGE_METRICS if m in results.columns
                       and pd.to_numeric(results[m], errors="coerce").notna().any()] + by_seed_set
    for m in per_sample + [m for m in by_seed_set if m not in per_sample]:
        for kind, a, b in pairs:
            stat = paired_difference(paired, m, a, b) if m in per_sample else _paired_t(results, m, a, b, confidence)
            if stat is not None:
                rows.append({"metric": m, "kind": kind, "a_guidance": a[0], "a_scale": a[1], "b_guidance": b[0],
                             "b_scale": b[1], **stat})
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for _, idx in table.groupby("metric", sort=False).groups.items():
        table.loc[idx, "p_holm"] = holm(table.loc[idx, "p"].to_numpy(float))
    table["significant"] = table["p_holm"] < 1.0 - confidence
    up = table["diff"] > 0
    wins_a = np.where(table["metric"].map(higher_is_better), up, ~up)
    table["better"] = np.where(table["significant"], np.where(wins_a, "a", "b"), "")
    return table[COMPARISON_COLUMNS]


def vs_rank1(ranking: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Per ranking row, how its chosen cell compares with rank 1's, metric by metric: "worse" /
    "better" where Holm-significant, "n.s." where not ("" for rank 1 itself)."""
    out = []
    if ranking.empty or table.empty:
        return [""] * len(ranking)
    top = ranking.iloc[0]["guidance"]
    best = table[table["kind"] == "best vs best"]
    for _, row in ranking.iterrows():
        g = row["guidance"]
        rows = best[((best["a_guidance"] == top) & (best["b_guidance"] == g))
                    | ((best["a_guidance"] == g) & (best["b_guidance"] == top))]
        parts = []
        for _, r in rows.iterrows():
            own = "a" if r["a_guidance"] == g else "b"
            verdict = "n.s." if not r["better"] else ("better" if r["better"] == own else "worse")
            parts.append(f"{label(r['metric'])}: {verdict}")
        out.append("" if g == top else "; ".join(parts))
    return out


# --------------------------------------------------------------------------- matched alignment


def _cell_interval(summary_rows: pd.DataFrame, m: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-cell interval half-widths (below, above) of a set metric: the image bootstrap when the run
    has it, else the Student-t interval over seed sets."""
    values = summary_rows[m].to_numpy(float)
    for lo_col, hi_col, source in ((f"{m}_boot_lo", f"{m}_boot_hi", "images bootstrap"),
                                   (f"{m}_lo", f"{m}_hi", "t over seed sets")):
        if lo_col in summary_rows.columns and summary_rows[lo_col].notna().any():
            return (np.nan_to_num(values - summary_rows[lo_col].to_numpy(float)),
                    np.nan_to_num(summary_rows[hi_col].to_numpy(float) - values), source)
    return np.zeros(len(values)), np.zeros(len(values)), "none"


def matched_alignment(summary: pd.DataFrame, results: pd.DataFrame, paired: PairedData | None,
                      baseline: str | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Per method, its set metrics (FID, KID, CMMD, precision, recall...) where its CLIP score equals
    the baseline's at each of the baseline's scales, linearly interpolated along its scale curve.

    Intervals: the CLIP curves and levels are re-read in every bootstrap replicate (so where a method
    reaches a level is uncertain), and the set metric is interpolated from cell values at each
    replicate's position; that spread is added in quadrature to the interpolated per-cell interval of
    the metric itself, which has no per-prompt replicates.
    """
    columns = ["clip_level", "level_source", "guidance", "status", "scale_at", "scale_lo", "scale_hi", "reached_share"]
    costs = [c for c in COST_COLUMNS if c in summary.columns and summary[c].notna().any()]
    columns += costs
    metrics = [m for m in set_metrics(results) if m in summary.columns and summary[m].notna().any()]
    columns += [c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi", f"{m}_interval")]
    if ALIGNMENT not in summary.columns or summary[ALIGNMENT].isna().all():
        return pd.DataFrame(columns=columns)
    guidances = list(dict.fromkeys(summary["guidance"].astype(str)))
    baseline = baseline or (BASELINE if BASELINE in guidances else guidances[0])
    use_reps = paired is not None and ALIGNMENT in paired.metrics
    order = {c: i for i, c in enumerate(paired.cells)} if use_reps else {}
    alpha_n = paired.n_prompts if use_reps else None

    def curve(g: str) -> tuple[pd.DataFrame, np.ndarray | None]:
        """A method's cells by scale (CLIP score: the per-image mean its replicates scatter around)."""
        rows = summary[(summary["guidance"] == g) & summary[ALIGNMENT].notna()].sort_values("scale")
        if not use_reps:
            return rows, None
        cols = [order.get((g, float(s))) for s in rows["scale"]]
        reps, means = paired.reps(ALIGNMENT), paired.metrics[ALIGNMENT].means()
        rows = rows.assign(**{ALIGNMENT: [means[c] if c is not None else np.nan for c in cols]})
        return rows, np.stack([reps[:, c] if c is not None else np.full(len(reps), np.nan) for c in cols], 1)

    base_rows, base_reps = curve(baseline)
    out = []
    for li, (_, base) in enumerate(base_rows.iterrows()):
        level = float(base[ALIGNMENT])
        level_reps = base_reps[:, li] if base_reps is not None else None
        for g in guidances:
            rows, reps = curve(g)
            points = rows[ALIGNMENT].to_numpy(float)
            seg, frac = first_crossing(points[None, :], np.array([level]))
            row = {"clip_level": level, "level_source": f"{baseline} at scale {base['scale']:g}", "guidance": g,
                   "status": status(points, level), "scale_at": interpolate(rows["scale"].to_numpy(float), seg, frac)[0]}
            seg_b = frac_b = None
            if reps is not None:
                seg_b, frac_b = first_crossing(reps, level_reps)
                reached = seg_b >= 0
                row["reached_share"] = float(reached.mean())
                scale_b = interpolate(rows["scale"].to_numpy(float), seg_b, frac_b)
                row["scale_lo"], row["scale_hi"] = (v[0] for v in percentile_interval(scale_b, confidence, alpha_n))
            for c in costs:  # what the method pays at that alignment, between its neighbouring scales' costs
                row[c] = interpolate(rows[c].to_numpy(float), seg, frac)[0]
            for m in metrics:
                values = rows[m].to_numpy(float)
                below, above, source = _cell_interval(rows, m)
                point = interpolate(values, seg, frac)[0]
                hl, hh = interpolate(below, seg, frac)[0], interpolate(above, seg, frac)[0]
                ql = qh = point
                if seg_b is not None:
                    lo_b, hi_b = percentile_interval(interpolate(values, seg_b, frac_b), confidence, alpha_n)
                    ql, qh = (lo_b[0], hi_b[0]) if np.isfinite(lo_b[0]) else (point, point)
                row[m] = point
                row[f"{m}_lo"] = point - math.hypot(max(point - ql, 0.0), hl)
                row[f"{m}_hi"] = point + math.hypot(max(qh - point, 0.0), hh)
                row[f"{m}_interval"] = source + (" + CLIP-level bootstrap" if seg_b is not None else "")
            if row["status"] != REACHED:
                for m in metrics:
                    row[m] = row[f"{m}_lo"] = row[f"{m}_hi"] = math.nan
                row["scale_at"] = row["scale_lo"] = row["scale_hi"] = math.nan
                for c in costs:
                    row[c] = math.nan
            out.append(row)
    return pd.DataFrame(out, columns=columns)


# --------------------------------------------------------------------------- categories


CATEGORY_COLUMNS = ["category_column", "category", "guidance", "scale", "metric", "mean", "lo", "hi", "n", "n_images",
                    "interval"]


def by_category(paired: PairedData) -> pd.DataFrame:
    """Per-sample metrics per prompt category, bootstrapping that category's prompts (paired across
    cells: one draw per category, shared by every cell)."""
    rows = []
    for col, cats in paired.categories.items():
        for ci, cat in enumerate(sorted(set(cats))):
            mask = cats == cat
            weights = resample_counts(int(mask.sum()), len(paired.weights), paired.seed + 1 + ci)
            for m, clustered in paired.metrics.items():
                sub = clustered.subset(mask)
                stats = _interval_rows(sub, sub.replicates(weights), m in paired.proportions, paired.confidence)
                for (g, s), stat in zip(sub.cells, stats):
                    if stat["n_images"]:
                        rows.append({"category_column": col, "category": cat, "guidance": g, "scale": s, "metric": m,
                                     **stat})
    return pd.DataFrame(rows, columns=CATEGORY_COLUMNS)


# --------------------------------------------------------------------------- one run


@dataclass
class Analysis:
    """Every table of one run's statistics."""

    summary: pd.DataFrame
    ranking: pd.DataFrame
    comparisons: pd.DataFrame
    matched: pd.DataFrame
    cells: pd.DataFrame | None  # per-sample cell intervals (None without per_sample.csv)
    by_category: pd.DataFrame | None
    n_prompts: int | None
    n_seed_sets: int
    b: int
    confidence: float

    @property
    def paired(self) -> bool:
        return self.cells is not None


def analyse(results: pd.DataFrame, per_sample: pd.DataFrame | None, b: int = DEFAULT_B, seed: int = DEFAULT_SEED,
            confidence: float = 0.95) -> Analysis:
    """All tables of one run from its results.csv rows and (if any) per_sample.csv rows."""
    if "run" in results.columns:
        raise ValueError("analyse takes one run; call it once per run directory")
    base = summarize(results, confidence)
    cells = [(str(g), float(s)) for g, s in zip(base["guidance"], base["scale"])]
    paired = paired_data(per_sample, cells, b, seed, confidence) if per_sample is not None else None
    table = cell_table(paired) if paired is not None else None
    summary = full_summary(results, table, confidence)
    scales = effective_scales(per_sample)
    if scales is not None and "run" not in summary.columns:
        summary = summary.merge(scales, on=list(CELL), how="left")
    ranking = ranking_with_confidence(summary, results, paired, b, seed)
    n_seed_sets = int(results["seed_set"].nunique()) if "seed_set" in results.columns else 1
    pairs = comparisons(summary, ranking, results, paired, confidence)
    ranking["vs_rank1"] = vs_rank1(ranking, pairs)
    return Analysis(
        summary=summary, ranking=ranking, comparisons=pairs,
        matched=matched_alignment(summary, results, paired, confidence=confidence), cells=table,
        by_category=by_category(paired) if paired is not None and paired.categories else None,
        n_prompts=paired.n_prompts if paired is not None else None, n_seed_sets=n_seed_sets, b=b,
        confidence=confidence)


def write_analysis(run_dir: str | Path, out_dir: str | Path | None = None, results: pd.DataFrame | None = None,
                   b: int = DEFAULT_B) -> Analysis:
    """Analyse a run directory and write summary.csv, comparisons.csv, matched_alignment.csv and (with
    per-sample categories) results_by_category.csv into ``out_dir`` (default: the run directory)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    results = pd.read_csv(run_dir / "results.csv") if results is None else results
    analysis = analyse(results, load_per_sample(run_dir), b=b)
    out.mkdir(parents=True, exist_ok=True)
    analysis.summary.to_csv(out / "summary.csv", index=False)
    analysis.comparisons.to_csv(out / "comparisons.csv", index=False)
    analysis.matched.to_csv(out / "matched_alignment.csv", index=False)
    if analysis.by_category is not None:
        analysis.by_category.to_csv(out / "results_by_category.csv", index=False)
    return analysis
