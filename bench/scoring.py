"""Score saved samples: one results row per cell (guidance x scale x seed set), one per_sample row per image.

Set metrics (FID, KID, precision/recall, CMMD) run on the feature networks the config names, against one
reference; each cell's features are computed once and reused by every metric and every bootstrap resample.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import pandas as pd
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from bench.config import BenchConfig
from bench.distributed import Shard
from bench.emoji_prompts import emoji_labels
from bench.evaluators import FEATURE_NETS, PER_NETWORK, SET_METRICS, PromptDiversity, column
from bench.evaluators.base import FeatureNet, check_readable, file_digest, load_state_dict_file
from bench.evaluators.clip import CLIPNet, clip_fingerprint
from bench.evaluators.dinov2 import DINOv2Net
from bench.evaluators.domain import DomainNet
from bench.evaluators.inception import InceptionNet
from bench.evaluators.reference import Reference, ReferenceSource, reference_source
from bench.metrics import (Gathered, Throughput, clip_scores, label_hits, load_eval_classifier,
                           metric_directions)
from bench.prompts import PromptSet
from bench.stats.bootstrap import shifted_interval, resample_counts
from bench.store import Cell, SampleStore, load_prompt_set
from guidance.zoo.encoders import EvalClassifier
from guidance.zoo.load import EVAL_CLIP_LABEL, ZOO_DIR, ZOO_DOMAIN, EvalCLIPScorer, load_eval_clip, load_zoo
from guidance.zoo.store import CheckpointError

PER_SAMPLE_KEYS = ("guidance", "scale", "seed_set", "index", "prompt_index")


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
        self.image_size = zoo.sample_shape[-1]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        z = self.clip.encode_image(images.float(), torch.zeros(len(images), device=images.device))
        return torch.nn.functional.normalize(z, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.clip.encode_text(self.tok(texts).to(self.mean.device)), dim=-1)


def make_scorer(cfg: BenchConfig, device: torch.device) -> EvalCLIPScorer:
    if cfg.score_with_guiding_clip:
        return GuidingCLIPScorer(load_zoo(None if cfg.model == "emoji" else cfg.model, device)).to(device)
    return load_eval_clip(device=device, arch=cfg.clip_model, pretrained=cfg.clip_pretrained)


def scorer_weights_id(cfg: BenchConfig) -> str:
    """What the CLIP scorer's embeddings depend on: keys its cached reference embeddings."""
    if cfg.score_with_guiding_clip:
        root = Path(cfg.model) if cfg.model != "emoji" else ZOO_DIR
        return f"guiding:{file_digest(root / 'noised_clip.safetensors')}"
    if cfg.clip_model:
        return f"open_clip:{cfg.clip_model}:{file_digest(cfg.clip_pretrained)}"
    return f"zoo:{file_digest(ZOO_DIR / 'eval_clip.safetensors')}"


def run_reference_source(cfg: BenchConfig) -> ReferenceSource:
    """The run's reference, told which CLIP embeds it (the zoo's committed features serve only that one)."""
    clip = clip_fingerprint(scorer_weights_id(cfg)) if "clip" in net_names(cfg) else None
    return reference_source(cfg.reference, cfg.reference_images, clip)


def needs_clip(cfg: BenchConfig) -> bool:
    return any(m in cfg.metrics for m in ("clip_score", "cmmd")) or "clip" in cfg.feature_nets()


def net_names(cfg: BenchConfig) -> list[str]:
    """Networks a run computes features with: --features for set metrics, clip for CMMD."""
    names = cfg.feature_nets() if any(m in cfg.metrics for m in (*PER_NETWORK, "diversity")) else []
    return names + (["clip"] if "cmmd" in cfg.metrics and "clip" not in names else [])


