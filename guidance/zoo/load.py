"""Load the embedded zoo (or a directory laid out like it) into ready-to-use models.

A model directory holds `<kind>.safetensors` files written by `guidance.checkpoints.save_model`:
unet, classifier, noised_clip (guiding) and eval_clip, eval_classifier (scoring). The evaluation
CLIP is built by open_clip from the config stored in its file, so `open_clip.create_model` with
that config loads the same weights.
"""

from __future__ import annotations

import json
import os
from hashlib import sha256
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
from torch import Tensor, nn

from guidance.accelerate import Acceleration
from guidance.denoisers import NetworkDenoiser
from guidance.diffusion import GaussianDiffusion
from guidance.evaluation import EvalCLIPScorer, load_open_clip_scorer
from guidance.process import VPDiscrete
from guidance.protocols import Conditions, cond_where
from guidance.zoo.conditioned import ConditionedUNet
from guidance.zoo.encoders import EncoderConfig, EvalClassifier, NoiseAwareClassifier, NoisedCLIPModel
from guidance.checkpoints import CheckpointError, dir_checksums, load_weights, read_metadata
from guidance.zoo.text import CaptionTokenizer
from guidance.zoo.unet import TextUNet, UNetConfig

ZOO_DIR = Path(__file__).parent / "weights"
KINDS = ("unet", "classifier", "noised_clip", "eval_clip", "eval_classifier", "conditioned_unet")


def _build(kind: str, config: dict) -> nn.Module:
    if kind == "unet":
        return TextUNet(UNetConfig.from_dict(config))
    if kind == "conditioned_unet":
        return ConditionedUNet(UNetConfig.from_dict(config))
    if kind == "classifier":
        return NoiseAwareClassifier(EncoderConfig.from_dict(config))
    if kind == "noised_clip":
        return NoisedCLIPModel(EncoderConfig.from_dict(config))
    if kind == "eval_classifier":
        return EvalClassifier(EncoderConfig.from_dict(config))
    if kind == "eval_clip":
        return open_clip.model.CLIP(**config["model_cfg"])
    raise CheckpointError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")


