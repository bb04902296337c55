"""The perf tools on CPU: the near-limit script's FLOP accounting and the time-split table."""

from __future__ import annotations

import math

import pytest
import torch

from torch.utils.flop_counter import FlopCounterMode

from bench import limit


@pytest.fixture(scope="module")
def tiny_table():
    return limit.benchmark("tiny", ["none", "cfg", "classifier", "clip"], [1, 2], steps=2, device=torch.device("cpu"),
                           dtype=torch.float32)


def test_limit_counts_flops_of_every_pass(tiny_table):
    flops = tiny_table["GFLOP_per_img"].groupby(level="guidance").first()
    # CFG runs the denoiser twice per step; gradient guidance adds the guide's forward and backward
    assert flops["cfg"] == pytest.approx(2 * flops["none"], rel=0.02)
    size = limit.CONFIGS["tiny"]
    classifier = limit.build_models(size, torch.device("cpu"))["classifier"]
    x = torch.randn(1, 3, size.unet.image_size, size.unet.image_size)
    with FlopCounterMode(display=False) as counter:
        classifier(x, torch.zeros(1))
    guide_forward = counter.get_total_flops() * 2 / 1e9  # per image over the 2 steps
    # input gradient only (weights frozen): the backward costs about one more forward
    extra = flops["classifier"] - flops["none"]
    assert 1.5 * guide_forward < extra < 3.5 * guide_forward
    assert flops["clip"] > flops["none"]
    assert set(tiny_table.index.get_level_values("batch")) == {1, 2}


def test_limit_rates_are_consistent(tiny_table):
    row = tiny_table.loc[("cfg", 2)]
    assert row.img_per_s > 0 and math.isfinite(row.TFLOP_per_s)
    assert row.TFLOP_per_s == pytest.approx(row.GFLOP_per_img * row.img_per_s / 1e3)
    assert row.limit_img_per_s == pytest.approx(row.img_per_s / row.share_of_peak)


def test_glide_base_config_matches_glide_size():
    """About GLIDE-base's 385M parameters (UNet plus text transformer), counted without allocating them."""
    with torch.device("meta"):
        model = limit.TextUNet(limit.CONFIGS["glide-base"].unet)
    assert 330e6 < sum(p.numel() for p in model.parameters()) < 420e6


def test_limit_rejects_unknown_guidance():
    with pytest.raises(ValueError, match="this script measures"):
        limit.benchmark("tiny", ["apg"], [1], steps=1, device=torch.device("cpu"), dtype=torch.float32)


def test_perf_table_splits_time_for_cfg():
    from bench.perf import measure
    from guidance.zoo.load import load_zoo

    row = measure("cfg", load_zoo(device="cpu"), batch=2, steps=2, device=torch.device("cpu"), repeats=1)
    assert row["network_passes_per_img"] == 4 and row["backward_passes_per_img"] == 0
    assert row["sampler_s"] > 0 and row["network_s"] > 0 and row["guidance_extra_s"] == 0
    assert row["img_per_s"] == pytest.approx(2 / row["sampler_s"])
