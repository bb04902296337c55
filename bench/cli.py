"""Command line of the harness: `python -m bench run|report|list` (what the invoke tasks call)."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable
from pathlib import Path

import pandas as pd

from bench.analysis import analyse, load_per_sample
from bench.cascade import CascadeOptions, run_cascade
from bench.config import PRESETS, BenchConfig
from bench.distributed import init_from_env, parse_shard
from bench.inpaint import InpaintOptions, run_inpaint
from bench.metrics import per_image_columns
from bench.prompts import builtin_prompt_sets
from bench.report import build_report
from bench.run import merge_shards, run_benchmark
from bench.verdict import verdict
from guidance.accelerate import add_arguments as add_acceleration_arguments
from guidance.guiders import available_guidance
from guidance.inpaint import Resampling
from guidance.models import model_sampler
from guidance.process import SCHEDULES
from guidance.samplers import SAMPLERS


def parse_floats(text: str, flag: str = "--scales") -> list[float]:
    """'1,3,6' -> [1.0, 3.0, 6.0]; a ValueError (one line, caught by `main`) names the flag."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"bad {flag} {text!r}: not a comma-separated number list; use e.g. 1,3,6") from None
    if not values:
        raise ValueError(f"{flag} {text!r} lists no numbers; use e.g. 1,3,6")
    return values


def parse_seeds(text: str) -> list[int]:
    """'0,1,2': whole numbers only (1.5 is not silently run as seed 1)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"bad --seeds {text!r}: seeds are whole numbers; use e.g. 0,1,2") from None


def parse_scales(text: str) -> dict[str, list[float]] | list[float]:
    """'1,3,6' (for every guidance) or 'cfg=1,3,6;clip=1,5'."""
    if "=" not in text:
        try:
            return parse_floats(text)
        except ValueError:
            raise ValueError(f"bad --scales {text!r}; use '1,3,6' for every method or 'cfg=1,3,6;clip=1,5'") from None
    out: dict[str, list[float]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        name = name.strip()
        if name in out:
            raise ValueError(f"--scales {text!r} gives {name!r} twice; list all its scales once, e.g. {name}=1,3,6")
        out[name] = parse_floats(values, f"--scales for {name!r}")
    return out


def exit_on_bad_input(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """For `python -m bench.perf|limit`: bad input (a ValueError naming the problem and its fix) exits
    with its one line instead of a traceback, as `python -m bench` does."""
    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None

    return wrapped


def positive_int(text: str) -> int:
    """An argparse type for counts (batch sizes, steps, repeats): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count of 1 or more")
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse type for comma-separated counts ('1,16,64')."""
    values = [positive_int(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} lists no counts; use e.g. 1,16,64")
    return values


def parse_prompt_limit(text: str) -> int | str:
    """A count (checked by BenchConfig.validate), or 'all': every prompt of the set, whatever the preset's limit."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --prompt-limit {text!r}; use a positive count or 'all'") from None


