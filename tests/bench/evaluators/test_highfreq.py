"""The high-frequency feature map: flat images sit at its floor, bicubic upsampling has almost no band,
sharp edges do, and resizing is refused (it would change the band measured)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.evaluators.highfreq import FLOOR, HighFrequencyNet, high_frequency_band


def sharp_images(n: int = 4) -> torch.Tensor:
    """uint8 squares with hard edges at odd pixel offsets (detail above half the resolution)."""
    x = torch.full((n, 3, 64, 64), 255, dtype=torch.uint8)
    for i in range(n):
        x[i, i % 3, 13 + i:41 + i, 9 + 2 * i:47 + i] = 0
    return x


def test_a_flat_image_sits_at_the_floor():
    net = HighFrequencyNet()
    feats = net(torch.full((2, 3, 64, 64), 200, dtype=torch.uint8))
    assert feats.shape == (2, net.dim) and net.dim == 48
    torch.testing.assert_close(feats, torch.full_like(feats, math.log(FLOOR)), rtol=0, atol=1e-6)


def test_bicubic_upsampling_has_far_less_band_than_the_sharp_image():
    sharp = sharp_images()
    x = sharp.float() / 127.5 - 1
    up = F.interpolate(F.interpolate(x, size=(32, 32), mode="area"), size=(64, 64), mode="bicubic", align_corners=False)
    band_sharp = high_frequency_band(x).pow(2).mean().sqrt()
    band_up = high_frequency_band(up.clamp(-1, 1)).pow(2).mean().sqrt()
    assert band_up < 0.35 * band_sharp
    net = HighFrequencyNet()
    up8 = ((up.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert float(net(up8).mean()) < float(net(sharp).mean())


def test_other_sizes_are_refused_not_resized():
    with pytest.raises(ValueError, match="resizing would change"):
        HighFrequencyNet()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple"):
        HighFrequencyNet(size=60, cells=4)
