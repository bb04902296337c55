"""Speed-ups applied to the networks before sampling: channels_last, torch.compile, CUDA graphs,
inductor's max-autotune, and (under half-precision autocast, unless turned off) weights stored in that
precision.

They change how a network runs, never what it computes (beyond float rounding), so they are not
part of a run's sample key. Each is opt-in except channels_last, which defaults to on for CUDA
(convolutions in NHWC use the tensor cores without layout transposes) and off for the CPU, and the
stored half-precision weights, which compute exactly what autocast computed (see `store_autocast_weights`).
"""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Acceleration:
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    compile: bool = False  # torch.compile (inductor); the first batch of each shape pays the compile time
    cuda_graphs: bool = False  # torch.compile mode "reduce-overhead": replays whole forwards as CUDA graphs
    cudnn_benchmark: bool | None = None  # None: on for CUDA; cuDNN times its convolution algorithms per shape
    autotune: bool = False  # inductor's max-autotune: benchmarks Triton/template kernels per shape (slow to compile)
    half_weights: bool = True  # under half-precision autocast, store conv/linear weights in it (same samples)

    def check(self, device: torch.device) -> None:
        """Raise a one-line ValueError for a combination this device cannot run."""
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError(f"--cuda-graphs needs --device cuda: it needs a CUDA device, not {device}; drop the flag on CPU")
        if self.autotune and not (self.compile or self.cuda_graphs):
            raise ValueError("--autotune tunes torch.compile's kernels; add --compile or --cuda-graphs")

    def uses_channels_last(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else self.channels_last

    @property
    def compile_mode(self) -> str | None:
        if self.cuda_graphs:
            return "max-autotune" if self.autotune else "reduce-overhead"
        if self.compile:
            return "max-autotune-no-cudagraphs" if self.autotune else "default"
        return None

    def apply(self, model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
        """Convert and compile `model` in place (it keeps its type and attributes); returns it.

        `dtype` is the autocast dtype the model will run under: half precision stores the weights autocast
        casts in it, so the model must then only run under that autocast."""
        self.check(device)
        if dtype in HALF and self.half_weights:
            store_autocast_weights(model, dtype, transformer_layers=device.type == "cuda")
        if self.uses_channels_last(device):
            model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            # sampling repeats one shape hundreds of times, so timing the algorithms once pays off
            # (a process-wide switch; results may differ from heuristic algorithms by float rounding)
            torch.backends.cudnn.benchmark = self.cudnn_benchmark is not False
        if self.compile_mode is not None:
            # a model whose callers use other methods than forward (a noised CLIP's encode_image and
            # encode_text) names the submodules those methods run; compiling forward would miss them
            parts = [getattr(model, name) for name in getattr(model, "compiled_parts", ())] or [model]
            for part in parts:
                part.compile(mode=self.compile_mode, dynamic=False)
        return model

    def describe(self, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
        parts = ["channels_last" if self.uses_channels_last(device) else "contiguous"]
        if dtype in HALF and self.half_weights:
            parts.append(f"weights stored in {str(dtype).removeprefix('torch.')}")
        if device.type == "cuda":
            parts.append(f"cudnn.benchmark {self.cudnn_benchmark is not False}")
        if self.compile_mode is not None:
            parts.append(f"torch.compile({self.compile_mode})")
        return ", ".join(parts)


HALF = (torch.bfloat16, torch.float16)
# modules whose weights autocast casts to half precision at every call (its lower-precision op list:
# conv1d/2d, linear; attention's packed in-projection goes through linear too)
AUTOCAST_LOWERED = (nn.Conv1d, nn.Conv2d, nn.Linear)
MHA_PROJECTIONS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def store_autocast_weights(model: nn.Module, dtype: torch.dtype, transformer_layers: bool = True) -> int:
    """Store in `dtype` the weights that autocast would cast to it at every call; returns how many.

    Autocast does not cache casts of weights that need no gradient (ours: frozen for sampling), so
    every forward re-casts every convolution and linear weight: one kernel and a full read and write
    of each weight per call (366M weights in the GLIDE-base-sized UNet: about 2.2 GB per forward, by
    arithmetic; 262 casts among the zoo UNet's 4,643 operators per forward, counted on the CPU). Casting
    once gives the same products bit for bit, since autocast rounds these weights to `dtype` anyway;
    norms, embeddings and everything autocast keeps in fp32 stay fp32.

    `transformer_layers=False` leaves the layers of `nn.TransformerEncoderLayer`s in fp32: their fused
    fast path, which CUDA autocast turns off but CPU autocast does not, reads the weights as stored,
    and compiled it then meets fp32 activations with bf16 weights.
    """
    skipped = set()
    if not transformer_layers:
        for layer in model.modules():
            if isinstance(layer, nn.TransformerEncoderLayer):
                skipped.update(id(m) for m in layer.modules())
    converted = 0
    for module in model.modules():
        if id(module) in skipped:
            continue
        names = ([name for name, _ in module.named_parameters(recurse=False)] if isinstance(module, AUTOCAST_LOWERED)
                 else MHA_PROJECTIONS if isinstance(module, nn.MultiheadAttention) else ())
        for name in names:
            param = getattr(module, name, None)
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                converted += 1
    return converted


def autocast_context(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for the networks: autocast to `dtype`, or nothing for float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def compile_report() -> str:
    """What torch.compile did in this process, from dynamo's counters: a speed-up flag that silently ran
    eager (a frame skipped, a graph break, CUDA graphs refused) shows here rather than as a missing gain."""
    from torch._dynamo.utils import counters  # noqa: PLC0415 (loads dynamo: only once compiling ran)

    frames, stats = counters["frames"], counters["stats"]
    cudagraphs = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
    return (f"torch.compile: {stats['unique_graphs']} graph(s) compiled from {frames['ok']} of {frames['total']} "
            f"frames, {stats['calls_captured']} ops captured, {sum(counters['graph_break'].values())} graph "
            f"break(s); CUDA-graph counters: {cudagraphs or 'none'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The speed-up flags, shared by every command that samples."""
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC network layout (default: on for CUDA, off for CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (first batch compiles)")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch.compile with CUDA graphs (CUDA only)")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                        help="let cuDNN time its convolution algorithms per shape (default: on for CUDA)")
    parser.add_argument("--autotune", action="store_true",
                        help="with --compile/--cuda-graphs: inductor max-autotune (minutes of kernel tuning per shape)")
    parser.add_argument("--half-weights", action=argparse.BooleanOptionalAction, default=None,
                        help="under bf16/fp16 autocast, store conv/linear weights in that precision once instead of "
                             "autocast re-casting them at every call (default: on; same samples bit for bit)")


def checked_device(name: str) -> torch.device:
    """`torch.device(name)`, or a one-line ValueError naming the fix: a misspelt device, CUDA asked for on
    a machine without it, or a GPU index past the last one (torch's own errors come deep from its init)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} was asked for but no CUDA device is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def from_args(args: argparse.Namespace, device: torch.device | None = None) -> Acceleration:
    """The flags as an Acceleration; with `device`, a combination it cannot run raises a one-line ValueError."""
    acceleration = Acceleration(args.channels_last, args.compile, args.cuda_graphs, args.cudnn_benchmark, args.autotune,
                                args.half_weights is not False)
    if device is not None:
        acceleration.check(device)
    return acceleration
