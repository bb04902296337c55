"""invoke tasks: `invoke bench --guidance cfg` is the main job; plus train, report, regress, test, perf."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import shlex
import sys
from pathlib import Path

from invoke import task

from bench.runner.cli import run_parser

PY = shlex.quote(sys.executable)


def _flags(**options: object) -> str:
    parts = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _run_flags() -> tuple[inspect.Signature, dict[str, str], list[argparse.Action]]:
    """`invoke bench`'s parameters, generated from `python -m bench run`'s parser (itself generated from
    BenchConfig's fields): every flag, its default and its help; a --x/--no-x switch takes on or off."""
    actions = [a for a in run_parser()._actions if a.option_strings and a.dest != "help"]
    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    helps = {}
    for action in actions:
        switch = isinstance(action, argparse.BooleanOptionalAction)
        params.append(inspect.Parameter(action.dest, inspect.Parameter.KEYWORD_ONLY, default=action.default))
        helps[action.dest] = ("on, off or auto (default: auto)" + (f"; {action.help}" if action.help else "")) if switch \
            else (action.help or "").replace("%%", "%")
    return inspect.Signature(params), helps, actions


_SIGNATURE, _HELP, _ACTIONS = _run_flags()


def _bench_argv(options: dict[str, object]) -> str:
    """The `python -m bench run` flags for the given invoke options (unset ones left out)."""
    parts = []
    for action in _ACTIONS:
        value, flag = options.get(action.dest, action.default), action.option_strings[0]
        if value is None or value is False or value == action.default:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            if value == "auto":  # the default: on for CUDA, off for CPU
                continue
            if value not in ("on", "off", True):
                raise SystemExit(f"{flag} {value!r}: use on, off or auto")
            parts.append(flag if value in ("on", True) else action.option_strings[1])
        elif value is True:
            parts.append(flag)
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def bench(c, **options):
    """Benchmark guidance methods over scales and seeds; prints a summary and writes reports/<run-id>/.

    Takes every flag of `python -m bench run` (same names and defaults): --task inpaint (--masks,
    --inpaint-methods, --repaint J,R) runs the editing benchmark and --cascade the base -> upsampler
    cascade (docs/inpainting.md)."""
    c.run(f"{PY} -m bench run {_bench_argv(options)}", pty=False)


bench.__signature__ = _SIGNATURE
bench = task(bench, auto_shortflags=False, help=_HELP)


@task(help={"run": "run directory written by --shard jobs"})
def merge(c, run):
    """Merge the samples of independent --shard K/N jobs into one run, then score and report it."""
    c.run(f"{PY} -m bench merge {shlex.quote(run)}")


@task(help={"runs": "one or more run directories (comma-separated)", "out": "output directory"})
def report(c, runs, out=None):
    """Rebuild the HTML report of one run, or compare several runs side by side."""
    dirs = " ".join(shlex.quote(r) for r in runs.split(","))
    c.run(f"{PY} -m bench report {dirs} {_flags(out=out)}")


@task(help={"models": "subset of unet,classifier,noised_clip,eval_clip,eval_classifier,weak_unet",
            "budget": "seconds per model", "device": "cuda or cpu", "small": "tiny architectures (smoke test)",
            "init_from": "continue from the exported models in this directory (e.g. guidance/zoo/weights)"})
def train(c, models=None, budget=600, steps=None, batch=None, device=None, small=False, data=None, out=None,
          run_dir=None, init_from=None):
    """Rebuild the emoji dataset and train the embedded zoo (resumes from runs/train), then its reference files."""
    args = _flags(models=models, budget=budget, steps=steps, batch=batch, device=device, small=small, data=data,
                  out=out, run_dir=run_dir, init_from=init_from)
    c.run(f"{PY} -m guidance.zoo.train {args}")
    c.run(f"{PY} -m guidance.zoo.reference {_flags(data=data, out=out)}")
    c.run(f"{PY} -m bench.zoo.reference {_flags(out=out)}")
    c.run(f"{PY} -m bench.zoo.cards {_flags(out=out)}")


@task(help={"update": "rewrite the committed baseline", "reason": "why the baseline changes (required with --update)"})
def regress(c, update=False, reason=None):
    """CI quality gate: a fixed small CPU benchmark compared with the committed baseline."""
    c.run(f"{PY} -m bench.tools.regress {_flags(update=update, reason=reason)}")


SYSTEM_PACKAGES = {  # Debian package -> file it provides (dataset-builder and browser tests need them)
    "fonts-noto-color-emoji": "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "unicode-data": "/usr/share/unicode/emoji/emoji-test.txt",
    "chromium": "/usr/bin/chromium",
}


@task
def system_deps(c):
    """Install the Debian packages the tests use (emoji fonts, Unicode data, Chromium) if missing."""
    missing = [pkg for pkg, path in SYSTEM_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        print(f"missing system packages {missing}: install them with apt-get (as root); their tests will skip")
        return
    c.run("apt-get update -qq", env={"DEBIAN_FRONTEND": "noninteractive"})
    c.run("apt-get install -y -qq --no-install-recommends " + " ".join(missing), env={"DEBIAN_FRONTEND": "noninteractive"})


K_DIFFUSION = "k-diffusion==0.1.1.post1"  # parity reference; its samplers need none of its dependencies


@task(pre=[system_deps])
def test(c, fast=False):
    """Run the test suite (what CI runs); installs the k-diffusion reference lean (no dependencies) first."""
    if importlib.util.find_spec("k_diffusion") is None:
        c.run(f"{PY} -m pip install -q --no-deps {K_DIFFUSION}")
    c.run(f"{PY} -m pytest -q -n logical --dist worksteal" + (" -m 'not slow'" if fast else ""))


@task(help={"compare": "fail if slower than the last saved run by this much, e.g. mean:10%",
            "device": "cpu or cuda, for the table (the pytest-benchmark steps run on the CPU)",
            "table_only": "print the time-split table only"})
def perf(c, compare=None, device=None, table_only=False):
    """Time split per guidance (table), then pytest-benchmark of one step per guidance (saved, compared)."""
    c.run(f"{PY} -m bench.tools.perf {_flags(device=device)}")
    if not table_only:
        fail = f" --benchmark-compare --benchmark-compare-fail={compare}" if compare else ""
        c.run(f"{PY} -m pytest benchmarks -q --benchmark-enable --benchmark-autosave{fail} -p no:cacheprovider")


@task(auto_shortflags=False, help={"config": "glide-base (default), zoo or tiny", "batches": "comma-separated batch sizes",
            "guidance": "subset of none,cfg,classifier,clip", "steps": "sampler steps per sample",
            "sampler": "ddim (default), heun, dpmpp-2m, ...", "schedule": "sigma schedule (default leading)",
            "compile": "torch.compile the networks", "cuda_graphs": "torch.compile with CUDA graphs",
            "autotune": "with --compile/--cuda-graphs: inductor max-autotune (minutes of tuning)",
            "compare_half_weights": "time each row with half-precision and fp32 weights, side by side",
            "repeats": "timed runs per row (median)"})
def limit(c, config=None, batches=None, guidance=None, steps=None, device=None, compile=False, cuda_graphs=False,
          autotune=False, compare_half_weights=False, repeats=None, sampler=None, schedule=None):
    """GPU: img/s and TFLOP/s of guided sampling with a GLIDE-base-sized UNet, against the measured peak."""
    c.run(f"{PY} -m bench.tools.limit " + _flags(config=config, batches=batches, guidance=guidance, steps=steps,
                                            sampler=sampler, schedule=schedule,
                                            device=device, compile=compile, cuda_graphs=cuda_graphs,
                                            autotune=autotune, compare_half_weights=compare_half_weights,
                                            repeats=repeats))
