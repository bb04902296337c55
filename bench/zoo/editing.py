"""The embedded zoo's kit for `--task inpaint`: GLIDE's inpainting model (a conditioned UNet fine-tuned on
the masked image and the mask, trained by guidance.zoo.train_cond) and the images to edit.

Sources are held-out renders of real emoji (emoji200's identities, each rendered in one style and
moved by an augmentation no model trained on). Each source is edited under two captions: its own
("source", a reconstruction) and another emoji of its subgroup ("edit": "grinning face" -> "winking
face"). The renders are committed (EDIT_SOURCES, written by `python -m bench.zoo.reference`), so the
benchmark needs no emoji fonts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from bench.runner.preflight import check_checkpoint
from bench.runner.store import to_hwc_uint8
from bench.tasks.inpaint import EditSources
from bench.tasks.kits import register_kit
from bench.zoo.prompts import emoji200, emoji_labels
from guidance.checkpoints import CheckpointError
from guidance.denoisers import NetworkDenoiser
from guidance.sources.zoo_source import SOURCE, model_dir
from guidance.zoo.conditioned import inpaint_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_conditioned
from guidance.zoo.train import augment

SOURCE_SEED = 20261205  # the sources' augmentation: a draw no training run made
INPAINT_FILE = "inpaint_unet.safetensors"
SOURCE_SIZE = 32
EDIT_SOURCES = ZOO_DIR / "edit_sources.safetensors"  # rendered_sources(), committed
TRAIN_HINT = "train it with `python -m guidance.zoo.train_cond --models inpaint_unet`"


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
    """rendered_sources() as committed beside the zoo."""
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
                       {"source": np.array(picked), "edit": np.array(targets)}, [prompt_of[i] for i in picked],
                       f"emoji200 sources, augmentation seed {SOURCE_SEED}")


@dataclass
class ZooInpaintingModel:
    """GLIDE's inpainting model: the zoo's conditioned UNet with 4 condition channels (masked image, mask)."""

    denoiser: NetworkDenoiser

    def condition(self, model_cond: Tensor, known: Tensor, keep: Tensor) -> dict[str, Tensor]:
        return inpaint_condition(model_cond, known, keep)


class ZooEditing:
    """The zoo's kit for --task inpaint (bench.tasks.inpaint.EditingKit)."""

    def sources(self, limit: int) -> EditSources:
        return edit_sources(limit)

    def inpaint_model_file(self, spec: str) -> Path:
        return model_dir(spec) / INPAINT_FILE

    def check_inpaint_model(self, path: Path, flag: str) -> None:
        check_checkpoint(path, flag, "conditioned_unet", f"{TRAIN_HINT}, pass GLIDE-style inpainting model weights, "
                         f"or drop 'model' from --inpaint-methods")

    def load_inpaint_model(self, path: Path, device: torch.device) -> ZooInpaintingModel:
        net = load_conditioned(path, device, "inpainting model", f"{TRAIN_HINT}, pass --inpaint-model PATH, or drop "
                               "'model' from --inpaint-methods", lambda n: n.cond_channels == 4, "4 condition channels")
        return ZooInpaintingModel(NetworkDenoiser(net, "eps", net.learned_variance))


KIT = register_kit("inpaint", SOURCE.prefix, ZooEditing())
