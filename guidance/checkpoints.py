"""Checkpoints as safetensors (no pickle) with the config in the file's metadata: the zoo's format, and the
checksums and errors every model source and evaluator shares."""

from __future__ import annotations

import json
import os
from hashlib import sha256
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

FORMAT_VERSION = "1"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks: names the exact weights a run or record used."""
    h = sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_checksums(root: str | os.PathLike) -> dict[str, str]:
    """File name -> sha256 of every safetensors file in a model directory."""
    return {f.name: file_sha256(f) for f in sorted(Path(root).glob("*.safetensors"))}


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, of the wrong kind or does not fit its architecture."""


def save_model(model: nn.Module, path: str | os.PathLike, kind: str, config: dict, info: dict | None = None,
               half: bool = True) -> None:
    """Write weights (floating tensors in fp16 when `half`) plus kind, config and training info."""
    tensors = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        tensors[name] = value.contiguous()
    meta = {"format": FORMAT_VERSION, "kind": kind, "config": json.dumps(config), "info": json.dumps(info or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """kind, config and info of a zoo checkpoint, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass an existing .safetensors file "
                              f"(or run `invoke train` to rebuild the embedded zoo)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; the file is truncated or not safetensors") from err
    if "kind" not in meta:
        raise CheckpointError(f"{path} has no zoo metadata (kind/config); it was not written by guidance.zoo")
    try:
        return {"kind": meta["kind"], "config": json.loads(meta.get("config", "{}")),
                "info": json.loads(meta.get("info", "{}"))}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({err.msg}); the file is damaged or was "
                              f"not written by guidance.zoo") from err


def check_kind(path: Path, kind: str, fix: str) -> None:
    """A checkpoint that must exist, be safetensors and hold a `kind` model: its header only, nothing loaded
    (the up-front checks of model sources and of the flags that name checkpoints)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {fix}")
    try:
        found = read_metadata(path).get("kind")
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if found != kind:
        raise CheckpointError(f"{path} holds a {found!r} model, not a {kind!r} one; {fix}")


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a safetensors file into `model` strictly, with a clear error on any mismatch."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}; the file is truncated or not safetensors") from err
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"checkpoint {path} does not match the architecture: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, shape mismatch {wrong[:3]}; check the config")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where rendered datasets and computed reference features are cached ($GUIDANCE_BENCH_CACHE)."""
    return Path(cache_dir or os.environ.get("GUIDANCE_BENCH_CACHE") or Path.home() / ".cache" / "guidance-bench")
