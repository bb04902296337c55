"""The paired cluster bootstrap against known answers: coverage, null p-values, proportions, Holm, Wilson."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.stats.analysis import cell_table, paired_data, paired_difference
from bench.stats.bootstrap import (Clustered, bootstrap_p, holm, percentile_interval, prob_best, resample_counts,
                                   wilson)

PROMPTS, SEED_SETS = 20, 3


def paired_frame(rng: np.random.Generator, delta: float, prompt_sd: float = 2.0, noise_sd: float = 1.0) -> pd.DataFrame:
    """Two cells on the same prompts: a shared prompt effect (what pairing cancels), plus noise; cell b is
    higher by ``delta``."""
    effect = rng.normal(0, prompt_sd, PROMPTS)
    rows = []
    for scale, shift in ((1.0, 0.0), (3.0, delta)):
        values = effect[:, None] + shift + rng.normal(0, noise_sd, (PROMPTS, SEED_SETS))
        rows += [{"guidance": "cfg", "scale": scale, "seed_set": k, "index": p, "prompt_index": p, "score": values[p, k]}
                 for p in range(PROMPTS) for k in range(SEED_SETS)]
    return pd.DataFrame(rows)


def run_intervals(delta: float, reps: int = 200, b: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, p) of the paired difference b - a over ``reps`` synthetic data sets."""
    rng = np.random.default_rng(123)
    out = []
    for r in range(reps):
        paired = paired_data(paired_frame(rng, delta), b=b, seed=r)
        stat = paired_difference(paired, "score", ("cfg", 3.0), ("cfg", 1.0))
        out.append((stat["lo"], stat["hi"], stat["p"]))
    return tuple(np.array(v) for v in zip(*out))


def test_coverage_of_the_95_interval_is_near_95_percent() -> None:
    delta = 0.5
    lo, hi, _ = run_intervals(delta)
    coverage = np.mean((lo <= delta) & (delta <= hi))
    assert 0.90 <= coverage <= 0.99, coverage


def test_the_coverage_band_catches_broken_intervals() -> None:
    """An unpaired interval (each cell resampled on its own) or one centred on 0 instead of the estimate
    leaves the band."""
    rng = np.random.default_rng(7)
    delta, unpaired, shifted = 0.5, [], []
    for r in range(200):
        frame = paired_frame(rng, delta)
        table = Clustered.of(frame, "score", ["guidance", "scale"], "prompt_index")
        wa, wb = resample_counts(PROMPTS, 200, 2 * r), resample_counts(PROMPTS, 200, 2 * r + 1)
        d = table.replicates(wb, [1])[:, 0] - table.replicates(wa, [0])[:, 0]
        lo, hi = percentile_interval(d, 0.95, PROMPTS)
        unpaired.append(lo[0] <= delta <= hi[0])
        paired = table.replicates(wa, [1])[:, 0] - table.replicates(wa, [0])[:, 0]
        lo, hi = percentile_interval(paired - (table.means()[1] - table.means()[0]), 0.95, PROMPTS)  # centred on 0
        shifted.append(lo[0] <= delta <= hi[0])
    assert np.mean(unpaired) > 0.99 and np.mean(shifted) < 0.90


def test_p_values_are_near_uniform_under_the_null() -> None:
    _, _, p = run_intervals(0.0)
    assert 0.01 <= np.mean(p < 0.05) <= 0.10
    assert 0.38 <= np.mean(p < 0.5) <= 0.62
    assert np.all((p > 0) & (p <= 1))
    _, _, p_real = run_intervals(1.5, reps=20)
    assert np.mean(p_real < 0.05) > 0.9  # and the test has power where the difference is real


def test_proportion_intervals_stay_inside_zero_one() -> None:
    rng = np.random.default_rng(0)
    rows = [{"guidance": "cfg", "scale": s, "seed_set": k, "index": p, "prompt_index": p,
             "acc": float(rng.random() < rate)} for s, rate in ((1.0, 0.0), (3.0, 0.05), (6.0, 0.97))
            for p in range(8) for k in range(2)]
    frame = pd.DataFrame(rows)
    table = cell_table(paired_data(frame, b=500))
    assert (table["lo"] >= 0).all() and (table["hi"] <= 1).all()
    assert (table["lo"] <= table["mean"]).all() and (table["mean"] <= table["hi"]).all()
    zero = table[table["scale"] == 1.0].iloc[0]
    assert zero["mean"] == 0 and zero["hi"] > 0 and zero["interval"].startswith("wilson")  # never a point


def test_holm_known_values() -> None:
    adjusted = holm([0.01, 0.04, 0.03, float("nan")])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])


def test_wilson_known_value_and_bounds() -> None:
    assert wilson(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson(0.0, 20)
    assert lo == 0 and 0 < hi < 0.2


def test_bootstrap_p_agrees_with_the_interval() -> None:
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.05, 0.15, 0.3):
        d = rng.normal(shift, 0.1, 4000)
        lo, hi = percentile_interval(d, 0.95, 30)
        assert (bootstrap_p(d, 30)[0] < 0.05) == (not lo[0] <= 0 <= hi[0])


def test_prob_best_splits_ties() -> None:
    reps = np.array([[1.0, 2.0, 2.0], [3.0, 1.0, 0.0]])
    assert prob_best(reps) == pytest.approx([0.5, 0.25, 0.25])
    assert prob_best(reps, higher_is_better=False) == pytest.approx([0.5, 0.0, 0.5])


def test_a_metric_with_no_values_gives_no_clusters_not_an_error():
    """A run without FID (a user's model without --reference) still ranks and reports."""
    frame = pd.DataFrame({"guidance": ["cfg", "cfg"], "scale": [1.0, 3.0], "seed_set": [0, 0], "fid": [np.nan, np.nan]})
    clustered = Clustered.of(frame, "fid", ("guidance", "scale"), "seed_set", cells=[("cfg", 1.0), ("cfg", 3.0)])
    assert clustered.sums.shape == (2, 0) and len(clustered.clusters) == 0
