"""The editing benchmark: `python -m bench run --task inpaint --guidance cfg,clip,classifier --masks center,strokes`.

Sources are held-out renders of real emoji (emoji200's identities, each rendered in one style and
moved by an augmentation no model trained on). Each source is edited under two captions: its own
("reconstruction") and another emoji of its subgroup ("edit": "grinning face" -> "winking face").
Masks are drawn per (seed, source index, kind) (guidance.masks). Methods (guidance.inpaint):
"model" (GLIDE's fine-tuned inpainting model, x0 overwritten each step), "replace" (q(x_t | x0)
replacement with the plain model) and "repaint" (replacement with RePaint's resampling).

Per method, guidance, scale, mask kind and caption kind the results are scored: PSNR of the kept
region against the source, the seam score (bench.edit_metrics), FID/KID of the completed images on
the evaluation classifier's features against the dataset's, CLIP score of the caption used, and
identity accuracy of its target. Intervals: 95% bootstrap over images. The run directory gets
results.csv, report.md and one grid PNG per mask and caption kind (rows: source, mask, then each
method and scale on the same sources).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file

from bench.config import BenchConfig
from bench.edit_metrics import RealStatistics, bootstrap, edge_energy, mean_interval, psnr_known
from bench.emoji_prompts import emoji200, emoji_labels
from bench.metrics import Reference, load_eval_classifier
from bench.run import prepare_output
from bench.store import to_hwc_uint8
from guidance.accelerate import checked_device
from guidance.bundle import ModelBundle
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import REGISTRY, make_guidance
from guidance.inpaint import METHODS, Resampling, inpaint, nfe
from guidance.masks import check_kinds, load_mask, masks_for
from guidance.models import load_bundle
from guidance.protocols import Conditions
from guidance.samplers import sampler_spec
from guidance.zoo.conditioned import inpaint_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_conditioned, load_eval_clip
from guidance.zoo.store import CheckpointError, file_sha256
from guidance.zoo.train import augment

CAPTIONS = ("source", "edit")
SOURCE_SEED = 20261205  # the sources' augmentation: a draw no training run made
INPAINT_FILE = "inpaint_unet.safetensors"
GRID_COLUMNS = 8
SOURCE_SIZE = 32
EDIT_SOURCES = ZOO_DIR / "edit_sources.safetensors"  # rendered_sources(), committed


@dataclass
class InpaintOptions:
    masks: list[str] = field(default_factory=lambda: ["center", "strokes"])
    methods: list[str] = field(default_factory=lambda: ["model", "replace"])
    captions: list[str] = field(default_factory=lambda: list(CAPTIONS))
    repaint: Resampling = Resampling(5, 2)
    mask_file: str | None = None  # one user mask for every source (its kind is "file")
    inpaint_model: str | None = None  # default: inpaint_unet.safetensors beside --model's weights

    def validate(self, cfg: BenchConfig) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown inpainting method(s) {bad or self.methods}; --inpaint-methods takes a "
                             f"comma-separated subset of {', '.join(METHODS)}")
        if self.mask_file is None:
            check_kinds(self.masks)
        bad = [c for c in self.captions if c not in CAPTIONS]
        if bad or not self.captions:
            raise ValueError(f"unknown caption kind(s) {bad or self.captions}; valid: {', '.join(CAPTIONS)}")
        unknown = [g for g in cfg.guidance if g not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown guidance {unknown}; valid: {', '.join(REGISTRY)}")

    def mask_kinds(self) -> list[str]:
        return ["file"] if self.mask_file else list(self.masks)


@dataclass
class EditSources:
    """The images to edit and both captions of each: its own and its edit target's."""

    images: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    captions: dict[str, list[str]]  # caption kind -> per source
    labels: dict[str, np.ndarray]  # caption kind -> identity index per source


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
    """rendered_sources() as committed beside the zoo (`python -m bench.zoo_reference` writes it), so the
    benchmark needs no emoji fonts."""
    if not EDIT_SOURCES.is_file():
        raise CheckpointError(f"edit sources not found: {EDIT_SOURCES}; write them with `python -m bench.zoo_reference`")
    data = load_file(str(EDIT_SOURCES))
    return data["images"].numpy(), data["identity"].numpy()