def load_model(path: str | os.PathLike, expected_kind: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build the architecture recorded in a zoo checkpoint and load its weights (eval mode, fp32)."""
    meta = read_metadata(path)
    if expected_kind and meta["kind"] != expected_kind:
        raise CheckpointError(f"{path} holds a {meta['kind']!r} model, but a {expected_kind!r} model was expected")
    try:
        model = _build(meta["kind"], meta["config"])
    except CheckpointError:
        raise
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: its config does not fit this version's {meta['kind']!r} architecture "
                              f"({err}); it was written by another version of the suite") from err
    model = load_weights(model, path)
    model.zoo_info = meta  # type: ignore[attr-defined]
    return model.float().eval().requires_grad_(False).to(device)


def load_conditioned(path: Path, device: str | torch.device, role: str, missing_fix: str,
                     fits: Callable[[ConditionedUNet], bool], what_fits: str) -> ConditionedUNet:
    """A conditioned UNet (inpainting model, upsampler) from `path`, or a one-line error naming the fix
    when the file is missing or holds another kind of model."""
    if not path.is_file():
        raise ValueError(f"{role} not found: {path}; {missing_fix}")
    net = load_model(path, "conditioned_unet", device)
    if not isinstance(net, ConditionedUNet) or not fits(net):
        raise ValueError(f"{path} is not an {role} ({what_fits})" if role[0] in "aeiou"
                         else f"{path} is not a {role} ({what_fits})")
    return net


def load_eval_classifier(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> EvalClassifier:
    """The evaluation classifier (accuracy and the domain feature network), the shipped one by default."""
    return load_model(Path(path) if path else ZOO_DIR / "eval_classifier.safetensors", "eval_classifier", device)  # type: ignore[return-value]


EVAL_CLIP_LABEL = "zoo:eval_clip"  # how manifests and reports name the zoo's evaluation CLIP as scorer


def load_eval_clip(path: str | os.PathLike | None = None, device: str | torch.device = "cpu", arch: str | None = None,
                   pretrained: str | None = None) -> EvalCLIPScorer:
    """The zoo's evaluation CLIP, or any open_clip architecture with a local pretrained file."""
    if arch is not None:
        return load_open_clip_scorer(arch, pretrained, device)
    path = Path(path) if path else ZOO_DIR / "eval_clip.safetensors"
    meta = read_metadata(path)
    model = load_model(path, "eval_clip", device)
    cfg = meta["config"]
    context = cfg["model_cfg"]["text_cfg"]["context_length"]
    tokenizer = lambda texts: open_clip.tokenize(texts, context_length=context)  # noqa: E731
    return EvalCLIPScorer(model, tokenizer, cfg.get("preprocess_cfg", {}), EVAL_CLIP_LABEL).to(device)


# guiding role -> (file in a model directory, checkpoint kind)
GUIDING_FILES = {"classifier": ("classifier.safetensors", "classifier"),
                 "clip": ("noised_clip.safetensors", "noised_clip"),
                 "weak": ("weak_unet.safetensors", "unet")}
ZOO_DOMAIN = "emoji"  # what the zoo's images (and its evaluation models) know
SAMPLING_FILES = ("unet.safetensors", *(name for name, _ in GUIDING_FILES.values()))


@dataclass
class Zoo:
    """The zoo's model bundle (guidance.bundle.ModelBundle): the text UNet on its cosine VP process,
    32x32 pixels, captions through the zoo tokenizers, and the guiding models a directory holds."""

    unet: TextUNet
    process: VPDiscrete  # the training process in noise-level space
    tokenizer: CaptionTokenizer
    classifier: NoiseAwareClassifier | None
    noised_clip: NoisedCLIPModel | None
    clip_tokenizer: CaptionTokenizer | None
    root: Path
    weak_unet: TextUNet | None = None  # a weaker diffusion model of the same family, for autoguidance
    _checksums: dict[str, str] | None = field(default=None, repr=False)  # hashed once: run and manifest share it
    clip_denoised: bool = True
    domain: str = ZOO_DOMAIN
    text_attention: bool = True  # the zoo's UNet attends to its caption tokens
    embedded_guidance: bool = False

    def __post_init__(self) -> None:
        c = self.unet.config
        self.sample_shape = (c.in_channels, c.image_size, c.image_size)
        self.denoiser = NetworkDenoiser(self.unet, "eps", self.unet.learned_variance)
        self.weak = None if self.weak_unet is None else NetworkDenoiser(self.weak_unet, "eps",
                                                                         self.weak_unet.learned_variance)
        self.source = str(self.root)

    def conditions(self, texts: Sequence[str], labels: Tensor | None = None,
                   negative: Sequence[str | None] | None = None) -> Conditions:
        texts = [str(t) for t in texts]
        clip_tokens = self.clip_tokenizer(texts) if self.clip_tokenizer is not None else None
        tokens = self.tokenizer(texts)
        if negative is not None:
            if len(negative) != len(texts):
                raise ValueError(f"{len(negative)} negative prompts for {len(texts)} captions; give one per caption "
                                 f"(None where a sample has none)")
            negative = cond_where([n is not None for n in negative], self.tokenizer([n or "" for n in negative]),
                                  self.denoiser.null_cond(tokens))
        return Conditions(model=tokens, labels=labels, clip_tokens=clip_tokens, negative=negative)

    def decode(self, x: Tensor) -> Tensor:
        return x

    def guiding_models(self) -> dict[str, Any]:
        return {"classifier": self.classifier, "clip": self.noised_clip, "weak": self.weak}

    def guiding_classes(self) -> int | None:
        config = getattr(self.classifier, "config", None)
        return int(config.num_classes) if hasattr(config, "num_classes") else None

    def networks(self) -> list[nn.Module]:
        return [m for m in (self.unet, self.classifier, self.noised_clip, self.weak_unet) if m is not None]

    def accelerate(self, acceleration: Acceleration, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """Apply channels_last / torch.compile / CUDA graphs (and, for half-precision autocast `dtype`,
        weights stored in it) to every network that samples or guides."""
        for model in self.networks():
            acceleration.apply(model, device, dtype)

    def fingerprint(self) -> str:
        """Hash of the weights that shape samples (diffusion and guiding models, not the evaluation ones)."""
        sums = {k: v for k, v in self.checksums().items() if k in SAMPLING_FILES}
        return sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]

    def checksums(self) -> dict[str, str]:
        if self._checksums is None:
            self._checksums = dir_checksums(self.root)
        return self._checksums


def training_process(denoiser: TextUNet) -> GaussianDiffusion:
    """The diffusion process a denoiser was trained on, from the schedule recorded in its config."""
    extra = denoiser.config.extra
    return GaussianDiffusion.from_schedule(extra.get("schedule", "cosine"), int(extra.get("num_timesteps", 1000)),
                                           learned_variance=denoiser.learned_variance)


def sampling_process(denoiser: TextUNet) -> VPDiscrete:
    """The same process in noise-level space, for the samplers."""
    extra = denoiser.config.extra
    return VPDiscrete.from_schedule(extra.get("schedule", "cosine"), int(extra.get("num_timesteps", 1000)))


def load_zoo(root: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Zoo:
    """Load the denoiser and guiding models from `root` (default: the embedded zoo)."""
    root = Path(root) if root else ZOO_DIR
    if not root.is_dir():
        raise CheckpointError(f"model directory not found: {root}; pass the zoo name 'emoji' or a directory "
                              f"holding unet.safetensors (and classifier/noised_clip for gradient guidance)")
    unet_path = root / "unet.safetensors"
    denoiser: TextUNet = load_model(unet_path, "unet", device)  # type: ignore[assignment]
    tokenizer = CaptionTokenizer(denoiser.vocab.cpu(), denoiser.config.context_length)
    guiding = {role: load_model(root / name, kind, device) if (root / name).exists() else None
               for role, (name, kind) in GUIDING_FILES.items()}
    clip, weak = guiding["clip"], guiding["weak"]
    clip_tok = CaptionTokenizer(clip.vocab.cpu(), clip.config.context_length) if clip is not None else None
    if weak is not None and not torch.equal(weak.vocab.cpu(), denoiser.vocab.cpu()):
        raise CheckpointError(f"{root / GUIDING_FILES['weak'][0]} uses another caption vocabulary than unet.safetensors")
    return Zoo(denoiser, sampling_process(denoiser), tokenizer, guiding["classifier"], clip, clip_tok, root, weak)  # type: ignore[arg-type]

