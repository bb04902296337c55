"""Score saved samples: one results row per cell (guidance x scale x seed set), one per_sample row per image.

Scoring reads its slice of the run's settings (bench.evaluators.config.ScoringConfig) and the task's sample
stores, nothing else of how the samples were drawn. It is one update/compute loop over the selected metrics
(bench.evaluators.registry): per batch, every feature network the selected set metrics need and every
per-image metric see the same ScoringBatch; per cell, per-image metrics give their per_sample.csv columns and
means, and set metrics (FID, KID, precision/recall, CMMD, ...) run on the cell's features against one
reference, each cell's features computed once and reused by every metric and every bootstrap resample.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from bench.evaluators.config import ScoringConfig
from bench.runner.distributed import Shard
from bench.evaluators import FEATURE_NETS, FeatureNet, PerImageMetric, ScoringBatch, SetMetric, column
from bench.evaluators.base import CellSet, Gathered, check_readable, file_digest, load_state_dict_file
from bench.evaluators.clip import clip_fingerprint
from bench.evaluators.reference import Reference, ReferenceSource, reference_source
from bench.evaluators.registry import bounds, directions, selected
from bench.evaluators.throughput import Throughput
from bench.prompts.readers import PromptSet
from bench.stats.bootstrap import shifted_interval, resample_counts
from bench.runner.store import Cell
from bench.tasks import Evaluators, Task
from guidance.effective_scale import EFFECTIVE_SCALE, trajectory_mean
from guidance.rng import sample_seed
from guidance.models import load_bundle
from guidance.evaluation import EvalCLIPScorer, domain_evaluators, load_open_clip_scorer
from guidance.sources.zoo_source import model_dir
from guidance.checkpoints import CheckpointError

PER_SAMPLE_KEYS = ("guidance", "scale", "seed_set", "index", "prompt_index")


def scorer_label(config: ScoringConfig) -> str:
    if config.score_with_guiding_clip:
        return "GUIDING noised CLIP (scores inflated for CLIP guidance)"
    return f"open_clip:{config.clip_model}" if config.clip_model else domain_evaluators().clip_label


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


def make_scorer(config: ScoringConfig, device: torch.device) -> EvalCLIPScorer:
    if config.score_with_guiding_clip:
        return GuidingCLIPScorer(load_bundle(config.model, device)).to(device)
    if config.clip_model:
        return load_open_clip_scorer(config.clip_model, config.clip_pretrained, device)
    return domain_evaluators().load_clip(device)


def feature_net(name: str, config: ScoringConfig, device: torch.device) -> FeatureNet:
    """One registered feature network, built as scoring builds it (what bench.zoo.reference embeds with)."""
    return FEATURE_NETS[name].build(ScoringResources(config, device))


def scorer_weights_id(config: ScoringConfig) -> str:
    """What the CLIP scorer's embeddings depend on: keys its cached reference embeddings."""
    if config.score_with_guiding_clip:
        return f"guiding:{file_digest(model_dir(config.model) / 'noised_clip.safetensors')}"
    if config.clip_model:
        return f"open_clip:{config.clip_model}:{file_digest(config.clip_pretrained)}"
    return f"zoo:{file_digest(domain_evaluators().clip_weights)}"


def run_reference_source(config: ScoringConfig) -> ReferenceSource:
    """The run's reference, told which CLIP embeds it (the zoo's committed features serve only that one)."""
    clip = clip_fingerprint(scorer_weights_id(config)) if "clip" in net_names(config) else None
    return reference_source(config.reference, config.reference_images, clip)


def net_names(config: ScoringConfig) -> list[str]:
    """Networks a run computes features with, as the selected set metrics declare them: every --features
    network, the first of them, or a network of their own (CMMD: clip)."""
    sets = selected(config.metrics, "set")
    names = list(config.feature_nets()) if any(m.networks == "each" for m in sets) else []
    if any(m.networks == "first" for m in sets) and not names:
        names = config.feature_nets()[:1]
    return names + list(dict.fromkeys(m.networks for m in sets if m.networks not in ("each", "first", "", *names)))


