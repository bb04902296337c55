"""Report and statistics: CIs, Pareto front, ranking, and a self-contained, escaped HTML page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report import html as report
from bench.report.format import format_scale
from bench.report.grids import sample_grid
from bench.report.html import build_report
from bench.report.runs import load_run
from bench.stats import mean_ci, pareto_front, rank_methods, summarize

HOSTILE = '<script>alert(1)</script> & "quotes"'
GUIDANCES = {"cfg": [1.0, 3.0, 5.0], "classifier": [0.0, 2.5, 10.0], "clip": [0.5, 1.0, 2.0]}
PNG_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)


PROMPTS = [HOSTILE, "a smiling face", "a red heart", "a cat"]


def make_fake_run(root: Path, run_id: str = "run-a", n: int = 64, seed: int = 0,
                  clip_scorer: str = "zoo:eval_clip", images: int = 4, per_sample: bool = False) -> Path:
    """A run dir as the harness writes it: 3 guidances x 3 scales x 3 seed sets, plausible numbers;
    with ``per_sample``, also per_sample.csv (one row per saved image, prompts as in the samples)."""
    rng = np.random.default_rng(seed)
    run = root / run_id
    (run / "samples").mkdir(parents=True)
    rows, samples = [], []
    for gi, (g, scales) in enumerate(GUIDANCES.items()):
        for si, scale in enumerate(scales):
            for k in range(3):
                rows.append({
                    "guidance": g, "scale": scale, "seed_set": k, "n_samples": n,
                    "fid": 60 - 8 * si + 6 * si**2 + gi * 3 + rng.normal(0, 2),
                    "kid_mean": 0.02 + 0.005 * si + rng.normal(0, 0.002), "kid_std": 0.003,
                    "clip_score": 0.22 + 0.02 * si + 0.005 * gi + rng.normal(0, 0.004),
                    "acc_identity": 0.5 + 0.1 * si + rng.normal(0, 0.02),
                    "acc_subgroup": 0.6 + 0.08 * si + rng.normal(0, 0.02),
                    "acc_group": math.nan,  # not computed: the report must cope
                    "img_per_s": 40.0 / (gi + 1), "s_per_img": (gi + 1) / 40.0,
                    "network_passes_per_img": 50.0 * (2 if g == "cfg" else 1),
                    "guide_passes_per_img": 0.0 if g == "cfg" else 50.0,
                    "backward_passes_per_img": 0.0 if g == "cfg" else 50.0,
                    "peak_mem_mb": 300.0 + 50 * gi, "wall_s": n * (gi + 1) / 40.0,
                    "sampler": "ddim", "steps": 50,
                })
                pics = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
                prompts = np.array([PROMPTS[i % len(PROMPTS)] for i in range(images)])
                np.savez(run / "samples" / f"{g}_s{format_scale(scale)}_seed{k}.npz", images=pics, prompts=prompts,
                         indices=np.arange(images))
                cell = [{"guidance": g, "scale": scale, "seed_set": k, "index": i, "prompt_index": i % len(PROMPTS),
                         "clip_score": 20 + 3 * si + gi + i % len(PROMPTS) + rng.normal(0, 0.5),
                         "acc_identity": float(rng.random() < 0.3 + 0.2 * si), "acc_subgroup": 1.0,
                         "category": ["<b>faces</b>", "things"][i % 2]} for i in range(images)]
                samples += cell
                if per_sample:  # results.csv holds each seed set's mean of the per-image scores
                    for m in ("clip_score", "acc_identity", "acc_subgroup"):
                        rows[-1][m] = float(np.mean([c[m] for c in cell]))
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    if per_sample:
        pd.DataFrame(samples).to_csv(run / "per_sample.csv", index=False)
    manifest = {
        "run_id": run_id, "created": "2024-05-01T12:00:00", "config_hash": "abc123def4567890",
        "config": {"prompts": f"builtin:emoji {HOSTILE}", "guidance": list(GUIDANCES),
                   "scales": GUIDANCES, "seeds": [0, 1, 2], "samples_per_prompt": 16,
                   "sampler": "ddim", "steps": 50, "device": "cpu"},
        "versions": {"torch": "2.3.0", "python": "3.11"},
        "models": {"unet": "0123456789abcdef0123", "eval_clip": "fedcba9876543210"},
        "git_commit": "a24e59f0000000", "wall_time_s": 123.4, "clip_scorer": clip_scorer,
    }
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


# --------------------------------------------------------------------------- stats


def test_format_scale() -> None:
    assert format_scale(1.0) == "1"
    assert format_scale(2.5) == "2.5"
    assert format_scale(0.0) == "0"
    assert format_scale(10) == "10"
    assert format_scale(0.1) == "0.1"
    assert format_scale(7.25) == "7.25"


def test_mean_ci_matches_hand_computation() -> None:
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    # sd = sqrt(5/3), sem = sd / 2, t_{0.975, 3} = 3.182446305 (tables)
    half = 3.182446305 * math.sqrt(5 / 3) / 2
    assert mean == pytest.approx(2.5)
    assert lo == pytest.approx(2.5 - half, rel=1e-8)
    assert hi == pytest.approx(2.5 + half, rel=1e-8)
    assert mean_ci([1.0, 2.0, 3.0, 4.0, math.nan]) == pytest.approx((mean, lo, hi))  # NaN ignored


def test_mean_ci_single_and_empty() -> None:
    mean, lo, hi = mean_ci([5.0, math.nan])
    assert mean == 5.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=95)


def test_pareto_front_known_table() -> None:
    table = pd.DataFrame({
        "clip_score": [0.20, 0.25, 0.30, 0.24, 0.30, math.nan],
        "fid": [10.0, 12.0, 20.0, 15.0, 25.0, 1.0],
    })
    # row 3 is beaten by row 1 (more CLIP, less FID), row 4 by row 2, row 5 has no CLIP score
    assert pareto_front(table).tolist() == [True, True, True, False, False, False]


def test_summarize_cis_and_n_note(tmp_path: Path) -> None:
    results = load_run(make_fake_run(tmp_path)).results
    results.loc[(results["guidance"] == "cfg") & (results["seed_set"] == 2), "n_samples"] = 32
    summary = summarize(results)
    assert len(summary) == 9
    assert {"fid", "fid_lo", "fid_hi", "acc_group_hi", "n_seed_sets", "n_samples", "n_samples_note",
            "s_per_img", "backward_passes_per_img"} <= set(summary.columns)
    cell = results[(results["guidance"] == "clip") & (results["scale"] == 1.0)]
    row = summary[(summary["guidance"] == "clip") & (summary["scale"] == 1.0)].iloc[0]
    assert (row["fid"], row["fid_lo"], row["fid_hi"]) == pytest.approx(mean_ci(cell["fid"]))
    assert row["n_seed_sets"] == 3 and row["n_samples"] == 64 and row["n_samples_note"] == ""
    assert math.isnan(row["acc_group"])
    cfg = summary[summary["guidance"] == "cfg"]
    assert (cfg["n_samples"] == 32).all()
    assert cfg["n_samples_note"].str.contains("differs").all()


def test_a_metric_missing_in_some_seed_sets_is_noted() -> None:
    rows = pd.DataFrame({"guidance": "cfg", "scale": 3.0, "seed_set": [0, 1, 2], "n_samples": 64,
                         "fid": [100.0, 110.0, math.nan], "clip_score": [30.0, 31.0, 32.0]})
    row = summarize(rows).iloc[0]
    assert row["n_seed_sets"] == 3 and row["fid"] == pytest.approx(105.0)
    assert row["n_samples_note"] == "fid over 2 of 3 seed sets"


def test_rank_methods_picks_frontier_point() -> None:
    summary = pd.DataFrame({
        "guidance": ["a", "a", "a", "b", "b"],
        "scale": [1.0, 2.0, 3.0, 1.0, 2.0],
        "clip_score": [0.20, 0.28, 0.30, 0.21, 0.22],
        "fid": [10.0, 11.0, 30.0, 20.0, 25.0],
        "s_per_img": [0.1, 0.1, 0.1, 0.5, 0.5],
    })
    ranking = rank_methods(summary)
    assert ranking["guidance"].tolist() == ["a", "b"]
    assert ranking["rank"].tolist() == [1, 2]
    a, b = ranking.iloc[0], ranking.iloc[1]
    assert a["best_scale"] == 2.0 and a["on_front"]
    # b's points are both on its own front; normalised over the table (CLIP 0.20-0.30, FID 10-30),
    # b@1 is at (0.9, 0.5) from the ideal corner and b@2 at (0.8, 0.75): b@1 is nearer
    assert b["best_scale"] == 1.0 and not b["on_front"]  # a beats b at every scale
    assert b["distance"] == pytest.approx(math.hypot(0.9, 0.5)) and a["distance"] == pytest.approx(math.hypot(0.2, 0.05))
    assert b["s_per_img"] == 0.5


# --------------------------------------------------------------------------- report


def _html_checks(text: str) -> None:
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    imgs = PNG_IMG.findall(text)
    assert imgs
    for tag in imgs:
        assert re.search(r'\ssrc="data:image/png;base64,[A-Za-z0-9+/=]+"', tag), tag[:120]
    assert "<link" not in text.lower() and "@import" not in text and "url(" not in text


def test_build_report_single_run(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path)
    index = build_report([run])
    assert index == run / "index.html" and index.is_file()
    for name in ("fid_vs_clip.png", "metrics_vs_scale.png", "throughput.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    assert len(list((run / "grids").glob("*.png"))) == 9
    summary = pd.read_csv(run / "summary.csv")
    assert len(summary) == 9 and "clip_score_lo" in summary.columns

    text = index.read_text(encoding="utf-8")
    _html_checks(text)
    # 3 plots + 9 sample grids + comparison grids: 3 methods x 3 scales x 4 prompts, 3 chosen cells x 4 prompts
    assert len(PNG_IMG.findall(text)) == 3 + 9 + 36 + 12
    assert "Paired statistics unavailable" in text and "no per_sample.csv" in text
    for name in ("comparisons.csv", "matched_alignment.csv"):
        assert (run / name).is_file()
    assert not (run / "results_by_category.csv").exists()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    assert "n = 64 images per cell, 3 seed sets" in text
    assert "compare only runs with equal n" in text
    assert "Method ranking" in text and "zoo:eval_clip" in text
    assert "0123456789ab" in text and "0123456789abcdef0123" not in text  # short checksums
    assert "not comparable" not in text and "inflated" not in text
    assert "Not computed: acc_group" in text


def test_report_flags_guiding_clip_scorer(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path, clip_scorer="GUIDING:noised_clip")
    text = build_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert "inflated" in text and "GUIDING:noised_clip" in text


def test_two_runs_with_different_n_warn(tmp_path: Path) -> None:
    a = make_fake_run(tmp_path, "run-a", n=64, seed=1)
    b = make_fake_run(tmp_path, "run-b", n=32, seed=2)
    index = build_report([a, b])
    assert index.parent.parent == tmp_path and index.parent.name.startswith("compare-")
    text = index.read_text(encoding="utf-8")
    _html_checks(text)
    assert "FID is not comparable" in text
    assert len(list((index.parent / "grids").glob("*.png"))) == 18
    summary = pd.read_csv(index.parent / "summary.csv")
    assert set(summary["run"]) == {"run-a", "run-b"} and len(summary) == 18

    same = build_report([a, make_fake_run(tmp_path, "run-c", n=64, seed=3)], tmp_path / "same")
    assert "not comparable" not in same.read_text(encoding="utf-8")


def test_runs_whose_names_differ_only_in_unsafe_characters_keep_their_own_grids(tmp_path: Path) -> None:
    a, b = make_fake_run(tmp_path / "a", "my run", seed=1), make_fake_run(tmp_path / "b", "my_run", seed=2)
    index = build_report([a, b], tmp_path / "out")
    grids = sorted((index.parent / "grids").glob("*cfg_s3.png"))
    assert len(grids) == 2 and grids[0].read_bytes() != grids[1].read_bytes()


def test_run_ids_devices_and_guidance_names_are_escaped(tmp_path: Path) -> None:
    """Every user string reaches the page escaped: run ids and directories, the device, guidance names."""
    run = make_fake_run(tmp_path, "<script>run", per_sample=True)  # verdict, comparisons, categories, grids too
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "device": "<script>dev"}))
    for name in ("results.csv", "per_sample.csv"):
        table = pd.read_csv(run / name)
        table["guidance"] = table["guidance"].replace("clip", "<script>g")
        table.to_csv(run / name, index=False)
    for sample in (run / "samples").glob("clip_*.npz"):
        sample.rename(sample.with_name(sample.name.replace("clip", "<script>g")))
    for runs in ([run], [run, make_fake_run(tmp_path, "other")]):
        text = build_report(runs, tmp_path / f"out{len(runs)}").read_text(encoding="utf-8")
        assert "<script" not in text.lower()
        assert "&lt;script&gt;run" in text and "&lt;script&gt;dev" in text and "&lt;script&gt;g" in text


def test_run_ids_with_dollar_signs_are_plotted_as_text(tmp_path: Path) -> None:
    """Matplotlib reads '$...$' as mathtext: an unbalanced '$' in a run label failed the whole report."""
    runs = [make_fake_run(tmp_path, "r$_{$", seed=1), make_fake_run(tmp_path, "cost $5", seed=2)]
    index = build_report(runs, tmp_path / "out")
    assert "r$_{$" in index.read_text(encoding="utf-8") and (index.parent / "plots" / "fid_vs_clip.png").is_file()


def test_report_out_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a directory"):
        build_report([make_fake_run(tmp_path)], tmp_path / "taken")


def test_missing_results_csv_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_fake_run(tmp_path)
    (run / "results.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"results\.csv.*invoke bench"):
        load_run(run)
    assert report.main([str(run)]) == 2
    assert str(run / "results.csv") in capsys.readouterr().err


def test_malformed_files_name_the_file(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path)
    (run / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(run / "manifest.json"))):
        load_run(run)
    run2 = make_fake_run(tmp_path, "run-2")
    (run2 / "results.csv").write_text("foo,bar\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"results\.csv lacks the column"):
        load_run(run2)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        (run2 / "manifest.json").unlink()
        load_run(run2)


def test_missing_samples_are_noted_not_fatal(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path)
    for f in (run / "samples").glob("clip_*"):
        f.unlink()
    text = build_report([run]).read_text(encoding="utf-8")
    assert "no samples saved" in text
    assert len(list((run / "grids").glob("*.png"))) == 6


def test_cli_prints_index_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_fake_run(tmp_path)
    assert report.main([str(run), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "index.html")


def test_sample_grid_upscales_nearest() -> None:
    images = np.zeros((20, 32, 32, 3), np.uint8)
    images[0] = 255
    grid = sample_grid(images)
    assert grid.size == ((4 * 34 + 2) * 3, (4 * 34 + 2) * 3)  # 16 of 20 images, 4x4, 2px padding, x3
    arr = np.asarray(grid)
    assert set(np.unique(arr)) <= {0, 255}  # nearest neighbour: no blended values


def test_report_with_per_sample_has_paired_sections(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path, per_sample=True)
    text = build_report([run]).read_text(encoding="utf-8")
    _html_checks(text)
    assert "Paired statistics over n=4 prompts x 3 seed sets" in text
    assert "Paired statistics unavailable" not in text
    assert text.index("Verdict") < text.index("Method ranking")
    assert "Comparison at matched alignment" in text and "P(rank 1)" in text
    assert "CLIP score by category" in text and "&lt;b&gt;faces&lt;/b&gt;" in text and "<b>faces" not in text
    by_cat = pd.read_csv(run / "results_by_category.csv")
    assert set(by_cat["category"]) == {"<b>faces</b>", "things"}
    summary = pd.read_csv(run / "summary.csv")
    assert {"clip_score_boot_lo", "clip_score_boot_hi", "n_prompts"} <= set(summary.columns)
    assert (summary["acc_identity_boot_lo"] >= 0).all() and (summary["acc_identity_boot_hi"] <= 1).all()
    comps = pd.read_csv(run / "comparisons.csv")
    assert {"vs lowest scale", "best vs best"} == set(comps["kind"])


def test_comparison_grid_rows_carry_escaped_captions(tmp_path: Path) -> None:
    text = build_report([make_fake_run(tmp_path)]).read_text(encoding="utf-8")
    rows = re.findall(r'<tr><td class="caption">(.*?)</td>(.*?)</tr>', text)
    assert rows and rows[0][0] == report._e(HOSTILE)
    assert all(len(PNG_IMG.findall(cells)) in (3,) for _, cells in rows)  # one image per scale / method


def test_a_run_scored_by_clip_score_alone_shows_only_what_it_computed(tmp_path: Path) -> None:
    """A user's model scored with --metrics clip_score: no legend line on accuracy or FID, no ranking table
    (it needs FID and CLIP score), no empty FID-vs-CLIP frame, no accuracy or FID columns."""
    run = make_fake_run(tmp_path, per_sample=True)
    results = pd.read_csv(run / "results.csv")
    results.drop(columns=["fid", "kid_mean", "kid_std", "acc_identity", "acc_subgroup", "acc_group"]).to_csv(
        run / "results.csv", index=False)
    per_sample = pd.read_csv(run / "per_sample.csv")
    per_sample.drop(columns=["acc_identity", "acc_subgroup"]).to_csv(run / "per_sample.csv", index=False)
    text = build_report([run]).read_text(encoding="utf-8")
    _html_checks(text)
    assert "CLIP score: 100 × max(cos, 0)" in text
    assert "Accuracy:" not in text and "FID:" not in text and "Feature networks" not in text
    assert "Method ranking" not in text and "FID versus CLIP score" not in text
    assert not (run / "plots" / "fid_vs_clip.png").exists() and (run / "plots" / "metrics_vs_scale.png").is_file()
    assert "Comparison at matched alignment" in text  # CLIP levels exist to match on
    assert "Not computed" not in text
    summary = pd.read_csv(run / "summary.csv")
    assert "clip_score_boot_lo" in summary.columns and not {"fid", "acc_group"} & set(summary.columns)