def make_net(name: str, cfg: BenchConfig, device: torch.device, classifier: EvalClassifier | None = None,
             scorer: EvalCLIPScorer | None = None) -> FeatureNet:
    if name == "domain":
        return DomainNet(classifier if classifier is not None else load_eval_classifier(device=device))
    if name == "inception":
        return InceptionNet(cfg.fid_inception_weights).to(device)
    if name == "dinov2":
        return DINOv2Net(cfg.dinov2_weights, cfg.dinov2_arch).to(device)
    if name == "clip":
        return CLIPNet(scorer if scorer is not None else make_scorer(cfg, device), scorer_weights_id(cfg))
    raise ValueError(f"unknown feature network {name!r}; valid: {', '.join(FEATURE_NETS)}")


def check_clip_pretrained(cfg: BenchConfig) -> None:
    """A known open_clip architecture, and a weights file of plain tensors (checked before open_clip reads it)."""
    if cfg.clip_model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {cfg.clip_model!r}")
    path = check_readable(cfg.clip_pretrained, "--clip-pretrained", "pass the open_clip weights of --clip-model")
    load_state_dict_file(path, "--clip-pretrained")


REFERENCE_METRICS = ("fid", "kid", "prdc", "cmmd", "diversity")  # need real images of the model's domain


def applicable_metrics(cfg: BenchConfig, domain: str, note: Callable[[str], None] = print) -> BenchConfig:
    """The run's metrics for a model of `domain` (the bundle's). The zoo's evaluators know emoji only:
    on another model, accuracy (the emoji label table) is dropped, set metrics need --reference (real
    images of the model's domain) and a feature network for them, and CLIP score with the zoo's emoji CLIP
    is kept for a first look but named as such. `note` says what was dropped and how to get it back."""
    if domain == ZOO_DOMAIN:
        return cfg
    metrics = list(cfg.metrics)
    if "accuracy" in metrics:
        metrics.remove("accuracy")
        note("note: accuracy skipped: it scores against the emoji label table, which this model does not draw")
    if cfg.reference is None:
        dropped = [m for m in metrics if m in REFERENCE_METRICS]
        metrics = [m for m in metrics if m not in REFERENCE_METRICS]
        if dropped:
            note(f"note: {', '.join(dropped)} skipped: they compare with real images of the model's domain; pass "
                 f"--reference DIR (or a COCO captions json with --reference-images) and --features inception|dinov2|clip")
    elif "domain" in cfg.features:
        raise ValueError("--features domain is the emoji evaluation classifier, which knows nothing of this model's "
                         "images; pass --features inception, dinov2 or clip (with their local weights)")
    if "clip_score" in metrics and not cfg.clip_model and not cfg.score_with_guiding_clip:
        note("note: CLIP score uses the zoo's emoji CLIP; pass --clip-model ARCH --clip-pretrained FILE for your domain")
    if not metrics:
        raise ValueError("no metric applies to this model with these flags; pass --metrics clip_score, or --reference "
                         "DIR with --features inception|dinov2|clip for FID/KID/CMMD")
    return replace(cfg, metrics=metrics)


def check_scorers(cfg: BenchConfig, device: torch.device) -> None:
    """Build the external scorers, feature networks and the reference once before any sampling: a wrong
    name, weights file or reference fails in seconds with the flag named, not after hours of sampling."""
    loaders = []
    if needs_clip(cfg) and cfg.clip_model and not cfg.score_with_guiding_clip:
        loaders.append((f"--clip-model {cfg.clip_model} --clip-pretrained {cfg.clip_pretrained}",
                        lambda: (check_clip_pretrained(cfg), make_scorer(cfg, device)),
                        "check the name against open_clip.list_models() and that the file holds its weights"))
    for name in net_names(cfg):
        if name in ("inception", "dinov2"):
            loaders.append((f"--features {name}", lambda name=name: make_net(name, cfg, device),
                            "pass local weights of that network"))
    for flags, load, fix in loaders:
        try:
            load()
        except CheckpointError:
            raise  # already names the file and the fix
        except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError, ValueError, SafetensorError) as err:
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise ValueError(f"{flags}: cannot load ({detail}); {fix}") from err
    if net_names(cfg):  # a missing, empty or mismatched reference fails here
        run_reference_source(cfg).check(net_names(cfg))


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


