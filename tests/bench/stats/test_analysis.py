"""Run-level tables against hand-made answers: matched alignment, per-category split, ranking, verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.stats.analysis import analyse, by_category, matched_alignment, paired_data, rank1_share
from bench.stats import rank_methods, summarize
from bench.stats.matched import EXCEEDED, NOT_REACHED, REACHED, first_crossing, interpolate, status
from bench.report.verdict import verdict


def results_of(cells: dict[tuple[str, float], dict[str, float]], seed_sets: int = 2) -> pd.DataFrame:
    """results.csv rows with the same values in every seed set."""
    return pd.DataFrame([{"guidance": g, "scale": s, "seed_set": k, "n_samples": 10, **values}
                         for (g, s), values in cells.items() for k in range(seed_sets)])


def test_first_crossing_hand_made_curve() -> None:
    curve = np.array([[10.0, 20.0, 30.0], [10.0, 30.0, 20.0]])
    seg, frac = first_crossing(curve, np.array([25.0, 25.0]))
    assert seg.tolist() == [1, 0] and frac == pytest.approx([0.5, 0.75])  # the second: first crossing, on the way up
    assert interpolate([1.0, 2.0, 4.0], seg, frac) == pytest.approx([3.0, 1.75])
    assert status(curve[0], 35.0) == NOT_REACHED and status(curve[0], 5.0) == EXCEEDED
    assert status(curve[0], 30.0) == REACHED


def test_matched_alignment_interpolates_fid_and_says_not_reached() -> None:
    results = results_of({
        ("cfg", 1.0): {"clip_score": 10.0, "fid": 50.0}, ("cfg", 2.0): {"clip_score": 20.0, "fid": 40.0},
        ("cfg", 4.0): {"clip_score": 30.0, "fid": 60.0},
        ("apg", 1.0): {"clip_score": 15.0, "fid": 30.0}, ("apg", 3.0): {"clip_score": 25.0, "fid": 50.0},
    })
    results["network_passes_per_img"] = np.where(results["scale"] == 1.0, 10.0, 20.0)  # s = 1 skips a branch
    table = matched_alignment(summarize(results), results, None)
    apg = table[table["guidance"] == "apg"].set_index("level_source")
    assert apg.loc["cfg at scale 1", "status"] == EXCEEDED and math.isnan(apg.loc["cfg at scale 1", "fid"])
    assert apg.loc["cfg at scale 2", "status"] == REACHED
    assert apg.loc["cfg at scale 2", "scale_at"] == pytest.approx(2.0)  # CLIP 20 is half-way from 15 to 25
    assert apg.loc["cfg at scale 2", "fid"] == pytest.approx(40.0)
    assert apg.loc["cfg at scale 2", "network_passes_per_img"] == pytest.approx(15.0)  # cost beside quality
    assert math.isnan(apg.loc["cfg at scale 4", "network_passes_per_img"])
    assert apg.loc["cfg at scale 4", "status"] == NOT_REACHED
    cfg = table[table["guidance"] == "cfg"].set_index("level_source")
    assert cfg["fid"].tolist() == pytest.approx([50.0, 40.0, 60.0])  # the baseline meets itself at its cells
    assert (table.loc[table["status"] == REACHED, "fid_lo"] <= table.loc[table["status"] == REACHED, "fid"]).all()


def test_matched_alignment_bootstrap_brackets_the_point() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for g, scales, slope in (("cfg", (1.0, 3.0, 6.0), 2.0), ("apg", (1.0, 2.0, 4.0), 3.0)):
        for si, s in enumerate(scales):
            rows += [{"guidance": g, "scale": s, "seed_set": k, "prompt_index": p,
                      "clip_score": 20 + slope * si + p % 3 + rng.normal(0, 1)} for p in range(15) for k in range(2)]
    per_sample = pd.DataFrame(rows)
    results = per_sample.groupby(["guidance", "scale", "seed_set"], as_index=False)["clip_score"].mean()
    results["fid"] = 100 - 5 * results.groupby("guidance").cumcount()
    analysis = analyse(results, per_sample, b=300)
    reached = analysis.matched[analysis.matched["status"] == REACHED]
    assert (reached["scale_lo"] <= reached["scale_at"] + 1e-9).all() and (reached["scale_at"] <= reached["scale_hi"] + 1e-9).all()
    assert (reached["fid_lo"] <= reached["fid"]).all() and (reached["fid"] <= reached["fid_hi"]).all()
    assert reached["reached_share"].between(0, 1).all()


def test_per_category_split_matches_hand_means() -> None:
    rows = [{"guidance": "cfg", "scale": s, "seed_set": k, "prompt_index": p,
             "clip_score": (10.0 if p < 4 else 20.0) + s, "Category": "Animals" if p < 4 else "Food",
             "prompt": f"prompt {p}", "file": f"img{p}_{k}_{s}.png"}  # neither is a category
            for s in (1.0, 3.0) for p in range(10) for k in range(3)]
    paired = paired_data(pd.DataFrame(rows), b=200)
    assert list(paired.categories) == ["Category"] and list(paired.metrics) == ["clip_score"]
    table = by_category(paired)
    cell = table.set_index(["category", "scale"])
    assert cell.loc[("Animals", 1.0), "mean"] == pytest.approx(11.0) and cell.loc[("Food", 3.0), "mean"] == pytest.approx(23.0)
    assert cell.loc[("Animals", 1.0), "n"] == 4 and cell.loc[("Food", 1.0), "n"] == 6
    assert cell.loc[("Food", 1.0), "n_images"] == 18
    assert (table["category_column"] == "Category").all()
    assert (table["lo"] <= table["mean"]).all() and (table["mean"] <= table["hi"]).all()


def test_rank1_share_agrees_with_rank_methods_on_the_point_estimates() -> None:
    summary = pd.DataFrame({"guidance": ["a", "a", "a", "b", "b"], "scale": [1.0, 2.0, 3.0, 1.0, 2.0],
                            "clip_score": [0.20, 0.28, 0.30, 0.21, 0.22], "fid": [10.0, 11.0, 30.0, 20.0, 25.0]})
    share = rank1_share(summary["clip_score"].to_numpy()[None], summary["fid"].to_numpy()[None],
                        list(summary["guidance"]))
    assert rank_methods(summary).iloc[0]["guidance"] == "a" and share == {"a": 1.0, "b": 0.0}


def test_analysis_verdict_names_significant_and_not_significant() -> None:
    rng = np.random.default_rng(3)
    effect = rng.normal(0, 3, 20)
    rows = [{"guidance": "cfg", "scale": s, "seed_set": k, "prompt_index": p,
             "clip_score": effect[p] + (4.0 if s == 3.0 else 0.0) + rng.normal(0, 1),
             "acc_identity": float(rng.random() < 0.5)} for s in (1.0, 3.0) for p in range(20) for k in range(3)]
    per_sample = pd.DataFrame(rows)
    results = per_sample.groupby(["guidance", "scale", "seed_set"], as_index=False)[["clip_score", "acc_identity"]].mean()
    analysis = analyse(results, per_sample, b=500)
    text = " ".join(verdict(analysis))
    assert "cfg 3 beats cfg 1 on CLIP score by +" in text and "n=20 prompts x 3 seed sets" in text
    assert "Not significant" in text and "accuracy: identity" in text
    row = analysis.comparisons.set_index("metric").loc["clip_score"]
    assert row["lo"] < 4.0 < row["hi"] and row["significant"]
    without = analyse(results, None)
    assert "Paired statistics unavailable" in " ".join(verdict(without)) and without.cells is None
    assert set(without.comparisons["method"]) == {"paired t over seed sets"}
    assert set(without.comparisons["metric"]) == {"clip_score", "acc_identity"}


def test_set_metric_image_bootstrap_combines_over_seed_sets() -> None:
    results = pd.DataFrame({"guidance": "cfg", "scale": 3.0, "seed_set": [0, 1], "n_samples": 64,
                            "fid": [10.0, 20.0], "fid_boot_lo": [8.0, 17.0], "fid_boot_hi": [13.0, 24.0],
                            "cmmd": [0.5, 0.7], "cmmd_boot_lo": [0.4, 0.6], "cmmd_boot_hi": [0.6, 0.8]})
    analysis = analyse(results, None)
    row = analysis.summary.iloc[0]
    assert row["fid"] == 15.0 and row["fid_boot_lo"] == pytest.approx(15 - math.sqrt(4 + 9) / 2)
    assert row["fid_boot_hi"] == pytest.approx(15 + math.sqrt(9 + 16) / 2)
    assert row["cmmd"] == pytest.approx(0.6) and "cmmd_lo" in analysis.summary.columns  # a set metric summarize lacks
    assert {"fid_lo", "fid_hi", "n_seed_sets"} <= set(analysis.summary.columns)  # existing columns kept


def test_a_set_metric_that_differs_alike_in_every_seed_set_is_not_called_significant() -> None:
    """Density at small n takes few values, so two seed sets can differ by exactly the same amount: zero
    spread is no evidence (a paired t would divide by zero), so no p-value and no significance."""
    results = pd.DataFrame([{"guidance": "cfg", "scale": s, "seed_set": k, "density": d + 0.01 * k + 1e-9 * s * k,
                             "fid": f + k, "clip_score": c + k}
                            for s, d, f, c in ((1.0, 0.5, 10.0, 20.0), (3.0, 0.7, 12.0, 25.0)) for k in (0, 1, 2)])
    table = analyse(results, None).comparisons
    density = table[table["metric"] == "density"]
    assert not density.empty and not density["significant"].any() and density["p"].isna().all()
    fid = table[table["metric"] == "fid"]  # differs alike too (2 in every seed set): same rule
    assert not fid["significant"].any()
    two = analyse(results[results["seed_set"] < 2].assign(fid=lambda f: f["fid"] + f["seed_set"] * f["scale"]), None)
    assert two.comparisons.loc[two.comparisons["metric"] == "fid", "p"].isna().all()  # 2 seed sets: no t-test
