"""The upsampler on real images, where the true 64 px image is known: `python -m bench.zoo.upsample_real`.

The cascade benchmark upsamples the base model's samples, which have no 64 px truth, and its
classifier-feature FID barely tells a true 64 px render from bicubic. Here the input is the
dataset's own 32 px render of an emoji, so its 64 px render is the ground truth:

- `psnr`, `ssim`: paired against the true 64 px render (torchmetrics), and `psnr_gain`, `ssim_gain`:
  the paired per-image difference from bicubic of the same input;
- `fd_highfreq`: Frechet distance of the high-frequency feature map (bench.evaluators.highfreq) to
  that of all 64 px renders: blur-sensitive. The "true 64 px" and "bicubic" rows show whether it
  separates the two before any upsampler is judged by it;
- `fid`: on eval_classifier_64 features against 1,024 random 64 px renders (the cascade's FID, kept
  as a secondary column);
- `acc_identity`: eval_classifier_64's top-1; `consistency_psnr`: the output area-downsampled to
  32 px against the input; `nfe`: upsampler network evaluations per image.

Each `--starts` level T samples DDIM from q(x_T | bicubic) (guidance.upsample); T = 999 is the
usual sampler from pure noise. Intervals: 95% bootstrap over images. The images are renders the
upsampler trained on (the dataset has no other 64 px emoji): this measures what the sampler and
model can add over bicubic, not generalisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bench.evaluators.consistency import psnr
from bench.evaluators.fid import FrechetDistance
from bench.evaluators.highfreq import HighFrequencyNet
from bench.evaluators.paired import paired_scores
from bench.evaluators.reference import Reference
from bench.stats.bootstrap import percentile_interval, resample_counts, shifted_interval
from bench.runner.store import to_hwc_uint8
from bench.tasks.cascade import bicubic, from_uint8
from bench.zoo.cascade import Upsampler
from guidance.guiders import make_guidance
from guidance.samplers import sample
from guidance.upsample import truncated_sigmas, truncated_start
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_model

PICK_SEED = 96  # which records are upsampled
REFERENCE_CLASSIFIER = 1024  # renders in the classifier-feature FID's reference (all renders in the high-frequency one)
METRICS = ("psnr", "psnr_gain", "ssim", "ssim_gain", "fd_highfreq", "fid", "acc_identity", "consistency_psnr")


RESAMPLES = 300  # bootstrap resamples of the images


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, lo, hi): a per-image score's mean and its 95% percentile bootstrap interval over the images."""
    counts = resample_counts(len(values), RESAMPLES)
    lo, hi = percentile_interval(counts @ values / len(values))
    return float(values.mean()), float(lo[0]), float(hi[0])


class Gaussian:
    """A reference feature set, and the Frechet distance of others to it (the suite's FID metric)."""

    def __init__(self, features: torch.Tensor) -> None:
        self.reference = Reference.of(features.double())

    def distance(self, features: torch.Tensor) -> tuple[float, float, float]:
        """(value, lo, hi): the distance and its bias-shifted 95% bootstrap interval over the images."""
        metric = FrechetDistance(self.reference, features.double(), 256)
        value = metric.value()["fid"]
        reps = metric.resampled(torch.from_numpy(resample_counts(len(features), RESAMPLES)))["fid"]
        return (value, *shifted_interval(value, reps.numpy()))


def pick_records(total: int, n: int, seed: int = PICK_SEED) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


def with_interval(row: dict, name: str, found: tuple[float, float, float]) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = found


