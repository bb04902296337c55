"""DINOv2 ViT features (FD-DINOv2, as dgm-eval recommends): a timm DINOv2 architecture on local weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.evaluators.base import FeatureNet, check_readable, file_digest, load_state_dict_file
from bench.evaluators.registry import Resources, register_feature_net
from guidance.checkpoints import CheckpointError

DEFAULT_ARCH = "vit_large_patch14_dinov2"  # ViT-L/14, dgm-eval's choice
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS_FIX = "pass --dinov2-weights LOCAL_FILE (timm's or Meta's DINOv2 weights as .safetensors or .pth)"


def build_dinov2(arch: str) -> nn.Module:
    """The timm architecture with random weights, classifier head removed (forward gives the normed CLS
    token, as dgm-eval's encoder), taking any input size (position embeddings interpolated, as DINOv2's own)."""
    import timm  # noqa: PLC0415 (open_clip's dependency, ~1 s to import: only for --features dinov2)

    if arch.startswith(("hf-hub:", "hf_hub:")) or "dinov2" not in arch:
        raise ValueError(f"--dinov2-arch {arch!r}: give a timm DINOv2 architecture name, e.g. {DEFAULT_ARCH} "
                         f"({timm.list_models('*dinov2*')[:4]}...); nothing is downloaded; pass a local file")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    except RuntimeError as err:  # timm: "Unknown model"
        raise ValueError(f"--dinov2-arch {arch!r}: {str(err).splitlines()[0]}; valid: "
                         f"{', '.join(timm.list_models('*dinov2*'))}") from None


@register_feature_net
class DINOv2Net(FeatureNet):
    """uint8 images -> CLS features of DINOv2 at 224 px (bicubic resize, ImageNet mean and std: dgm-eval)."""

    name = "dinov2"
    units = "DINOv2 CLS-token features (FD-DINOv2; 1024-d for ViT-L/14)"
    size = 224
    weights_flag = "--dinov2-weights"

    def __init__(self, weights: str | None, arch: str = DEFAULT_ARCH) -> None:
        super().__init__()
        path = check_readable(weights, "--dinov2-weights", WEIGHTS_FIX)
        self.net = build_dinov2(arch).eval()
        state = load_state_dict_file(path, "--dinov2-weights")
        try:
            from timm.models.vision_transformer import checkpoint_filter_fn  # noqa: PLC0415 (as above)

            state = checkpoint_filter_fn(state, self.net)  # Meta's key names and grid sizes -> timm's
            missing, unexpected = self.net.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise CheckpointError(f"--dinov2-weights {weights}: does not fit {arch} ({str(err).splitlines()[0][:120]}); "
                                  f"pass weights of that architecture or name its --dinov2-arch") from None
        if missing or unexpected:
            raise CheckpointError(f"--dinov2-weights {weights}: does not fit {arch} (missing {missing[:3]}, unexpected "
                                  f"{unexpected[:3]}); pass weights of that architecture or name its --dinov2-arch")
        self.arch, self.weights = arch, str(path)
        self.dim = int(self.net.num_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def build(cls, resources: Resources) -> "DINOv2Net":
        return cls(resources.config.dinov2_weights, resources.config.dinov2_arch).to(resources.device)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float().to(self.mean.device) / 255
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.net((x - self.mean) / self.std).float()

    def fingerprint(self) -> str:
        return f"dinov2:{self.arch}:{file_digest(self.weights)}"
