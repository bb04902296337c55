"""Train GLIDE's two other systems and what scores them: `python -m guidance.zoo.train_cond`.

- "inpaint_unet": the committed text UNet with 4 zero-initialised input channels (masked image and
  mask) gated by the noise level, fine-tuned on random masks (guidance.masks: centre, halves, boxes,
  strokes), captions dropped as in base training, half of the images moved like the editing
  benchmark's sources. L_simple counts the hole (and, with --known-weight, the rest): at inference
  the known region of the x0 estimate is overwritten. Only the condition weights move (TRAINABLE);
  the run evaluates itself every --select-every seconds on fixed draws
  (guidance.zoo.inpaint_diagnostics) and exports the checkpoint best on both plain and edited renders.
- "upsampler": a small text UNet at 64 px conditioned on the bicubic-upsampled 32 px render, with
  noise augmentation of that input (Ho et al. 2021): the low-resolution image is noised to a random
  level t_aug < AUG_LEVELS of the same schedule, and t_aug is embedded beside the timestep.
- "eval_classifier_64": the evaluation classifier at 64 px, whose features score the cascade's FID.

The trainer (budget, resume, export, records) is guidance.zoo.train's.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from guidance.diffusion import GaussianDiffusion
from guidance.masks import random_masks
from guidance.zoo.conditioned import (INPAINT_CHANNELS, UPSAMPLE_CHANNELS, ConditionedUNet, inpaint_condition,
                                      upsample_condition)
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.encoders import EncoderConfig, EvalClassifier
from guidance.zoo.inpaint_diagnostics import EDIT_STRENGTH, make_draws, measure, one_line, selection_score, summarise
from guidance.zoo.load import ZOO_DIR, load_model
from guidance.zoo.losses import hybrid_loss
from guidance.checkpoints import CheckpointError, read_metadata, save_model
from guidance.zoo.text import CaptionTokenizer
from guidance.zoo.train import (NUM_TIMESTEPS, SCHEDULE, Data, Job, augment, autocast, classifier_report,
                                run_record, train)
from guidance.zoo.unet import UNetConfig

MODELS = ("inpaint_unet", "upsampler", "eval_classifier_64")
AUG_LEVELS = 250  # the upsampler's training range of noise-augmentation timesteps
UPSAMPLER = {"channels": 32, "channel_mult": (1, 2, 2, 2), "blocks": 2, "attention_resolutions": (8,),
             "text_width": 64, "text_layers": 1}


# the CPU recipe: which weights move, with their learning-rate multipliers over Job.lr. Only the new
# condition weights: moving the pretrained stem and first blocks as well (x1) bought the benchmark-like
# renders at the cost of the plain ones (hole error +12% after 89 steps at batch 8).
TRAINABLE = {"cond_stem.": 30.0}


def inpaint_job(data: Data, batch: int, device: torch.device, base_path: Path, small: bool,
                p_edited: float = 0.5, known_weight: float = 0.0, select_every: float = 600.0,
                eval_n: int = 128) -> Job:
    """The condition branch is gated by the noise level (exactly the base model at step 0); only the
    zero-initialised condition weights (3e-4) and the first blocks that read them (1e-5) move.

    `p_edited` of each batch is moved like the benchmark's sources (augment at EDIT_STRENGTH): the
    benchmark edits such renders of the very identities the base model learned, so the fine-tune must
    see them; held-out identities would test a generalisation the 32 px base model never had.
    `known_weight` weights L_simple outside the hole against 1 inside (GLIDE trains on the full image: 1).
    """
    diffusion = GaussianDiffusion.from_schedule(SCHEDULE, NUM_TIMESTEPS, learned_variance=True)
    base = load_model(base_path, "unet")
    # the captions in the base model's own vocabulary (a --limit dataset builds a smaller one)
    data.tokens = CaptionTokenizer(base.vocab.cpu(), base.config.context_length)(data.dataset.captions).to(device)
    model = ConditionedUNet.from_base(base, INPAINT_CHANNELS, cond_gate="sigma", p_edited=p_edited,
                                      known_weight=known_weight)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tuple(TRAINABLE)))
    p_uncond = float(model.config.extra.get("p_uncond", 0.15))
    size = model.config.image_size

    def loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        idx = data.random_batch(batch, g)
        x0 = data.images[idx]
        edited = torch.rand(len(idx), 1, 1, 1, generator=g, device=device) < p_edited
        x0 = torch.where(edited, augment(x0, g, strength=EDIT_STRENGTH), x0)
        tokens = data.tokens[idx]
        drop = torch.rand(len(idx), generator=g, device=device) < p_uncond
        tokens = torch.where(drop[:, None], model.null_tokens.to(device)[None], tokens)
        hole = random_masks(len(idx), size, g).to(device)
        t = torch.randint(0, NUM_TIMESTEPS, (len(idx),), generator=g, device=device)
        noise = torch.randn(x0.shape, generator=g, device=device)
        x_t = diffusion.q_sample(x0, t, noise)
        with autocast(device):
            out = model(x_t, t, inpaint_condition(tokens, x0, 1 - hole))
        return hybrid_loss(diffusion, out, x0, x_t, t, noise, weight=hole + known_weight * (1 - hole))

    draws = make_draws(data.images, data.tokens, model.null_tokens, n=32 if small else eval_n)
    pristine = copy.deepcopy(model)  # step 0, measured on first use (an export-only resume never needs it)
    step0: dict[str, Tensor] = {}

    def select(m: nn.Module) -> tuple[float, str, dict]:
        if not step0:
            step0.update(measure(pristine, diffusion, draws))  # the base model's figures on the same draws
        state, before = m.state_dict(), pristine.state_dict()
        unchanged = all(torch.equal(v.cpu(), before[k]) for k, v in state.items())
        errors = step0 if unchanged else measure(m, diffusion, draws)  # type: ignore[arg-type]
        report = summarise(errors, draws, reference=step0)
        return selection_score(errors, step0), one_line(report), report

    meta = read_metadata(base_path)
    info = {"fine_tuned_from": {"file": base_path.name, "steps": meta["info"].get("steps"),
                                "wall_time_s": meta["info"].get("wall_time_s"), "device": meta["info"].get("device")},
            "trainable": {prefix: f"lr x{scale:g}" for prefix, scale in TRAINABLE.items()},
            "selection_criterion": "the worse over the plain and edited draws of hole eps MSE (condition given) "
                                      "relative to step 0's (lower is better; below 1 where both improved)"}
    return Job("inpaint_unet", model, loss, model.config.to_dict(), lr=1e-5, weight_decay=0.0, ema_decay=0.995,
               kind="conditioned_unet", warmup=10, extra_info=info, lr_scale=TRAINABLE,
               evaluate=lambda m: select(m)[2], select=select, select_every=select_every)


def paired_data(device: torch.device, limit: int | None) -> tuple[Data, Tensor]:
    """The 64 px renders and the 32 px renders of the same records (the base model's own domain)."""
    high, low = build_emoji_dataset(64, limit=limit), build_emoji_dataset(32, limit=limit)
    if high.captions != low.captions:
        raise ValueError("the 32 px and 64 px emoji datasets hold different records; rebuild both caches")
    data = Data.load(high, device)
    images_low = torch.from_numpy(low.images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    return data, images_low


def upsampler_job(data: Data, low: Tensor, batch: int, device: torch.device, small: bool, crop: int = 32) -> Job:
    """`crop`: train on random crop x crop windows of the 64 px target (and its condition), as Imagen's
    super-resolution models train on crops: a convolutional UNet upsamples any size, and a CPU step
    costs a quarter."""
    diffusion = GaussianDiffusion.from_schedule(SCHEDULE, NUM_TIMESTEPS, learned_variance=True)
    size = {"channels": 8, "text_width": 32, "text_layers": 1, "channel_mult": (1, 2)} if small else UPSAMPLER
    cfg = UNetConfig(image_size=data.images.shape[-1], vocab_size=len(data.vocab) + 2, dropout=0.0, **size,
                     extra={"schedule": SCHEDULE, "num_timesteps": NUM_TIMESTEPS, "p_uncond": 0.1,
                            "cond_channels": UPSAMPLE_CHANNELS, "noise_aug": True, "aug_levels": AUG_LEVELS,
                            "low_resolution": low.shape[-1], "train_crop": crop})
    model = ConditionedUNet(cfg)
    model.vocab.copy_(data.vocab)
    model.null_tokens.copy_(data.null_tokens)

    def loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        idx = data.random_batch(batch, g)
        x0, x_low, tokens = data.images[idx], low[idx], data.tokens[idx]
        drop = torch.rand(len(idx), generator=g, device=device) < cfg.extra["p_uncond"]
        tokens = torch.where(drop[:, None], model.null_tokens.to(device)[None], tokens)
        aug = torch.randint(0, AUG_LEVELS, (len(idx),), generator=g, device=device)
        x_low = diffusion.q_sample(x_low, aug, torch.randn(x_low.shape, generator=g, device=device))
        cond = upsample_condition(tokens, x_low, cfg.image_size, aug)
        if crop < cfg.image_size:  # one random crop per batch of the target and its condition alike
            y, x = (torch.randint(0, cfg.image_size - crop + 1, (2,), generator=g, device=device) // 2 * 2).tolist()
            x0 = x0[..., y:y + crop, x:x + crop]
            cond["image"] = cond["image"][..., y:y + crop, x:x + crop]
        t = torch.randint(0, NUM_TIMESTEPS, (len(idx),), generator=g, device=device)
        noise = torch.randn(x0.shape, generator=g, device=device)
        x_t = diffusion.q_sample(x0, t, noise)
        with autocast(device):
            out = model(x_t, t, cond)
        return hybrid_loss(diffusion, out, x0, x_t, t, noise)

    return Job("upsampler", model, loss, cfg.to_dict(), lr=5e-4, weight_decay=0.0, ema_decay=0.999,
               kind="conditioned_unet", warmup=50)


def eval_classifier_64_job(data: Data, batch: int, device: torch.device, small: bool) -> Job:
    enc = EncoderConfig(image_size=data.images.shape[-1], channels=8 if small else 16, blocks=1,
                        num_classes=len(data.dataset.identity_names), num_subgroups=len(data.dataset.subgroup_names),
                        vocab_size=len(data.vocab) + 2)
    model = EvalClassifier(enc)

    def loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        idx = data.random_batch(batch, g)
        x = augment(data.images[idx], g)
        with autocast(device):
            logits, sub = model.heads(x)
        ce = F.cross_entropy(logits.float(), data.identity[idx])
        return ce + 0.5 * F.cross_entropy(sub.float(), data.subgroup[idx]), \
            {"ce": ce.detach(), "acc": (logits.argmax(-1) == data.identity[idx]).float().mean()}

    diffusion = GaussianDiffusion.from_schedule(SCHEDULE, NUM_TIMESTEPS)
    return Job("eval_classifier_64", model, loss, enc.to_dict(), lr=2e-3, kind="eval_classifier",
               evaluate=lambda m: classifier_report(m, data, diffusion, False, device))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--out", default=str(ZOO_DIR), help="export directory")
    parser.add_argument("--base", default=str(ZOO_DIR / "unet.safetensors"), help="the UNet inpaint_unet starts from")
    parser.add_argument("--run-dir", default="runs/train")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per model, resumed time included")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny architectures for smoke tests")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N emoji (smoke tests)")
    parser.add_argument("--init-from", default=None,
                        help="directory of exported models to continue from (e.g. guidance/zoo/weights)")
    parser.add_argument("--p-edited", type=float, default=0.5,
                        help="inpaint_unet: share of each batch moved like the benchmark's sources")
    parser.add_argument("--known-weight", type=float, default=0.0,
                        help="inpaint_unet: L_simple weight outside the hole (1 = GLIDE's full-image loss)")
    parser.add_argument("--select-every", type=float, default=600.0,
                        help="inpaint_unet: seconds between mid-run evaluations (the best is exported)")
    parser.add_argument("--eval-n", type=int, default=128,
                        help="inpaint_unet: size of the fixed diagnostic draws (per source)")
    parser.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between run checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name in [m.strip() for m in args.models.split(",")]:
        torch.manual_seed(args.seed)
        if name == "inpaint_unet":
            data = Data.load(build_emoji_dataset(32, limit=args.limit), device)
            job = inpaint_job(data, args.batch, device, Path(args.base), args.small, args.p_edited,
                              args.known_weight, args.select_every, args.eval_n)
        elif name in ("upsampler", "eval_classifier_64"):
            data, low = paired_data(device, args.limit)
            job = upsampler_job(data, low, args.batch, device, args.small) if name == "upsampler" else \
                eval_classifier_64_job(data, args.batch, device, args.small)
        else:
            raise SystemExit(f"error: unknown model {name!r}; valid: {', '.join(MODELS)}")
        init = Path(args.init_from) / f"{job.name}.safetensors" if args.init_from else None
        record = run_record(job, data.dataset.checksum, args.batch, args.seed, init)
        try:
            model, info = train(job, args.steps, args.budget, Path(args.run_dir), device, args.seed,
                                checkpoint_every=args.checkpoint_every, init=init, record=record)
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
        # a run that kept its best checkpoint has that checkpoint's evaluation already
        evaluation = info.get("selection", {}).pop("report", None) or (job.evaluate(model) if job.evaluate else {})
        info.update(batch_size=args.batch, dataset_checksum=data.dataset.checksum, dataset_size=len(data.dataset),
                    evaluation=evaluation, **job.extra_info)
        save_model(model, Path(args.out) / f"{job.name}.safetensors", job.kind or job.name, job.config, info)
        print(f"[{job.name}] exported {info['steps']} steps in {info['wall_time_s']}s: "
              f"{json.dumps(info['final_losses'])} eval {json.dumps(info['evaluation'])}", flush=True)


if __name__ == "__main__":
    main()