@torch.no_grad()
def run(n: int, starts: list[int], steps: int, aug: int, upsampler_path: Path, features_path: Path, seed: int,
        batch: int) -> pd.DataFrame:
    high_set, low_set = build_emoji_dataset(64, progress=False), build_emoji_dataset(32, progress=False)
    if high_set.captions != low_set.captions:
        raise ValueError("the 32 px and 64 px emoji datasets hold different records; rebuild both caches")
    device = torch.device("cpu")
    upsampler = Upsampler(upsampler_path, device)
    classifier = load_model(features_path, "eval_classifier", device)
    highfreq = HighFrequencyNet(upsampler.size)
    everything = torch.from_numpy(high_set.images).permute(0, 3, 1, 2)
    real_hf = Gaussian(torch.cat([highfreq(c) for c in everything.split(512)]))
    some = everything[pick_records(len(everything), REFERENCE_CLASSIFIER, seed=PICK_SEED + 1)]
    real_clf = Gaussian(torch.cat([classifier.features(c.float() / 127.5 - 1) for c in some.split(256)]))
    rows_idx = pick_records(len(high_set.images), n)
    truth, low = from_uint8(high_set.images[rows_idx]), from_uint8(low_set.images[rows_idx])
    texts, labels = [high_set.captions[i] for i in rows_idx], high_set.identity[rows_idx]
    base = bicubic(low, upsampler.size)
    outputs: dict[str, tuple[torch.Tensor, int]] = {"true 64 px": (truth, 0), "bicubic": (base, 0)}
    for start in starts:
        sigmas = truncated_sigmas(upsampler.process, steps, start)
        made = []
        for lo in range(0, n, batch):
            idx = list(range(lo, min(n, lo + batch)))
            cond = upsampler.condition([texts[i] for i in idx], low[idx], aug, idx, seed)
            x_start = truncated_start(upsampler.process, sigmas, base[idx], idx, seed)
            made.append(from_uint8(to_hwc_uint8(sample(upsampler.denoiser, upsampler.process, sigmas,
                                                      make_guidance("none", 0.0), cond, (3, upsampler.size,
                                                                                          upsampler.size), idx,
                                                      seed=seed, sampler="ddim", x_T=x_start, device=device))))
        outputs[f"upsampler, start t={start}"] = (torch.cat(made), len(sigmas) - 1)
        print(f"start {start}: {len(sigmas) - 1} steps done", flush=True)
    reference = paired_scores(base, truth)
    rows = []
    for name, (images, nfe) in outputs.items():
        row: dict = {"output": name, "n": n, "nfe": nfe}
        scores = paired_scores(images, truth)
        for metric in ("psnr", "ssim"):
            with_interval(row, metric, mean_interval(scores[metric].numpy()))
            with_interval(row, f"{metric}_gain", mean_interval((scores[metric] - reference[metric]).numpy()))
        uint8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        with_interval(row, "fd_highfreq", real_hf.distance(highfreq(uint8)))
        with_interval(row, "fid", real_clf.distance(classifier.features(images)))
        with_interval(row, "acc_identity",
                      mean_interval((classifier.heads(images)[0].argmax(-1).numpy() == labels).astype(float)))
        with_interval(row, "consistency_psnr", mean_interval(psnr(F.interpolate(images, size=low.shape[-2:], mode="area"), low).numpy()))
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(results: pd.DataFrame, steps: int, aug: int) -> str:
    lines = [f"Real 32 px renders -> 64 px (n = {int(results['n'].iloc[0])}; DDIM over a {steps}-step trajectory "
             f"truncated at the start level; noise augmentation t = {aug}); [95% bootstrap interval over images]", "",
             "| output | NFE | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for _, row in results.iterrows():
        cells = [f"{row[m]:.4g} [{row[m + '_lo']:.4g}, {row[m + '_hi']:.4g}]" for m in METRICS]
        lines.append(f"| {row['output']} | {row['nfe']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=96, help="real renders upsampled")
    parser.add_argument("--starts", default="999,600,500,400,300", help="comma-separated start timesteps")
    parser.add_argument("--steps", type=int, default=25, help="steps of the full trajectory that is truncated")
    parser.add_argument("--aug", type=int, default=0, help="noise-augmentation timestep of the 32 px input")
    parser.add_argument("--upsampler", default=str(ZOO_DIR / "upsampler.safetensors"))
    parser.add_argument("--features", default=str(ZOO_DIR / "eval_classifier_64.safetensors"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--out", default=None, help="write results.csv and report.md here")
    args = parser.parse_args(argv)
    try:
        starts = [int(s) for s in args.starts.split(",") if s.strip()]
        if args.n < 2 or not starts:
            raise ValueError("--n must be >= 2 and --starts must name at least one timestep")
        results = run(args.n, starts, args.steps, args.aug, Path(args.upsampler), Path(args.features), args.seed,
                      args.batch)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    text = markdown(results, args.steps, args.aug)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results.to_csv(out / "results.csv", index=False)
        (out / "report.md").write_text(text)


if __name__ == "__main__":
    main()
