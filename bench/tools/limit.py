"""How close guided sampling gets to the hardware limit: `python -m bench.tools.limit` (issue 6).

Builds the zoo's UNet (bench.zoo.sized) at GLIDE-base size (64x64, 192 channels, mults 1-2-3-4, 3 blocks,
attention at 32/16/8 with 64-channel heads, a 16-layer 512-wide text transformer over 128 tokens:
about GLIDE's FLOPs per forward) with random weights, counts the FLOPs of one guided sampling step
with `torch.utils.flop_counter` (backward passes of gradient guidance included), and times whole
sampling runs per guidance and batch size. Reports img/s, achieved TFLOP/s and the share of a
measured dense bf16 matmul peak. Random weights: the speed, not the samples, is the point.

    python -m bench.tools.limit --device cuda --batches 1,16,64 --steps 100 --guidance cfg,classifier,clip
    python -m bench.tools.limit --config tiny --device cpu --steps 2 --batches 1,2   # smoke test
    python -m bench.tools.limit --device cuda --guidance cfg --batches 64 --profile  # where a step's time goes
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from bench.runner.cli import exit_on_bad_input, positive_int, positive_ints
from bench.tools.perf import method_list, timed, timed_side_by_side
from bench.runner.failure import Parser
from bench.zoo.sized import CONFIGS, SizeConfig, build_models, conditions
from guidance.accelerate import HALF, Acceleration, add_arguments, autocast_context, checked_device, compile_report, from_args
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import guidance_class, make_guidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.process import SCHEDULES
from guidance.samplers import SAMPLERS, sample


MEASURED = ("none", "cfg", "classifier", "clip")  # the methods the GLIDE-sized model set can run


class _GlobalScope:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break `autograd.grad` with
    respect to a leaf input (as gradient guidance does); the totals need no per-module breakdown."""

    parents = {"Global"}

    def __enter__(self) -> "_GlobalScope":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def countable_kernels() -> Iterator[None]:
    """Run the same maths through ops that `FlopCounterMode` counts: nn.TransformerEncoderLayer's fused
    inference fast path and the CPU flash-attention kernel have no FLOP formula (they counted 0), so the
    slow path and SDPA's math backend stand in while counting. CUDA autocast already avoided both."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@dataclass(frozen=True)
class Trajectory:
    """The process, sigmas and sampler every row samples with (default: DDIM at a fixed stride, as
    DDIM's paper). FLOPs per image are one guided model evaluation's times the sampler's NFE."""

    process: VPDiscrete
    sigmas: list[float]
    sampler: str = "ddim"

    def one_step(self, models: dict, guidance, x: torch.Tensor, index: int, cond: Conditions) -> torch.Tensor:  # noqa: ANN001
        """One guided model evaluation, as a DDIM step from the index-th sigma (to 0: the same network work)."""
        return sample(denoiser(models), self.process, [self.sigmas[index], 0.0], guidance, cond, x.shape[1:],
                      range(x.shape[0]), x_T=x, device=x.device)

    @property
    def evaluations(self) -> int:
        """Model evaluations per trajectory (NFE): Heun's are about twice its steps."""
        return SAMPLERS[self.sampler].nfe(self.sigmas)


def denoiser(models: dict) -> NetworkDenoiser:
    return NetworkDenoiser(models["unet"], "eps", models["unet"].learned_variance)


def step_flops(models: dict, guidance_name: str, size: SizeConfig, diffusion: Trajectory,
               device: torch.device, autocast) -> float:
    """FLOPs of one guided DDIM step per image (forward passes, and backward for gradient guidance)."""
    guidance = make_guidance(guidance_name, guidance_class(guidance_name).typical_scale(), models)
    shape = (2, 3, size.unet.image_size, size.unet.image_size)
    x, cond = torch.randn(shape, device=device), conditions(size, 2, device)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalScope()
    with countable_kernels(), counter, autocast:
        diffusion.one_step(models, guidance, x, len(diffusion.sigmas) // 2, cond)
    return counter.get_total_flops() / shape[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 20) -> float:
    """Dense matmul FLOP/s in `dtype`: the ceiling that the TFLOP/s column is compared with."""
    if device.type != "cuda":
        n, repeats = 1024, 5
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds


def model_bytes(models: dict[str, torch.nn.Module]) -> int:
    return sum(t.numel() * t.element_size() for m in models.values() for t in (*m.parameters(), *m.buffers()))


def measure(model_sets: dict[str, dict], size: SizeConfig, guidance_name: str, batch: int,
            diffusion: Trajectory, device: torch.device, autocast, repeats: int) -> dict[str, tuple[float, float]]:
    """Per model set: (median seconds per sampling run of `batch` images over `repeats` interleaved
    rounds, peak memory in MiB). Several sets (the same networks, accelerated differently) are timed
    side by side, so their ratio holds whatever the clocks do. Memory is a set's own: its networks'
    weights plus the most its warm-up allocated beyond what was already held (other sets included)."""
    runs: dict[str, Callable[[], None]] = {}
    memory: dict[str, float] = {}
    shape = (3, size.unet.image_size, size.unet.image_size)
    for variant, models in model_sets.items():
        guidance = make_guidance(guidance_name, guidance_class(guidance_name).typical_scale(), models)
        cond = conditions(size, batch, device)

        def run(sigmas: list[float] = diffusion.sigmas, models=models, guidance=guidance, cond=cond) -> None:
            # gradient guidance turns gradients on for its guide alone; inductor freezes weights only without them
            with autocast, torch.no_grad():
                sample(denoiser(models), diffusion.process, sigmas, guidance, cond, shape, range(batch),
                       sampler=diffusion.sampler, device=device)

        if device.type == "cuda":
            torch.cuda.synchronize(device)
            held = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        # two steps warm up what the whole run uses (same shapes); CUDA graphs record on their second call
        run(diffusion.sigmas[-3:] if len(diffusion.sigmas) > 2 else diffusion.sigmas)
        memory[variant] = ((model_bytes(models) + torch.cuda.max_memory_allocated(device) - held) / 2**20
                           if device.type == "cuda" else float("nan"))
        runs[variant] = run
    seconds = timed_side_by_side(runs, device, repeats, warmup=False)
    return {variant: (seconds[variant], memory[variant]) for variant in model_sets}


def prepare(config: str, device: torch.device, dtype: torch.dtype, steps: int, sampler: str = "ddim",
            schedule: str = "leading"):
    """(size, models, autocast context, DDIM process of `steps` steps); speed-ups not yet applied, so that
    FLOPs are counted on the plain modules (a compiled module met first under a dispatch mode may stay eager)."""
    size = CONFIGS[config]
    process = VPDiscrete.from_schedule("cosine", 1000)
    diffusion = Trajectory(process, process.sigmas(steps, schedule), sampler)
    return size, build_models(size, device), autocast_context(device, dtype), diffusion


def accelerate(models: dict[str, torch.nn.Module], acceleration: Acceleration, device: torch.device,
               dtype: torch.dtype) -> None:
    for model in models.values():
        acceleration.apply(model, device, dtype)


def profile_step(config: str, guidance_name: str, batch: int, device: torch.device, dtype: torch.dtype,
                 acceleration: Acceleration = Acceleration(), rows: int = 25) -> str:
    """Operator table (device time first) of guided DDIM steps after a warm-up: where a step's time goes."""
    size, models, autocast, diffusion = prepare(config, device, dtype, steps=10)
    accelerate(models, acceleration, device, dtype)
    guidance = make_guidance(guidance_name, guidance_class(guidance_name).typical_scale(), models)
    cond = conditions(size, batch, device)
    x = torch.randn(batch, 3, size.unet.image_size, size.unet.image_size, device=device)

    def steps() -> None:
        with autocast, torch.no_grad():
            for index in (0, 4, 8):
                diffusion.one_step(models, guidance, x, index, cond)

    steps()  # warm-up (autotuning, compilation)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        steps()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


def benchmark(config: str, guidance: list[str], batches: list[int], steps: int, device: torch.device,
              dtype: torch.dtype, acceleration: Acceleration = Acceleration(), repeats: int = 1,
              compare_half_weights: bool = False, sampler: str = "ddim", schedule: str = "leading") -> pd.DataFrame:
    """One row per (guidance, batch): img/s, FLOPs per image, TFLOP/s, share of peak, peak memory.

    `compare_half_weights`: a row per weight storage too (`weights`: half or fp32), the same networks
    timed side by side in interleaved rounds: the effect of storing weights in half precision, as a
    ratio from one process."""
    unknown = [g for g in guidance if g not in MEASURED]
    if unknown:
        raise ValueError(f"--guidance {unknown}: this script measures {', '.join(MEASURED)}")
    if compare_half_weights and dtype not in HALF:
        raise ValueError(f"--compare-half-weights compares weights stored in half precision with fp32 ones, "
                         f"which only differ under half-precision autocast; add --dtype bfloat16 (got {dtype})")
    size, models, autocast, diffusion = prepare(config, device, dtype, steps, sampler, schedule)
    params = sum(p.numel() for p in models["unet"].parameters())
    forward = step_flops(models, "none", size, diffusion, device, autocast)
    flops = {name: step_flops(models, name, size, diffusion, device, autocast) * diffusion.evaluations
             for name in guidance}
    variants = ({"half": replace(acceleration, half_weights=True), "fp32": replace(acceleration, half_weights=False)}
                if compare_half_weights else {"": acceleration})
    model_sets = {}
    for variant, speedups in variants.items():
        model_sets[variant] = models if not model_sets else build_models(size, device)  # same seed: same weights
        accelerate(model_sets[variant], speedups, device, dtype)
    peak = matmul_peak(device, dtype)
    print(f"{config}: UNet {params / 1e6:.3g}M parameters, {forward / 1e9:.3g} GFLOP per forward per image; "
          f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, {dtype}, "
          f"{' vs '.join(speedups.describe(device, dtype) for speedups in variants.values())}; "
          f"measured matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows = []
    for name in guidance:
        for batch in batches:
            measured = measure(model_sets, size, name, batch, diffusion, device, autocast, repeats)
            for variant, (seconds, memory) in measured.items():
                rate = batch / seconds
                rows.append({"guidance": name, "batch": batch, **({"weights": variant} if variant else {}),
                             "img_per_s": rate, "GFLOP_per_img": flops[name] / 1e9,
                             "TFLOP_per_s": flops[name] * rate / 1e12, "share_of_peak": flops[name] * rate / peak,
                             "limit_img_per_s": peak / flops[name], "peak_mem_MiB": memory})
                print(rows[-1], flush=True)
    if acceleration.compile_mode is not None:
        print(compile_report(), flush=True)
    return pd.DataFrame(rows).set_index(["guidance", "batch", "weights"] if compare_half_weights else ["guidance", "batch"])


@exit_on_bad_input
def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="glide-base")
    parser.add_argument("--guidance", default="cfg,classifier,clip")
    parser.add_argument("--batches", type=positive_ints, default="1,16,64")
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="timed runs per row, median taken (default 1; 2 with --compare-half-weights, so each "
                             "storage goes first once)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--compare-half-weights", action="store_true",
                        help="time every row twice, side by side in interleaved rounds: weights stored in half "
                             "precision (the default) and in fp32 (--no-half-weights); prints their img/s ratio")
    parser.add_argument("--profile", action="store_true",
                        help="print the operator table of 3 guided steps (first guidance, largest batch) and exit")
    parser.add_argument("--sampler", default="ddim", choices=list(SAMPLERS))
    parser.add_argument("--schedule", default="leading", choices=list(SCHEDULES))
    add_arguments(parser)
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    device = checked_device(args.device)
    acceleration = from_args(args, device)
    if args.compare_half_weights and args.half_weights is not None:
        raise ValueError("--compare-half-weights times both weight storages; drop --half-weights/--no-half-weights")
    guidance = method_list(args.guidance, MEASURED)
    repeats = args.repeats or (2 if args.compare_half_weights else 1)
    dtype = getattr(torch, args.dtype)
    if args.profile:
        print(f"{args.config}, {guidance[0]}, batch {max(args.batches)}, 3 DDIM steps:")
        print(profile_step(args.config, guidance[0], max(args.batches), device, dtype, acceleration))
        return 0
    table = benchmark(args.config, guidance, args.batches, args.steps, device, dtype, acceleration, repeats,
                      args.compare_half_weights, args.sampler, args.schedule)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        print(f"\n{args.steps} {args.sampler} steps ({args.schedule}), median of {repeats} run(s) after a warm-up; peak_mem_MiB: the networks' "
              f"weights plus the most a 2-step warm-up allocated beyond them")
        print(table.to_string())
        if args.compare_half_weights:
            rates = table["img_per_s"].unstack("weights")
            print("\nimg/s with half-precision weights over fp32 weights, same process, interleaved:")
            print((rates["half"] / rates["fp32"]).rename("ratio").to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
