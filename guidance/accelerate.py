"""Optional speed-ups applied to the networks before sampling: channels_last, torch.compile, CUDA graphs,
inductor's max-autotune.

They change how a network runs, never what it computes (beyond float rounding), so they are not
part of a run's sample key. Each is opt-in except channels_last, which defaults to on for CUDA
(convolutions in NHWC use the tensor cores without layout transposes) and off for the CPU.
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

    def check(self, device: torch.device) -> None:
        """Raise a one-line ValueError for a combination this device cannot run."""
        if self.cuda_graphs and device.type != "cuda":
            raise ValueError(f"--cuda-graphs needs a CUDA device, not {device}; drop the flag or use --device cuda")
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

    def apply(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Convert and compile `model` in place (it keeps its type and attributes); returns it."""
        self.check(device)
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

    def describe(self, device: torch.device) -> str:
        parts = ["channels_last" if self.uses_channels_last(device) else "contiguous"]
        if device.type == "cuda":
            parts.append(f"cudnn.benchmark {self.cudnn_benchmark is not False}")
        if self.compile_mode is not None:
            parts.append(f"torch.compile({self.compile_mode})")
        return ", ".join(parts)


def autocast_context(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for the networks: autocast to `dtype`, or nothing for float32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def compile_report() -> str:
    """What torch.compile did in this process, from dynamo's counters: a speed-up flag that silently ran
    eager (a frame skipped, a graph break, CUDA graphs refused) shows here rather than as a missing gain."""
    from torch._dynamo.utils import counters

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


def from_args(args: argparse.Namespace, device: torch.device | None = None) -> Acceleration:
    """The flags as an Acceleration; with `device`, a combination it cannot run exits with one line (CLIs)."""
    acceleration = Acceleration(args.channels_last, args.compile, args.cuda_graphs, args.cudnn_benchmark, args.autotune)
    if device is not None:
        try:
            acceleration.check(device)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    return acceleration
