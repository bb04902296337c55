"""Command line of the harness: `python -m bench run|report|list` (what the invoke tasks call)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields
from typing import Callable
from pathlib import Path

import pandas as pd

from bench.stats.analysis import analyse, load_per_sample
from bench.runner.config import DEFAULT_TASK, PRESETS, BenchConfig, task_fields
from bench.runner.flags import add_field_arguments, field_values, flag_name
from bench.runner.distributed import init_from_env, parse_shard
from bench.evaluators.registry import declared_columns, per_image_columns
from bench.runner.failure import Parser, guarded
from bench.runner.preflight import preflight
from bench.prompts.readers import builtin_prompt_sets
from bench.report.html import build_report
from bench.runner.run import run_benchmark
from bench.runner.shards import merge_shards
from bench.report.verdict import verdict
from guidance.accelerate import add_arguments as add_acceleration_arguments
from guidance.guiders import available_guidance
from guidance.models import model_sampler
from guidance.process import SCHEDULES
from guidance.samplers import SAMPLERS
from guidance.sources.schedule import SCHEDULER_OF


def exit_on_bad_input(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """For `python -m bench.tools.perf|limit`: bad input (a ValueError naming the problem and its fix) exits
    with its one line and code 2 instead of a traceback, as `python -m bench` does (bench.runner.failure)."""
    return guarded(main, raises=True)


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


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """`python -m bench run`'s flags: BenchConfig's fields (declared there, bench.runner.flags), the speed-ups
    (guidance.accelerate), then the flags of how the run is launched and of the other tasks."""
    add_field_arguments(p, fields(BenchConfig), {name for preset in PRESETS.values() for name in preset})
    add_acceleration_arguments(p)
    p.add_argument("--nproc", type=positive_int, default=1, help="processes to launch with torchrun (samples sharded by batch)")
    p.add_argument("--shard", default=None, help="K/N: this job samples shard K of N (then `python -m bench merge`)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    add_edit_arguments(p)


def run_parser() -> argparse.ArgumentParser:
    """`python -m bench run`'s parser alone (what tasks.py generates `invoke bench` from)."""
    parser = argparse.ArgumentParser(prog="python -m bench run")
    add_run_arguments(parser)
    return parser


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    """The tasks' own options are BenchConfig fields (declared there with the tasks they apply to); this is
    only `--cascade`, the earlier spelling of `--task cascade`."""
    p.add_argument("--cascade", action="store_true", help="replaced by --task cascade (still accepted, with a note)")


def cascade_alias(args: argparse.Namespace, overrides: dict) -> None:
    """--cascade read as --task cascade (with a note that says so)."""
    if not getattr(args, "cascade", False):
        return
    task = overrides.get("task")
    if task not in (None, "cascade"):
        raise ValueError(f"--cascade is replaced by --task cascade, and this command also gives --task {task}; "
                         f"give one --task")
    print("note: --cascade is replaced by --task cascade; running --task cascade", file=sys.stderr)
    overrides["task"] = "cascade"


def check_task_options(overrides: dict) -> None:
    """Refuse options of another task (--mask-file without --task inpaint, ...): they would be ignored."""
    task = overrides.get("task", DEFAULT_TASK)
    unused = [flag_name(name) for name, tasks in task_fields().items() if name in overrides and task not in tasks]
    if unused:
        verb, it = ("does", "it") if len(unused) == 1 else ("do", "them")
        owners = sorted({t for name in unused for t in task_fields()[name[2:].replace("-", "_")]})
        raise ValueError(f"{', '.join(unused)} {verb} not apply to --task {task} and would be ignored; drop {it}, or "
                         f"run the task that reads {it} (--task {' or '.join(owners)})")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The config the flags ask for: each field given on the command line, the preset's or the field's
    default otherwise (a --scales list applies to every method; --prompt-limit all lifts the preset's)."""
    overrides = field_values(args, fields(BenchConfig))
    cascade_alias(args, overrides)
    check_task_options(overrides)
    preset = overrides.pop("preset", "quick")
    guidance = overrides.setdefault("guidance", ["cfg"])
    if isinstance(overrides.get("scales"), list):
        overrides["scales"] = {g: overrides["scales"] for g in guidance}
    every_prompt = overrides.get("prompt_limit") == "all"
    if every_prompt:
        del overrides["prompt_limit"]
    overrides.setdefault("sampler", model_sampler(overrides.get("model")))
    cfg = BenchConfig.from_preset(preset, **overrides)
    return cfg.with_overrides(prompt_limit=None) if every_prompt else cfg


def print_guidance_list() -> None:
    for name, line in available_guidance().items():
        print(f"{name:12s} {line}")


def print_sampler_list() -> None:
    for name, spec in SAMPLERS.items():
        print(f"{name:16s} {spec.description}")
        if name in SCHEDULER_OF:
            print(f"{'':16s} on diffusers:PATH = pipe.scheduler = {SCHEDULER_OF[name]}.from_config(pipe.scheduler.config)")
    print("\nschedules (--schedule):")
    for name, line in SCHEDULES.items():
        print(f"{name:16s} {line}")


def cmd_run(args: argparse.Namespace) -> int:
    if (args.guidance or "").strip() == "list":
        print_guidance_list()
        return 0
    if (args.sampler or "").strip() == "list":
        print_sampler_list()
        return 0
    cfg = config_from_args(args)
    if args.nproc > 1 and args.shard:
        raise ValueError("--nproc and --shard both split the samples; use one: --nproc N on one machine, "
                         "--shard K/N for separate jobs")
    if args.nproc > 1:
        preflight(cfg)  # before launching N processes that would each fail the same way
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


def format_summary(run_dir: Path) -> str:
    """The terminal's view of a run: per cell, each metric with the interval the report shows (per-image
    metrics: paired bootstrap over prompts; set metrics: over seed sets), then the verdict in words."""
    summary = pd.read_csv(run_dir / "summary.csv")
    cols = [c for c, spec in declared_columns().items()
            if spec.headline and not spec.spread and c in summary and summary[c].notna().any()]

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


@guarded
def main(argv: list[str] | None = None) -> int:
    """Exit codes (docs/running.md): 0 done, 2 bad input (one line naming the flag), 3 internal error."""
    parser = Parser(prog="python -m bench", description="Guidance-strategy benchmark for diffusion models")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sample and score a guidance x scale x seed grid")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run, parser=run)  # the parser: its defaults tell which flags were given
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
    return args.func(args)


def cmd_list() -> int:
    print("guidance methods:")
    print_guidance_list()
    print("\nbuilt-in prompt sets:")
    for name, desc in builtin_prompt_sets().items():
        print(f"{name:12s} {desc}")
    return 0
