"""What an inpainting fine-tune changed, measured on fixed draws: the trainer prints it, keeps its best
checkpoint by it, and writes it to the model card.

Hole eps MSE (the error of the noise prediction inside the hole, the only region the sampler keeps)
on two sources of images:

- "plain": the dataset's renders, as the base model was trained on;
- "edited": renders moved by the same augmentation at the same strength as the editing benchmark's
  sources (bench/inpaint.py: `augment(..., strength=0.5)`, saved as 8-bit), from a draw no training
  step makes. This is the distribution the benchmark scores.

For each: the error with the condition channels given and with them zeroed (what the mask channels
add), by timestep bucket, and the caption gain at t in [300, 900): 1 - error with the caption /
error with the empty caption (how much the model still listens to the text). Timesteps are
stratified over [0, 1000) so every bucket holds the same share of the draw. With a reference (the
model at step 0), every figure also gets the paired difference against it and its 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from guidance.diffusion import GaussianDiffusion
from guidance.masks import random_masks
from guidance.zoo.conditioned import ConditionedUNet, inpaint_condition
from guidance.zoo.train import augment

BUCKETS = ((0, 200), (200, 500), (500, 800), (800, 1000))
CAPTION_RANGE = (300, 900)
EDIT_STRENGTH = 0.5  # the editing benchmark's source augmentation strength (bench/inpaint.py edit_sources)
DIAGNOSTIC_SEED = 123
EDITED_SEED = 777_001  # the edited draw's augmentation: neither a training draw nor the benchmark's
SOURCES = ("plain", "edited")


@dataclass
class Draw:
    """A fixed evaluation draw: clean images, holes (1 = regenerate), timesteps, noise and captions."""

    x0: Tensor
    hole: Tensor
    t: Tensor
    noise: Tensor
    tokens: Tensor
    null_tokens: Tensor

    def __len__(self) -> int:
        return len(self.t)


def make_draws(images: Tensor, tokens: Tensor, null_tokens: Tensor, n: int,
               seed: int = DIAGNOSTIC_SEED) -> dict[str, Draw]:
    """The "plain" and "edited" draws: the same records, holes, timesteps and noise; the edited draw's
    images moved like the benchmark's sources and rounded to 8 bits as the benchmark saves them."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images), (n,), generator=g)
    t = ((torch.arange(n) + torch.rand(n, generator=g)) * 1000 / n).long().clamp(max=999)  # stratified
    x0 = images[idx.to(images.device)].float().cpu()
    noise = torch.randn(x0.shape, generator=g)
    hole = random_masks(n, x0.shape[-1], g)
    caption = tokens[idx.to(tokens.device)].cpu()
    null = null_tokens.cpu()[None].expand(n, -1)
    edited = augment(x0, torch.Generator().manual_seed(EDITED_SEED), strength=EDIT_STRENGTH)
    edited = ((edited + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1
    return {"plain": Draw(x0, hole, t, noise, caption, null), "edited": Draw(edited, hole, t, noise, caption, null)}


@torch.no_grad()
def hole_errors(model: ConditionedUNet, diffusion: GaussianDiffusion, draw: Draw, given: bool = True,
                caption: bool = True, rows: Tensor | None = None, batch: int = 64) -> Tensor:
    """Per-sample eps MSE inside the hole, for the draw's `rows` (default all)."""
    rows = torch.arange(len(draw)) if rows is None else rows
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    errors = []
    for sl in rows.split(batch):
        hole, x0, noise, t = draw.hole[sl], draw.x0[sl], draw.noise[sl], draw.t[sl]
        keep = 1 - hole if given else torch.zeros_like(hole)
        tokens = draw.tokens[sl] if caption else draw.null_tokens[sl]
        cond = inpaint_condition(tokens, x0, keep)
        x_t = diffusion.q_sample(x0, t, noise)
        out = model(x_t.to(device), t.to(device), {k: v.to(device) for k, v in cond.items()})
        err = (hole * (out[:, :3].float().cpu() - noise) ** 2).sum((1, 2, 3)) / (3 * hole.sum((1, 2, 3)))
        errors.append(err)
    model.train(was)
    return torch.cat(errors)


def measure(model: ConditionedUNet, diffusion: GaussianDiffusion, draws: dict[str, Draw]) -> dict[str, Tensor]:
    """Per-sample errors: "<source>/given", "<source>/hidden" (all rows) and "<source>/given_null"
    (the empty caption, rows with t in CAPTION_RANGE)."""
    errors = {}
    for source, draw in draws.items():
        errors[f"{source}/given"] = hole_errors(model, diffusion, draw)
        errors[f"{source}/hidden"] = hole_errors(model, diffusion, draw, given=False)
        rows = caption_rows(draw)
        errors[f"{source}/given_null"] = hole_errors(model, diffusion, draw, caption=False, rows=rows)
    return errors


def caption_rows(draw: Draw) -> Tensor:
    return torch.nonzero((draw.t >= CAPTION_RANGE[0]) & (draw.t < CAPTION_RANGE[1])).flatten()


def _interval(values: Tensor) -> list[float]:
    """Normal 95% interval of a mean (n >= 50 per figure here, so the CLT applies)."""
    half = 1.96 * float(values.std()) / len(values) ** 0.5
    mean = float(values.mean())
    return [round(mean - half, 6), round(mean + half, 6)]


def _caption_gain(with_caption: Tensor, without: Tensor) -> float:
    return 1 - float(with_caption.mean()) / float(without.mean())


def _caption_gain_interval(with_caption: Tensor, without: Tensor, resamples: int = 1000) -> list[float]:
    """Percentile bootstrap over rows (the gain is a ratio of means of paired values)."""
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(0, len(with_caption), (resamples, len(with_caption)), generator=g)
    gains = 1 - with_caption[pick].mean(1) / without[pick].mean(1)
    lo, hi = torch.quantile(gains, torch.tensor([0.025, 0.975])).tolist()
    return [round(lo, 4), round(hi, 4)]


def summarise(errors: dict[str, Tensor], draws: dict[str, Draw], reference: dict[str, Tensor] | None = None) -> dict:
    """The figures of `errors` (measure's output); with `reference` (the same draw measured on the
    step-0 model) also each figure's paired difference from it with a 95% interval."""
    report: dict = {"n": len(next(iter(draws.values())))}
    for source, draw in draws.items():
        block: dict = {}
        for variant in ("given", "hidden"):
            err = errors[f"{source}/{variant}"]
            block[f"hole_mse_{variant}"] = round(float(err.mean()), 6)
            block[f"hole_mse_{variant}_ci"] = _interval(err)
            for lo, hi in (*BUCKETS, (200, 1000)):
                rows = (draw.t >= lo) & (draw.t < hi)
                block[f"hole_mse_{variant}_t{lo}_{hi}"] = round(float(err[rows].mean()), 6)
        rows = caption_rows(draw)
        with_caption, without = errors[f"{source}/given"][rows], errors[f"{source}/given_null"]
        block["caption_gain_t300_900"] = round(_caption_gain(with_caption, without), 4)
        block["caption_gain_t300_900_ci"] = _caption_gain_interval(with_caption, without)
        if reference is not None:
            for variant in ("given", "hidden"):
                diff = errors[f"{source}/{variant}"] - reference[f"{source}/{variant}"]
                block[f"hole_mse_{variant}_minus_step0"] = round(float(diff.mean()), 6)
                block[f"hole_mse_{variant}_minus_step0_ci"] = _interval(diff)
                for lo, hi in BUCKETS:
                    sel = (draw.t >= lo) & (draw.t < hi)
                    block[f"hole_mse_{variant}_t{lo}_{hi}_minus_step0_ci"] = _interval(diff[sel])
            block["caption_gain_t300_900_step0"] = round(_caption_gain(reference[f"{source}/given"][rows],
                                                                      reference[f"{source}/given_null"]), 4)
        report[source] = block
    return report


def selection_score(errors: dict[str, Tensor], reference: dict[str, Tensor]) -> float:
    """What the trainer keeps its best checkpoint by: the worse, over plain and benchmark-like renders, of
    the hole error relative to step 0's on the same draw. Below 1 only where both improved, so a checkpoint
    that trades the plain renders for the benchmark's sources is never kept."""
    return max(float(errors[f"{s}/given"].mean() / reference[f"{s}/given"].mean()) for s in SOURCES)


def one_line(report: dict) -> str:
    """The figures the trainer prints at each mid-run evaluation."""
    parts = []
    for source in SOURCES:
        b = report[source]
        parts.append(f"{source}: given {b['hole_mse_given']:.5f} hidden {b['hole_mse_hidden']:.5f} "
                     f"t>=200 {b['hole_mse_given_t200_1000']:.5f} "
                     f"caption gain {b['caption_gain_t300_900']:.3f}")
    return "; ".join(parts)


def markdown(report: dict) -> str:
    """The card's table: per source, the figure, step 0's, the paired difference [95% interval]."""
    lines = [f"Fixed draws of n = {report['n']} per source (stratified timesteps; same images, holes and noise "
             f"for every model); hole eps MSE, lower is better; difference = this model - step 0, paired "
             f"[95% interval].", "",
             "| source | figure | this model | step 0 | difference [95% interval] |", "|---|---|---|---|---|"]
    for source in SOURCES:
        b = report[source]
        for variant, what in (("given", "mask channels given"), ("hidden", "mask channels zeroed")):
            for suffix, label in (("", "all t"), *((f"_t{lo}_{hi}", f"t {lo}-{hi}") for lo, hi in BUCKETS)):
                value = b[f"hole_mse_{variant}{suffix}"]
                diff_ci = b.get(f"hole_mse_{variant}{suffix}_minus_step0_ci")
                if diff_ci is None:
                    continue
                diff = b.get(f"hole_mse_{variant}{suffix}_minus_step0")
                mid = (diff_ci[0] + diff_ci[1]) / 2 if diff is None else diff
                lines.append(f"| {source} | hole MSE, {what}, {label} | {value:.5f} | {value - mid:.5f} | "
                             f"{mid:+.5f} [{diff_ci[0]:+.5f}, {diff_ci[1]:+.5f}] |")
        lo, hi = b["caption_gain_t300_900_ci"]
        lines.append(f"| {source} | caption gain, t 300-900 | {b['caption_gain_t300_900']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{b.get('caption_gain_t300_900_step0', float('nan')):.3f} | |")
    return "\n".join(lines) + "\n"
