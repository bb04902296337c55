"""Inception-v3 pool features (2048-d) from local torch-fidelity weights: the FID of the literature."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from safetensors.torch import load_file
from torchmetrics.image.fid import FrechetInceptionDistance

from bench.evaluators.base import FeatureNet, check_readable, file_digest
from bench.evaluators.registry import Resources, register_feature_net
from guidance.checkpoints import CheckpointError


def inception_fid(weights_path: str) -> FrechetInceptionDistance:
    """FID on Inception-v3 pool features from a local weights file (nothing is downloaded).

    torchmetrics' Inception comes from torch-fidelity, which unpickles the file with weights_only=False.
    So the file (a torch state dict, or .safetensors) is copied to a private directory and loaded there
    with weights_only=True first: only a copy that holds nothing but tensors reaches torch-fidelity.
    """
    path = check_readable(weights_path, "--fid-inception-weights", "pass a local FID Inception checkpoint "
                          "(pt_inception-2015-12-05)")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ValueError("FID on Inception features needs torch-fidelity (torchmetrics' Inception-v3); "
                         "install it with `pip install -e '.[fid]'` or drop --fid-inception-weights")
    with tempfile.TemporaryDirectory() as private:
        checked = Path(private) / "inception.pt"
        try:
            if path.suffix == ".safetensors":
                torch.save(load_file(str(path)), checked)
            else:
                shutil.copyfile(path, checked)
                torch.load(checked, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable or unsafe file: one clear error naming the file
            raise CheckpointError(f"--fid-inception-weights {weights_path} is not a plain tensor state dict "
                                  f"({type(err).__name__}; torch.load(weights_only=True) refuses it); pass "
                                  f"torch-fidelity's pt_inception-2015-12-05 weights, or the same as .safetensors") from None
        return FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(checked))


@register_feature_net
class InceptionNet(FeatureNet):
    """uint8 images of any size -> torch-fidelity's Inception pool3 features (it resizes to 299 itself,
    bilinear as TF1 did). The weights are checked with weights_only before torch-fidelity sees them."""

    name = "inception"
    units = "Inception-v3 pool3 features (2048-d); the FID of published papers"
    dim = 2048
    size = 299
    weights_flag = "--fid-inception-weights"

    def __init__(self, weights: str) -> None:
        super().__init__()
        self.weights = weights
        self.net = inception_fid(weights).inception

    @classmethod
    def build(cls, resources: Resources) -> "InceptionNet":
        return cls(resources.config.fid_inception_weights).to(resources.device)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).float()

    def fingerprint(self) -> str:
        return f"inception:{file_digest(self.weights)}"
