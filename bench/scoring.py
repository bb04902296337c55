"""Score saved samples: one results row per cell (guidance x scale x seed set)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from bench.metrics import (CLIPScore, DomainFeatures, LabelAccuracy, Reference, Throughput, domain_fid, domain_kid,
                           inception_fid, load_eval_classifier)
from guidance.zoo.load import ZOO_DIR, EvalCLIPScorer, load_eval_clip

if TYPE_CHECKING:
    from bench.config import BenchConfig
    from bench.run import Cell

KID_MAX_SUBSET = 100


def scorer_label(cfg: "BenchConfig") -> str:
    if cfg.score_with_guiding_clip:
        return "GUIDING noised CLIP (scores inflated for CLIP guidance)"
    return f"open_clip:{cfg.clip_model}" if cfg.clip_model else "zoo:eval_clip"


class GuidingCLIPScorer(EvalCLIPScorer):
    """Scores with the noised CLIP that guides (at t = 0): only to show GLIDE's self-scoring inflation."""

    def __init__(self, zoo) -> None:  # noqa: ANN001
        torch.nn.Module.__init__(self)
        self.clip, self.tok, self.name = zoo.noised_clip, zoo.clip_tokenizer, "guiding"
        self.register_buffer("mean", torch.zeros(1))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        z = self.clip.encode_image(images.float(), torch.zeros(len(images), device=images.device))
        return torch.nn.functional.normalize(z, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.clip.encode_text(self.tok(texts).to(self.mean.device)), dim=-1)


def make_scorer(cfg: "BenchConfig", device: torch.device) -> EvalCLIPScorer:
    if cfg.score_with_guiding_clip:
        from guidance.zoo.load import load_zoo

        return GuidingCLIPScorer(load_zoo(None if cfg.model == "emoji" else cfg.model, device)).to(device)
    return load_eval_clip(device=device, arch=cfg.clip_model, pretrained=cfg.clip_pretrained)


def make_fid(cfg: "BenchConfig", features: DomainFeatures, reference: Reference, device: torch.device):
    """Domain FID against committed statistics, or Inception FID against the rendered emoji dataset."""
    if not cfg.fid_inception_weights:
        return domain_fid(features, reference).to(device)
    from guidance.zoo.emoji_data import build_emoji_dataset

    fid = inception_fid(cfg.fid_inception_weights).to(device)
    fid.reset_real_features = False
    real = torch.from_numpy(build_emoji_dataset(32).images).permute(0, 3, 1, 2)
    for chunk in real.split(256):
        fid.update(chunk.to(device), real=True)
    return fid


def score_cells(cfg: "BenchConfig", run_dir: Path, cells: list["Cell"], device: torch.device,
                progress: bool = True) -> pd.DataFrame:
    from tqdm.auto import tqdm

    from bench.run import SampleStore, load_prompt_set

    prompts = load_prompt_set(cfg)
    classifier = load_eval_classifier(device=device)
    features = DomainFeatures(classifier)
    reference = Reference.load()
    scorer = make_scorer(cfg, device) if "clip_score" in cfg.metrics else None
    labels_meta = json.loads((ZOO_DIR / "labels.json").read_text())
    group_of_subgroup = [0] * len(labels_meta["subgroup_names"])
    for sub, grp in zip(labels_meta["identity_subgroup"], labels_meta["identity_group"]):
        group_of_subgroup[sub] = grp
    timing = json.loads((run_dir / "throughput.json").read_text()) if (run_dir / "throughput.json").exists() else {}
    rows, fid = [], None
    for cell in tqdm(cells, desc="scoring", disable=not progress, dynamic_ncols=True):
        store = SampleStore(run_dir, cell, cfg.cell_hash(cell.guidance, cell.scale, cell.seed))
        images_np, texts, indices = store.load()
        images = torch.from_numpy(images_np).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        n = len(images)
        row: dict[str, float | str | int] = {"guidance": cell.guidance, "scale": cell.scale, "seed_set": cell.seed_set,
                                             "n_samples": n, "sampler": cfg.sampler, "steps": cfg.steps}
        uint8 = torch.from_numpy(images_np).permute(0, 3, 1, 2).to(device)
        if "fid" in cfg.metrics:
            if fid is None:
                fid = make_fid(cfg, features, reference, device)
            fid.reset()  # keeps the reference ("real") state: reset_real_features=False
            for chunk in uint8.split(256):
                fid.update(chunk, real=False)
            row["fid"] = float(fid.compute())
        if "kid" in cfg.metrics:
            kid = domain_kid(features, reference, subset_size=min(KID_MAX_SUBSET, n)).to(device)
            for chunk in uint8.split(256):
                kid.update(chunk, real=False)
            kid_mean, kid_std = kid.compute()
            row["kid_mean"], row["kid_std"] = float(kid_mean), float(kid_std)
        if scorer is not None:
            clip = CLIPScore(scorer).to(device)
            for chunk, chunk_texts in zip(images.split(256), np.array_split(texts, max(1, math.ceil(n / 256)))):
                clip.update(chunk, [str(t) for t in chunk_texts])
            row["clip_score"] = float(clip.compute())
        if "accuracy" in cfg.metrics and prompts.has_labels:
            acc = LabelAccuracy(classifier, labels_meta["identity_subgroup"], group_of_subgroup).to(device)
            labels = torch.tensor([prompts.prompts[int(i) // cfg.samples_per_prompt].label for i in indices])
            acc.update(images, labels)
            row.update({k: float(v) for k, v in acc.compute().items()})
        spent = timing.get(cell.name)
        if spent:
            tp = Throughput()
            tp.update(**spent)
            row.update({k: float(v) for k, v in tp.compute().items()})
        rows.append(row)
    return pd.DataFrame(rows)
