"""What a task declares to the runner: a cell's inputs, how a batch is sampled, which extra metrics
apply, and which rows the report's sample grids show. The runner (bench.runner.run) does the rest for every
task alike: sample store and resume, torchrun and shards, scoring, analysis and the HTML report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from bench.runner.config import BenchConfig
from bench.evaluators.reference import ReferenceSource
from bench.prompts.readers import PromptSet
from bench.runner.store import Cell, Expected, SampleStore, grid_cells, load_prompt_set
from guidance.bundle import ModelBundle
from guidance.guiders.base import Guidance, GuidanceCost
from guidance.protocols import Conditions
from guidance.samplers import sampler_spec


@dataclass
class SampledBatch:
    """One sampled batch: decoded images [B, 3, H, W] in [-1, 1], the task's per-sample arrays to store beside
    them (uint8 or small integers; the report and the task's metrics read them), and the final latents before
    decoding where the task has them (for --save-latents)."""

    images: Tensor
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    latents: Tensor | None = None


@dataclass
class Evaluators:
    """A task's own evaluation classifier (domain features and accuracy) and reference, where the zoo's
    32 px ones cannot see what it makes (the cascade's 64 px outputs)."""

    classifier: torch.nn.Module
    classifier_weights: str
    reference: ReferenceSource


class Task:
    """Text-to-image by default; a subclass overrides what its cells differ in."""

    name: ClassVar[str]
    axes: ClassVar[tuple[str, ...]] = ()  # names of the variant's axes: results.csv columns beside guidance
    metrics: ClassVar[tuple[str, ...]] = ()  # the task's own metrics (registered in bench.evaluators), by name
    grid_rows: ClassVar[tuple[str, ...]] = ("samples",)  # the rows of the report's sample grid, top down

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg

    def validate(self) -> None:
        """Check the task's own options (one line naming the flag), before anything loads."""

    def prompt_set(self) -> PromptSet:
        """What prompt index i of a cell is: its caption, label and category (the paired statistics'
        unit and the per-category tables' source)."""
        return load_prompt_set(self.cfg)

    def cells(self) -> list[Cell]:
        """Every cell of the run, in run order."""
        return grid_cells(self.cfg, self.variants())

    def variants(self) -> list[tuple[str, ...]]:
        """The values of `axes` the run covers (text-to-image: none)."""
        return [()]

    def expected(self, cell: Cell, prompts: PromptSet) -> Expected:
        """What each global sample index of `cell` is conditioned on."""
        n = len(prompts) * self.cfg.samples_per_prompt
        return Expected.of(prompts, n, self.cfg.samples_per_prompt, self.cfg.negative_prompt)

    def prepare(self, bundle: ModelBundle, device: torch.device) -> None:
        """Load the task's own models and check they fit the bundle, before any sampling."""

    def task_key(self, cell: Cell) -> dict | None:
        """What a cell's samples depend on besides the config's sample settings and guidance (None: nothing)."""
        return None

    def store(self, run_dir: Path, cell: Cell) -> SampleStore:
        """Where `cell`'s samples live, keyed by what they depend on (the run's sample settings, the task's key)."""
        return SampleStore.of(self.cfg, run_dir, cell, self.task_key(cell))

    @property
    def samples_per_prompt(self) -> int:
        """Samples per prompt: global sample index i is of prompt i // samples_per_prompt."""
        return self.cfg.samples_per_prompt

    def sampling_columns(self) -> dict[str, str | int]:
        """How every cell was sampled, as results.csv records it beside the cell's scores."""
        return {"sampler": self.cfg.sampler, "steps": self.cfg.steps}

    def cost(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, negative: bool) -> GuidanceCost:
        """Work per image of one sample of `cell` (for throughput)."""
        sigmas = bundle.process.sigmas(self.cfg.steps, self.cfg.schedule)
        return guidance.cost_per_image(sampler_spec(self.cfg.sampler).evaluations(sigmas), sigmas, negative=negative)

    def sample_batch(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, cond: Conditions, indices: list[int],
                     texts: list[str], device: torch.device) -> SampledBatch:
        """The batch of global sample `indices` (`cond`: their encoded conditions, `texts`: their captions)."""
        raise NotImplementedError

    def evaluators(self, device: torch.device) -> Evaluators | None:
        """The task's own classifier and reference (None: the run's, the zoo's 32 px ones by default)."""
        return None

    @classmethod
    def grid(cls, images: np.ndarray, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The report's grid rows (uint8 [K, H, W, 3] each, one per `grid_rows`) of a cell's first images."""
        return [images]
