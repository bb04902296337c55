"""Score saved samples: one results row per cell (guidance x scale x seed set)."""

from __future__ import annotations

import json
from pathlib import Path
import pickle

import pandas as pd
import torch
from tqdm.auto import tqdm

from bench.config import BenchConfig
from bench.distributed import Shard
from bench.emoji_prompts import emoji_labels
from bench.metrics import (CLIPScore, DomainFeatures, LabelAccuracy, Reference, Throughput, domain_fid, domain_kid,
                           inception_fid, load_eval_classifier)
from bench.store import Cell, SampleStore, load_prompt_set
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import EVAL_CLIP_LABEL, EvalCLIPScorer, load_eval_clip, load_zoo
from guidance.zoo.store import CheckpointError

KID_MAX_SUBSET = 100


def scorer_label(cfg: BenchConfig) -> str:
    if cfg.score_with_guiding_clip:
        return "GUIDING noised CLIP (scores inflated for CLIP guidance)"
    return f"open_clip:{cfg.clip_model}" if cfg.clip_model else EVAL_CLIP_LABEL


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


def make_scorer(cfg: BenchConfig, device: torch.device) -> EvalCLIPScorer:
    if cfg.score_with_guiding_clip:
        return GuidingCLIPScorer(load_zoo(None if cfg.model == "emoji" else cfg.model, device)).to(device)
    return load_eval_clip(device=device, arch=cfg.clip_model, pretrained=cfg.clip_pretrained)


def check_scorers(cfg: BenchConfig, device: torch.device) -> None:
    """Build the external scorers once before any sampling: a wrong architecture name or weights file
    fails in seconds with the flag named, not after hours of sampling (the zoo's own scorers are tested)."""
    loaders = []
    if "clip_score" in cfg.metrics and cfg.clip_model and not cfg.score_with_guiding_clip:
        loaders.append((f"--clip-model {cfg.clip_model} --clip-pretrained {cfg.clip_pretrained}",
                        lambda: make_scorer(cfg, device),
                        "check the name against open_clip.list_models() and that the file holds its weights"))
    if "fid" in cfg.metrics and cfg.fid_inception_weights:
        loaders.append((f"--fid-inception-weights {cfg.fid_inception_weights}",
                        lambda: inception_fid(cfg.fid_inception_weights),
                        "pass torchmetrics' FID Inception checkpoint (pt_inception-2015-12-05)"))
    for flags, load, fix in loaders:
        try:
            load()
        except CheckpointError:
            raise  # already names the file and the fix
        except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError, ValueError) as err:
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise ValueError(f"{flags}: cannot load ({detail}); {fix}") from err


def make_fid(cfg: BenchConfig, features: DomainFeatures, reference: Reference, device: torch.device):
    """Domain FID against committed statistics, or Inception FID against the rendered emoji dataset."""
    if not cfg.fid_inception_weights:
        return domain_fid(features, reference).to(device)
    fid = inception_fid(cfg.fid_inception_weights).to(device)
    fid.reset_real_features = False
    real = torch.from_numpy(build_emoji_dataset(32).images).permute(0, 3, 1, 2)
    for chunk in real.split(256):
        fid.update(chunk.to(device), real=True)
    return fid


