"""The metric registry (bench/evaluators/registry.py): every declaration is complete, bad ones are refused,
and a metric added in one module reaches config validation, scoring, per_sample.csv, the summary, the
labels and the directions without any other file naming it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from bench.evaluators import FEATURE_NETS, METRICS, Column, PerImageMetric, ScoringBatch, SetMetric
from bench.evaluators import registry
from bench.evaluators.psnr import PSNRKnown, psnr_known
from bench.evaluators.registry import NEEDS, register_metric
from bench.evaluators.seam import SeamScore, edge_energy


def test_every_registered_metric_declares_a_complete_contract():
    assert list(METRICS)[:7] == ["fid", "kid", "clip_score", "accuracy", "cmmd", "prdc", "diversity"]
    labels = [c.label for m in METRICS.values() for c in m.columns.values()]
    assert len(labels) == len(set(labels)), "two columns would share a report heading"
    for name, metric in METRICS.items():
        assert metric.name == name and metric.columns and metric.needs <= NEEDS
        assert issubclass(metric, PerImageMetric if metric.kind == "per_image" else SetMetric)
        for spec in metric.columns.values():
            assert spec.label and spec.units
            assert spec.bounds is None or spec.bounds[0] < spec.bounds[1]
        assert metric.legend()
    assert list(FEATURE_NETS) == ["domain", "inception", "dinov2", "clip"]
    assert all(hasattr(net, "build") and net.units for net in FEATURE_NETS.values())


def test_declarations_answer_direction_label_and_percent_for_suffixed_columns():
    assert not registry.higher_is_better("fid") and not registry.higher_is_better("fid_dinov2")
    assert registry.higher_is_better("precision_clip") and registry.higher_is_better("a_users_score")
    assert registry.label("fid") == "FID" and registry.label("fid_inception") == "FID (inception)"
    assert registry.percent("acc_group") and not registry.percent("clip_score")
    assert registry.bounds("fid") == (0.0, math.inf) and registry.bounds("kid_mean") == (-math.inf, math.inf)
    assert "kid_std" not in registry.quality_columns() and "kid_mean" in registry.quality_columns()


def test_a_bad_declaration_is_refused_when_registered():
    class Unknown(PerImageMetric):
        name = "needs_a_gpu"
        columns = {"x": Column(True, "x", "units")}
        needs = frozenset({"gpu"})

    with pytest.raises(ValueError, match="unknown needs"):
        register_metric(Unknown)

    class Taken(PerImageMetric):
        name = "again"
        columns = {"fid": Column(False, "FID again", "units")}

    with pytest.raises(ValueError, match="already declared"):
        register_metric(Taken)
    with pytest.raises(ValueError, match="already registered"):
        register_metric(METRICS["fid"])
    assert "needs_a_gpu" not in METRICS and "again" not in METRICS


class _Brightness(PerImageMetric):
    """A toy metric: each image's mean pixel value in [0, 1] (not named "brightness", docs/extending.md's example,
    so a user who adds that example keeps this test passing)."""

    name = "toy_brightness"
    columns = {"toy_brightness": Column(True, "toy_brightness", "mean pixel value, 0-1", (0.0, 1.0))}

    @classmethod
    def build(cls, resources):  # noqa: ANN001, ANN206
        return cls(resources.device)

    def scores(self, batch: ScoringBatch) -> torch.Tensor:
        return batch.images.float().mean((1, 2, 3)).div(255).unsqueeze(1)


@pytest.fixture
def brightness():
    register_metric(_Brightness)
    yield _Brightness
    del registry.METRICS["toy_brightness"]


def test_a_metric_registered_in_one_module_flows_through_scoring_and_the_summary(tmp_path, brightness, scored_run):
    """The toy metric is named nowhere else: the config accepts it, scoring writes its per-image column and
    its mean, and the seed-set summary, labels and directions know it."""
    from bench.runner.scoring import score_cells
    from bench.tasks import make_task
    from bench.stats import summarize
    from bench.runner.store import to_hwc_uint8

    cfg, cell, images, _, _ = scored_run(["toy_brightness", "clip_score"])
    scores = score_cells(cfg.scoring(), make_task(cfg), tmp_path / "r", [cell], torch.device("cpu"), progress=False)
    expected = torch.from_numpy(to_hwc_uint8(images)).double().mean((1, 2, 3)) / 255
    assert scores.per_sample["toy_brightness"].to_numpy() == pytest.approx(expected.numpy(), rel=1e-6)
    assert scores.results.iloc[0]["toy_brightness"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert list(scores.results.columns[6:8]) == ["clip_score", "toy_brightness"]  # registration order
    assert scores.evaluators["directions"]["toy_brightness"] == "higher"
    summary = summarize(scores.results.assign(seed_set=[0]))
    assert "toy_brightness_lo" in summary.columns and "fid" not in summary.columns
    assert registry.label("toy_brightness") == "toy_brightness"


def test_a_run_that_did_not_compute_a_metric_has_no_column_for_it():
    """summarize() writes the declared quality columns the results hold, not NaN columns for the others."""
    from bench.stats import summarize

    results = pd.DataFrame({"guidance": ["cfg"] * 2, "scale": [1.0] * 2, "seed_set": [0, 1], "n_samples": [4, 4],
                            "clip_score": [20.0, 22.0]})
    summary = summarize(results)
    assert summary.loc[0, "clip_score"] == 21.0
    assert not {"fid", "acc_identity", "cmmd"} & set(summary.columns)


def test_psnr_of_the_kept_region_matches_its_definition():
    """An exact copy gets the cap; a kept region off by d (in [-1, 1] units) gets 10 log10(1 / (d / 2)^2)."""
    source = torch.zeros(2, 3, 4, 4)
    hole = torch.zeros(2, 1, 4, 4)
    hole[:, :, :2] = 1  # the top half is regenerated: what happens there does not count
    results = source.clone()
    results[:, :, :2] = 0.9
    results[1, :, 2:] = 0.2  # the kept half off by 0.2
    assert psnr_known(results, source, hole).tolist() == pytest.approx([100.0, 10 * math.log10(1 / 0.1**2)])
    metric = PSNRKnown()
    uint8 = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    metric.update(ScoringBatch(uint8, ["x"], extras={"source": uint8.clone(), "mask": hole[:1]}))
    assert metric.compute()["psnr_known"].tolist() == [100.0]


def test_the_seam_score_of_real_images_is_one_and_a_pasted_patch_scores_above():
    """Results equal to their sources score exactly 1 (and so does every resample); a flat grey patch
    pasted into a striped image raises the energy across the edge."""
    g = torch.Generator().manual_seed(0)
    source = torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)
    hole = torch.zeros(3, 1, 8, 8)
    hole[:, :, 2:6, 2:6] = 1
    same = SeamScore()
    same.update(ScoringBatch(source.clone(), ["x"] * 3, extras={"source": source, "mask": hole}))
    assert same.value()["seam"] == pytest.approx(1.0)
    counts = torch.tensor([[3, 0, 0], [1, 1, 1], [0, 2, 1]])
    assert same.resampled(counts)["seam"].tolist() == pytest.approx([1.0, 1.0, 1.0])

    smooth = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    patched = smooth.clone()
    patched[:, :, 2:6, 2:6] = 255
    seam = SeamScore()
    seam.update(ScoringBatch(patched, ["x"], extras={"source": smooth + 1, "mask": hole[:1]}))
    step = 3 * (127 / 127.5 / 2) ** 2  # (255 - 128) in [0, 1] units, squared, summed over RGB
    e_res, pairs = edge_energy(patched.float() / 127.5 - 1, hole[:1])
    assert float(e_res[0]) == pytest.approx(step * float(pairs[0]), rel=1e-5)
    assert seam.value()["seam"] == pytest.approx(float(e_res[0]) / 1e-12, rel=1e-5)  # a flat source: no energy


def test_metrics_of_another_task_are_refused_before_sampling():
    from bench.runner.config import BenchConfig
    from bench.runner.applicability import applicable_metrics

    with pytest.raises(ValueError, match="psnr_known,seam: they score inpaint results"):
        applicable_metrics(BenchConfig.from_preset("tiny", metrics=["clip_score", "psnr_known", "seam"]), "emoji")
    kept = BenchConfig.from_preset("tiny", metrics=["clip_score", "seam"])
    assert applicable_metrics(kept, "emoji", task="inpaint") is kept