def subgroup_members(labels: dict) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for identity, sub in enumerate(labels["identity_subgroup"]):
        members.setdefault(sub, []).append(identity)
    return members


def edit_sources(limit: int) -> EditSources:
    """The first `limit` sources, augmented by SOURCE_SEED, each with the next emoji of its subgroup as
    edit target."""
    labels = emoji_labels()
    peers = subgroup_members(labels)
    uint8, identity = committed_sources()
    picked = [int(i) for i in identity[:limit]]
    targets = []
    for i in picked:
        members = peers[labels["identity_subgroup"][i]]
        targets.append(members[(members.index(i) + 1) % len(members)])
    images = torch.from_numpy(uint8[:limit]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    images = augment(images, torch.Generator().manual_seed(SOURCE_SEED), strength=0.5)
    images = torch.from_numpy(to_hwc_uint8(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # as saved
    names = labels["identity_names"]
    return EditSources(images, {"source": [names[i] for i in picked], "edit": [names[i] for i in targets]},
                       {"source": np.array(picked), "edit": np.array(targets)})


@dataclass(frozen=True)
class EditCell:
    method: str
    guidance: str
    scale: float
    mask: str
    caption: str

    @property
    def name(self) -> str:
        return f"{self.method}_{self.guidance}_s{self.scale:g}_{self.mask}_{self.caption}"


def edit_cells(cfg: BenchConfig, options: InpaintOptions) -> list[EditCell]:
    return [EditCell(m, g, s, k, c) for m in options.methods for g, scales in cfg.scale_grid().items()
            for s in scales for k in options.mask_kinds() for c in options.captions]


class InpaintModel:
    """GLIDE's inpainting model beside a zoo bundle: same process, tokenizer and guiding models."""

    def __init__(self, path: Path, device: torch.device) -> None:
        net = load_conditioned(path, device, "inpainting model",
                               "train it with `python -m guidance.zoo.train_cond --models inpaint_unet`, pass "
                               "--inpaint-model PATH, or drop 'model' from --inpaint-methods",
                               lambda n: n.cond_channels == 4, "4 condition channels")
        self.net = net
        self.denoiser = NetworkDenoiser(net, "eps", net.learned_variance)


def masks(options: InpaintOptions, kind: str, indices: list[int], seed: int, size: int) -> torch.Tensor:
    if kind == "file":
        return load_mask(options.mask_file, size).expand(len(indices), -1, -1, -1)  # type: ignore[arg-type]
    return masks_for(kind, indices, size, seed)


def check_bundle(bundle: ModelBundle, sources: EditSources) -> None:
    if tuple(bundle.sample_shape) != tuple(sources.images.shape[1:]):
        raise ValueError(f"--task inpaint edits pixels of {tuple(sources.images.shape[1:])}, but {bundle.source} samples "
                         f"{tuple(bundle.sample_shape)} (a latent model needs an image encoder, which bundles do not "
                         f"offer yet); use a pixel model such as --model emoji")


def sample_edit_cell(cfg: BenchConfig, options: InpaintOptions, cell: EditCell, bundle: ModelBundle,
                     model: InpaintModel | None, sources: EditSources, device: torch.device) -> dict:
    """Every seed set's edits of one cell: uint8 images, masks, and the time and work they took."""
    sigmas = bundle.process.sigmas(cfg.steps, cfg.schedule)
    guidance = make_guidance(cell.guidance, cell.scale, bundle.guiding_models())
    evals = nfe(cell.method, sigmas, cfg.sampler, options.repaint)
    spec_evals = sampler_spec(cfg.sampler).evaluations(sigmas)
    passes = guidance.cost_per_image(spec_evals, sigmas).network_passes * evals / max(len(spec_evals), 1)
    images, holes, seconds = [], [], 0.0
    n = len(sources.images)
    texts, labels = sources.captions[cell.caption], sources.labels[cell.caption]
    for seed in cfg.seeds:
        for lo in range(0, n, cfg.batch_size):
            idx = list(range(lo, min(n, lo + cfg.batch_size)))
            hole = masks(options, cell.mask, idx, seed, sources.images.shape[-1])
            known = sources.images[idx]
            cond = bundle.conditions([texts[i] for i in idx], torch.from_numpy(labels[idx]))
            denoiser = bundle.denoiser
            if cell.method == "model":
                assert model is not None
                cond = Conditions(inpaint_condition(cond.model, known, 1 - hole), cond.labels, cond.clip_tokens)
                denoiser = model.denoiser
            start = time.perf_counter()
            with torch.no_grad():
                x = inpaint(denoiser, bundle.process, sigmas, guidance, cond, known, hole, idx, cell.method,
                            seed=seed, sampler=cfg.sampler, eta=cfg.eta, resampling=options.repaint,
                            clip_denoised=bundle.clip_denoised, device=device)
                out = bundle.decode(x)
            seconds += time.perf_counter() - start
            images.append(to_hwc_uint8(out))
            holes.append(hole.numpy().astype(np.uint8))
    total = len(cfg.seeds) * n
    return {"images": np.concatenate(images), "holes": np.concatenate(holes), "seconds": seconds,
            "s_per_img": seconds / total, "nfe_per_img": evals, "network_passes_per_img": passes}


class EditScorer:
    """The evaluation classifier (features for FID/KID, identity accuracy) and the evaluation CLIP."""

    def __init__(self, device: torch.device) -> None:
        self.classifier = load_eval_classifier(device=device)
        self.clip = load_eval_clip(device=device)
        self.real = RealStatistics(Reference.load().features.double().numpy())
        self.device = device

    @torch.no_grad()
    def score(self, images: torch.Tensor, holes: torch.Tensor, sources: torch.Tensor, texts: list[str],
              labels: np.ndarray) -> dict[str, float]:
        x = images.to(self.device)
        feats = torch.cat([self.classifier.features(c) for c in x.split(256)]).double().cpu().numpy()
        logits = torch.cat([self.classifier.heads(c)[0] for c in x.split(256)]).cpu()
        clip = torch.cat([(100 * (self.clip.encode_images(c) * self.clip.encode_texts(t)).sum(-1)).clamp(min=0)
                          for c, t in zip(x.split(256), [texts[i:i + 256] for i in range(0, len(texts), 256)])]).cpu()
        correct = (logits.argmax(-1).numpy() == labels).astype(float)
        e_res, pairs = edge_energy(images, holes)
        e_src, _ = edge_energy(sources, holes)
        e_res, e_src, pairs = e_res.numpy(), e_src.numpy(), pairs.numpy()
        seam = bootstrap(lambda i: float(e_res[i].sum() / e_src[i].sum().clip(1e-12)), len(images))
        row: dict[str, float] = {}
        for name, (value, lo, hi) in {"seam": seam, "psnr_known": mean_interval(psnr_known(images, sources, holes).numpy()),
                                      **self.real.scores(feats), "clip_score": mean_interval(clip.numpy()),
                                      "acc_identity": mean_interval(correct)}.items():
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = value, lo, hi
        row["edge_pairs_per_img"] = float(pairs.mean())
        return row


def to_tensor(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def run_inpaint(cfg: BenchConfig, options: InpaintOptions, progress: bool = True) -> Path:
    """Sample (or resume) and score the editing grid; returns the run directory."""
    cfg.validate()
    options.validate(cfg)
    if options.mask_file:
        load_mask(options.mask_file, 32)  # a bad mask file fails before anything loads
    device = checked_device(cfg.device)
    sources = edit_sources(cfg.prompt_limit or 20)
    bundle = load_bundle(cfg.model, device)
    check_bundle(bundle, sources)
    root = Path(options.inpaint_model) if options.inpaint_model else \
        (ZOO_DIR if cfg.model == "emoji" else Path(cfg.model)) / INPAINT_FILE
    model = InpaintModel(root, device) if "model" in options.methods else None
    for name in cfg.guidance:
        needs = REGISTRY[name][1]
        if needs is not None and bundle.guiding_models().get(needs) is None:
            raise ValueError(f"guidance {name!r} needs a {needs} model, which {bundle.source} does not have; drop it")
    run_dir = prepare_output(cfg)
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "task": "inpaint", "inpaint": {
        "masks": options.mask_kinds(), "methods": options.methods, "captions": options.captions,
        "repaint": [options.repaint.jump, options.repaint.resample], "mask_file": options.mask_file,
        "inpaint_model": str(root) if model else None}}, indent=2))
    cells = edit_cells(cfg, options)
    # what the samples depend on: settings, sources, the sampling and guiding weights, and the inpainting model's
    settings = [cfg.sample_settings(), options.repaint.jump, options.repaint.resample, cfg.seeds, cfg.prompt_limit,
                bundle.fingerprint(), file_sha256(root) if model else None]
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]
    scorer = EditScorer(device)
    rows, pooled = [], {}
    for number, cell in enumerate(cells):
        path = run_dir / "samples" / f"{cell.name}_{key}.npz"
        if path.exists():
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        else:
            if progress:
                print(f"[{number + 1}/{len(cells)}] {cell.name}", flush=True)
            data = sample_edit_cell(cfg, options, cell, bundle, model, sources, device)
            np.savez_compressed(path, **{k: np.asarray(v) for k, v in data.items()})
        reps = len(cfg.seeds)
        src = sources.images.repeat(reps, 1, 1, 1)
        texts = sources.captions[cell.caption] * reps
        labels = np.tile(sources.labels[cell.caption], reps)
        row = {"method": cell.method, "guidance": cell.guidance, "scale": cell.scale, "mask": cell.mask,
               "caption": cell.caption, "n_samples": len(data["images"]), "steps": cfg.steps, "sampler": cfg.sampler,
               **{k: float(data[k]) for k in ("s_per_img", "nfe_per_img", "network_passes_per_img")}}
        row.update(scorer.score(to_tensor(data["images"]), torch.from_numpy(data["holes"]).float(), src, texts, labels))
        rows.append(row)
        group = pooled.setdefault((cell.method, cell.guidance, cell.scale), {"parts": [], "row": row})
        group["parts"].append((data["images"], data["holes"], src, texts, labels))
    results = pd.DataFrame(rows)
    results.to_csv(run_dir / "results.csv", index=False)
    summary = pooled_rows(scorer, pooled)
    summary.to_csv(run_dir / "pooled.csv", index=False)
    real = real_rows(scorer, sources, options, cfg)
    real.to_csv(run_dir / "real.csv", index=False)
    write_grids(run_dir, cells, sources, key, options)
    (run_dir / "report.md").write_text(report_markdown(pd.concat([summary, results]), real, cfg, options, run_dir))
    return run_dir


