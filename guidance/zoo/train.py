"""Train the embedded zoo on the emoji dataset: `python -m guidance.zoo.train` (what `invoke train` runs).

Five models: the text-conditional diffusion UNet ("unet"), the noise-aware classifier
("classifier"), the noised CLIP ("noised_clip"), and the clean-image evaluation models
("eval_clip", an open_clip model, and "eval_classifier"). Each trains for at most `--steps` steps or
`--budget` seconds, checkpoints periodically under `--run-dir` and resumes from there after an
interruption, then exports fp16 safetensors with its config and training record to `--out`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import open_clip
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from guidance.diffusion import GaussianDiffusion
from guidance.zoo.emoji_data import EmojiDataset, build_emoji_dataset
from guidance.zoo.encoders import (EVAL_CLIP_PREPROCESS, EncoderConfig, EvalClassifier, NoiseAwareClassifier,
                                   NoisedCLIPModel, eval_clip_config)
from guidance.zoo.losses import hybrid_loss
from guidance.checkpoints import CheckpointError, load_weights, read_metadata, save_model
from guidance.zoo.text import CaptionTokenizer, bpe_tokenize, build_vocab
from guidance.zoo.unet import TextUNet, UNetConfig

MODELS = ("unet", "classifier", "noised_clip", "eval_clip", "eval_classifier", "weak_unet")
# the weak model for autoguidance (Karras et al. 2024): same family, a quarter of the width
WEAK_UNET = {"channels": 32, "text_width": 96, "text_layers": 2}
SCHEDULE, NUM_TIMESTEPS = "cosine", 1000
EVAL_AUGMENT_SEED = 12345  # held-out augmentations: the evaluation renders differ from every training draw


@dataclass
class Data:
    """The dataset as device tensors, with both tokenisations of the captions."""

    images: Tensor  # [N, 3, H, W] in [-1, 1]
    identity: Tensor
    subgroup: Tensor
    tokens: Tensor  # packed compact tokens (zoo text towers)
    bpe: Tensor  # open_clip BPE ids (evaluation CLIP)
    by_identity: Tensor  # [num_identities, num_styles] image index per identity and style
    vocab: Tensor
    null_tokens: Tensor
    dataset: EmojiDataset

    @classmethod
    def load(cls, dataset: EmojiDataset, device: torch.device) -> "Data":
        images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        vocab = build_vocab(dataset.captions)
        tokenizer = CaptionTokenizer(vocab)
        ids = torch.from_numpy(dataset.identity).long()
        styles = torch.from_numpy(dataset.style).long()
        table = torch.full((len(dataset.identity_names), len(dataset.style_names)), -1, dtype=torch.long)
        table[ids, styles] = torch.arange(len(ids))
        for s in range(table.shape[1]):  # an identity missing a style falls back to one it has
            table[:, s] = torch.where(table[:, s] < 0, table.max(dim=1).values, table[:, s])
        return cls(images.to(device).contiguous(memory_format=torch.channels_last), ids.to(device),
                   torch.from_numpy(dataset.subgroup).long().to(device), tokenizer(dataset.captions).to(device),
                   bpe_tokenize(dataset.captions).to(device), table.to(device), vocab, tokenizer([""])[0], dataset)

    def random_batch(self, n: int, g: torch.Generator) -> Tensor:
        return torch.randint(0, len(self.images), (n,), generator=g, device=self.images.device)

    def unique_identity_batch(self, n: int, g: torch.Generator) -> Tensor:
        """n distinct identities, one random style each: contrastive batches with no duplicate caption."""
        ids = torch.randperm(self.by_identity.shape[0], generator=g, device=self.images.device)[:n]
        style = torch.randint(0, self.by_identity.shape[1], (len(ids),), generator=g, device=self.images.device)
        return self.by_identity[ids, style]


def augment(x: Tensor, g: torch.Generator, strength: float = 1.0) -> Tensor:
    """Random scale (0.8-1.05), shift (+-10%) and brightness: renders the classifiers never saw."""
    n = len(x)
    r = torch.rand(n, 4, generator=g, device=x.device)
    scale = 1.0 / (0.8 + 0.25 * r[:, 0] * strength + (1 - strength) * 0.2)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = (r[:, 1:3] - 0.5) * 0.2 * strength
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # borders are white
    brightness = 1 + (r[:, 3:4, None, None] - 0.5) * 0.2 * strength
    return ((out + 1) * brightness - 1).clamp(-1, 1)


@dataclass
class Job:
    """One model's training: how to build it, one step's loss, and what to export."""

    name: str
    model: nn.Module
    loss: Callable[[torch.Generator], tuple[Tensor, dict[str, Tensor]]]
    config: dict
    lr: float
    weight_decay: float = 0.01
    ema_decay: float | None = None
    evaluate: Callable[[nn.Module], dict] | None = None
    kind: str | None = None  # what the checkpoint holds, when it differs from the job's name
    extra_info: dict = field(default_factory=dict)
    warmup: int = 200  # learning-rate warm-up steps (a short fine-tune takes fewer)
    lr_scale: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr multiplier
    # mid-run evaluation: (score, one printed line, record) of the exported (EMA) model; lower is better.
    # The run evaluates at its start and every `select_every` seconds and exports the best-scoring weights.
    select: Callable[[nn.Module], tuple[float, str, dict]] | None = None
    select_every: float = 600.0


class EMA:
    """Exponential moving average of a model's parameters, with warm-up: decay_n = min(decay, (1+n)/(10+n)).

    Without warm-up the average of a short run is mostly its random initial weights (0.999^1550 = 21%
    after 1,550 steps: the first weak UNet export was noise because of it). torch's AveragedModel also
    reads its device-side counter on the host at every update, a GPU sync per step; this counter is a
    Python int.
    """
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.updates = decay, 0

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.decay_at(self.updates)
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], weight)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if "updates" not in state:
            raise ValueError("this run checkpoint comes from an older trainer (EMA without warm-up); "
                             "delete it from --run-dir to start over")
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def make_job(name: str, data: Data, batch: int, device: torch.device, small: bool) -> Job:
    diffusion = GaussianDiffusion.from_schedule(SCHEDULE, NUM_TIMESTEPS, learned_variance=True)
    n_id, n_sub = len(data.dataset.identity_names), len(data.dataset.subgroup_names)
    enc = EncoderConfig(channels=16 if small else 64, num_classes=n_id, num_subgroups=n_sub,
                        vocab_size=len(data.vocab) + 2, text_width=32 if small else 192, text_layers=1 if small else 3)

    def noised(x0: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        t = torch.randint(0, NUM_TIMESTEPS, (len(x0),), generator=g, device=device)
        noise = torch.randn(x0.shape, generator=g, device=device)
        return diffusion.q_sample(x0, t, noise), t, noise

    if name in ("unet", "weak_unet"):
        size = {"channels": 64, "text_width": 192, "text_layers": 3} if name == "unet" else WEAK_UNET
        if small:
            size = {"channels": 16 if name == "unet" else 8, "text_width": 32, "text_layers": 1}
        cfg = UNetConfig(vocab_size=len(data.vocab) + 2, dropout=0.0, **size,
                         extra={"schedule": SCHEDULE, "num_timesteps": NUM_TIMESTEPS, "p_uncond": 0.15})
        model = TextUNet(cfg)
        model.vocab.copy_(data.vocab)
        model.null_tokens.copy_(data.null_tokens)

        def unet_loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
            idx = data.random_batch(batch, g)
            x0, tokens = data.images[idx], data.tokens[idx]
            drop = torch.rand(len(idx), generator=g, device=device) < cfg.extra["p_uncond"]
            tokens = torch.where(drop[:, None], model.null_tokens.to(device)[None], tokens)
            x_t, t, noise = noised(x0, g)
            with autocast(device):
                out = model(x_t, t, tokens)
            return hybrid_loss(diffusion, out, x0, x_t, t, noise)

        # the weak model exports its last iterate: a short run's EMA lags behind it (and it is meant to be weak)
        # (the committed weak model was trained with AdamW's weight decay 0.01, the main UNet without)
        main = name == "unet"
        return Job(name, model, unet_loss, cfg.to_dict(), lr=3e-4, weight_decay=0.0 if main else 0.01,
                   ema_decay=0.999 if main else None, kind="unet",
                   evaluate=lambda m: denoising_report(m, data, diffusion, n=64 if small else 1024))

    if name in ("classifier", "eval_classifier"):
        noisy = name == "classifier"
        model = NoiseAwareClassifier(enc) if noisy else EvalClassifier(enc)

        def clf_loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
            idx = data.random_batch(batch, g)
            x = augment(data.images[idx], g)
            with autocast(device):
                if noisy:
                    x_t, t, _ = noised(x, g)
                    logits, sub = model.heads(x_t, t)
                else:
                    logits, sub = model.heads(x)
            ce = F.cross_entropy(logits.float(), data.identity[idx])
            loss = ce + 0.5 * F.cross_entropy(sub.float(), data.subgroup[idx])
            return loss, {"ce": ce.detach(), "acc": (logits.argmax(-1) == data.identity[idx]).float().mean()}

        evaluate = (lambda m: classifier_report(m, data, diffusion, noisy, device))
        return Job(name, model, clf_loss, enc.to_dict(), lr=1e-3 if not small else 3e-3, evaluate=evaluate)

    if name == "noised_clip":
        model = NoisedCLIPModel(enc)
        model.vocab.copy_(data.vocab)

        def nclip_loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
            idx = data.unique_identity_batch(batch, g)
            x_t, t, _ = noised(augment(data.images[idx], g, 0.5), g)
            with autocast(device):
                zi, zt = model.encode_image(x_t, t), model.encode_text(data.tokens[idx])
            return clip_loss(zi, zt, model.logit_scale)

        return Job(name, model, nclip_loss, enc.to_dict(), lr=5e-4,
                   evaluate=lambda m: retrieval_report(m, data, device, noised_model=True))

    if name == "eval_clip":
        cfg = eval_clip_config()
        if small:
            cfg["vision_cfg"].update(layers=1, width=48, head_width=24)
            cfg["text_cfg"].update(width=32, layers=1)
        torch.manual_seed(1)  # a different initialisation from the guiding CLIP
        model = open_clip.model.CLIP(**cfg)

        def eclip_loss(g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
            idx = data.unique_identity_batch(batch, g)
            x = augment(data.images[idx], g)
            with autocast(device):
                zi, zt = model.encode_image(x), model.encode_text(data.bpe[idx])
            return clip_loss(zi, zt, model.logit_scale)

        return Job(name, model, eclip_loss, {"model_cfg": cfg, "preprocess_cfg": EVAL_CLIP_PREPROCESS}, lr=5e-4,
                   evaluate=lambda m: retrieval_report(m, data, device, noised_model=False))
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def clip_loss(zi: Tensor, zt: Tensor, logit_scale: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    zi, zt = F.normalize(zi.float(), dim=-1), F.normalize(zt.float(), dim=-1)
    logits = logit_scale.clamp(max=math.log(100)).exp() * zi @ zt.T
    target = torch.arange(len(zi), device=zi.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return loss, {"acc": (logits.argmax(-1) == target).float().mean()}


@torch.no_grad()
def denoising_report(model: nn.Module, data: Data, diffusion: GaussianDiffusion, n: int = 1024) -> dict:
    """eps-prediction MSE on a fixed draw of noised training images (same images, timesteps and noise
    for every model): compares exports of one diffusion model, e.g. before and after more training."""
    g = torch.Generator().manual_seed(123)
    idx = torch.randint(0, len(data.images), (n,), generator=g)
    t = torch.randint(0, NUM_TIMESTEPS, (n,), generator=g)
    x0 = data.images[idx.to(data.images.device)].float().cpu().contiguous()
    noise = torch.randn(x0.shape, generator=g)
    x_t = diffusion.q_sample(x0, t, noise)
    tokens = data.tokens[idx.to(data.tokens.device)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    errors = [((model(x.to(device), s.to(device), c.to(device))[:, :3].float().cpu() - e) ** 2).mean(dim=(1, 2, 3))
              for x, s, c, e in zip(x_t.split(128), t.split(128), tokens.split(128), noise.split(128))]
    model.train(was_training)
    return {f"eps_mse_{n}_noised_training_images": round(float(torch.cat(errors).mean()), 5)}


@torch.no_grad()
def classifier_report(model: nn.Module, data: Data, diffusion: GaussianDiffusion, noisy: bool, device: torch.device) -> dict:
    """Top-1 identity accuracy on held-out augmented renders (and at several noise levels if noisy)."""
    model.eval()
    g = torch.Generator(device).manual_seed(EVAL_AUGMENT_SEED)
    images = torch.cat([augment(chunk, g) for chunk in data.images.split(512)])
    report = {"eval_set": f"all {len(images)} renders with held-out random augmentations (seed {EVAL_AUGMENT_SEED})"}
    ts = [0, 250, 500, 750] if noisy else [None]
    for t_val in ts:
        correct = 0
        for chunk, labels in zip(images.split(512), data.identity.split(512)):
            if t_val is None:
                logits = model(chunk)
            else:
                t = torch.full((len(chunk),), t_val, device=device)
                noise = torch.randn(chunk.shape, generator=g, device=device)
                logits = model(diffusion.q_sample(chunk, t, noise), t)
            correct += int((logits.argmax(-1) == labels).sum())
        report["top1" if t_val is None else f"top1_t{t_val}"] = correct / len(images)
    model.train()
    return report


@torch.no_grad()
def retrieval_report(model: nn.Module, data: Data, device: torch.device, noised_model: bool) -> dict:
    """Text-to-image retrieval top-1 over all identities (one image per identity and style)."""
    model.eval()
    g = torch.Generator(device).manual_seed(EVAL_AUGMENT_SEED)
    report = {}
    for style in range(data.by_identity.shape[1]):
        idx = data.by_identity[:, style]
        images = augment(data.images[idx], g) if not noised_model else data.images[idx]
        if noised_model:
            zero = torch.zeros(len(idx), device=device)
            zi = torch.cat([model.encode_image(c, z) for c, z in zip(images.split(512), zero.split(512))])
            zt = torch.cat([model.encode_text(c) for c in data.tokens[idx].split(512)])
        else:
            zi = torch.cat([model.encode_image(c) for c in images.split(512)])
            zt = torch.cat([model.encode_text(c) for c in data.bpe[idx].split(512)])
        sim = F.normalize(zt.float(), dim=-1) @ F.normalize(zi.float(), dim=-1).T
        report[f"text_to_image_top1_{data.dataset.style_names[style]}"] = float(
            (sim.argmax(-1) == torch.arange(len(idx), device=device)).float().mean())
    report["text_to_image_top1"] = sum(report.values()) / len(report)
    model.train()
    return report


def same_config(job: Job, saved: dict) -> bool:
    """Whether an export's config describes the job's model; compared through the model's config class
    where it has one, so options added after the export was written compare at their defaults."""
    config = getattr(job.model, "config", None)
    if dataclasses.is_dataclass(config) and hasattr(config, "from_dict"):
        try:
            return type(config).from_dict(saved) == config
        except TypeError:  # a key this version does not know
            return False
    return json.loads(json.dumps(job.config)) == saved


def init_from_export(job: Job, path: Path) -> dict:
    """Start from an exported model (e.g. the committed zoo) instead of random weights; returns its record.

    A GPU session can then continue the committed model's training rather than start over.
    """
    meta = read_metadata(path)
    if not same_config(job, meta["config"]):
        raise CheckpointError(f"--init-from {path}: its config differs from the {job.name} being trained "
                              f"(architecture or caption vocabulary); train from scratch or pass a matching export")
    vocab = getattr(job.model, "vocab", None)
    vocab = vocab.clone() if vocab is not None else None
    load_weights(job.model, path)
    if vocab is not None and not torch.equal(vocab, job.model.vocab):
        raise CheckpointError(f"--init-from {path}: its caption vocabulary differs from this dataset's; "
                              f"train from scratch or rebuild the dataset the export was trained on")
    print(f"[{job.name}] initialised from {path} ({meta['info'].get('steps')} steps already done)")
    return {key: meta["info"][key] for key in ("steps", "wall_time_s", "device", "evaluation", "ema_correction",
                                                "continued_from") if meta["info"].get(key) is not None}


def run_record(job: Job, dataset_checksum: str, batch: int, seed: int, init: Path | None) -> dict:
    """What a run checkpoint belongs to: resuming it under other data, settings or starting export would
    mix two runs' weights under the new run's record. The starting export is named by its path: a run
    that exports into its own --init-from folder (the default --out) must still resume."""
    return {"dataset": dataset_checksum, "batch": batch, "seed": seed,
            "config": json.dumps(job.config, sort_keys=True, default=str),
            "init_from": str(init.resolve()) if init is not None and init.exists() else None}


def train(job: Job, steps: int, budget: float, run_dir: Path, device: torch.device, seed: int,
          checkpoint_every: float = 60.0, log_every: int = 50, init: Path | None = None,
          record: dict | None = None) -> tuple[nn.Module, dict]:
    """Optimise until `steps` or `budget` seconds (the run's total, resumed time included); resumable
    from run_dir/<name>.pt, which is refused when its `record` (run_record) differs from this run's.

    With `init` (an exported .safetensors) and no run checkpoint yet, training continues from that
    export; the exported record's steps and wall time are added to this run's.
    """
    ckpt = run_dir / f"{job.name}.pt"
    before = {"steps": 0, "wall_time_s": 0.0}
    if init is not None and not ckpt.exists():
        if init.exists():
            before = init_from_export(job, init)
        else:
            print(f"[{job.name}] no export at {init}: training from scratch")
    model = job.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        scale = next((v for k, v in job.lr_scale.items() if name.startswith(k)), 1.0)
        groups.setdefault(scale, []).append(param)
    opt = torch.optim.AdamW([{"params": params, "lr_scale": scale} for scale, params in groups.items()], lr=job.lr,
                            weight_decay=job.weight_decay, fused=device.type == "cuda")
    ema = EMA(model, job.ema_decay) if job.ema_decay else None
    # a continued model draws fresh batches and noise, not a replay of its first run's
    g = torch.Generator(device).manual_seed(seed + int(before.get("steps") or 0))
    step, elapsed, history = 0, 0.0, []
    best: dict | None = None  # the best mid-run evaluation: score, step and the weights scored
    selections: list[dict] = []
    if ckpt.exists():  # resume: our own checkpoint, still loaded without unpickling code
        state = torch.load(ckpt, map_location=device, weights_only=True)
        saved = state.get("run")
        if saved is None:
            print(f"[{job.name}] {ckpt} predates run records: resuming it unchecked")
        elif record is not None and saved != record:
            differs = [k for k in record if saved.get(k) != record[k]]
            raise CheckpointError(f"{ckpt} is another training run's checkpoint ({', '.join(differs)} differ from "
                                  f"this run's); pass another --run-dir, or delete the file to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        g.set_state(state["rng"].cpu())
        step, elapsed, history = int(state["step"]), float(state["elapsed"]), state["history"]
        before = state.get("before", before)
        best, selections = state.get("best"), state.get("selections", [])
        print(f"[{job.name}] resumed at step {step} ({elapsed:.0f}s done)")
        if elapsed >= budget and step < steps:
            print(f"[{job.name}] this run has spent its --budget of {budget:.0f}s: raise it to train further")

    def save_checkpoint() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                 "history": history, "rng": g.get_state(), "before": before, "run": record}
        if ema is not None:
            state["ema"] = ema.state_dict()
        if job.select is not None:
            state.update(best=best, selections=selections)
        torch.save(state, str(ckpt) + ".tmp")
        os.replace(str(ckpt) + ".tmp", ckpt)

    def select() -> None:
        nonlocal best
        scored = ema.module if ema is not None else model
        score, line, report = job.select(scored)
        selections.append({"step": step, "time": round(time.time() - start, 1), "score": score, "report": report})
        tqdm.write(f"[{job.name}] step {step}: score {score:.6f} ({line})")
        if best is None or score < best["score"]:
            best = {"score": score, "step": step,
                    "state": {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}}

    warmup = job.warmup
    start, last_ckpt = time.time() - elapsed, time.time()
    if job.select is not None and not selections:
        select()  # the starting point is a candidate: a run that only gets worse exports it
    last_select = time.time()
    logs: dict[str, list[Tensor]] = {}
    bar = tqdm(total=steps, initial=step, desc=f"train {job.name}", dynamic_ncols=True)
    model.train()
    while step < steps and time.time() - start < budget:
        for group in opt.param_groups:
            group["lr"] = job.lr * group.get("lr_scale", 1.0) * min(1.0, (step + 1) / warmup)
        loss, parts = job.loss(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        bar.update(1)
        for key, value in {"loss": loss.detach(), **parts}.items():
            logs.setdefault(key, []).append(value)
        if step % log_every == 0:
            means = {k: float(torch.stack(v).float().mean()) for k, v in logs.items()}
            logs.clear()
            history.append({"step": step, "time": round(time.time() - start, 1), **means})
            bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
        if time.time() - last_ckpt > checkpoint_every:
            elapsed = time.time() - start
            save_checkpoint()
            last_ckpt = time.time()
        if job.select is not None and time.time() - last_select > job.select_every:
            select()
            elapsed = time.time() - start
            save_checkpoint()
            last_select = last_ckpt = time.time()
    bar.close()
    if job.select is not None and selections[-1]["step"] != step:
        select()
    elapsed = time.time() - start
    save_checkpoint()
    final = ema.module if ema is not None else model
    if best is not None:
        final.load_state_dict(best["state"])
    info = {"steps": step + int(before.get("steps") or 0),
            "wall_time_s": round(elapsed + float(before.get("wall_time_s") or 0.0), 1), "batch_size": None, "seed": seed,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "final_losses": history[-1] if history else {}, "history": history[-20:],
            "parameters": sum(p.numel() for p in final.parameters())}
    if best is not None:
        info["selection"] = {"exported_step": best["step"] + int(before.get("steps") or 0), "score": best["score"],
                             "evaluations": [{k: v for k, v in s.items() if k != "report"} for s in selections],
                             "report": next(s["report"] for s in selections if s["step"] == best["step"])}
    if before.get("steps"):
        # the export continued from, with its own record (evaluation, corrections, what it continued)
        info["continued_from"] = {**before, "this_run": {"steps": step, "wall_time_s": round(elapsed, 1)}}
    return final, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--data", default=None, help="dataset .npz (default: build/cache the 32x32 emoji set)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "weights"), help="export directory")
    parser.add_argument("--run-dir", default="runs/train", help="checkpoints for resuming")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds per model, for the whole run: time spent before a resume counts")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="tiny architectures for smoke tests")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N emoji (smoke tests)")
    parser.add_argument("--init-from", default=None,
                        help="directory of exported models to continue from (e.g. guidance/zoo/weights)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.data:
        dataset = EmojiDataset.load(args.data)
    else:
        dataset = build_emoji_dataset(32, limit=args.limit)
    data = Data.load(dataset, device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        job = make_job(name.strip(), data, args.batch, device, args.small)
        init = Path(args.init_from) / f"{job.name}.safetensors" if args.init_from else None
        record = run_record(job, dataset.checksum, args.batch, args.seed, init)
        try:
            model, info = train(job, args.steps, args.budget, Path(args.run_dir), device, args.seed, init=init,
                                record=record)
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
        info.update(batch_size=args.batch, dataset_checksum=dataset.checksum, dataset_size=len(dataset),
                    evaluation=job.evaluate(model) if job.evaluate else {})
        kind = job.kind or job.name
        save_model(model, Path(args.out) / f"{job.name}.safetensors", kind, job.config, info)
        print(f"[{job.name}] exported {info['steps']} steps in {info['wall_time_s']}s: "
              f"{json.dumps(info['final_losses'])} eval {json.dumps(info['evaluation'])}", flush=True)


if __name__ == "__main__":
    main()
