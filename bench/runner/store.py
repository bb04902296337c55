"""Where samples live: the grid's cells, what each global sample index is conditioned on, and the
per-cell sample files (batches written atomically, merged when a cell is complete).

Samples are keyed by each cell's hash and the global sample index, so an interrupted run resumes
where it stopped, and scoring reads each sample's own caption and label from its stored row.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

import bench.zoo.prompts  # noqa: F401  (registers the built-in prompt sets)
from bench.runner.config import BenchConfig
from bench.prompts.readers import PromptSet, load_prompts
from bench.report.format import format_scale
from guidance.rng import sample_seed


@dataclass(frozen=True)
class Cell:
    """One (guidance, scale, seed set) of the grid; a task with more axes (inpainting's method, mask and
    caption kind; the cascade's stage) puts their values in `variant`."""

    guidance: str
    scale: float
    seed_set: int
    seed: int
    variant: tuple[str, ...] = ()

    @property
    def arm(self) -> str:
        """What the analysis compares: the guidance, joined with the task's variant when it has one."""
        return "+".join((self.guidance, *self.variant))

    @property
    def name(self) -> str:
        return f"{self.arm}_s{format_scale(self.scale)}_seed{self.seed_set}"


def grid_cells(cfg: BenchConfig, variants: Sequence[tuple[str, ...]] = ((),)) -> list[Cell]:
    """Every (variant, guidance, scale, seed set) cell of a run, in run order (a task's variants: bench.tasks)."""
    return [Cell(g, s, k, seed, variant) for variant in variants for g, scales in cfg.scale_grid().items()
            for s in scales for k, seed in enumerate(cfg.seeds)]


def load_prompt_set(cfg: BenchConfig) -> PromptSet:
    """The run's prompts; a refusal names the flag (--prompts) before the file's own message."""
    try:
        return load_prompts(cfg.prompts, limit=cfg.prompt_limit)
    except ValueError as err:
        raise ValueError(f"--prompts {err}") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole: processes and shard jobs that start together read run files while others
    write them (a plain write is empty for a moment), and a kill mid-write leaves the old file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


EXTRA = "extra_"  # prefix of a task's per-sample arrays in a samples file
PART_NAME = re.compile(r"(\d+)-(\d+)\.npz")  # a complete batch file; a write cut short is `.<name>.partial`


@dataclass(frozen=True)
class Expected:
    """What each global sample index of a run is conditioned on: its caption, label (-1: none) and
    negative prompt ("": none, CFG's null caption).

    A saved sample is reused only where all three still match, so an edited prompt file resamples
    exactly the samples whose prompt changed, and a larger --prompt-limit keeps the samples already made.
    """

    texts: np.ndarray  # str [n]
    labels: np.ndarray  # int64 [n]
    negatives: np.ndarray  # str [n]

    @classmethod
    def of(cls, prompts: PromptSet, n: int, samples_per_prompt: int, negative_prompt: str | None = None) -> "Expected":
        """`negative_prompt` applies to the prompts that have no negative of their own."""
        chosen = [prompts.prompts[i // samples_per_prompt] for i in range(n)]
        return cls(np.array([p.text for p in chosen], dtype=str),
                   np.array([-1 if p.label is None else p.label for p in chosen], dtype=np.int64),
                   np.array([p.negative or negative_prompt or "" for p in chosen], dtype=str))

    def __len__(self) -> int:
        return len(self.texts)

    def matches(self, stored: "np.lib.npyio.NpzFile") -> np.ndarray:
        """Per stored row: is its index in this run, with the caption, label and negative prompt that
        index asks for now? (Rows saved before negative prompts existed had none.)"""
        indices = stored["indices"]
        if "labels" not in stored.files:  # written before labels were stored: cannot be checked, so not reused
            return np.zeros(len(indices), dtype=bool)
        inside = (indices >= 0) & (indices < len(self))
        at = np.where(inside, indices, 0)
        negatives = stored["negatives"] if "negatives" in stored.files else np.full(len(indices), "")
        return (inside & (self.texts[at] == stored["prompts"]) & (self.labels[at] == stored["labels"])
                & (self.negatives[at] == negatives))


class SampleStore:
    """Samples of one cell on disk: batches `<cell>.<hash>.parts/<first>-<last>.npz`, merged into
    `<cell>.npz` once the cell is complete. The hash keys what samples depend on besides their prompt
    (sampler, steps, weights, guidance, scale, seed); prompts and labels are checked per sample."""

    def __init__(self, run_dir: Path, cell: Cell, cell_hash: str) -> None:
        self.final = run_dir / "samples" / f"{cell.name}.npz"
        self.parts = run_dir / "samples" / f"{cell.name}.{cell_hash}.parts"
        self.latents = run_dir / "samples" / f"{cell.name}.latents"  # --save-latents
        self.cell_hash = cell_hash

    @classmethod
    def of(cls, cfg: BenchConfig, run_dir: Path, cell: Cell, task_key: dict | None = None) -> "SampleStore":
        """The store of `cell` under `cfg`, keyed by what its samples depend on (`task_key`: what the
        task adds, such as its variant and extra models' weights)."""
        return cls(Path(run_dir), cell, cfg.cell_hash(cell.guidance, cell.scale, cell.seed, task_key))

    def _final_current(self) -> bool:
        """The merged file exists and was made under this key (older formats and keys are resampled)."""
        if not self.final.exists():
            return False
        with np.load(self.final, allow_pickle=False) as data:
            return "labels" in data.files and str(data["cell_hash"]) == self.cell_hash

    def _sources(self) -> list[Path]:
        """Files holding samples of this cell: the merged file, then complete batches (later ones win)."""
        parts = [p for p in self.parts.glob("*.npz") if PART_NAME.fullmatch(p.name)] if self.parts.is_dir() else []
        return ([self.final] if self._final_current() else []) + sorted(parts, key=lambda p: int(p.name.split("-")[0]))

    def under_another_key(self) -> bool:
        """Samples of this cell were saved under another key (an earlier version of the suite, other
        weights or sampler settings): they stay on disk but are not reused."""
        pattern = f"{glob.escape(self.final.stem)}.*.parts"
        others = [p for p in self.final.parent.glob(pattern) if p != self.parts]
        return bool(others) or (self.final.exists() and not self._final_current())

    def done(self, expected: Expected) -> bool:
        """The merged file holds exactly samples 0..n-1, each with the prompt and label it has now."""
        if not self._final_current():
            return False
        with np.load(self.final, allow_pickle=False) as data:
            indices = data["indices"]
            return (np.array_equal(indices, np.arange(len(expected)))
                    and bool(expected.matches(data).all()))

    def _valid_rows(self, expected: Expected) -> Iterator[tuple["np.lib.npyio.NpzFile", np.ndarray]]:
        """Per file holding this cell's samples: the open file and its rows that still match their
        prompt and label."""
        for path in self._sources():
            with np.load(path, allow_pickle=False) as data:
                yield data, np.flatnonzero(expected.matches(data))

    def finished_indices(self, expected: Expected) -> set[int]:
        return {int(i) for data, rows in self._valid_rows(expected) for i in data["indices"][rows]}

    def write_batch(self, indices: list[int], images: Tensor, expected: Expected,
                    extras: dict[str, np.ndarray] | None = None) -> None:
        """Save one batch; `extras` are a task's per-sample arrays (inpainting's source and mask, the
        cascade's low-resolution sample), stored beside the images under an `extra_` prefix."""
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.parts / f"{indices[0]}-{indices[-1]}.npz"
        tmp = self.parts / f".{path.name}.partial"  # never matches PART_NAME: a killed write is ignored
        with open(tmp, "wb") as f:
            np.savez(f, images=to_hwc_uint8(images), prompts=expected.texts[indices], labels=expected.labels[indices],
                     negatives=expected.negatives[indices], indices=np.array(indices),
                     **{f"{EXTRA}{k}": v for k, v in (extras or {}).items()})
        os.replace(tmp, path)  # atomic: a killed run leaves whole batches or none

    def write_latents(self, indices: list[int], latents: Tensor, seed: int) -> None:
        """Each sample's final latents (before decoding) as `<cell>.latents/<index>.safetensors`, with the seed of
        its noise generator (guidance.rng.sample_seed) in the file's metadata: what a diffusers pipeline returns
        for output_type="latent", to compare with."""
        self.latents.mkdir(parents=True, exist_ok=True)
        for row, index in enumerate(indices):
            path = self.latents / f"{index}.safetensors"
            save_file({"latents": latents[row:row + 1].float().cpu().contiguous()}, str(path),
                      metadata={"index": str(index), "noise_seed": str(sample_seed(seed, index)), "cell_hash": self.cell_hash})

    def merge(self, expected: Expected) -> None:
        """Write samples 0..n-1 as one file from every valid stored sample, then drop the batches."""
        arrays: dict[str, dict[int, np.ndarray]] = {}
        for data, rows in self._valid_rows(expected):
            for key in ("images", *(k for k in data.files if k.startswith(EXTRA))):
                stored = data[key]
                arrays.setdefault(key, {}).update((int(i), stored[r]) for i, r in zip(data["indices"][rows], rows))
        images = arrays.get("images", {})
        missing = sorted(set(range(len(expected))) - images.keys())
        if missing:
            raise ValueError(f"{self.final.stem}: samples {missing[:5]} are missing; sample them before merging")
        # an array some batches lack (the effective scale of batches saved before it was recorded) is dropped
        extras = {k: np.stack([v[i] for i in range(len(expected))]) for k, v in arrays.items()
                  if k != "images" and len(v) == len(expected)}
        tmp = self.final.with_name(f".{self.final.name}.partial")
        with open(tmp, "wb") as f:
            np.savez(f, images=np.stack([images[i] for i in range(len(expected))]), prompts=expected.texts,
                     labels=expected.labels, negatives=expected.negatives, indices=np.arange(len(expected)),
                     cell_hash=np.array(self.cell_hash), **extras)
        os.replace(tmp, self.final)
        shutil.rmtree(self.parts, ignore_errors=True)

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images uint8 [N, H, W, C], captions [N], labels [N], -1 where none) of the merged cell."""
        with np.load(self.final, allow_pickle=False) as data:
            return data["images"], data["prompts"], data["labels"]

    def load_extras(self) -> dict[str, np.ndarray]:
        """The task's per-sample arrays of the merged cell (empty for text-to-image)."""
        return load_extras(self.final)


def load_extras(path: Path) -> dict[str, np.ndarray]:
    """A samples file's task arrays, keyed without their `extra_` prefix."""
    with np.load(path, allow_pickle=False) as data:
        return {k[len(EXTRA):]: data[k] for k in data.files if k.startswith(EXTRA)}


def to_hwc_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] float [N, C, H, W] -> uint8 [N, H, W, C]: how samples are saved and shown."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
