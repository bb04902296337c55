"""The cascade benchmark: `python -m bench run --cascade --guidance cfg,clip --scales ...`.

GLIDE's second stage: the base model samples 32 px with the chosen guidance, then the diffusion
upsampler (guidance.zoo.conditioned, trained by guidance.zoo.train_cond) takes each sample to 64 px,
unguided by default as in GLIDE (`--upsampler-scale S` > 1: CFG on the upsampler too). The
low-resolution input is noise-augmented to `--upsample-aug` (a timestep of the upsampler's
schedule), as the upsampler was trained (Ho et al. 2021). Bicubic upsampling of the very same 32 px
samples is scored beside it.

Scores at 64 px use the evaluation classifier trained at 64 px (eval_classifier_64): a 32 px
network cannot see what an upsampler adds, so FID/KID would not tell it from bicubic. Real
statistics come from all 64 px renders. Consistency: PSNR of the 64 px output, downsampled (area),
against the 32 px sample it came from. Intervals: 95% bootstrap over images.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from bench.config import BenchConfig
from bench.edit_metrics import RealStatistics, mean_interval
from bench.run import prepare_output
from bench.store import load_prompt_set, to_hwc_uint8
from guidance.accelerate import checked_device
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import REGISTRY, make_guidance
from guidance.models import load_bundle
from guidance.protocols import Conditions
from guidance.rng import SampleNoise
from guidance.samplers import sample
from guidance.upsample import truncated_sigmas, truncated_start
from guidance.zoo.conditioned import upsample_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_conditioned, load_eval_clip, load_model, sampling_process, training_process
from guidance.zoo.text import CaptionTokenizer

UPSAMPLER_FILE, FEATURES_FILE = "upsampler.safetensors", "eval_classifier_64.safetensors"
AUG_STREAM = 0xA06  # seed offset of the augmentation noise's per-sample streams
UPSAMPLE_STREAM = 0x0B5  # seed offset of the upsampler's sampling noise


@dataclass
class CascadeOptions:
    upsampler: str | None = None  # default: upsampler.safetensors beside --model's weights
    features: str | None = None  # default: eval_classifier_64.safetensors there
    upsampler_scale: float = 1.0  # CFG on the upsampler (1: unguided, one pass per step)
    aug: int = 50  # noise-augmentation timestep of the low-resolution input
    steps: int = 25
    start: int = 500  # timestep the upsampler starts at from the noised bicubic image (999: pure noise; 500: the
    # best of bench.upsample_real's sweep, docs/inpainting.md)


class Upsampler:
    """The upsampler as a denoiser, its process and tokenizer, and how it conditions on a 32 px batch."""

    def __init__(self, path: Path, device: torch.device) -> None:
        net = load_conditioned(path, device, "upsampler",
                               "train it with `python -m guidance.zoo.train_cond --models upsampler` or pass "
                               "--upsampler PATH", lambda n: n.aug_emb is not None,
                               "a conditioned UNet with noise augmentation")
        self.net, self.size = net, net.config.image_size
        self.low = int(net.config.extra.get("low_resolution", self.size // 2))
        self.levels = int(net.config.extra.get("aug_levels", 250))
        self.denoiser = NetworkDenoiser(net, "eps", net.learned_variance)
        self.process = sampling_process(net)
        self.diffusion = training_process(net)
        self.tokenizer = CaptionTokenizer(net.vocab.cpu(), net.config.context_length)

    def condition(self, texts: list[str], low: torch.Tensor, aug: int, indices: list[int], seed: int) -> Conditions:
        if not 0 <= aug < self.levels:
            raise ValueError(f"--upsample-aug {aug} is outside the upsampler's training range 0..{self.levels - 1}")
        t = torch.full((len(low),), aug, dtype=torch.long, device=low.device)
        noise = SampleNoise(seed + AUG_STREAM, indices, low.device).randn(low.shape[1:])
        noised = self.diffusion.q_sample(low.float(), t, noise) if aug > 0 else low.float()
        tokens = self.tokenizer(texts).to(low.device)
        return Conditions(upsample_condition(tokens, noised, self.size, t))


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images.float(), size=(size, size), mode="area")


def bicubic(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    err = (((a.float() - b.float()) / 2) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1.0 / err)


def to_tensor(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def run_cascade(cfg: BenchConfig, options: CascadeOptions, progress: bool = True) -> Path:
    """Base (guided) -> upsampler and -> bicubic for every guidance and scale; scored at 64 px."""
    cfg.validate()
    if options.upsampler_scale < 1 or options.steps < 1:
        raise ValueError("--upsampler-scale must be >= 1 (1: unguided) and --upsample-steps >= 1")
    device = checked_device(cfg.device)
    root = ZOO_DIR if cfg.model == "emoji" else Path(cfg.model)
    upsampler = Upsampler(Path(options.upsampler) if options.upsampler else root / UPSAMPLER_FILE, device)
    features_path = Path(options.features) if options.features else root / FEATURES_FILE
    if not features_path.is_file():
        raise ValueError(f"64 px feature network not found: {features_path}; train it with `python -m "
                         f"guidance.zoo.train_cond --models eval_classifier_64` or pass --cascade-features PATH")
    classifier = load_model(features_path, "eval_classifier", device)
    bundle = load_bundle(cfg.model, device)
    if bundle.sample_shape[-1] != upsampler.low:
        raise ValueError(f"the upsampler takes {upsampler.low} px, but {bundle.source} samples "
                         f"{bundle.sample_shape[-1]} px; pass a matching --upsampler")
    for name in cfg.guidance:
        needs = REGISTRY[name][1]
        if needs is not None and bundle.guiding_models().get(needs) is None:
            raise ValueError(f"guidance {name!r} needs a {needs} model, which {bundle.source} does not have; drop it")
    prompts = load_prompt_set(cfg)
    texts = [p.text for p in prompts.prompts]
    labels = np.array([p.label if p.label is not None else -1 for p in prompts.prompts])
    run_dir = prepare_output(cfg)
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "task": "cascade", "cascade": vars(options)},
                                                    indent=2))
    real = real_statistics(classifier, device)
    clip = load_eval_clip(device=device)
    up_guidance = make_guidance("cfg", options.upsampler_scale) if options.upsampler_scale > 1 else make_guidance("none", 0.0)
    up_sigmas = truncated_sigmas(upsampler.process, options.steps, options.start)
    base_sigmas = bundle.process.sigmas(cfg.steps, cfg.schedule)
    rows = []
    for guidance_name, scales in cfg.scale_grid().items():
        for scale in scales:
            guidance = make_guidance(guidance_name, scale, bundle.guiding_models())
            low, high, seconds = [], [], {"base": 0.0, "upsampler": 0.0}
            for seed in cfg.seeds:
                for lo in range(0, len(texts), cfg.batch_size):
                    idx = list(range(lo, min(len(texts), lo + cfg.batch_size)))
                    batch_labels = labels[idx]
                    cond = bundle.conditions([texts[i] for i in idx],
                                             torch.from_numpy(batch_labels) if (batch_labels >= 0).all() else None)
                    start = time.perf_counter()
                    with torch.no_grad():
                        x32 = bundle.decode(sample(bundle.denoiser, bundle.process, base_sigmas, guidance, cond,
                                                   bundle.sample_shape, idx, seed=seed, sampler=cfg.sampler,
                                                   eta=cfg.eta, clip_denoised=bundle.clip_denoised, device=device))
                        x32 = to_tensor(to_hwc_uint8(x32)).to(device)  # the 8-bit image a user would upsample
                        middle = time.perf_counter()
                        up_cond = upsampler.condition([texts[i] for i in idx], x32, options.aug, idx, seed)
                        x_start = truncated_start(upsampler.process, up_sigmas, bicubic(x32, upsampler.size), idx,
                                                  seed + UPSAMPLE_STREAM)
                        x64 = sample(upsampler.denoiser, upsampler.process, up_sigmas, up_guidance, up_cond,
                                     (3, upsampler.size, upsampler.size), idx, seed=seed + UPSAMPLE_STREAM,
                                     sampler="ddim", x_T=x_start, device=device)
                    seconds["base"] += middle - start
                    seconds["upsampler"] += time.perf_counter() - middle
                    low.append(x32.cpu())
                    high.append(to_tensor(to_hwc_uint8(x64)))
                if progress:
                    print(f"{guidance_name} s={scale:g} seed {seed}: sampled", flush=True)
            x32, x64 = torch.cat(low), torch.cat(high)
            all_texts, all_labels = texts * len(cfg.seeds), np.tile(labels, len(cfg.seeds))
            n = len(x32)
            for stage, images, spent in (("upsampler", x64, seconds["upsampler"]), ("bicubic", bicubic(x32, upsampler.size), 0.0)):
                row = {"stage": stage, "guidance": guidance_name, "scale": scale,
                       "upsampler_scale": options.upsampler_scale if stage == "upsampler" else None,
                       "aug": options.aug if stage == "upsampler" else None,
                       "start": options.start if stage == "upsampler" else None, "n_samples": n,
                       "base_s_per_img": seconds["base"] / n, "stage_s_per_img": spent / n}
                row.update(score_64(images, x32, all_texts, all_labels, classifier, clip, real, device))
                rows.append(row)
            save_grid(run_dir / f"grid_{guidance_name}_s{scale:g}.png", x32[:8], x64[:8], upsampler.size)
    results = pd.DataFrame(rows)
    results.to_csv(run_dir / "results.csv", index=False)
    (run_dir / "report.md").write_text(report_markdown(results, cfg, options, run_dir))
    return run_dir


@torch.no_grad()
def real_statistics(classifier: torch.nn.Module, device: torch.device) -> RealStatistics:
    dataset = build_emoji_dataset(int(classifier.config.image_size), progress=False)
    images = to_tensor(dataset.images)
    feats = torch.cat([classifier.features(c.to(device)) for c in images.split(256)]).double().cpu().numpy()
    return RealStatistics(feats)


@torch.no_grad()
def score_64(images: torch.Tensor, low: torch.Tensor, texts: list[str], labels: np.ndarray, classifier: torch.nn.Module,
             clip, real: RealStatistics, device: torch.device) -> dict[str, float]:  # noqa: ANN001
    x = images.to(device)
    feats = torch.cat([classifier.features(c) for c in x.split(256)]).double().cpu().numpy()
    logits = torch.cat([classifier.heads(c)[0] for c in x.split(256)]).cpu()
    clip_scores = torch.cat([(100 * (clip.encode_images(c) * clip.encode_texts(texts[i:i + 256])).sum(-1)).clamp(min=0)
                             for i, c in zip(range(0, len(x), 256), x.split(256))]).cpu().numpy()
    found = {**real.scores(feats), "consistency_psnr": mean_interval(psnr(downsample(images, low.shape[-1]),
                                                                          low).numpy()),
             "clip_score": mean_interval(clip_scores)}
    if (labels >= 0).all():
        found["acc_identity"] = mean_interval((logits.argmax(-1).numpy() == labels).astype(float))
    row = {}
    for name, (value, lo, hi) in found.items():
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = value, lo, hi
    return row


def save_grid(path: Path, low: torch.Tensor, high: torch.Tensor, size: int) -> None:
    """Rows: the 32 px sample (nearest-upscaled), bicubic, the upsampler's output."""
    rows = [to_hwc_uint8(F.interpolate(low.float(), size=(size, size), mode="nearest")),
            to_hwc_uint8(bicubic(low, size)), to_hwc_uint8(high)]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def report_markdown(results: pd.DataFrame, cfg: BenchConfig, options: CascadeOptions, run_dir: Path) -> str:
    metrics = [m for m in ("fid", "kid", "acc_identity", "clip_score", "consistency_psnr") if m in results]
    lines = [f"# Cascade benchmark `{run_dir.name}`", "",
             f"base: {cfg.sampler} {cfg.steps} steps, seeds {cfg.seeds}, {cfg.prompts} (first {cfg.prompt_limit}); "
             f"upsampler: ddim {options.steps} steps, CFG scale {options.upsampler_scale:g} (1 = unguided), noise "
             f"augmentation t = {options.aug}, started at t = {options.start} from the noised bicubic image "
             f"(999: pure noise). Scored at 64 px by eval_classifier_64 (FID, KID, identity accuracy) "
             f"against all 64 px renders; CLIP score by the evaluation CLIP; consistency: PSNR (dB) of the output "
             f"area-downsampled to 32 px against the 32 px sample. Values [95% bootstrap interval over images].", "",
             "| stage | guidance | scale | n | " + " | ".join(metrics) + " | base s/img | stage s/img |",
             "|" + "---|" * (6 + len(metrics))]
    for _, row in results.iterrows():
        cells = []
        for m in metrics:
            cells.append(f"{row[m]:.3g} [{row[m + '_lo']:.3g}, {row[m + '_hi']:.3g}]")
        lines.append(f"| {row['stage']} | {row['guidance']} | {row['scale']:g} | {row['n_samples']} | "
                     + " | ".join(cells) + f" | {row['base_s_per_img']:.3g} | {row['stage_s_per_img']:.3g} |")
    lines += ["", "Grids (rows: 32 px sample, bicubic, upsampler):", ""]
    lines += [f"![{g.stem}]({g.name})" for g in sorted(run_dir.glob("grid_*.png"))]
    return "\n".join(lines) + "\n"
