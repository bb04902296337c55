"""Model cards for the zoo: one markdown file per checkpoint, written from the training record in it.

Also writes `unet_samples.png` (CFG samples of the diffusion model) and, when the dataset is
available, `dataset_grid.png` (the real renders the models were trained on). With `--benchmark
RUN_DIR` (a finished `python -m bench run` directory, repeatable) it records that run's per-cell
metrics with their confidence intervals in `unet_benchmark.json`, which the UNet's card shows, and
refuses a run made with other model files or scorers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from bench.zoo.prompts import emoji200
from bench.report.format import metric_name, percent_metric
from bench.stats import summarize
from bench.runner.store import to_hwc_uint8
from guidance.guiders import make_guidance
from guidance.samplers import sample
from guidance.zoo.emoji_data import EmojiDataset, save_grid
from guidance.zoo.inpaint_diagnostics import SOURCES
from guidance.zoo.inpaint_diagnostics import markdown as diagnostics_markdown
from guidance.zoo.load import EVAL_CLIP_LABEL, ZOO_DIR, load_zoo
from guidance.checkpoints import dir_checksums, read_metadata

ROLES = {
    "unet": "Text-conditional diffusion model (eps and learned-range variance), 32x32, cosine schedule, T=1000; "
            "captions dropped 15% of the time so classifier-free guidance works.",
    "classifier": "Noise-aware identity classifier p(y | x_t, t), trained on noised images at all t: drives classifier guidance.",
    "noised_clip": "Noised CLIP: image tower sees (x_t, t), trained contrastively on noised images: drives CLIP guidance.",
    "eval_clip": "Evaluation CLIP (open_clip ViT + text transformer) on clean images, different architecture and seed "
                 "from the guiding CLIP: used only to score.",
    "eval_classifier": "Clean-image identity classifier: its penultimate features serve FID/KID on this domain, its "
                       "top-1 accuracy serves as alignment accuracy.",
    "inpaint_unet": "GLIDE-style inpainting model: the text UNet (`unet`) with 4 extra input channels (the masked "
                    "image and the mask, their input weights zero-initialised and their branch scaled by the noise "
                    "level, so at step 0 its output equals `unet`'s exactly), fine-tuned on random masks (centre, "
                    "halves, boxes, strokes) with captions dropped 15% of the time, half of the images moved like the "
                    "editing benchmark's sources; only the condition weights and the first blocks train. Used by "
                    "`--task inpaint --inpaint-methods model` (docs/inpainting.md).",
    "upsampler": "Diffusion upsampler 32 -> 64 px (GLIDE's second stage): a small text UNet conditioned on the "
                 "bicubic-upsampled 32 px image (concatenated channels) with noise augmentation of that input "
                 "(Ho et al. 2021), trained on 32 px crops of the 64 px renders. Used by `--task cascade`.",
    "eval_classifier_64": "Evaluation classifier at 64 px: its features score the cascade's FID/KID at 64 px "
                          "(a 32 px network cannot see what an upsampler adds). Used only to score.",
    "weak_unet": "Weak diffusion model for autoguidance (Karras et al. 2024): the same UNet family as `unet` at a "
                 "quarter of the width, trained for far fewer images, so its errors resemble the main model's, "
                 "only larger. It only guides `unet`; benchmarks never sample from it alone.",
}
DIFFUSION_MODELS = ("unet", "weak_unet")
BENCH_GRIDS = {  # models whose sample grid comes from their benchmark run (named in their _benchmark.md)
    "inpaint_unet": "rows: source, mask (grey), GLIDE-style model, replacement baseline; from the benchmark run",
    "upsampler": "rows: 32 px base sample (nearest), bicubic, the upsampler; from the cascade benchmark run",
}
SAMPLE_PROMPTS = 32
BENCHMARK_FILE = "unet_benchmark.json"
BENCHMARK_METRICS = ("acc_identity", "acc_subgroup", "acc_group", "fid", "clip_score")  # the card's columns


def _interval(row: dict, metric: str) -> list[float | None]:
    """(mean, lo, hi) rounded, None where not computed (JSON has no NaN)."""
    values = (row.get(k, math.nan) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
    return [None if v != v else round(v, 4) for v in values]


def sample_grid(out: Path, name: str = "unet", scale: float = 3.0, steps: int = 50) -> Path:
    """CFG samples of one diffusion model for the first prompts of the fixed emoji200 set, as a PNG grid."""
    zoo = load_zoo(out)
    texts = emoji200().texts()[:SAMPLE_PROMPTS]
    model = zoo.weak if name == "weak_unet" else zoo.denoiser
    x = sample(model, zoo.process, zoo.process.sigmas(steps, "respace"), make_guidance("cfg", scale),
               zoo.conditions(texts), zoo.sample_shape, range(len(texts)), seed=0)
    images = to_hwc_uint8(x)
    path = out / f"{name}_samples.png"
    save_grid(images, path, cols=8, scale=3)
    (out / f"{name}_samples.txt").write_text("\n".join(texts) + "\n")
    return path


def benchmark_record(run_dirs: list[Path], out: Path) -> dict:
    """Per-cell means and 95% CIs over seed sets of finished bench runs of the zoo in `out`.

    Only runs that sampled and scored with exactly these files, the evaluation CLIP and the
    evaluation classifier's features are accepted: the card labels its columns that way."""
    checksums = dir_checksums(out)
    runs = []
    for run_dir in run_dirs:
        manifest_path, results_path = run_dir / "manifest.json", run_dir / "results.csv"
        if not manifest_path.exists() or not results_path.exists():
            raise ValueError(f"{run_dir} lacks manifest.json or results.csv; pass a finished `python -m bench run` directory")
        manifest = json.loads(manifest_path.read_text())
        cfg = manifest.get("config", {})
        if manifest.get("models") != checksums:
            raise ValueError(f"{run_dir} used other model files than those in {out}; rerun the benchmark with these weights")
        if manifest.get("clip_scorer") != EVAL_CLIP_LABEL or cfg.get("fid_inception_weights"):
            raise ValueError(f"{run_dir} scored with {manifest.get('clip_scorer')!r} / Inception weights "
                             f"{cfg.get('fid_inception_weights')!r}; the card records runs scored by the zoo's "
                             "evaluation CLIP and evaluation-classifier features (the defaults)")
        cells = []
        for row in summarize(pd.read_csv(results_path)).to_dict("records"):
            cells.append({"guidance": row["guidance"], "scale": row["scale"], "seed_sets": row["n_seed_sets"],
                          "samples": row["n_samples"], **{m: _interval(row, m) for m in BENCHMARK_METRICS}})
        runs.append({"run_id": manifest["run_id"], "created": manifest["created"], "device": manifest["device"],
                     "wall_time_s": manifest["wall_time_s"],
                     "protocol": {k: cfg.get(k) for k in ("prompts", "prompt_limit", "samples_per_prompt", "sampler",
                                                          "steps", "seeds")},
                     "cells": cells})
    return {"models": checksums, "runs": runs}


