"""Frequency-decoupled guidance: the pyramid (exact inverse, kornia's levels), equal scales = CFG, the
split into bands by an independent route, and diffusers' FrequencyDecoupledGuidance."""

from __future__ import annotations

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.guiders.fdg import FrequencyDecoupledGuidance, fdg_mix, laplacian_pyramid, pyr_down, pyr_up, reconstruct
from tests.guidance.guiders.guider_helpers import B, SIGMAS, TableDenoiser, conditions, diffusers_guiders, step_at, triple


def test_pyramid_is_inverted_exactly_and_a_constant_image_has_no_bands():
    c = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    for levels in (1, 2, 3):
        assert torch.allclose(reconstruct(laplacian_pyramid(c, levels)), c, atol=1e-12)
    const = torch.full((1, 1, 8, 8), 0.7, dtype=torch.float64)
    bands = laplacian_pyramid(const, 2)
    assert torch.allclose(bands[0], torch.zeros_like(bands[0]), atol=1e-12)
    assert torch.allclose(bands[1], torch.full((1, 1, 4, 4), 0.7, dtype=torch.float64), atol=1e-12)


def test_equal_scales_are_cfg():
    x, c, u, _ = triple(1)
    cfg = make_guidance("cfg", 4.0).predict(TableDenoiser(c, u), x, step_at(SIGMAS[6]), conditions()).eps
    out = FrequencyDecoupledGuidance(4.0, low_fraction=1.0).predict(TableDenoiser(c, u), x, step_at(SIGMAS[6]),
                                                                    conditions()).eps
    assert torch.allclose(out, cfg, atol=1e-12)


def test_each_band_gets_its_own_scale():
    # independent route: d = c - u splits into low = up(down(d)) and high = d - low; the result is
    # u + s_high * high + s_low * low (the default low scale is 1 + 0.5 (s - 1) = 2.5 at s = 4)
    x, c, u, _ = triple(2)
    d = c - u
    low = pyr_up(pyr_down(d))
    expected = u + 4.0 * (d - low) + 2.5 * low
    model = TableDenoiser(c, u)
    out = make_guidance("fdg", 4.0).predict(model, x, step_at(SIGMAS[7]), conditions()).eps
    assert torch.allclose(out, expected, atol=1e-12)
    assert model.rows == 2 * B
    assert make_guidance("fdg", 1.0).cost(1.0).network_passes == 1 and make_guidance("fdg", 3.0).cost(1.0).network_passes == 2


def test_parallel_weight_zero_drops_each_bands_parallel_part():
    _, c, u, _ = triple(3)
    bands = []
    for band_c, band_u, w in zip(laplacian_pyramid(c, 2), laplacian_pyramid(u, 2), (3.0, 2.0)):
        shift = band_c - band_u
        coef = (shift * band_c).sum(dim=(1, 2, 3), keepdim=True) / (band_c * band_c).sum(dim=(1, 2, 3), keepdim=True)
        bands.append(band_u + w * (shift - coef * band_c))
    assert torch.allclose(fdg_mix(c, u, [3.0, 2.0], [0.0, 0.0]), reconstruct(bands), atol=1e-12)


def test_refuses_sizes_the_pyramid_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 4"):
        laplacian_pyramid(torch.zeros(1, 1, 10, 12), 3)


def test_matches_kornias_pyramid_and_diffusers_fdg():
    guiders = diffusers_guiders()
    kornia = pytest.importorskip("kornia")
    c, u = torch.randn(2, 2, 4, 16, 16, generator=torch.Generator().manual_seed(4)).unbind(0)
    for ours, theirs in zip(laplacian_pyramid(c, 3), kornia.geometry.transform.build_laplacian_pyramid(c, 3)):
        assert torch.allclose(ours, theirs, atol=1e-5)
    for scales in ((10.0, 5.0), (3.0, 3.0), (6.0, 2.0, 1.5)):
        ref = guiders.FrequencyDecoupledGuidance(guidance_scales=list(scales)).forward(c, u).pred
        assert torch.allclose(fdg_mix(c, u, list(scales), [1.0] * len(scales)), ref, atol=1e-5), scales
    ref = guiders.FrequencyDecoupledGuidance(guidance_scales=[5.0, 2.0], parallel_weights=[0.0, 0.5]).forward(c, u).pred
    assert torch.allclose(fdg_mix(c, u, [5.0, 2.0], [0.0, 0.5]), ref, atol=1e-5)
