"""The editing task: `python -m bench run --task inpaint --guidance cfg,clip,classifier --masks center,strokes`.

Sources are held-out renders of real emoji (emoji200's identities, each rendered in one style and
moved by an augmentation no model trained on). Each source is edited under two captions: its own
("source", a reconstruction) and another emoji of its subgroup ("edit": "grinning face" -> "winking
face"). Masks are drawn per (seed, sample index, kind) (guidance.masks). Methods (guidance.inpaint):
"model" (GLIDE's fine-tuned inpainting model, x0 overwritten each step), "replace" (q(x_t | x0)
replacement with the plain model) and "repaint" (replacement with RePaint's resampling).

A cell is one method, mask kind and caption kind (the variant) under one guidance, scale and seed
set; prompt index i is source i, so the paired statistics compare arms on the same sources. Besides
the runner's metrics (FID/KID on the evaluation classifier's features, CLIP score and accuracy of the
caption used) a cell gets PSNR of the kept region and the seam score (bench.evaluators.psnr, bench.evaluators.seam).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from bench.runner.config import BenchConfig
from bench.zoo.prompts import emoji200, emoji_labels
from bench.evaluators.psnr import PSNRKnown
from bench.evaluators.seam import SeamScore
from bench.prompts.readers import Prompt, PromptSet
from bench.runner.store import Cell, Expected, to_hwc_uint8
from bench.runner.preflight import check_checkpoint, check_image
from bench.tasks.base import SampledBatch, Task
from bench.tasks.registry import register_task
from guidance.bundle import ModelBundle
from guidance.denoisers import NetworkDenoiser
from guidance.guiders.base import Guidance, GuidanceCost
from guidance.inpaint import METHODS, Resampling, inpaint, nfe
from guidance.masks import check_kinds, load_mask, masks_for
from guidance.protocols import Conditions
from guidance.samplers import sampler_spec
from guidance.zoo.conditioned import inpaint_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.sources.zoo_source import model_dir
from guidance.zoo.load import ZOO_DIR, load_conditioned
from guidance.checkpoints import CheckpointError, file_sha256
from guidance.zoo.train import augment

CAPTIONS = ("source", "edit")
SOURCE_SEED = 20261205  # the sources' augmentation: a draw no training run made
INPAINT_FILE = "inpaint_unet.safetensors"
SOURCE_SIZE = 32
EDIT_SOURCES = ZOO_DIR / "edit_sources.safetensors"  # rendered_sources(), committed
DEFAULT_SOURCES = 20  # sources when --prompt-limit is all


@dataclass
class EditSources:
    """The images to edit and both captions of each: its own and its edit target's."""

    images: Tensor  # [N, 3, H, W] in [-1, 1], exactly as 8-bit images
    captions: dict[str, list[str]]  # caption kind -> per source
    labels: dict[str, np.ndarray]  # caption kind -> identity index per source
    prompts: list[Prompt]  # the emoji200 prompt of each source (category and meta for the per-category tables)


def subgroup_members(labels: dict) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for identity, sub in enumerate(labels["identity_subgroup"]):
        members.setdefault(sub, []).append(identity)
    return members


def rendered_sources() -> tuple[np.ndarray, np.ndarray]:
    """Every source in pick order, rendered from the emoji fonts: uint8 [N, 32, 32, 3] and identities [N].
    The emoji200 identities whose subgroup has another emoji, one render of each, styles alternating."""
    labels = emoji_labels()
    dataset = build_emoji_dataset(SOURCE_SIZE, progress=False)
    if dataset.identity_names != labels["identity_names"]:
        raise ValueError("the rendered emoji dataset does not match the zoo's labels.json; rebuild the dataset cache")
    peers = subgroup_members(labels)
    picked, records = [], []
    for prompt in emoji200().prompts:
        if len(peers[labels["identity_subgroup"][prompt.label]]) < 2:
            continue
        rows = np.flatnonzero(dataset.identity == prompt.label)
        records.append(int(rows[len(picked) % len(rows)]))
        picked.append(prompt.label)
    return dataset.images[records], np.array(picked, np.int64)


