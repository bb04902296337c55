"""Where sampling time goes, per guidance: `python -m bench.tools.perf` (what `invoke perf` prints).

For each method it times (1) the real sampler, (2) a bare loop that replays the network calls the
sampler made (same networks, same batch shapes, recorded from one sampling run), (3) the guiding-model work (forward + backward)
alone, and (4) scoring the images. Overhead = sampler time / (bare + guide) - 1: the cost of the
sampler and guidance code itself. All figures come from one process, measured side by side: the
sampler, the bare loop and the guide are timed in interleaved rounds (the order reversed every other
round) and each takes its median, so a drift in clocks or background load cannot land on one of them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.runner.cli import exit_on_bad_input, positive_int
from bench.evaluators import CLIPScore, ScoringBatch
from bench.runner.failure import Parser
from bench.evaluators.domain import DomainNet
from guidance.accelerate import add_arguments, autocast_context, checked_device, from_args
from guidance.guiders import REGISTRY, guidance_class, make_guidance
from guidance.guiders.base import GuidanceCost
from guidance.bundle import ModelBundle
from guidance.denoisers import NetworkDenoiser
from guidance.guiders.base import StepInfo
from guidance.models import load_bundle
from guidance.process import SCHEDULES
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, sample, sampler_spec
from guidance.evaluation import domain_evaluators

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup=None) -> float:
    """Mean seconds per call of `fn` after one call of `warmup` (default `fn`): allocator, oneDNN
    primitives, autotuning and compilation happen there. A warm-up needs the shapes, not the length."""
    (warmup or fn)()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def timed_side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                       warmup: bool = True) -> dict[str, float]:
    """Median seconds per call of each fn, in `repeats` interleaved rounds after one warm-up call each
    (`warmup=False`: the caller warmed them up).

    Timing one variant after the other lets a clock ramp, a warming cache or a neighbour's load favour
    whichever ran later (suspected behind the +17% that `none`, measured first, once showed on an
    H100); in rounds of alternating order (A B, B A, ...) all meet the same conditions, so ratios hold.
    """
    if warmup:
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class _RecordingDenoiser:
    """Forwards to a denoiser and keeps each call's module and arguments, for the bare loop to replay."""

    def __init__(self, model: torch.nn.Module, calls: list) -> None:
        self.model, self.calls = model, calls

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.model, (x, t, cond)))
        return self.model(x, t, cond)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def recording(denoiser: NetworkDenoiser, calls: list) -> NetworkDenoiser:
    """The same denoiser with its network's calls recorded."""
    return NetworkDenoiser(_RecordingDenoiser(denoiser.net, calls), denoiser.prediction, denoiser.learned_variance,
                           denoiser.null_cond)


def network_calls(name: str, bundle: ModelBundle, sigmas: list[float], sampler: str, cond: Conditions, batch: int,
                  device: torch.device) -> list:
    """(denoiser, args) of every network pass one sampling run makes, in order: the bare loop's work.

    Recorded rather than derived from the method's cost, so the bare loop calls the same networks on
    the same batch shapes as the sampler: a weak model's passes (autoguidance) stay the weak model's,
    and steps outside a guidance interval keep their single pass.
    """
    calls: list = []
    models = {k: recording(m, calls) if k == "weak" and m is not None else m
              for k, m in bundle.guiding_models().items()}
    guidance = make_guidance(name, guidance_class(name).typical_scale(), models)
    with torch.no_grad():
        sample(recording(bundle.denoiser, calls), bundle.process, sigmas, guidance, cond, bundle.sample_shape,
               range(batch), sampler=sampler, clip_denoised=bundle.clip_denoised, device=device)
    return calls


@dataclass
class Workload:
    """What one method's row times: the sampler, the bare loop and the guide, with their inputs."""

    texts: list[str]
    x: torch.Tensor
    cost: GuidanceCost
    runs: dict[str, Callable[[], object]]


