"""The editing task: `python -m bench run --task inpaint --guidance cfg,clip,classifier --masks center,strokes`.

The model family's kit (bench.tasks.kits; the zoo's is bench/zoo/editing.py) gives the sources to edit,
each under two captions: its own ("source", a reconstruction) and another one ("edit"), and GLIDE's
fine-tuned inpainting model. Masks are drawn per (seed, sample index, kind) (guidance.masks). Methods
(guidance.inpaint): "model" (the fine-tuned inpainting model, x0 overwritten each step), "replace"
(q(x_t | x0) replacement with the plain model) and "repaint" (replacement with RePaint's resampling).

A cell is one method, mask kind and caption kind (the variant) under one guidance, scale and seed
set; prompt index i is source i, so the paired statistics compare arms on the same sources. Besides
the runner's metrics (FID/KID on the evaluation classifier's features, CLIP score and accuracy of the
caption used) a cell gets PSNR of the kept region and the seam score (bench.evaluators.psnr, bench.evaluators.seam).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from bench.runner.config import BenchConfig
from bench.evaluators.psnr import PSNRKnown
from bench.evaluators.seam import SeamScore
from bench.prompts.readers import Prompt, PromptSet
from bench.runner.store import Cell, Expected, to_hwc_uint8
from bench.runner.preflight import check_image
from bench.tasks.base import SampledBatch, Task
from bench.tasks.kits import kit_for
from bench.tasks.registry import register_task
from guidance.bundle import ModelBundle
from guidance.checkpoints import file_sha256
from guidance.guiders.base import Guidance, GuidanceCost
from guidance.inpaint import METHODS, Resampling, inpaint, nfe
from guidance.masks import check_kinds, load_mask, masks_for
from guidance.protocols import Conditions, Denoiser
from guidance.samplers import sampler_spec

CAPTIONS = ("source", "edit")
DEFAULT_SOURCES = 20  # sources when --prompt-limit is all


@dataclass
class EditSources:
    """The images to edit and both captions of each: its own and its edit target's."""

    images: Tensor  # [N, 3, H, W] in [-1, 1], exactly as 8-bit images
    captions: dict[str, list[str]]  # caption kind -> per source
    labels: dict[str, np.ndarray]  # caption kind -> identity index per source
    prompts: list[Prompt]  # each source's prompt (category and meta for the per-category tables)
    about: str  # what the sources are, for the run's prompt-set description


class InpaintingModel(Protocol):
    """A model fine-tuned to inpaint (GLIDE): a denoiser and how its conditions take the known image."""

    denoiser: Denoiser

    def condition(self, model_cond: Tensor, known: Tensor, keep: Tensor) -> object:
        """The model's conditions from the base model's (`model_cond`), the known image and `keep`
        (1 = known, 0 = to generate)."""


class EditingKit(Protocol):
    """What --task inpaint needs from a model family (registered with bench.tasks.kits.register_kit)."""

    def sources(self, limit: int) -> EditSources: ...

    def inpaint_model_file(self, spec: str) -> Path: ...

    def check_inpaint_model(self, path: Path, flag: str) -> None:
        """Refuse a missing or wrong checkpoint in one line naming `flag`, before anything loads."""

    def load_inpaint_model(self, path: Path, device: torch.device) -> InpaintingModel: ...