def pooled_rows(scorer: EditScorer, pooled: dict) -> pd.DataFrame:
    """Every mask and caption kind of one method, guidance and scale scored together (tighter intervals)."""
    rows = []
    for (method, guidance, scale), group in pooled.items():
        parts = group["parts"]
        images = to_tensor(np.concatenate([p[0] for p in parts]))
        holes = torch.from_numpy(np.concatenate([p[1] for p in parts])).float()
        src = torch.cat([p[2] for p in parts])
        texts = [t for p in parts for t in p[3]]
        labels = np.concatenate([p[4] for p in parts])
        row = {"method": method, "guidance": guidance, "scale": scale, "mask": "all", "caption": "all",
               "n_samples": len(images), **{k: group["row"][k] for k in ("s_per_img", "nfe_per_img",
                                                                       "network_passes_per_img")}}
        row.update(scorer.score(images, holes, src, texts, labels))
        rows.append(row)
    return pd.DataFrame(rows)


def real_rows(scorer: EditScorer, sources: EditSources, options: InpaintOptions, cfg: BenchConfig) -> pd.DataFrame:
    """The sources themselves scored like results (seam 1, exact PSNR): the floor a method can reach."""
    rows = []
    for kind in options.mask_kinds():
        holes = torch.cat([masks(options, kind, list(range(len(sources.images))), s, sources.images.shape[-1])
                           for s in cfg.seeds])
        src = sources.images.repeat(len(cfg.seeds), 1, 1, 1)
        row = {"method": "real source", "mask": kind, "n_samples": len(src)}
        row.update(scorer.score(src, holes, src, sources.captions["source"] * len(cfg.seeds),
                                np.tile(sources.labels["source"], len(cfg.seeds))))
        rows.append(row)
    return pd.DataFrame(rows)