def my_chunks(n: int, size: int, shard: Shard) -> list[tuple[int, int]]:
    """This process's (lo, hi) row ranges: fixed-size chunks, a contiguous run of them per process.

    Feature networks see the same chunks whatever the process count (so features are bit-identical),
    and gathering states in rank order keeps the file's order (so KID's subsets agree too).
    """
    chunks = [(lo, min(n, lo + size)) for lo in range(0, n, size)]
    if not shard.launched:
        return chunks
    k = len(chunks)
    return chunks[k * shard.rank // shard.world: k * (shard.rank + 1) // shard.world]


def load_throughput(run_dir: Path) -> list[dict[str, dict[str, float]]]:
    """Every process's timing file (cell name -> work and seconds), read once per scoring."""
    return [json.loads(path.read_text()) for path in sorted(run_dir.glob("throughput.rank*.json"))]


def merged_throughput(per_process: list[dict[str, dict[str, float]]], cell_name: str) -> dict[str, float] | None:
    """Combine every process's timing of a cell through Throughput's reductions (torchmetrics merge_state)."""
    total = None
    for timings in per_process:
        spent = timings.get(cell_name)
        if spent is None:
            continue
        part = Throughput(sync_on_compute=False)
        part.update(**{k: v for k, v in spent.items() if k != "cell_hash"})
        if total is None:
            total = part
        else:
            total.merge_state(part)
    return None if total is None else {k: float(v) for k, v in total.compute().items()}


def score_cells(cfg: BenchConfig, run_dir: Path, cells: list[Cell], device: torch.device,
                progress: bool = True, shard: Shard | None = None) -> pd.DataFrame:
    """Metrics per cell. Under torchrun each process scores a contiguous slice of every cell and the
    metric states sync across the group, so the result equals a one-process score."""
    shard = shard or Shard()

    prompts = load_prompt_set(cfg)
    classifier = load_eval_classifier(device=device)
    features = DomainFeatures(classifier)
    reference = Reference.load()
    scorer = make_scorer(cfg, device) if "clip_score" in cfg.metrics else None
    labels_meta = emoji_labels()
    group_of_subgroup = [0] * len(labels_meta["subgroup_names"])
    for sub, grp in zip(labels_meta["identity_subgroup"], labels_meta["identity_group"]):
        group_of_subgroup[sub] = grp
    timings = load_throughput(run_dir)
    rows, fid = [], None
    for cell in tqdm(cells, desc="scoring", disable=not progress, dynamic_ncols=True):
        store = SampleStore.of(cfg, run_dir, cell)
        images_np, texts, labels = store.load()  # each sample's own caption and label, as sampled
        n = len(images_np)
        row: dict[str, float | str | int] = {"guidance": cell.guidance, "scale": cell.scale, "seed_set": cell.seed_set,
                                             "n_samples": n, "sampler": cfg.sampler, "steps": cfg.steps}
        if "fid" in cfg.metrics:
            if fid is None:
                fid = make_fid(cfg, features, reference, device)
                if shard.rank != 0:  # states add up across the group: only rank 0 holds the reference
                    fid.real_features_sum.zero_()
                    fid.real_features_cov_sum.zero_()
                    fid.real_features_num_samples.zero_()
            fid.reset()  # keeps the reference ("real") state: reset_real_features=False
        kid = None
        if "kid" in cfg.metrics:
            kid = domain_kid(features, reference, subset_size=min(KID_MAX_SUBSET, n)).to(device)
            if shard.rank != 0:
                kid.real_features = [reference.features[:0].clone()]
        clip = CLIPScore(scorer).to(device) if scorer is not None else None
        acc = LabelAccuracy(classifier, labels_meta["identity_subgroup"], group_of_subgroup).to(device) \
            if "accuracy" in cfg.metrics and prompts.has_labels else None
        for lo, hi in my_chunks(n, cfg.batch_size, shard):
            uint8 = torch.from_numpy(images_np[lo:hi]).permute(0, 3, 1, 2).to(device)
            images = uint8.float().div(127.5).sub(1)
            if "fid" in cfg.metrics:
                fid.update(uint8, real=False)
            if kid is not None:
                kid.update(uint8, real=False)
            if clip is not None:
                clip.update(images, [str(t) for t in texts[lo:hi]])
            if acc is not None:
                acc.update(images, torch.from_numpy(labels[lo:hi]))
        if "fid" in cfg.metrics:
            row["fid"] = float(fid.compute())
        if kid is not None:
            # KID keeps lists and gathers them element by element: give every rank exactly one tensor
            empty = reference.features[:0].to(device)
            kid.fake_features = [torch.cat([empty, *kid.fake_features])]
            torch.manual_seed(0)  # KID draws random subsets: fixed, so reruns and process counts agree
            kid_mean, kid_std = kid.compute()
            row["kid_mean"], row["kid_std"] = float(kid_mean), float(kid_std)
        if clip is not None:
            row["clip_score"] = float(clip.compute())
        if acc is not None:
            row.update({k: float(v) for k, v in acc.compute().items()})
        spent = merged_throughput(timings, cell.name)
        if spent:
            row.update(spent)
        rows.append(row)
    return pd.DataFrame(rows)
