"""`--model diffusers:PATH`: a local diffusers pipeline folder as a ModelBundle.

Loaded with no network call (local_files_only, HF_HUB_OFFLINE set while loading, safetensors only).
The denoiser is the pipeline's UNet or transformer behind a NetworkDenoiser (its prediction type from
the scheduler config), the process and default trajectory are the scheduler's
(guidance.sources.schedule), samples are latents (clip_denoised is False: latents have no [-1, 1]
range to clip x0 to) and `decode` runs the VAE in batches: latents / scaling_factor + shift_factor.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, Iterator, Sequence

import diffusers
import torch
from torch import Tensor, nn

from guidance.accelerate import Acceleration
from guidance.denoisers import NetworkDenoiser
from guidance.process import Process
from guidance.protocols import Conditions, cond_where
from guidance.sources import GUIDING_CLIP, GUIDING_CLIP_SPEC
from guidance.sources.components import check_pipeline_folder
from guidance.sources.families import NETS, FamilyNet
from guidance.sources.flux import FluxNet, flux_process
from guidance.sources.folder import null_components, read_index
from guidance.sources.pixart import PixArtNet
from guidance.sources.sana import SanaNet
from guidance.sources.schedule import pipeline_process
from guidance.evaluation import EvalCLIPScorer
from guidance.zoo.load import load_eval_clip
from guidance.checkpoints import CheckpointError, file_sha256

ADAPTERS: dict[str, type[FamilyNet]] = {**NETS, "flux": FluxNet, "pixart": PixArtNet, "sana": SanaNet}  # family -> network adapter
DECODE_BATCH = 16  # VAE decodes per call: bounds the decoder's activation memory at large batches


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while loading, whatever the caller's environment says."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


class LatentDecoder(nn.Module):
    """The pipeline's VAE as latents -> images in [-1, 1], differentiable (universal guidance backpropagates)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(vae.config.get("shift_factor") or 0.0)

    def forward(self, latents: Tensor) -> Tensor:
        z = latents / self.scaling + self.shift
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()


