"""What the human-preference evaluators share (HPSv2, PickScore, ImageReward, the LAION aesthetic predictor):
local weights checked up front, images handed to the authors' own PIL preprocessing, networks loaded once.

They are trained on real photographs and artwork at 224 px; on the zoo's 32 px emoji their numbers mean
nothing, so they declare the need "domain:real" and a zoo run that asks for them is refused in one line.
Nothing is downloaded: every file or folder is named by a flag, and checkpoints are read as safetensors or
with torch.load(weights_only=True), never unpickled.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torchvision import transforms

from bench.evaluators.config import ScoringConfig
from bench.evaluators.base import NOTHING_DOWNLOADED, check_readable, file_digest, load_state_dict_file
from bench.evaluators.per_image import PerImageMetric
from bench.evaluators.registry import METRICS, Resources
from guidance.checkpoints import CheckpointError

REAL_ONLY = "domain:real"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN, CLIP's own constants
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def refuse_real_only(metrics: list[str] | tuple[str, ...]) -> None:
    """Asked on the zoo, the evaluators trained on real images say so (one ValueError line)."""
    real_only = [m for m in metrics if m in METRICS and REAL_ONLY in METRICS[m].needs]
    if real_only:
        raise ValueError(f"--metrics {','.join(real_only)}: these human-preference evaluators apply to real images "
                         f"only (trained on photographs and artwork at 224 px), not the zoo's 32 px emoji; leave "
                         f"them out, or score a real model (--model diffusers:PATH)")


def to_pil(images: Tensor) -> list[Image.Image]:
    """uint8 [N, 3, H, W] -> RGB PIL images: what the authors' preprocessing takes."""
    array = images.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in array]


def check_weights_file(path: str | os.PathLike | None, flag: str, fix: str) -> Path:
    """A weights file that exists, has a known suffix and holds plain tensors (read lazily: a safetensors
    header, or a weights-only memory-mapped torch load), or a CheckpointError naming the flag."""
    p = check_readable(path, flag, fix)
    if p.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"{flag} {path}: not a weights file (suffix {p.suffix or 'none'}); {fix}")
    safetensors_keys(p, flag) if p.suffix == ".safetensors" else weights_only_keys(p, flag)
    return p


def safetensors_keys(path: Path, flag: str) -> list[str]:
    """The tensor names of a .safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{flag} {path}: not a readable .safetensors file ({str(err).splitlines()[0][:120]}); "
                              f"pass the weights as .safetensors or a plain tensor state dict") from None


def weights_only_keys(path: Path, flag: str) -> list[str]:
    """The keys of a torch checkpoint opened with weights_only=True and mmap (no tensor is read into memory)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # an old (non-zip) torch file cannot be memory-mapped: read it whole, still weights-only
        return list(load_state_dict_file(path, flag))
    except Exception as err:  # weights_only refuses pickled objects with various UnpicklingErrors
        raise CheckpointError(f"{flag} {path}: not a plain tensor state dict ({type(err).__name__}: torch.load("
                              f"weights_only=True) refuses it); save its state dict as .safetensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{flag} {path}: holds no tensor state dict; pass the network's weights")
    return list(state)


def check_folder(path: str | os.PathLike | None, flag: str, needed: dict[str, tuple[str, ...]], fix: str) -> Path:
    """A local folder holding, for each role in `needed`, one of the listed file names (a transformers
    model folder: config.json, model.safetensors, the processor's files). Pickled .bin weights are accepted
    only because transformers reads them with weights_only=True."""
    if path is None:
        raise CheckpointError(f"{flag} is not set; {fix} ({NOTHING_DOWNLOADED})")
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{flag} {path}: folder not found; {fix} ({NOTHING_DOWNLOADED})")
    for role, names in needed.items():
        if not any((p / n).is_file() for n in names):
            raise CheckpointError(f"{flag} {path}: no {role} ({' or '.join(names)}) in the folder; {fix}")
    return p


def load_strict(module: nn.Module, state: dict[str, Tensor], flag: str, path: Path, what: str,
                ignore: tuple[str, ...] = ()) -> None:
    """Load a state dict that must fit the module exactly (keys in `ignore`, such as non-persistent buffers
    an older code base saved, are dropped); a mismatch is one CheckpointError line."""
    state = {k: v for k, v in state.items() if not (ignore and k.endswith(ignore))}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        detail = "; ".join(part for part in (f"missing {missing[:3]}" if missing else "",
                                             f"unexpected {unexpected[:3]}" if unexpected else "",
                                             f"shapes {shapes[:2]}" if shapes else "") if part)
        raise CheckpointError(f"{flag} {path}: does not hold {what} weights ({detail}); pass that network's file")
    module.load_state_dict(state)