@dataclass
class Scores:
    """What scoring writes: results.csv rows (per cell), per_sample.csv rows (per image), and evaluators.json."""

    results: pd.DataFrame
    per_sample: pd.DataFrame
    evaluators: dict = field(default_factory=dict)


def prompt_columns(prompts: PromptSet) -> pd.DataFrame:
    """Per prompt: its category and other columns (for per-category breakdowns), if the set has any."""
    rows = []
    for p in prompts.prompts:
        row = {f"meta_{k}" if k in (*PER_SAMPLE_KEYS, "category") else k: v for k, v in p.meta.items()}
        if any(q.category is not None for q in prompts.prompts):
            row["category"] = p.category
        rows.append(row)
    return pd.DataFrame(rows, index=range(len(prompts)))


def chunked_mean(values: torch.Tensor, chunk: int) -> float:
    """Mean of per-sample scores summed chunk by chunk in float64 (the order the cell's metric states add)."""
    total = torch.zeros((), dtype=torch.float64, device=values.device)
    for part in values.split(chunk):
        total += part.double().sum()
    return float(total / max(len(values), 1))


class Evaluation:
    """The networks, reference and label tables of one scoring: loaded once, used for every cell."""

    def __init__(self, cfg: BenchConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.classifier = load_eval_classifier(device=device)
        self.scorer = make_scorer(cfg, device) if needs_clip(cfg) else None
        self.nets = {name: make_net(name, cfg, device, self.classifier, self.scorer) for name in net_names(cfg)}
        self.source: ReferenceSource | None = run_reference_source(cfg) if self.nets else None
        self._references: dict[str, Reference] = {}
        labels = emoji_labels()
        self.subgroup_of = torch.tensor(labels["identity_subgroup"])
        group_of_subgroup = [0] * len(labels["subgroup_names"])
        for sub, grp in zip(labels["identity_subgroup"], labels["identity_group"]):
            group_of_subgroup[sub] = grp
        self.group_of_subgroup = torch.tensor(group_of_subgroup)

    def reference(self, net: str) -> Reference:
        if net not in self._references:
            self._references[net] = self.source.features_for(self.nets[net], self.device)
        return self._references[net]

    def describe(self) -> dict:
        """evaluators.json: every network's units and weights, the reference, and the bootstrap settings."""
        return {"feature_nets": {name: {"units": net.units, "dim": net.dim, "fingerprint": net.fingerprint()}
                                 for name, net in self.nets.items()},
                "reference": self.source.label if self.source else None,
                "clip_scorer": scorer_label(self.cfg) if self.scorer is not None else None,
                "diversity_features": self.cfg.feature_nets()[0] if "diversity" in self.cfg.metrics else None,
                "bootstrap": {"resamples": self.cfg.bootstrap, "confidence": 0.95,
                              "assumption": "reference features held fixed; cell images resampled with replacement"},
                "directions": metric_directions()}


@torch.no_grad()
def score_cells(cfg: BenchConfig, run_dir: Path, cells: list[Cell], device: torch.device,
                progress: bool = True, shard: Shard | None = None) -> Scores:
    """Metrics per cell and per sample. Under torchrun each process scores a contiguous slice of every cell
    and the per-sample rows gather across the group in file order, so the result equals a one-process score."""
    shard = shard or Shard()
    prompts = load_prompt_set(cfg)
    ev = Evaluation(cfg, device)
    extra = prompt_columns(prompts)
    timings = load_throughput(run_dir)
    rows, samples = [], []
    for cell in tqdm(cells, desc="scoring", disable=not progress, dynamic_ncols=True):
        store = SampleStore.of(cfg, run_dir, cell)
        images_np, texts, labels = store.load()  # each sample's own caption and label, as sampled
        n = len(images_np)
        row: dict[str, float | str | int] = {"guidance": cell.guidance, "scale": cell.scale, "seed_set": cell.seed_set,
                                             "n_samples": n, "sampler": cfg.sampler, "steps": cfg.steps}
        banks = {name: Gathered(net.dim).to(device) for name, net in ev.nets.items()}
        clip_rows = Gathered(1).to(device) if "clip_score" in cfg.metrics else None
        acc_rows = Gathered(3, torch.int64).to(device) if "accuracy" in cfg.metrics and prompts.has_labels else None
        for lo, hi in my_chunks(n, cfg.batch_size, shard):
            uint8 = torch.from_numpy(images_np[lo:hi]).permute(0, 3, 1, 2).to(device)
            images = uint8.float().div(127.5).sub(1)
            zi = ev.scorer.encode_images(images) if ev.scorer is not None else None
            for name, net in ev.nets.items():
                banks[name].update(zi if name == "clip" else net(uint8))
            if clip_rows is not None:
                clip_rows.update(clip_scores(zi, ev.scorer.encode_texts([str(t) for t in texts[lo:hi]])).unsqueeze(1))
            if acc_rows is not None:
                acc_rows.update(label_hits(ev.classifier, ev.subgroup_of, ev.group_of_subgroup, images,
                                           torch.from_numpy(labels[lo:hi])))
        features = {name: bank.gathered() for name, bank in banks.items()}
        per = pd.DataFrame({"guidance": cell.guidance, "scale": cell.scale, "seed_set": cell.seed_set,
                            "index": range(n), "prompt_index": [i // cfg.samples_per_prompt for i in range(n)]})
        if clip_rows is not None:
            scores = clip_rows.gathered()[:, 0]
            row["clip_score"] = chunked_mean(scores, cfg.batch_size)
            per["clip_score"] = scores.cpu().numpy()
        if acc_rows is not None:
            hits = acc_rows.gathered()
            total = torch.tensor(n).clamp(min=1)
            for k, name in enumerate(("acc_identity", "acc_subgroup", "acc_group")):
                row[name] = float(hits[:, k].sum() / total)
                per[name] = hits[:, k].cpu().numpy()
        row.update(set_metrics(cfg, ev, features, n, per["prompt_index"].to_numpy()))
        spent = merged_throughput(timings, cell.name)
        if spent:
            row.update(spent)
        rows.append(row)
        samples.append(per.join(extra, on="prompt_index") if len(extra.columns) else per)
    per_sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=list(PER_SAMPLE_KEYS))
    return Scores(pd.DataFrame(rows), per_sample, ev.describe())


def set_metrics(cfg: BenchConfig, ev: Evaluation, features: dict[str, torch.Tensor], n: int,
                prompt_index: np.ndarray) -> dict[str, float]:
    """FID, KID, precision/recall per network, CMMD on CLIP, diversity, with bootstrap intervals."""
    out: dict[str, float] = {}
    jobs = [(m, net) for net in cfg.feature_nets() for m in PER_NETWORK if m in cfg.metrics]
    if "cmmd" in cfg.metrics:
        jobs.append(("cmmd", "clip"))
    counts = torch.from_numpy(resample_counts(n, cfg.bootstrap)).long() if cfg.bootstrap > 0 else None
    for name, net in jobs:
        metric = SET_METRICS[name](ev.reference(net), features[net], cfg.batch_size)
        cols = {c: (c if name == "cmmd" else column(c, net)) for c in metric.columns}
        values = metric.value()
        out.update({cols[c]: v for c, v in values.items()})
        if counts is not None:
            for c, reps in metric.resampled(counts.to(features[net].device)).items():
                out[f"{cols[c]}_boot_lo"], out[f"{cols[c]}_boot_hi"] = shifted_interval(
                    values[c], reps.cpu().numpy(), bounds=metric.bounds.get(c, (-math.inf, math.inf)))
    if "diversity" in cfg.metrics and cfg.samples_per_prompt > 1:
        first = cfg.feature_nets()[0]
        out.update(PromptDiversity(features[first], torch.tensor(prompt_index)).value())
    return out
