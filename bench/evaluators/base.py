"""What every evaluator shares: feature networks (uint8 images in, one feature row per image out), set
metrics (a sample set against a fixed reference) and the gathering of per-image rows across processes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from bench.evaluators.registry import RegisteredMetric, Resources, ScoringBatch
from guidance.checkpoints import CheckpointError

NOTHING_DOWNLOADED = "nothing is downloaded; pass a local file"


class FeatureNet(nn.Module):
    """A feature network for set metrics. `forward` takes uint8 [N, 3, H, W] of any size and resizes as
    the network expects; `size` is the side reference images of mixed sizes are brought to before batching."""

    name: ClassVar[str]
    units: ClassVar[str]  # what a distance in this space is measured in (docs, manifest)
    dim: int
    size: int
    weights_flag: ClassVar[str | None] = None  # the flag of its local weights file, checked before sampling

    @classmethod
    def build(cls, resources: Resources) -> "FeatureNet":
        """The network as this scoring configures it (weights flags, the shared classifier or CLIP scorer)."""
        raise NotImplementedError

    def features(self, batch: ScoringBatch) -> Tensor:
        """Features of a scoring batch (a network that shares work with a metric reads the batch's memo)."""
        return self(batch.images)

    def fingerprint(self) -> str:
        """Identifies the weights and preprocessing: part of a cached reference's key."""
        raise NotImplementedError


@dataclass
class CellSet:
    """What a set metric is computed from: a cell's features per network (in file order), the reference of
    a network, the feature chunk size, and each image's prompt."""

    features: dict[str, Tensor]
    reference: Callable[[str], object]  # network name -> bench.evaluators.reference.Reference
    chunk: int
    prompt_index: Tensor


class SetMetric(RegisteredMetric):
    """A metric of a sample set against a reference, with its bootstrap over the samples.

    Subclasses are built from (reference, sample features) and give `value()` and `resampled(counts)`, where
    `counts` [B, n] says how often each sample is drawn in each of B resamples (the reference stays fixed).
    `networks` says which features: "each" (every --features network; columns of other networks than the
    domain one are suffixed), "first" (the first of --features), a network's name, or "" for a metric fed
    the cell's batches through `update(batch)` (built by `for_cell`).
    """

    kind = "set"
    networks: ClassVar[str] = "each"
    bootstrapped: ClassVar[bool] = True

    @classmethod
    def of_cell(cls, cell: CellSet, net: str) -> "SetMetric | None":
        """The metric on a cell's features of `net` (None where it does not apply to this cell)."""
        return cls(cell.reference(net), cell.features[net], cell.chunk)  # type: ignore[call-arg]

    @classmethod
    def for_cell(cls, resources: Resources) -> "SetMetric":
        """A fresh batch-fed metric (networks == "") for one cell."""
        raise NotImplementedError

    def update(self, batch: ScoringBatch) -> None:
        raise NotImplementedError

    def value(self) -> dict[str, float]:
        raise NotImplementedError

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class Gathered(Metric):
    """Per-sample rows (features, scores) of this process, gathered in rank order across a torchrun group:
    with each process scoring a contiguous run of chunks, `compute` gives every row in file order."""

    full_state_update = False

    def __init__(self, width: int, dtype: torch.dtype = torch.float32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.width, self.row_dtype = width, dtype
        self.add_state("rows", [], dist_reduce_fx="cat")

    def update(self, rows: Tensor) -> None:
        self.rows.append(rows.to(self.row_dtype).reshape(len(rows), self.width))

    def compute(self) -> Tensor:
        return dim_zero_cat(self.rows)

    def gathered(self) -> Tensor:
        """Every process's rows [N, width]; a process that scored nothing still sends one (empty) tensor.
        (torchmetrics squeezes a one-element result to a scalar: one image of width 1 is reshaped back.)"""
        empty = torch.zeros(0, self.width, dtype=self.row_dtype, device=self.device)
        self.rows = [torch.cat([empty, *self.rows])]
        return self.compute().reshape(-1, self.width)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size], bicubic with antialiasing (as PIL downsizes)."""
    if images.shape[-2:] == (size, size):
        return images
    x = nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (remembered per path, size and mtime within a process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def check_readable(path: str | os.PathLike | None, flag: str, fix: str) -> Path:
    """A local weights file that exists and can be read, or a CheckpointError naming the flag and the fix."""
    if path is None:
        raise CheckpointError(f"{flag} is not set; {fix} ({NOTHING_DOWNLOADED})")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{flag} {path}: file not found; {fix} ({NOTHING_DOWNLOADED})")
    if not os.access(p, os.R_OK):
        raise CheckpointError(f"{flag} {path}: permission denied (the file exists but cannot be read); "
                              f"make it readable (chmod a+r) or copy it somewhere readable")
    return p


def load_state_dict_file(path: Path, flag: str) -> dict[str, Tensor]:
    """Tensors of a .safetensors file or a torch file loaded with weights_only=True: never unpickled."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{flag} {path}: not a readable .safetensors or weights-only torch file ({detail}); "
                              f"pass the weights as .safetensors or a plain tensor state dict") from None
    except Exception as err:  # weights_only refusals (pickled objects) come as various UnpicklingErrors
        raise CheckpointError(f"{flag} {path}: not a plain tensor state dict ({type(err).__name__}; "
                              f"torch.load(weights_only=True) refuses it); save it as .safetensors") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{flag} {path}: holds no tensor state dict; pass the network's weights")
    return state


@dataclass
class ChunkedSums:
    """Float64 sum and x^T x of features, added chunk by chunk in the order torchmetrics' FID does."""

    sum: Tensor
    cov_sum: Tensor
    num_samples: int

    @classmethod
    def of(cls, features: Tensor, chunk: int) -> "ChunkedSums":
        d = features.shape[1]
        total = torch.zeros(d, dtype=torch.float64, device=features.device)
        cov = torch.zeros(d, d, dtype=torch.float64, device=features.device)
        for part in features.split(chunk):
            part = part.double()
            total += part.sum(dim=0)
            cov += part.t().mm(part)
        return cls(total, cov, len(features))

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        mean = (self.sum / self.num_samples).unsqueeze(0)
        cov = (self.cov_sum - self.num_samples * mean.t().mm(mean)) / (self.num_samples - 1)
        return mean.squeeze(0), cov


def kth_neighbour_distance(x: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Per point, the Euclidean distance to its k-th nearest other point of the same set (float64)."""
    out = []
    for lo in range(0, len(x), chunk):
        d = torch.cdist(x[lo:lo + chunk].double(), x.double())
        out.append(d.kthvalue(k + 1, dim=1).values)  # the point itself is at distance 0
    return torch.cat(out)
