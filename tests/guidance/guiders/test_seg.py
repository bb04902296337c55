"""SEG: the mix and costs by hand, the blur option, diffusers' SmoothedEnergyGuidance with CFG and its
jump at s = 1 (its blur and pass-counting defects are in test_diffusers_reference.py)."""

from __future__ import annotations

import math

import pytest

from guidance.guiders import make_guidance
from guidance.guiders.seg import SmoothedEnergyGuidance
from tests.guidance.guiders.guider_helpers import SIGMAS, diffusers_guiders
from tests.guidance.guiders.perturbed_cases import diffusers_without_cfg_is_continuous, hand_mix, matches_diffusers_with_cfg


def test_mix_rows_and_costs_by_hand():
    hand_mix(SmoothedEnergyGuidance, "smoothed-query", SIGMAS[5])


def test_blur_sigma_reaches_the_perturbation():
    assert make_guidance("seg", 2.0).perturbation().blur_sigma == math.inf
    assert make_guidance("seg", 2.0, blur_sigma=3.0).perturbation().blur_sigma == 3.0
    with pytest.raises(ValueError, match="blur_sigma"):
        make_guidance("seg", 2.0, blur_sigma=-1.0)


def reference(cfg: float, scale: float):
    return diffusers_guiders().SmoothedEnergyGuidance(guidance_scale=cfg, seg_guidance_scale=scale, seg_guidance_layers=[0])


def test_equals_diffusers_with_cfg():
    matches_diffusers_with_cfg(reference, SmoothedEnergyGuidance, SIGMAS[5])


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 SEG guider without CFG returns p + s (c - p), not c + s (c - p)")
def test_diffusers_without_cfg():
    diffusers_without_cfg_is_continuous(reference)