def guidance_list(text: str) -> list[str]:
    """Comma-separated names as given; 'all' stays ['all'] until the run has loaded its model and knows
    which methods apply to it (bench.run.applicable_guidance)."""
    return [g.strip() for g in text.split(",") if g.strip()]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", default="cfg", help="comma-separated methods, 'all', or 'list' to print them")
    p.add_argument("--scales", default=None, help="'1,3,6' for all methods or 'cfg=1,3,6;clip=1,5,10'")
    p.add_argument("--prompts", default=None, help="built-in set name (emoji200, emoji-all) or a file path")
    p.add_argument("--prompt-limit", type=parse_prompt_limit, default=None,
                   help="use the first N prompts, or 'all' (default: the preset's: quick 20, tiny 8, full all)")
    p.add_argument("--samples-per-prompt", type=int, default=None)
    p.add_argument("--negative-prompt", default=None,
                   help="negative prompt for CFG and its variants (replaces the null caption; a prompt file's "
                        "negative_prompt column overrides it per prompt)")
    p.add_argument("--seeds", default=None, help="seed sets, e.g. 0,1,2 (>= 2 for confidence intervals)")
    p.add_argument("--sampler", default=None, help="ddim (default), ddpm, euler, euler-ancestral, heun, dpmpp-2m, "
                                                   "flow-euler, or 'list' to describe them")
    p.add_argument("--schedule", default=None, help="sigma schedule: default (the model's own), respace, leading, "
                                                    "trailing, linspace, karras, exponential")
    p.add_argument("--eta", type=float, default=None, help="noise of ddim (default 0) and euler-ancestral (default 1)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (Heun evaluates the model twice per step)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu or cuda[:N]")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (autocast)")
    add_acceleration_arguments(p)
    p.add_argument("--model", default=None, help="'emoji' (embedded zoo), a directory of zoo checkpoints, or "
                                                 "diffusers:PATH (a diffusers pipeline folder, docs/diffusers.md)")
    p.add_argument("--clip-model", default=None, help="open_clip architecture for CLIP score")
    p.add_argument("--clip-pretrained", default=None, help="local pretrained file for --clip-model")
    p.add_argument("--score-with-guiding-clip", action="store_true", help="score with the guiding CLIP (inflated)")
    p.add_argument("--fid-inception-weights", default=None, help="local Inception weights for FID")
    p.add_argument("--metrics", default=None, help="comma-separated subset of "
                                                   "fid,kid,clip_score,accuracy,cmmd,prdc,diversity")
    p.add_argument("--features", default=None, help="feature networks for FID/KID/precision-recall: "
                                                    "domain (default), inception, dinov2, clip (comma-separated)")
    p.add_argument("--dinov2-weights", default=None, help="local DINOv2 weights (.safetensors or .pth)")
    p.add_argument("--dinov2-arch", default=None, help="timm DINOv2 architecture (default vit_large_patch14_dinov2)")
    p.add_argument("--reference", default=None, help="real images: a folder, a COCO captions json, or a features "
                                                     ".safetensors (default: the zoo's emoji dataset)")
    p.add_argument("--reference-images", default=None, help="image folder of a COCO captions json --reference")
    p.add_argument("--bootstrap", type=int, default=None, help="resamples per cell for set-metric intervals "
                                                                "(default 200; 0: none)")
    p.add_argument("--out", default=None, help="parent directory of run directories (default: reports)")
    p.add_argument("--run-id", default=None, help="name of the run directory (reuse one to resume)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--nproc", type=positive_int, default=1, help="processes to launch with torchrun (samples sharded by batch)")
    p.add_argument("--shard", default=None, help="K/N: this job samples shard K of N (then `python -m bench merge`)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    add_edit_arguments(p)


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    """The editing task (--task inpaint, bench.inpaint) and the cascade (--cascade, bench.cascade)."""
    p.add_argument("--task", default="generate", choices=("generate", "inpaint"),
                   help="generate (text-to-image) or inpaint (the editing benchmark, docs/inpainting.md)")
    p.add_argument("--masks", default="center,strokes", help="inpaint: mask kinds, subset of center,half,box,strokes")
    p.add_argument("--mask-file", default=None, help="inpaint: one black-and-white mask image (white = regenerate)")
    p.add_argument("--inpaint-methods", default="model,replace", help="inpaint: subset of model,replace,repaint")
    p.add_argument("--repaint", default="5,2", help="inpaint: RePaint's jump length and resample count, J,R")
    p.add_argument("--edit-captions", default="source,edit", help="inpaint: caption kinds, subset of source,edit")
    p.add_argument("--inpaint-model", default=None, help="inpaint: GLIDE-style inpainting model file")
    p.add_argument("--cascade", action="store_true", help="base -> diffusion upsampler 32 -> 64 px, scored at 64 px")
    p.add_argument("--upsampler", default=None, help="cascade: upsampler file (default: the zoo's)")
    p.add_argument("--cascade-features", default=None, help="cascade: 64 px feature classifier file")
    p.add_argument("--upsampler-scale", type=float, default=1.0, help="cascade: CFG on the upsampler (1: unguided)")
    p.add_argument("--upsample-aug", type=int, default=50, help="cascade: noise-augmentation timestep of the 32 px input")
    p.add_argument("--upsample-steps", type=positive_int, default=25, help="cascade: upsampler DDIM steps")
    p.add_argument("--upsample-start", type=int, default=CascadeOptions.start,
                   help="cascade: start the upsampler at this timestep from the noised bicubic image "
                        "(999: from pure noise); it takes the --upsample-steps trajectory's steps below it")


def inpaint_options(args: argparse.Namespace) -> InpaintOptions:
    try:
        jump, resample = (int(v) for v in args.repaint.split(","))
    except ValueError:
        raise ValueError(f"bad --repaint {args.repaint!r}: give jump length and resample count, e.g. 5,2") from None
    return InpaintOptions(masks=[m.strip() for m in args.masks.split(",")],
                          methods=[m.strip() for m in args.inpaint_methods.split(",") if m.strip()],
                          captions=[c.strip() for c in args.edit_captions.split(",") if c.strip()],
                          repaint=Resampling(jump, resample), mask_file=args.mask_file,
                          inpaint_model=args.inpaint_model)


def cascade_options(args: argparse.Namespace) -> CascadeOptions:
    return CascadeOptions(args.upsampler, args.cascade_features, args.upsampler_scale, args.upsample_aug,
                          args.upsample_steps, args.upsample_start)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    guidance = guidance_list(args.guidance)
    scales = parse_scales(args.scales) if args.scales else {}
    if isinstance(scales, list):
        scales = {g: scales for g in guidance}
    every_prompt = args.prompt_limit == "all"
    overrides = dict(guidance=guidance, scales=scales, prompts=args.prompts,
                     prompt_limit=None if every_prompt else args.prompt_limit,
                     samples_per_prompt=args.samples_per_prompt, negative_prompt=args.negative_prompt,
                     sampler=args.sampler or model_sampler(args.model), steps=args.steps,
                     schedule=args.schedule, eta=args.eta,
                     batch_size=args.batch_size, device=args.device, dtype=args.dtype, model=args.model,
                     channels_last=args.channels_last, compile=args.compile or None,
                     cuda_graphs=args.cuda_graphs or None, cudnn_benchmark=args.cudnn_benchmark,
                     autotune=args.autotune or None, half_weights=args.half_weights,
                     clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                     score_with_guiding_clip=args.score_with_guiding_clip or None,
                     fid_inception_weights=args.fid_inception_weights, out=args.out, run_id=args.run_id,
                     seeds=parse_seeds(args.seeds) if args.seeds else None,
                     metrics=[m.strip() for m in args.metrics.split(",")] if args.metrics else None,
                     features=[f.strip() for f in args.features.split(",") if f.strip()] if args.features else None,
                     dinov2_weights=args.dinov2_weights, dinov2_arch=args.dinov2_arch, reference=args.reference,
                     reference_images=args.reference_images, bootstrap=args.bootstrap)
    cfg = BenchConfig.from_preset(args.preset, **overrides)
    return cfg.with_overrides(prompt_limit=None) if every_prompt else cfg


def print_guidance_list() -> None:
    for name, line in available_guidance().items():
        print(f"{name:12s} {line}")


def print_sampler_list() -> None:
    for name, spec in SAMPLERS.items():
        print(f"{name:16s} {spec.description}")
    print("\nschedules (--schedule):")
    for name, line in SCHEDULES.items():
        print(f"{name:16s} {line}")


def cmd_run(args: argparse.Namespace) -> int:
    if args.guidance.strip() == "list":
        print_guidance_list()
        return 0
    if (args.sampler or "").strip() == "list":
        print_sampler_list()
        return 0
    cfg = config_from_args(args)
    if args.task == "inpaint" or args.cascade:
        if args.nproc > 1 or args.shard or (args.task == "inpaint" and args.cascade):
            raise ValueError("--task inpaint and --cascade run in one process and one at a time; drop --nproc, "
                             "--shard, or one of the two")
        run_dir = run_inpaint(cfg, inpaint_options(args)) if args.task == "inpaint" else \
            run_cascade(cfg, cascade_options(args))
        print(f"report: {run_dir / 'report.md'}")
        return 0
    if args.nproc > 1 and args.shard:
        raise ValueError("--nproc and --shard both split the samples; use one: --nproc N on one machine, "
                         "--shard K/N for separate jobs")
    if args.nproc > 1:
        cfg.validate()  # before launching N processes that would each fail the same way
        return launch_torchrun(args.nproc, args.argv)
    shard = parse_shard(args.shard)
    run_dir = run_benchmark(cfg, shard=shard if shard.world > 1 else None)
    if shard.world > 1 or not (run_dir / "results.csv").exists():  # an independent shard: merge scores it
        return 0
    if not init_from_env(cfg.device).is_main:  # under torchrun: rank 0 prints and reports
        return 0
    print(format_summary(run_dir))
    if not args.no_report:
        print(f"report: {build_report([run_dir])}")
    return 0


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this command under torchrun with N processes (gloo on CPU, NCCL on CUDA)."""
    import subprocess

    argv = list(argv)
    for i, arg in enumerate(argv):  # drop --nproc N / --nproc=N
        if arg == "--nproc":
            del argv[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del argv[i]
            break
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "bench", *argv]
    return subprocess.call(cmd)


def cmd_report(args: argparse.Namespace) -> int:
    print(build_report([Path(r) for r in args.runs], Path(args.out) if args.out else None))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:

    run_dir = merge_shards(Path(args.run))
    print(format_summary(run_dir))
    if not args.no_report:
        print(f"report: {build_report([run_dir])}")
    return 0


SUMMARY_COLUMNS = ("fid", "kid_mean", "cmmd", "clip_score", "acc_identity", "acc_subgroup", "acc_group")


def format_summary(run_dir: Path) -> str:
    """The terminal's view of a run: per cell, each metric with the interval the report shows (per-image
    metrics: paired bootstrap over prompts; set metrics: over seed sets), then the verdict in words."""
    summary = pd.read_csv(run_dir / "summary.csv")
    cols = [c for c in SUMMARY_COLUMNS if c in summary and summary[c].notna().any()]

    def cell(row: pd.Series, c: str) -> str:
        kind = "_boot" if c in per_image_columns() and pd.notna(row.get(f"{c}_boot_lo")) else ""
        lo, hi = row.get(f"{c}{kind}_lo"), row.get(f"{c}{kind}_hi")
        ci = "" if lo is None or pd.isna(lo) else f" [{lo:.3g}, {hi:.3g}]"
        return f"{row[c]:.4g}{ci}"

    lines = [f"results ({run_dir}): mean [95% interval: per-image metrics paired bootstrap over prompts, "
             f"set metrics over seed sets]"]
    header = ["guidance", "scale", "n"] + cols + ["s/img", "passes/img"]
    table = [header]
    for _, row in summary.iterrows():
        table.append([row["guidance"], f"{row['scale']:g}", str(int(row["n_samples"]))] + [cell(row, c) for c in cols]
                     + [f"{row.get('s_per_img', float('nan')):.3g}", f"{row.get('network_passes_per_img', float('nan')):.0f}"])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in table]
    analysis = analyse(pd.read_csv(run_dir / "results.csv"), load_per_sample(run_dir))
    return "\n".join(lines + [""] + verdict(analysis))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Guidance-strategy benchmark for diffusion models")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sample and score a guidance x scale x seed grid")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="rebuild a report from saved run directories")
    report.add_argument("runs", nargs="+")
    report.add_argument("--out", default=None)
    report.set_defaults(func=cmd_report)
    merge = sub.add_parser("merge", help="merge the samples of independent --shard jobs, then score and report")
    merge.add_argument("run")
    merge.add_argument("--no-report", action="store_true")
    merge.set_defaults(func=cmd_merge)
    lst = sub.add_parser("list", help="list guidance methods and prompt sets")
    lst.set_defaults(func=lambda a: cmd_list())
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def cmd_list() -> int:
    print("guidance methods:")
    print_guidance_list()
    print("\nbuilt-in prompt sets:")
    for name, desc in builtin_prompt_sets().items():
        print(f"{name:12s} {desc}")
    return 0
