"""Paired image metrics against a ground truth (an upsampler's output against the true high-resolution
render of the same image): PSNR and SSIM per image, from torchmetrics."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PAIRED = {"psnr": "dB, higher is better", "ssim": "structural similarity in [-1, 1] (Gaussian window 11, sigma 1.5), "
          "higher is better"}


def paired_scores(images: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """Per-image PSNR (dB) and SSIM of images against truth, both [N, 3, H, W] in [-1, 1] (scored in
    [0, 1], data range 1)."""
    if images.shape != truth.shape:
        raise ValueError(f"paired metrics need images and ground truth of one shape: {tuple(images.shape)} "
                         f"vs {tuple(truth.shape)}")
    a, b = (images.float().clamp(-1, 1) + 1) / 2, (truth.float().clamp(-1, 1) + 1) / 2
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    return {"psnr": psnr, "ssim": ssim}