def benchmark_lines(out: Path) -> list[str]:
    """The card's benchmark section, or nothing when no record is kept; a stale record says so."""
    path = out / BENCHMARK_FILE
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    lines = ["## Benchmark", ""]
    if record.get("models") != dir_checksums(out):
        return lines + [f"`{BENCHMARK_FILE}` was measured with other model files: rerun the benchmark and "
                        "`python -m bench.zoo.cards --benchmark RUN_DIR`.", ""]

    def fmt(values: list[float | None], percent: bool) -> str:
        mean, lo, hi = (None if v is None else v * 100 if percent else v for v in values)
        if mean is None:
            return "-"
        ci = "" if lo is None else f" [{lo:.1f}, {hi:.1f}]"  # a single seed set has no interval
        return f"{mean:.1f}{'%' if percent else ''}{ci}"

    for run in record["runs"]:
        p = run["protocol"]
        lines += [f"Run `{run['run_id']}` ({run['created'][:10]}, {run['device']}, {run['wall_time_s']:.0f} s): "
                  f"{p['prompt_limit'] or 'all'} prompts of {p['prompts']}, {p['sampler']} {p['steps']} steps, seed "
                  f"sets {p['seeds']}; mean [95% CI over seed sets]. Accuracies by the evaluation classifier "
                  "(identity 1,870-way, subgroup 99-way, group 9-way), FID on its features, CLIP score by the "
                  "evaluation CLIP.", "",
                  "| guidance | scale | " + " | ".join(metric_name(m) for m in BENCHMARK_METRICS) + " |",
                  "|---|---|" + "---|" * len(BENCHMARK_METRICS)]
        for c in run["cells"]:
            lines.append(f"| {c['guidance']} | {c['scale']:g} | "
                         + " | ".join(fmt(c.get(m, [None] * 3), percent_metric(m)) for m in BENCHMARK_METRICS) + " |")
        lines.append("")
    return lines


def selection_lines(selection: dict | None) -> list[str]:
    """The mid-run evaluations of a run that exported its best checkpoint: score against training time."""
    if not selection:
        return []
    lines = [f"Mid-run evaluations (the export is step {selection['exported_step']}, the lowest score):", "",
             "| step | time (s) | score |", "|---|---|---|"]
    lines += [f"| {e['step']} | {e['time']} | {e['score']:.5f} |" for e in selection["evaluations"]]
    return lines + [""]


