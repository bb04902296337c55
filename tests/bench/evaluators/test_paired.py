"""Paired PSNR and SSIM against ground truth, checked against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from bench.evaluators.paired import paired_scores


def test_psnr_and_ssim_of_known_perturbations():
    truth = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    scores = paired_scores(truth, truth)
    assert torch.all(scores["ssim"] > 0.9999)
    shifted = truth + 0.2  # 0.1 in [0, 1] units everywhere: MSE 0.01, PSNR 20 dB
    torch.testing.assert_close(paired_scores(shifted, truth)["psnr"], torch.full((3,), 20.0), rtol=1e-5, atol=0)
    noisy = truth + 0.4 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    worse = paired_scores(noisy, truth)
    assert torch.all(worse["ssim"] < scores["ssim"]) and torch.all(worse["psnr"] < 20)
    mse = (((noisy.clamp(-1, 1) - truth) / 2) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(worse["psnr"], 10 * torch.log10(1 / mse), rtol=1e-5, atol=0)
    assert not math.isnan(float(worse["ssim"].mean()))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        paired_scores(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))