class UniversalGuide(nn.Module):
    """What universal CLIP guidance needs from a latent bundle: the decoder and a clean-image CLIP."""

    def __init__(self, decoder: LatentDecoder, clip: EvalCLIPScorer) -> None:
        super().__init__()
        self.decoder, self.clip = decoder, clip

    def decode(self, x0: Tensor) -> Tensor:
        return self.decoder(x0)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.clip.encode_images(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.clip.model.encode_text(tokens, normalize=True)

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.model.logit_scale


@dataclass
class DiffusersBundle:
    """A diffusers pipeline as the suite's model bundle (guidance.bundle.ModelBundle)."""

    pipe: Any
    family: str
    net: FamilyNet
    process: Process
    prediction: str
    default_sampler: str  # the suite's sampler that steps as the pipeline's scheduler does
    root: Path
    guide: UniversalGuide | None = None
    clip_denoised: bool = False
    domain: str = "user"  # the evaluators must come from the user (reference images, feature weights)
    _checksums: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.sample_shape = self.net.latent_shape()
        self.denoiser = NetworkDenoiser(self.net, self.prediction, self.net.learned_variance, self.net.null_cond)
        self.decoder = LatentDecoder(self.pipe.vae)
        self.source = f"diffusers:{self.root}"

    @property
    def text_attention(self) -> bool:
        """Whether the network attends to a prompt (NAG's hook); a class-conditional DiT does not."""
        return self.family != "dit"

    @property
    def embedded_guidance(self) -> bool:
        """Whether the network takes the guidance strength as an input (FLUX.1-dev: the flux-distilled method)."""
        return isinstance(self.net, FluxNet) and self.net.distilled

    def conditions(self, texts: Sequence[str], labels: Tensor | None = None,
                   negative: Sequence[str | None] | None = None) -> Conditions:
        """Captions (or class names) encoded once per batch; `negative` prompts through the same encoder,
        the null condition in rows without one (a class-conditional DiT has no negative prompts)."""
        texts = [str(t) for t in texts]
        with torch.no_grad():
            model = self.net.encode(texts, labels)
            if negative is not None:
                if len(negative) != len(texts):
                    raise ValueError(f"{len(negative)} negative prompts for {len(texts)} captions; give one per "
                                     f"caption (None where a sample has none)")
                if self.family == "dit":
                    raise ValueError("a class-conditional DiT takes no negative prompt; drop --negative-prompt and "
                                     "the negative_prompt column")
                negative = cond_where([n is not None for n in negative], self.net.encode_negative([n or "" for n in negative]),
                                      self.net.null_cond(model))
        clip_tokens = self.guide.clip.tokenizer(texts) if self.guide is not None else None
        return Conditions(model=model, labels=labels, clip_tokens=clip_tokens, negative=negative)

    def decode(self, x: Tensor) -> Tensor:
        """Latents -> images in [-1, 1], DECODE_BATCH at a time, in the run's dtype (its autocast)."""
        with torch.no_grad():
            parts = [self.decoder(chunk) for chunk in x.split(DECODE_BATCH)]
        return torch.cat(parts).clamp(-1, 1)

    def guiding_models(self) -> dict[str, Any]:
        return {"classifier": None, "clip": None, "weak": None, "decoder_clip": self.guide}

    def guiding_classes(self) -> int | None:
        return None

    def accelerate(self, acceleration: Acceleration, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        """The run's speed-ups on the denoising network; the decoder and text encoders move to the device."""
        self.pipe.to(device)
        acceleration.apply(self.net.network, device, dtype)
        if self.guide is not None:
            self.guide.to(device)

    def fingerprint(self) -> str:
        """Hash of every file of the folder: weights, configs and the scheduler all shape the saved images."""
        return sha256(json.dumps(self.checksums(), sort_keys=True).encode()).hexdigest()[:16]

    def checksums(self) -> dict[str, str]:
        if self._checksums is None:
            self._checksums = {str(p.relative_to(self.root)): file_sha256(p) for p in sorted(self.root.rglob("*"))
                               if p.is_file() and not p.name.startswith(".")}
        return self._checksums


def check_shapes(family: str, pipe: Any, root: Path) -> None:
    """The components must fit each other: latent channels, text widths, pooled widths, class count."""
    net = pipe.unet if family in ("sd", "sdxl") else pipe.transformer
    latent = int(pipe.vae.config.latent_channels)
    packed = 4 if family == "flux" else 1  # FLUX's transformer takes 2 x 2 patches of latents
    if int(net.config.in_channels) != packed * latent:
        raise CheckpointError(f"{root}: the {'unet' if family in ('sd', 'sdxl') else 'transformer'} takes "
                              f"{int(net.config.in_channels) // packed} latent channels"
                              f"{' (in 2 x 2 patches)' if packed == 4 else ''} but the vae makes {latent}; use the vae/ of the "
                              f"same pipeline")
    if family == "sd":
        width = int(pipe.text_encoder.config.hidden_size)
        if int(net.config.cross_attention_dim) != width:
            raise CheckpointError(f"{root}: the unet attends to {net.config.cross_attention_dim}-wide text states but the "
                                  f"text encoder makes {width}; use the text_encoder/ of the same pipeline")
    if family == "sdxl":
        width = int(pipe.text_encoder.config.hidden_size) + int(pipe.text_encoder_2.config.hidden_size)
        if int(net.config.cross_attention_dim) != width:
            raise CheckpointError(f"{root}: the unet attends to {net.config.cross_attention_dim}-wide text states but the "
                                  f"two text encoders make {width}; use the text encoders of the same pipeline")
    if family == "flux":
        widths = {"T5 states": (int(net.config.joint_attention_dim), int(pipe.text_encoder_2.config.d_model)),
                  "pooled CLIP": (int(net.config.pooled_projection_dim), int(pipe.text_encoder.config.hidden_size))}
        for what, (takes, makes) in widths.items():
            if takes != makes:
                raise CheckpointError(f"{root}: the transformer takes {takes}-wide {what} but the text encoder makes "
                                      f"{makes}; use the text encoders of the same pipeline")
    if family in ("pixart", "sana"):  # T5 (d_model) or Gemma-2 (hidden_size) states into the caption projection
        config = pipe.text_encoder.config
        makes = int(config.d_model if family == "pixart" else config.hidden_size)
        if int(net.config.caption_channels) != makes:
            raise CheckpointError(f"{root}: the transformer takes {net.config.caption_channels}-wide text states but the "
                                  f"text encoder makes {makes}; use the text_encoder/ of the same pipeline")
    if family == "sd3":
        pooled = int(pipe.text_encoder.config.projection_dim) + int(pipe.text_encoder_2.config.projection_dim)
        if int(net.config.pooled_projection_dim) != pooled:
            raise CheckpointError(f"{root}: the transformer takes {net.config.pooled_projection_dim}-wide pooled text but "
                                  f"the CLIP encoders make {pooled}; use the text encoders of the same pipeline")


def load_guide(root: Path, decoder: LatentDecoder, device: torch.device | str) -> UniversalGuide | None:
    """The folder's guiding CLIP, if it has one: guiding_clip.safetensors (zoo format: an open_clip config and
    its weights) or guiding_clip.json naming an open_clip architecture and a local weights file."""
    spec_path = root / GUIDING_CLIP_SPEC
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text())
            arch, pretrained = str(spec["arch"]), Path(spec["pretrained"]).expanduser()
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{spec_path} must be JSON like {{\"arch\": \"ViT-B-32\", \"pretrained\": "
                                  f"\"/models/clip.safetensors\"}} ({err!r}); fix it or remove it") from None
        pretrained = pretrained if pretrained.is_absolute() else root / pretrained
        return UniversalGuide(decoder, load_eval_clip(device=device, arch=arch, pretrained=str(pretrained)))
    path = root / GUIDING_CLIP
    return UniversalGuide(decoder, load_eval_clip(path, device)) if path.is_file() else None


def image_tokens(family: str, network: nn.Module) -> int:
    """Tokens per latent image (what a dynamically shifting flow scheduler's mu depends on): (side / patch)^2."""
    side = int(network.config.sample_size)
    patch = int(network.config.get("patch_size") or 1) if family in ("sd3", "dit") else 1
    return (side // patch) ** 2


def load_diffusers(path: str | os.PathLike, device: torch.device | str = "cpu", sampler: str | None = None) -> DiffusersBundle:
    """Load a local pipeline folder (every refusal before any weight is read, one line with the fix). The
    default trajectory is that of diffusers' scheduler for `sampler` (None: the folder's own scheduler)."""
    root = Path(path).expanduser()
    check_pipeline_folder(root)
    family, index = read_index(root)
    try:
        with offline():
            pipe = diffusers.DiffusionPipeline.from_pretrained(str(root), local_files_only=True, use_safetensors=True,
                                                               **null_components(index))
    except (OSError, RuntimeError, OverflowError, KeyError, TypeError, ValueError, AttributeError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(f"diffusers cannot load the pipeline folder {root} ({type(err).__name__}: {detail}); "
                              f"re-save it with save_pretrained(DIR, safe_serialization=True)") from None
    pipe.set_progress_bar_config(disable=True)
    check_shapes(family, pipe, root)
    pipe.to(device)
    network = pipe.unet if family in ("sd", "sdxl") else pipe.transformer
    net = ADAPTERS[family](pipe, network.eval().requires_grad_(False))
    if isinstance(net, FluxNet):  # FLUX's trajectory: the pipeline's own sigmas and mu (--sampler swaps are not offered)
        process, prediction, default_sampler = flux_process(net)
    else:
        process, prediction, default_sampler = pipeline_process(pipe.scheduler, sampler, image_tokens(family, network))
    for part in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.eval().requires_grad_(False)
    bundle = DiffusersBundle(pipe, family, net, process, prediction, default_sampler, root)
    bundle.guide = load_guide(root, bundle.decoder, device)
    return bundle