def card(name: str, out: Path) -> str:
    meta = read_metadata(out / f"{name}.safetensors")
    info = meta["info"]
    lines = [f"# {name}", "", ROLES[name], "",
             "| field | value |", "|---|---|",
             f"| parameters | {info.get('parameters', 0):,} |",
             f"| training steps | {info.get('steps')} (batch {info.get('batch_size')}) |",
             f"| wall time | {info.get('wall_time_s')} s |",
             f"| device | {info.get('device')} (torch {info.get('torch')}) |",
             f"| seed | {info.get('seed')} |",
             f"| final losses | {json.dumps({k: round(v, 4) for k, v in info.get('final_losses', {}).items() if k not in ('step', 'time')})} |",
             f"| dataset | {info.get('dataset_size')} images, sha256 {info.get('dataset_checksum')} |",
             "| stored as | fp16 safetensors, config and this record in the file metadata |"]
    earlier = info.get("continued_from") or {}
    if earlier:
        this_run = earlier.get("this_run", {})
        evaluation = "; ".join(f"{k} {v}" for k, v in (earlier.get("evaluation") or {}).items())
        lines.append(f"| continued from | an export of {earlier.get('steps')} steps ({earlier.get('wall_time_s')} s on "
                     f"{earlier.get('device')}{'; ' + evaluation if evaluation else ''}); this run added "
                     f"{this_run.get('steps')} steps in {this_run.get('wall_time_s')} s |")
    base = info.get("fine_tuned_from")
    if base:
        lines.append(f"| fine-tuned from | {base.get('file')} ({base.get('steps')} steps, {base.get('wall_time_s')} s on "
                     f"{base.get('device')}) |")
    if info.get("weights"):
        lines.append(f"| weights | {info['weights']} |")
    correction = info.get("ema_correction") or earlier.get("ema_correction")
    if correction:
        c, whose = correction, "" if info.get("ema_correction") else " (of the export continued from)"
        lines.append(f"| EMA correction{whose} | the EMA (no warm-up in the trainer then) held {c['initial_weight_share']:.2%} "
                     f"of the initial weights; removed by `{c['by']}` (eps MSE {c['eps_mse_before']} -> "
                     f"{c['eps_mse_after']}) |")
    lines.append("")
    evaluation = info.get("evaluation")
    if evaluation and set(SOURCES) <= set(evaluation):  # the inpainting diagnostics: a table, paired with step 0
        lines += ["## Evaluation", "", diagnostics_markdown(evaluation), ""]
        lines += selection_lines(info.get("selection"))
    elif evaluation:
        lines += ["## Evaluation", "", "```json", json.dumps(evaluation, indent=1), "```", ""]
    if name == "unet":
        lines += benchmark_lines(out)
    if (out / f"{name}_benchmark.md").exists():  # measured figures of a model benchmarked outside unet_benchmark.json
        lines += [(out / f"{name}_benchmark.md").read_text(), ""]
    grid = f"{name}_samples.png" if name in DIFFUSION_MODELS or name in BENCH_GRIDS else "dataset_grid.png"
    if (out / grid).exists():
        what = (f"CFG s=3, 50 DDIM steps, the first 32 prompts of emoji200 (listed in {name}_samples.txt)"
                if name in DIFFUSION_MODELS else BENCH_GRIDS.get(name, "real renders it was trained on"))
        lines += ["## Samples", "", f"![{what}]({grid})", "", what, ""]
    lines += ["## Config", "", "```json", json.dumps(meta["config"], indent=1), "```", "",
              "Trained by `invoke train` (guidance/zoo/train.py) on the emoji dataset (Noto Color Emoji, OFL-1.1; "
              "OpenMoji, CC BY-SA 4.0; names from Unicode emoji-test.txt).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ZOO_DIR))
    parser.add_argument("--data", default=None, help="dataset .npz for dataset_grid.png (optional)")
    parser.add_argument("--no-samples", action="store_true")
    parser.add_argument("--benchmark", action="append", default=[], metavar="RUN_DIR",
                        help="record this finished bench run of the UNet in its card (repeatable; replaces the record)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.benchmark:
        try:
            record = benchmark_record([Path(d) for d in args.benchmark], out)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        (out / BENCHMARK_FILE).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out / BENCHMARK_FILE}")
    if args.data:
        save_grid(EmojiDataset.load(args.data).images[:64], out / "dataset_grid.png", cols=16, scale=2)
    names = [name for name in ROLES if (out / f"{name}.safetensors").exists()]
    if not args.no_samples:
        for name in DIFFUSION_MODELS:
            if name in names:
                print(f"wrote {sample_grid(out, name)}")
    for name in names:
        (out / f"{name}.md").write_text(card(name, out))
    print(f"wrote model cards for {', '.join(names)} to {out}")


if __name__ == "__main__":
    main()