def needs_clip(config: ScoringConfig) -> bool:
    return any("clip" in m.needs for m in selected(config.metrics)) or "clip" in net_names(config)


class ScoringResources:
    """The evaluation networks metrics and feature networks build themselves from, loaded on first use."""

    def __init__(self, config: ScoringConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self._classifier: torch.nn.Module | None = None
        self._scorer: EvalCLIPScorer | None = None
        self._label_tables: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def classifier(self) -> torch.nn.Module:
        if self._classifier is None:
            self._classifier = domain_evaluators().load_classifier(self.device)
        return self._classifier

    @property
    def scorer(self) -> EvalCLIPScorer:
        if self._scorer is None:
            self._scorer = make_scorer(self.config, self.device)
        return self._scorer

    @property
    def label_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(subgroup of each emoji identity, group of each subgroup): what accuracy checks labels against."""
        if self._label_tables is None:
            labels = domain_evaluators().labels()
            group_of_subgroup = [0] * len(labels["subgroup_names"])
            for sub, grp in zip(labels["identity_subgroup"], labels["identity_group"]):
                group_of_subgroup[sub] = grp
            self._label_tables = torch.tensor(labels["identity_subgroup"]), torch.tensor(group_of_subgroup)
        return self._label_tables

    def scorer_weights_id(self) -> str:
        return scorer_weights_id(self.config)


def check_clip_pretrained(config: ScoringConfig) -> None:
    """A known open_clip architecture, and a weights file of plain tensors (checked before open_clip reads it)."""
    if config.clip_model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {config.clip_model!r}")
    path = check_readable(config.clip_pretrained, "--clip-pretrained", "pass the open_clip weights of --clip-model")
    load_state_dict_file(path, "--clip-pretrained")


def check_scorers(config: ScoringConfig, device: torch.device) -> None:
    """Build the external scorers, feature networks and the reference once before any sampling: a wrong
    name, weights file or reference fails in seconds with the flag named, not after hours of sampling."""
    loaders = []
    if needs_clip(config) and config.clip_model and not config.score_with_guiding_clip:
        loaders.append((f"--clip-model {config.clip_model} --clip-pretrained {config.clip_pretrained}",
                        lambda: (check_clip_pretrained(config), make_scorer(config, device)),
                        "check the name against open_clip.list_models() and that the file holds its weights"))
    resources = ScoringResources(config, device)
    for name in net_names(config):
        if FEATURE_NETS[name].weights_flag:
            loaders.append((f"--features {name}", lambda name=name: FEATURE_NETS[name].build(resources),
                            "pass local weights of that network"))
    for metric in selected(config.metrics, "per_image"):  # local evaluator weights, loaded and fitted to their network
        if hasattr(metric, "check_files"):
            loaders.append((f"--metrics {metric.name}", lambda metric=metric: metric.build(resources),
                            "pass that evaluator's local files"))
    for flags, load, fix in loaders:
        try:
            load()
        except CheckpointError:
            raise  # already names the file and the fix
        except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError, ValueError, SafetensorError) as err:
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise ValueError(f"{flags}: cannot load ({detail}); {fix}") from err
    if net_names(config):  # a missing, empty or mismatched reference fails here
        run_reference_source(config).check(net_names(config))


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


class Evaluation(ScoringResources):
    """The networks, reference and label tables of one scoring: loaded once, used for every cell. A task
    with its own evaluators (the cascade's 64 px classifier and renders) replaces the domain network's
    classifier and the reference."""

    def __init__(self, config: ScoringConfig, device: torch.device, own: Evaluators | None = None) -> None:
        super().__init__(config, device)
        self.classifier_weights: str | None = None
        if own is not None:
            self._classifier, self.classifier_weights = own.classifier, own.classifier_weights
        self.nets: dict[str, FeatureNet] = {name: FEATURE_NETS[name].build(self) for name in net_names(config)}
        self.source: ReferenceSource | None = None
        if self.nets:
            self.source = own.reference if own else run_reference_source(config)
        self._references: dict[str, Reference] = {}

    def reference(self, net: str) -> Reference:
        if net not in self._references:
            self._references[net] = self.source.features_for(self.nets[net], self.device)
        return self._references[net]

    def describe(self) -> dict:
        """evaluators.json: every network's units and weights, the reference, and the bootstrap settings."""
        return {"feature_nets": {name: {"units": net.units, "dim": net.dim, "fingerprint": net.fingerprint()}
                                 for name, net in self.nets.items()},
                "reference": self.source.label if self.source else None,
                "clip_scorer": scorer_label(self.config) if needs_clip(self.config) else None,
                "diversity_features": self.config.feature_nets()[0] if "diversity" in self.config.metrics else None,
                "preference_evaluators": {m.name: m.provenance(self.config) for m in selected(self.config.metrics)
                                          if hasattr(m, "provenance")},
                "bootstrap": {"resamples": self.config.bootstrap, "confidence": 0.95,
                              "assumption": "reference features held fixed; cell images resampled with replacement"},
                "directions": directions()}


def batch_extra(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A stored per-sample array as metrics read it: images (uint8 [N, H, W, 3]) as [N, 3, H, W], masks
    ([N, H, W], 1 = regenerated) as [N, 1, H, W] float."""
    x = torch.from_numpy(array).to(device)
    if x.ndim == 4 and x.shape[-1] == 3:
        return x.permute(0, 3, 1, 2)
    return x[:, None].float() if x.ndim == 3 else x


def cell_metrics(config: ScoringConfig, prompts: PromptSet,
                 task: Task) -> tuple[list[type[PerImageMetric]], list[type[SetMetric]]]:
    """The selected per-image and set metrics this prompt set can score (accuracy needs labels), and the
    task's own metrics (seam score, PSNR of the kept region, ...)."""
    names = [*config.metrics, *(m for m in task.metrics if m not in config.metrics)]
    usable = [m for m in selected(names) if prompts.has_labels or "labels" not in m.needs]
    return ([m for m in usable if m.kind == "per_image"],  # type: ignore[misc]
            [m for m in usable if m.kind == "set"])  # type: ignore[misc]


@torch.no_grad()
def score_cells(config: ScoringConfig, task: Task, run_dir: Path, cells: list[Cell], device: torch.device,
                progress: bool = True, shard: Shard | None = None) -> Scores:
    """Metrics per cell and per sample, with the task's own metrics beside them: `config` says what to score
    with, `task` where each cell's samples are and what they were conditioned on. Under torchrun each process
    scores a contiguous slice of every cell and the per-sample rows gather across the group in file order,
    so the result equals a one-process score (a task's own metrics are computed whole by every process)."""
    shard = shard or Shard()
    prompts = task.prompt_set()
    ev = Evaluation(config, device, task.evaluators(device))
    per_image_kinds, set_kinds = cell_metrics(config, prompts, task)
    extra = prompt_columns(prompts)
    timings = load_throughput(run_dir)
    rows, samples = [], []
    for cell in tqdm(cells, desc="scoring", disable=not progress, dynamic_ncols=True):
        store = task.store(run_dir, cell)
        images_np, texts, labels = store.load()  # each sample's own caption and label, as sampled
        stored = store.load_extras()  # the task's per-sample arrays (source, mask, low_res)
        per_step_scale = stored.pop(EFFECTIVE_SCALE, None)  # the runner's, not a metric's input
        n = len(images_np)
        row: dict[str, float | str | int] = {"guidance": cell.arm, "scale": cell.scale, "seed_set": cell.seed_set,
                                             "n_samples": n, **task.sampling_columns()}
        if task.axes:
            row |= {"guidance_method": cell.guidance, **dict(zip(task.axes, cell.variant))}
        banks = {name: Gathered(net.dim).to(device) for name, net in ev.nets.items()}
        per_image = [m.build(ev) for m in per_image_kinds]
        batch_fed = {m.name: m.for_cell(ev) for m in set_kinds if m.networks == ""}
        for lo, hi in my_chunks(n, config.batch_size, shard):
            batch = ScoringBatch(torch.from_numpy(images_np[lo:hi]).permute(0, 3, 1, 2).to(device),
                                 [str(t) for t in texts[lo:hi]],
                                 torch.from_numpy(labels[lo:hi]) if prompts.has_labels else None,
                                 {k: batch_extra(v[lo:hi], device) for k, v in stored.items()})
            for name, net in ev.nets.items():
                banks[name].update(net.features(batch))
            for metric in (*per_image, *batch_fed.values()):
                metric.update(batch)
        per = pd.DataFrame({"guidance": cell.arm, "scale": cell.scale, "seed_set": cell.seed_set,
                            "index": range(n), "prompt_index": [i // task.samples_per_prompt for i in range(n)],
                            # the seed of the sample's noise generator: with --noise diffusers (or on a CPU run)
                            # its initial latents are randn(shape, generator=Generator("cpu").manual_seed(it))
                            "noise_seed": [sample_seed(cell.seed, i) for i in range(n)]})
        if per_step_scale is not None:  # each sample's trajectory mean (NaN evaluations left out)
            per[EFFECTIVE_SCALE] = trajectory_mean(torch.from_numpy(per_step_scale)).numpy()
        for metric in per_image:
            for name, values in metric.compute().items():
                row[name] = metric.cell_value(values, config.batch_size)
                per[name] = values.cpu().numpy()
        features = CellSet({name: bank.gathered() for name, bank in banks.items()}, ev.reference, config.batch_size,
                           torch.tensor(per["prompt_index"].to_numpy()))
        row.update(set_metrics(config, set_kinds, features, batch_fed, n, device))
        spent = merged_throughput(timings, cell.name)
        if spent:
            row.update(spent)
        rows.append(row)
        samples.append(per.join(extra, on="prompt_index") if len(extra.columns) else per)
    per_sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=list(PER_SAMPLE_KEYS))
    return Scores(pd.DataFrame(rows), per_sample, ev.describe())


def set_metrics(config: ScoringConfig, kinds: list[type[SetMetric]], cell: CellSet, batch_fed: dict[str, SetMetric],
                n: int, device: torch.device) -> dict[str, float]:
    """Every selected set metric of a cell (per network where it is computed on each of --features), with
    its bootstrap interval over the cell's images where it has one."""
    out: dict[str, float] = {}
    nets = config.feature_nets()
    jobs = [(kind, net, True) for net in nets for kind in kinds if kind.networks == "each"]
    jobs += [(kind, nets[0] if kind.networks == "first" else kind.networks, False)
             for kind in kinds if kind.networks != "each"]
    counts = torch.from_numpy(resample_counts(n, config.bootstrap)).long() if config.bootstrap > 0 else None
    for kind, net, suffixed in jobs:
        metric = batch_fed[kind.name] if kind.networks == "" else kind.of_cell(cell, net)
        if metric is None:
            continue
        cols = {c: column(c, net) if suffixed else c for c in kind.columns}
        values = metric.value()
        out.update({cols[c]: v for c, v in values.items()})
        if counts is not None and kind.bootstrapped:
            on = cell.features[net].device if net else device
            for c, reps in metric.resampled(counts.to(on)).items():
                out[f"{cols[c]}_boot_lo"], out[f"{cols[c]}_boot_hi"] = shifted_interval(
                    values[c], reps.cpu().numpy(), bounds=bounds(c))
    return out
