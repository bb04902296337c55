"""PAG: the mix and costs by hand, diffusers' PerturbedAttentionGuidance with CFG, and its jump at s = 1."""

from __future__ import annotations

import pytest

from guidance.guiders.pag import PerturbedAttentionGuidance
from guider_helpers import SIGMAS, diffusers_guiders
from perturbed_cases import diffusers_without_cfg_is_continuous, hand_mix, matches_diffusers_with_cfg


def test_mix_rows_and_costs_by_hand():
    hand_mix(PerturbedAttentionGuidance, "identity-attention", SIGMAS[5])


def reference(cfg: float, scale: float):
    return diffusers_guiders().PerturbedAttentionGuidance(guidance_scale=cfg, perturbed_guidance_scale=scale,
                                                          perturbed_guidance_layers=[0])


def test_equals_diffusers_with_cfg():
    matches_diffusers_with_cfg(reference, PerturbedAttentionGuidance, SIGMAS[5])


@pytest.mark.xfail(strict=True, reason="diffusers 0.42.1 PAG guider without CFG returns p + s (c - p), not the "
                                       "paper's (and its PAG pipelines') c + s (c - p)")
def test_diffusers_without_cfg():
    diffusers_without_cfg_is_continuous(reference)
