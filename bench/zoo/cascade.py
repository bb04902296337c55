"""The embedded zoo's kit for `--task cascade`: GLIDE's diffusion upsampler (a conditioned UNet with noise
augmentation, trained by guidance.zoo.train_cond) and the evaluators at its 64 px output.

A 32 px network cannot see what an upsampler adds, so FID/KID and accuracy at 64 px use the evaluation
classifier trained at 64 px (eval_classifier_64), against every 64 px render of the dataset; the
renders' features are committed (REFERENCE_64, written by `python -m bench.zoo.reference`), so the
benchmark needs no emoji fonts when the classifier is the shipped one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from torch import Tensor

from bench.evaluators.base import FeatureNet
from bench.evaluators.reference import ReferenceSource
from bench.runner.preflight import check_checkpoint
from bench.tasks.base import Evaluators
from bench.tasks.kits import register_kit
from guidance.checkpoints import file_sha256
from guidance.denoisers import NetworkDenoiser
from guidance.protocols import Conditions
from guidance.rng import SampleNoise
from guidance.sources.zoo_source import SOURCE, model_dir
from guidance.zoo.conditioned import upsample_condition
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_conditioned, load_model, sampling_process, training_process
from guidance.zoo.text import CaptionTokenizer

UPSAMPLER_FILE, FEATURES_FILE = "upsampler.safetensors", "eval_classifier_64.safetensors"
REFERENCE_64 = ZOO_DIR / "reference_features_64.safetensors"  # rendered_features(), committed
AUG_STREAM = 0xA06  # seed offset of the augmentation noise's per-sample streams
UPSAMPLER_HINT = "train it with `python -m guidance.zoo.train_cond --models upsampler` or pass --upsampler PATH"
FEATURES_HINT = ("train it with `python -m guidance.zoo.train_cond --models eval_classifier_64` or pass "
                 "--cascade-features PATH")


class Upsampler:
    """The upsampler as a denoiser, its process and tokenizer, and how it conditions on a low-resolution
    batch (bench.tasks.cascade.UpsamplerModel)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        net = load_conditioned(path, device, "upsampler", UPSAMPLER_HINT, lambda n: n.aug_emb is not None,
                               "a conditioned UNet with noise augmentation")
        self.net, self.size = net, net.config.image_size
        self.low = int(net.config.extra.get("low_resolution", self.size // 2))
        self.levels = int(net.config.extra.get("aug_levels", 250))
        self.denoiser = NetworkDenoiser(net, "eps", net.learned_variance)
        self.process = sampling_process(net)
        self.diffusion = training_process(net)
        self.tokenizer = CaptionTokenizer(net.vocab.cpu(), net.config.context_length)

    def condition(self, texts: list[str], low: Tensor, aug: int, indices: list[int], seed: int) -> Conditions:
        t = torch.full((len(low),), aug, dtype=torch.long, device=low.device)
        noise = SampleNoise(seed + AUG_STREAM, indices, low.device).randn(low.shape[1:])
        noised = self.diffusion.q_sample(low.float(), t, noise) if aug > 0 else low.float()
        tokens = self.tokenizer(texts).to(low.device)
        return Conditions(upsample_condition(tokens, noised, self.size, t))


@torch.no_grad()
def rendered_features(classifier: torch.nn.Module, device: torch.device) -> Tensor:
    """The 64 px network's features of every 64 px render (needs the emoji fonts)."""
    dataset = build_emoji_dataset(int(classifier.config.image_size), progress=False)
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return torch.cat([classifier.features(c.to(device)) for c in images.split(256)]).float().cpu()


def committed_features(features_path: Path) -> Tensor | None:
    """REFERENCE_64's features if it was computed with the weights at `features_path`, else None."""
    if not REFERENCE_64.is_file():
        return None
    with safe_open(str(REFERENCE_64), "pt") as f:
        if (f.metadata() or {}).get("weights_sha256") != file_sha256(features_path):
            return None
        return f.get_tensor("features")


def renders_source(size: int, features_path: Path) -> ReferenceSource:
    """Every render of the emoji dataset at `size` px: the cascade's reference. The domain network reads
    the committed features of those renders when they are of its weights (no fonts needed)."""
    def batches(net: FeatureNet) -> Iterator[Tensor]:
        yield from torch.from_numpy(build_emoji_dataset(size, progress=False).images).permute(0, 3, 1, 2).split(256)

    files = {"domain": REFERENCE_64} if committed_features(features_path) is not None else {}
    return ReferenceSource(f"zoo:emoji-{size}px", lambda: build_emoji_dataset(size, progress=False).checksum, batches,
                           files=files)


class ZooCascade:
    """The zoo's kit for --task cascade (bench.tasks.cascade.CascadeKit)."""

    def upsampler_file(self, spec: str) -> Path:
        return model_dir(spec) / UPSAMPLER_FILE

    def features_file(self, spec: str) -> Path:
        return model_dir(spec) / FEATURES_FILE

    def check(self, upsampler: Path, features: Path) -> None:
        check_checkpoint(upsampler, "--upsampler", "conditioned_unet", UPSAMPLER_HINT)
        check_checkpoint(features, "--cascade-features", "eval_classifier", FEATURES_HINT)

    def load_upsampler(self, path: Path, device: torch.device) -> Upsampler:
        return Upsampler(path, device)

    def evaluators(self, features: Path, device: torch.device) -> Evaluators:
        classifier = load_model(features, "eval_classifier", device)
        return Evaluators(classifier, str(features), renders_source(int(classifier.config.image_size), features))


KIT = register_kit("cascade", SOURCE.prefix, ZooCascade())
