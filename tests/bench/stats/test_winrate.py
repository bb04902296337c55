"""Paired win rate and mean difference (bench.stats.winrate): ties split, the metric's direction, pairing by
seed set and sample index, and intervals and p-values that behave at the extremes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.stats.winrate import compare_cells, paired_comparison, win_shares


def test_win_shares_split_ties_follow_the_direction_and_skip_nan():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([0.0, 2.0, 4.0, 1.0])
    assert np.array_equal(win_shares(a, b)[:3], [1.0, 0.5, 0.0]) and math.isnan(win_shares(a, b)[3])
    assert np.array_equal(win_shares(a, b, higher_is_better=False)[:3], [0.0, 0.5, 1.0])


def test_point_estimates_by_hand_and_symmetry():
    a, b = np.array([1.0, 2.0, 3.0, 3.0]), np.array([0.0, 2.0, 4.0, 1.0])
    clusters = np.array([0, 1, 2, 3])
    ab, ba = paired_comparison(a, b, clusters), paired_comparison(b, a, clusters)
    assert ab["win_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4) and ab["diff"] == pytest.approx(0.5)
    assert ab["win_rate"] + ba["win_rate"] == pytest.approx(1.0) and ab["diff"] == pytest.approx(-ba["diff"])
    assert (ab["n"], ab["n_prompts"]) == (4, 4)
    assert ab["win_lo"] <= ab["win_rate"] <= ab["win_hi"] and ab["diff_lo"] <= ab["diff"] <= ab["diff_hi"]


def test_clear_winner_is_significant_and_a_coin_flip_is_not():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(40), 2)
    base = rng.normal(size=80)
    clear = paired_comparison(base + 1.0, base, clusters)
    assert clear["win_rate"] == 1.0 and clear["win_p"] < 0.01 and clear["diff_p"] < 0.01  # the floor: 1 / (B + 1), t-mapped
    assert 0.0 < clear["win_lo"] < 1.0 and clear["win_hi"] == 1.0  # Wilson over prompts: the bootstrap collapses
    noise = paired_comparison(base + rng.normal(size=80), base, clusters)
    assert noise["win_lo"] < 0.5 < noise["win_hi"] and noise["win_p"] > 0.05


def test_prompt_clusters_widen_the_interval():
    """The same pairs counted as 40 prompts x 2 or as 80 prompts: correlated pairs within a prompt must not
    shrink the interval the way independent ones do."""
    rng = np.random.default_rng(1)
    per_prompt = rng.normal(size=40)
    diff = np.repeat(per_prompt, 2) + 0.01 * rng.normal(size=80)
    a, b = diff, np.zeros(80)
    grouped = paired_comparison(a, b, np.repeat(np.arange(40), 2))
    apart = paired_comparison(a, b, np.arange(80))
    assert grouped["diff_hi"] - grouped["diff_lo"] > 1.2 * (apart["diff_hi"] - apart["diff_lo"])


def test_nan_pairs_are_left_out_and_one_prompt_has_no_interval():
    out = paired_comparison(np.array([1.0, np.nan]), np.array([0.0, 1.0]), np.array([0, 0]))
    assert out["n"] == 1 and out["win_rate"] == 1.0 and math.isnan(out["win_lo"]) and math.isnan(out["win_p"])


def test_compare_cells_pairs_by_seed_set_and_index_whatever_the_row_order():
    rows = []
    for g, shift in (("apg", 1.0), ("cfg", 0.0)):
        for seed_set in (0, 1):
            for index in range(6):
                rows.append({"guidance": g, "scale": 6.0 if g == "apg" else 3.0, "seed_set": seed_set, "index": index,
                             "prompt_index": index // 2, "clip_score": index + seed_set * 10 + shift})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    out = compare_cells(frame, ("apg", 6.0), ("cfg", 3.0), "clip_score")
    assert out["n"] == 12 and out["n_prompts"] == 3 and out["win_rate"] == 1.0 and out["diff"] == pytest.approx(1.0)
    lower = compare_cells(frame, ("apg", 6.0), ("cfg", 3.0), "clip_score", higher_is_better=False)
    assert lower["win_rate"] == 0.0