def write_grids(run_dir: Path, cells: list[EditCell], sources: EditSources, key: str, options: InpaintOptions) -> None:
    """Per mask and caption kind: source, masked source, then one row per method, guidance and scale."""
    cols = min(GRID_COLUMNS, len(sources.images))
    src = to_hwc_uint8(sources.images[:cols])
    for kind in options.mask_kinds():
        for caption in options.captions:
            rows, holes = [src], None
            for cell in cells:
                if cell.mask != kind or cell.caption != caption:
                    continue
                with np.load(run_dir / "samples" / f"{cell.name}_{key}.npz") as z:
                    rows.append(z["images"][:cols])
                    holes = z["holes"][:cols]
            if holes is None:
                continue
            masked = np.where(holes.transpose(0, 2, 3, 1) > 0, 128, src).astype(np.uint8)
            rows.insert(1, masked)
            grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
            Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(
                run_dir / f"grid_{kind}_{caption}.png")


def fmt(row: pd.Series, metric: str, digits: int = 3) -> str:
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    ci = "" if lo is None or lo != lo else f" [{lo:.{digits}g}, {hi:.{digits}g}]"
    return f"{row[metric]:.{digits}g}{ci}"


METRIC_COLUMNS = ("seam", "psnr_known", "fid", "kid", "clip_score", "acc_identity")


