"""A feature map of what an upsampler adds: where and how strongly the image has detail above half its
resolution. Blur-sensitive by construction, so it can rank upsamplers where classifier features cannot.

The high-frequency band of an image x at side S is r = x - up(down(x)): x minus its area
downsampling to S/2, bicubic-upsampled back. Bicubic upsampling of a half-size image has almost no
such band; a true render has it at its edges and none in flat regions. The features are log(1e-3 +
RMS of r) per colour channel in each cell of a `cells` x `cells` grid (3 * cells^2 features; 48 by
default, few enough for a covariance from ~100 images): a
Frechet distance on them penalises missing detail (blur) and detail where real images have none
(speckle in flat backgrounds) alike. `bench.zoo.upsample_real` shows that it ranks true renders
clearly above bicubic before using it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.evaluators.base import FeatureNet

FLOOR = 1e-3  # RMS below this (in [-1, 1] units; 8-bit quantisation is 0.0045) counts as flat


def high_frequency_band(x: Tensor) -> Tensor:
    """x (float, [-1, 1], [N, 3, S, S]) minus its half-resolution version, upsampled back bicubically."""
    size = x.shape[-1]
    low = F.interpolate(x, size=(size // 2, size // 2), mode="area")
    return x - F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)


class HighFrequencyNet(FeatureNet):
    """uint8 [N, 3, size, size] -> log RMS of the high-frequency band per channel and grid cell."""

    name = "highfreq"
    units = "log RMS of the image's detail above half its resolution, per colour channel and grid cell"

    def __init__(self, size: int = 64, cells: int = 4) -> None:
        super().__init__()
        if size % (2 * cells):
            raise ValueError(f"the image side {size} must be a multiple of twice the grid ({cells} cells)")
        self.size, self.cells, self.dim = size, cells, 3 * cells * cells

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.size, self.size):
            raise ValueError(f"high-frequency features take {self.size} px images, got {tuple(images.shape[-2:])}: "
                             f"resizing would change the very band they measure")
        band = high_frequency_band(images.float() / 127.5 - 1)
        rms = F.avg_pool2d(band**2, self.size // self.cells).sqrt()
        return torch.log(FLOOR + rms).flatten(1)

    def fingerprint(self) -> str:
        return f"highfreq:{self.size}:{self.cells}:{FLOOR}"