@register_task("inpaint")
class Inpaint(Task):
    axes = ("inpaint_method", "mask", "caption_kind")
    metrics = (PSNRKnown.name, SeamScore.name)
    grid_rows = ("source", "mask (grey)", "result")

    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__(cfg)
        self._sources: EditSources | None = None
        self.model: InpaintingModel | None = None

    @property
    def kit(self) -> EditingKit:
        return kit_for(self.name, self.cfg.model, "images to edit and an inpainting model")  # type: ignore[return-value]

    @property
    def resampling(self) -> Resampling:
        return Resampling(*self.cfg.repaint)

    def mask_kinds(self) -> list[str]:
        return ["file"] if self.cfg.mask_file else list(self.cfg.masks)

    def model_path(self) -> Path:
        cfg = self.cfg
        if cfg.inpaint_model:
            return Path(cfg.inpaint_model)
        return self.kit.inpaint_model_file(cfg.model)

    def validate(self) -> None:
        cfg = self.cfg
        bad = [m for m in cfg.inpaint_methods if m not in METHODS]
        if bad or not cfg.inpaint_methods:
            raise ValueError(f"unknown inpainting method(s) {bad or cfg.inpaint_methods}; --inpaint-methods takes a "
                             f"comma-separated subset of {', '.join(METHODS)}")
        if cfg.mask_file is None:
            check_kinds(cfg.masks)
        else:
            check_image(Path(cfg.mask_file), "--mask-file")  # opened, verified and size-bounded
            load_mask(cfg.mask_file, 32)
        bad = [c for c in cfg.edit_captions if c not in CAPTIONS]
        if bad or not cfg.edit_captions:
            raise ValueError(f"unknown caption kind(s) {bad or cfg.edit_captions}; valid: {', '.join(CAPTIONS)}")
        if len(cfg.repaint) != 2:
            raise ValueError(f"bad --repaint {cfg.repaint}: give jump length and resample count, e.g. 5,2")
        if "model" in cfg.inpaint_methods:
            self.kit.check_inpaint_model(self.model_path(), "--inpaint-model")

    @property
    def sources(self) -> EditSources:
        if self._sources is None:
            self._sources = self.kit.sources(self.cfg.prompt_limit or DEFAULT_SOURCES)
        return self._sources

    def prompt_set(self) -> PromptSet:
        return PromptSet("edit-sources", tuple(replace(p, negative=None) for p in self.sources.prompts),
                         self.sources.about)

    def variants(self) -> list[tuple[str, ...]]:
        return [(m, k, c) for m in self.cfg.inpaint_methods for k in self.mask_kinds() for c in self.cfg.edit_captions]

    def expected(self, cell: Cell, prompts: PromptSet) -> Expected:
        caption = cell.variant[2]
        spp = self.cfg.samples_per_prompt
        n = len(prompts) * spp
        texts, labels = self.sources.captions[caption], self.sources.labels[caption]
        return Expected(np.array([texts[i // spp] for i in range(n)], dtype=str),
                        np.array([labels[i // spp] for i in range(n)], dtype=np.int64),
                        np.array([self.cfg.negative_prompt or ""] * n, dtype=str))

    def prepare(self, bundle: ModelBundle, device: torch.device) -> None:
        shape = tuple(self.sources.images.shape[1:])
        if tuple(bundle.sample_shape) != shape:
            raise ValueError(f"--task inpaint edits pixels of {shape}, but {bundle.source} samples "
                             f"{tuple(bundle.sample_shape)} (a latent model needs an image encoder, which bundles do not "
                             f"offer yet); use a pixel model such as --model emoji")
        if "model" in self.cfg.inpaint_methods:
            self.model = self.kit.load_inpaint_model(self.model_path(), device)

    def task_key(self, cell: Cell) -> dict:
        method, mask, caption = cell.variant
        key = {"task": self.name, "inpaint_method": method, "mask": mask, "caption_kind": caption}
        if method == "repaint":
            key["repaint"] = list(self.cfg.repaint)
        if method == "model":
            key["inpaint_model"] = file_sha256(self.model_path())
        if mask == "file":
            key["mask_file"] = file_sha256(self.cfg.mask_file)
        return key

    def cost(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, negative: bool) -> GuidanceCost:
        """The sampler's work scaled by RePaint's extra passes."""
        sigmas = bundle.process.sigmas(self.cfg.steps, self.cfg.schedule)
        evaluations = sampler_spec(self.cfg.sampler).evaluations(sigmas)
        per = guidance.cost_per_image(evaluations, sigmas, negative=negative)
        factor = nfe(cell.variant[0], sigmas, self.cfg.sampler, self.resampling) / max(len(evaluations), 1)
        return GuidanceCost(per.network_passes * factor, per.guide_passes * factor, per.backward_passes * factor)

    def holes(self, kind: str, indices: list[int], seed: int) -> Tensor:
        size = self.sources.images.shape[-1]
        if kind == "file":
            return load_mask(self.cfg.mask_file, size).expand(len(indices), -1, -1, -1)
        return masks_for(kind, indices, size, seed)

    def sample_batch(self, bundle: ModelBundle, cell: Cell, guidance: Guidance, cond: Conditions, indices: list[int],
                     texts: list[str], device: torch.device) -> SampledBatch:
        cfg, (method, kind, _) = self.cfg, cell.variant
        sigmas = bundle.process.sigmas(cfg.steps, cfg.schedule)
        hole = self.holes(kind, indices, cell.seed)
        known = self.sources.images[[i // cfg.samples_per_prompt for i in indices]]
        denoiser = bundle.denoiser
        if method == "model":
            cond = Conditions(self.model.condition(cond.model, known, 1 - hole), cond.labels, cond.clip_tokens)
            denoiser = self.model.denoiser
        x = inpaint(denoiser, bundle.process, sigmas, guidance, cond, known, hole, indices, method, seed=cell.seed,
                    sampler=cfg.sampler, eta=cfg.eta, resampling=self.resampling, clip_denoised=bundle.clip_denoised,
                    device=device)
        return SampledBatch(bundle.decode(x), {"source": to_hwc_uint8(known), "mask": hole[:, 0].numpy().astype(np.uint8)})

    @classmethod
    def grid(cls, images: np.ndarray, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
        source = extras["source"]
        masked = np.where(extras["mask"][..., None] > 0, 128, source).astype(np.uint8)
        return [source, masked, images]