def clip_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """CLIP's own `_transform` (openai/CLIP, reused by ImageReward and the aesthetic predictor): the shorter side
    resized to `size` (bicubic, on the PIL image), centre crop, RGB, to [0, 1], OpenAI CLIP mean and std."""
    return transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(size), lambda im: im.convert("RGB"), transforms.ToTensor(),
                               transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)])


def require_transformers(flag: str) -> None:
    """PickScore, ImageReward and the aesthetic predictor read transformers folders: an optional dependency."""
    if importlib.util.find_spec("transformers") is None:
        raise CheckpointError(f"{flag} needs the transformers package, which is not installed; install it "
                              f"(pip install 'guidance-bench[diffusers]') or leave that metric out")


def pil_image_processor(folder: Path, flag: str, fix: str) -> Any:
    """A folder's CLIP image processor with PIL resizing, as the authors' transformers 4 and CLIP ran it
    (transformers 5's default CLIPImageProcessor resizes tensors with torchvision: up to 0.015 apart after
    normalisation)."""
    import transformers  # noqa: PLC0415 (optional dependency)

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{flag} {folder}: no loadable CLIP image processor "
                              f"({str(err).splitlines()[0][:140]}); {fix}") from None


def load_pretrained(cls: Any, folder: Path, flag: str, fix: str) -> nn.Module:
    """A transformers model from a local folder whose weights must fit it: transformers fills a missing or
    mismatched weight with random values and only warns, which would score with a random network."""
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as err:
        detail = str(err).splitlines()[0][:140]  # transformers raises on a size mismatch after printing its report
        raise CheckpointError(f"{flag} {folder}: does not load as a {cls.__name__} (missing files, or weights "
                              f"that do not fit its config: {detail}); {fix}") from None
    bad = [*info.get("missing_keys", []), *(str(m[0]) if isinstance(m, tuple) else str(m)
                                            for m in info.get("mismatched_keys", []))]
    if bad:
        raise CheckpointError(f"{flag} {folder}: its weights do not fit {cls.__name__} ({len(bad)} missing or "
                              f"mismatched, e.g. {sorted(bad)[:3]}); {fix}")
    return model


def read_json(path: Path, flag: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{flag}: {path} is not a readable JSON file ({str(err)[:100]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{flag}: {path} holds no JSON object")
    return data


_LOADED: dict[type, tuple[tuple, Any]] = {}


def loaded_once(owner: type, key: tuple, build: Callable[[], Any]) -> Any:
    """The network `build` makes, built once per process and key (scoring builds a metric per cell; the
    networks are hundreds of MB), keeping only the latest key per evaluator class."""
    held = _LOADED.get(owner)
    if held is None or held[0] != key:
        _LOADED.pop(owner, None)
        _LOADED[owner] = (key, build())
    return _LOADED[owner][1]


class PreferenceMetric(PerImageMetric):
    """A human-preference evaluator: off by default, for real images only, its files named by config fields
    (`files`: field -> flag) and checked before sampling (`check_files`, model-free; `build`, loaded)."""

    needs = frozenset({REAL_ONLY})
    default = False
    files: ClassVar[dict[str, str]] = {}

    @classmethod
    def check_files(cls, config: ScoringConfig) -> None:
        """Everything about the named files knowable without building the network (CheckpointError)."""
        raise NotImplementedError

    def __init__(self, network: nn.Module, device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.network = network

    @classmethod
    def build(cls, resources: Resources) -> "PreferenceMetric":
        cls.check_files(resources.config)
        key = (*(getattr(resources.config, f) for f in cls.files), str(resources.device))
        network = loaded_once(cls, key, lambda: cls.load_network(resources.config).to(resources.device).eval())
        return cls(network, resources.device)

    @classmethod
    def provenance(cls, config: ScoringConfig) -> dict[str, str | None]:
        """What evaluators.json records: each flag's path, and a weights file's sha256 (HPSv2 and v2.1 share a
        column; the file says which scored the run)."""
        out: dict[str, str | None] = {}
        for field, flag in cls.files.items():
            value = getattr(config, field)
            out[flag] = value
            if value is not None and Path(value).is_file():
                out[f"{flag} sha256"] = file_digest(value)
        return out

    @classmethod
    def load_network(cls, config: ScoringConfig) -> nn.Module:
        """The scoring network from the files the config names (weights checked against the architecture)."""
        raise NotImplementedError

    @torch.no_grad()
    def scores(self, batch: Any) -> Tensor:
        return self.network(to_pil(batch.images), [str(t) for t in batch.texts]).float().reshape(-1, 1)