def workload(name: str, bundle: ModelBundle, batch: int, steps: int, device: torch.device, sampler: str = "ddim",
             schedule: str = "default") -> Workload:
    texts = ["grinning face", "red apple", "flag: Japan", "rocket"] * (batch // 4 + 1)
    texts = texts[:batch]
    cond = bundle.conditions(texts, torch.arange(batch) % 100).to(device)
    sigmas = bundle.process.sigmas(steps, schedule)
    guidance = make_guidance(name, guidance_class(name).typical_scale(), bundle.guiding_models())
    cost = guidance.cost_per_image(sampler_spec(sampler).evaluations(sigmas), sigmas)
    calls = network_calls(name, bundle, sigmas, sampler, cond, batch, device)
    x = torch.randn(batch, *bundle.sample_shape, device=device)
    level = bundle.process.level(sigmas[steps // 2])
    info = StepInfo(level, level.timesteps(batch, device), tuple(sigmas))
    runs = {"sampler": lambda: sample(bundle.denoiser, bundle.process, sigmas, guidance, cond, bundle.sample_shape,
                                      range(batch), sampler=sampler, clip_denoised=bundle.clip_denoised, device=device),
            "bare": lambda: [model(*args) for model, args in calls]}
    if cost.guide_passes:
        evaluations = len(sampler_spec(sampler).evaluations(sigmas))  # Heun guides twice per step
        runs["guide"] = lambda: [guidance.gradient(x, info, cond) for _ in range(evaluations)]
    return Workload(texts, x, cost, runs)


# CUDA runtime calls that make the host wait for the device (a sampler must make none inside its loop)
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


@contextmanager
def gc_pauses() -> Iterator[list[float]]:
    """Seconds of each Python garbage collection inside the block: a full collection over the half
    million objects a loaded suite holds takes about 0.2 s (measured on this project's CPU machine),
    a pause no profiler event shows."""
    pauses: list[float] = []
    started: list[float] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(watch)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(watch)


def trace(fn: Callable[[], object], device: torch.device) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:
    """Host-side counts of one call of `fn`: operators dispatched, launches (kernels and CUDA graphs),
    host-device synchronisations (the final one that ends the timing included), garbage collections
    and their seconds, and the device's busy time; and host self-time and calls per event name. Where
    the sampler's extra time over the bare loop goes when the GPU waits for the host (a launch-bound
    network): more launches, a sync, a collection, or one slow call.
    The warm-up call runs under a profiler too, so the timed call pays no profiler start-up (CUPTI)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities):
        fn()
        _sync(device)
    with profile(activities=activities) as prof, gc_pauses() as pauses:
        start = time.perf_counter()
        fn()
        _sync(device)
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if not getattr(e, "is_user_annotation", False)]
    count = lambda keep: sum(e.count for e in events if keep(e.key))  # noqa: E731
    row = {"wall_s": wall, "aten_ops": count(lambda k: k.startswith("aten::")),
           "launches": count(lambda k: k.startswith(("cudaLaunch", "cuLaunch", "cudaGraphLaunch"))),
           "syncs": count(lambda k: k.startswith(SYNC_CALLS) and "Async" not in k),
           "gc_runs": len(pauses), "gc_s": sum(pauses)}
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    row["device_busy_s"] = sum(e.self_device_time_total for e in kernels) / 1e6
    host = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in events if e.device_type != DeviceType.CUDA}
    return row, host


def trace_table(name: str, bundle: ModelBundle, batch: int, steps: int, device: torch.device,
                **plan: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sampler's, the bare loop's (and the guide's) traces side by side, with the sampler's own extra
    per step (sampler - bare - guide: what the sampler and guidance code add); and per event name, the
    host self-time and calls of that extra over the whole run (most time first). The sampler's run syncs
    once more than the bare loop by design (its NaN check after the loop): more means a sync inside it."""
    runs = workload(name, bundle, batch, steps, device, **plan).runs
    with torch.no_grad():
        traced = {part: trace(fn, device) for part, fn in runs.items()}
    table = pd.DataFrame({part: row for part, (row, _) in traced.items()}).T
    work = [part for part in traced if part != "sampler"]
    table.loc["extra_per_step"] = (table.loc["sampler"] - table.loc[work].sum()) / steps
    extra = {}
    for key, (seconds, calls) in traced["sampler"][1].items():
        spent = [traced[part][1].get(key, (0.0, 0)) for part in work]
        extra[key] = {"extra_host_s": seconds - sum(t for t, _ in spent), "extra_calls": calls - sum(c for _, c in spent)}
    return table, pd.DataFrame(extra).T.sort_values("extra_host_s", ascending=False, kind="stable")


@functools.lru_cache(maxsize=None)
def scoring_networks(device: torch.device) -> tuple:
    """The evaluation classifier and CLIP, loaded once per device for every method's row."""
    evaluators = domain_evaluators()
    return evaluators.load_classifier(device), evaluators.load_clip(device)


def measure(name: str, bundle: ModelBundle, batch: int, steps: int, device: torch.device, repeats: int,
            **plan: str) -> dict[str, float]:
    work = workload(name, bundle, batch, steps, device, **plan)
    texts, x, cost = work.texts, work.x, work.cost
    with torch.no_grad():
        seconds = timed_side_by_side(work.runs, device, repeats)
    full, bare, guide = seconds["sampler"], seconds["bare"], seconds.get("guide", 0.0)

    classifier, eval_clip = scoring_networks(device)
    features, clip = DomainNet(classifier), CLIPScore(eval_clip, device)
    with torch.no_grad():
        x = bundle.decode(x)  # latent models: the images scoring sees
    uint8 = ((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    with torch.no_grad():
        metrics = timed(lambda: (features(uint8), clip.update(ScoringBatch(uint8, list(texts))), classifier.heads(x)), device, repeats)
    return {"guidance": name, "img_per_s": batch / full, "network_passes_per_img": cost.network_passes,
            "backward_passes_per_img": cost.backward_passes, "sampler_s": full, "network_s": bare,
            "guidance_extra_s": guide, "sampler_overhead_s": full - bare - guide, "metrics_s": metrics,
            "overhead_vs_bare": full / (bare + guide) - 1}


def method_list(text: str, valid: Iterable[str]) -> list[str]:
    """--guidance 'a,b' as names, each one of `valid`; otherwise a one-line ValueError naming them."""
    valid = list(valid)
    names = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in names if g not in valid]
    if unknown or not names:
        raise ValueError(f"--guidance {text!r}: {f'unknown {unknown}' if unknown else 'names no method'}; "
                         f"valid: {', '.join(valid)} (comma-separated)")
    return names


@exit_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", default="none,cfg,classifier,clip")
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--sampler", default="ddim", choices=list(SAMPLERS))
    parser.add_argument("--schedule", default="default", choices=list(SCHEDULES))
    parser.add_argument("--model", default="emoji", help="'emoji' (the embedded zoo) or a zoo-format directory")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="autocast dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the table: per method, operators, kernel launches, host-device syncs and "
                             "device busy time of one sampling run beside its bare loop (why a sampler is slower)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    names = method_list(args.guidance, REGISTRY)
    device = checked_device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    autocast = autocast_context(device, dtype)
    acceleration = from_args(args, device)
    bundle = load_bundle(args.model, device, args.sampler)
    plan = {"sampler": args.sampler, "schedule": args.schedule}
    bundle.process.sigmas(args.steps, args.schedule)  # a bad --steps or --schedule fails here, in one line
    bundle.accelerate(acceleration, device, dtype)
    if args.profile:
        print(f"device {device} ({acceleration.describe(device, dtype)}, {dtype})")
        with autocast, pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
            for name in names:
                print(f"{name}: one sampling run and its bare loop, traced (batch {args.batch}, {args.steps} steps)")
                table, extra = trace_table(name, bundle, args.batch, args.steps, device, **plan)
                print(table.to_string())
                print("host self-time and calls beyond the bare loop and guide, by event (per run, most time first):")
                print(extra.head(10).to_string())
        return 0
    with autocast:
        rows = [measure(g, bundle, args.batch, args.steps, device, args.repeats, **plan) for g in names]
    table = pd.DataFrame(rows).set_index("guidance")
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(f"device {device} ({acceleration.describe(device, dtype)}, {dtype}), batch {args.batch}, {args.steps} {args.sampler} steps, "
              f"median of {args.repeats} interleaved runs")
        print(table.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