def report_markdown(results: pd.DataFrame, real: pd.DataFrame, cfg: BenchConfig, options: InpaintOptions,
                    run_dir: Path) -> str:
    lines = [f"# Editing benchmark `{run_dir.name}`", "",
             f"{len(results)} cells; {cfg.sampler} {cfg.steps} steps; seeds {cfg.seeds}; masks {options.mask_kinds()}; "
             f"RePaint jump {options.repaint.jump}, resample {options.repaint.resample}. Values: statistic over "
             f"all images of the cell [95% bootstrap interval over images]. seam: edge energy / the real sources' "
             f"(1 = as real, > 1 seams); psnr_known: dB outside the mask (100 = exact); FID/KID on the "
             f"evaluation classifier's features against all dataset renders; CLIP score and identity accuracy "
             f"against the caption used (edit: the target emoji).", "",
             "| method | guidance | scale | mask | caption | n | " + " | ".join(METRIC_COLUMNS) + " | s/img | NFE/img |",
             "|" + "---|" * (8 + len(METRIC_COLUMNS))]
    for _, row in results.iterrows():
        lines.append(f"| {row['method']} | {row['guidance']} | {row['scale']:g} | {row['mask']} | {row['caption']} | "
                     f"{row['n_samples']} | " + " | ".join(fmt(row, m) for m in METRIC_COLUMNS)
                     + f" | {row['s_per_img']:.3g} | {row['nfe_per_img']:.0f} |")
    lines += ["", "Real sources under the same masks (the floor):", "",
              "| mask | n | " + " | ".join(METRIC_COLUMNS) + " |", "|" + "---|" * (2 + len(METRIC_COLUMNS))]
    for _, row in real.iterrows():
        lines.append(f"| {row['mask']} | {row['n_samples']} | " + " | ".join(fmt(row, m) for m in METRIC_COLUMNS) + " |")
    lines += ["", "Grids (rows: source, mask in grey, then each method / guidance / scale in the table's order):", ""]
    for grid in sorted(run_dir.glob("grid_*.png")):
        lines.append(f"![{grid.stem}]({grid.name})")
    return "\n".join(lines) + "\n"