def committed_sources() -> tuple[np.ndarray, np.ndarray]:
    """rendered_sources() as committed beside the zoo (`python -m bench.zoo.reference` writes it), so the
    benchmark needs no emoji fonts."""
    if not EDIT_SOURCES.is_file():
        raise CheckpointError(f"edit sources not found: {EDIT_SOURCES}; write them with `python -m bench.zoo.reference`")
    data = load_file(str(EDIT_SOURCES))
    return data["images"].numpy(), data["identity"].numpy()


def edit_sources(limit: int) -> EditSources:
    """The first `limit` sources, augmented by SOURCE_SEED, each with the next emoji of its subgroup as
    edit target."""
    labels = emoji_labels()
    peers = subgroup_members(labels)
    uint8, identity = committed_sources()
    picked = [int(i) for i in identity[:limit]]
    prompt_of = {p.label: p for p in emoji200().prompts}
    targets = []
    for i in picked:
        members = peers[labels["identity_subgroup"][i]]
        targets.append(members[(members.index(i) + 1) % len(members)])
    images = torch.from_numpy(uint8[:limit]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    images = augment(images, torch.Generator().manual_seed(SOURCE_SEED), strength=0.5)
    images = torch.from_numpy(to_hwc_uint8(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # as saved
    names = labels["identity_names"]
    return EditSources(images, {"source": [names[i] for i in picked], "edit": [names[i] for i in targets]},
                       {"source": np.array(picked), "edit": np.array(targets)}, [prompt_of[i] for i in picked])


@register_task("inpaint")
class Inpaint(Task):
    axes = ("inpaint_method", "mask", "caption_kind")
    metrics = (PSNRKnown.name, SeamScore.name)
    grid_rows = ("source", "mask (grey)", "result")

    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__(cfg)
        self._sources: EditSources | None = None
        self.model: NetworkDenoiser | None = None

    @property
    def resampling(self) -> Resampling:
        return Resampling(*self.cfg.repaint)

    def mask_kinds(self) -> list[str]:
        return ["file"] if self.cfg.mask_file else list(self.cfg.masks)

    def model_path(self) -> Path:
        cfg = self.cfg
        if cfg.inpaint_model:
            return Path(cfg.inpaint_model)
        return model_dir(cfg.model) / INPAINT_FILE

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
            check_checkpoint(self.model_path(), "--inpaint-model", "conditioned_unet", "pass GLIDE-style inpainting "
                             "model weights, or drop 'model' from --inpaint-methods")

    @property
    def sources(self) -> EditSources:
        if self._sources is None:
            self._sources = edit_sources(self.cfg.prompt_limit or DEFAULT_SOURCES)
        return self._sources

    def prompt_set(self) -> PromptSet:
        return PromptSet("edit-sources", tuple(replace(p, negative=None) for p in self.sources.prompts),
                         f"emoji200 sources, augmentation seed {SOURCE_SEED}")

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
            net = load_conditioned(self.model_path(), device, "inpainting model",
                                   "train it with `python -m guidance.zoo.train_cond --models inpaint_unet`, pass "
                                   "--inpaint-model PATH, or drop 'model' from --inpaint-methods",
                                   lambda n: n.cond_channels == 4, "4 condition channels")
            self.model = NetworkDenoiser(net, "eps", net.learned_variance)

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
            cond = Conditions(inpaint_condition(cond.model, known, 1 - hole), cond.labels, cond.clip_tokens)
            denoiser = self.model
        x = inpaint(denoiser, bundle.process, sigmas, guidance, cond, known, hole, indices, method, seed=cell.seed,
                    sampler=cfg.sampler, eta=cfg.eta, resampling=self.resampling, clip_denoised=bundle.clip_denoised,
                    device=device)
        return SampledBatch(bundle.decode(x), {"source": to_hwc_uint8(known), "mask": hole[:, 0].numpy().astype(np.uint8)})

    @classmethod
    def grid(cls, images: np.ndarray, extras: dict[str, np.ndarray]) -> list[np.ndarray]:
        source = extras["source"]
        masked = np.where(extras["mask"][..., None] > 0, 128, source).astype(np.uint8)
        return [source, masked, images]
