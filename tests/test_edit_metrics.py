"""Editing metrics: the seam score ranks an obvious paste worse than real images, PSNR of the kept region,
FID/KID from features and their bootstrap intervals."""

from __future__ import annotations

import numpy as np
import torch

from bench.edit_metrics import (RealStatistics, bootstrap, edge_energy, fid_from_features, kid_from_features,
                                psnr_known, seam_score)
from guidance.masks import masks_for


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Smooth random colour fields, like flat emoji regions: little energy across any line."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)


def test_seam_score_is_one_for_real_images_and_higher_for_a_pasted_patch():
    real = smooth_images(16, 0)
    other = smooth_images(16, 1)
    for kind in ("center", "box", "strokes", "half"):
        hole = masks_for(kind, list(range(16)), 32)
        pasted = torch.lerp(real, other, hole)  # another image dropped into the hole: a seam at every edge
        assert seam_score(real, real, hole) == 1.0
        assert seam_score(pasted, real, hole) > 3.0, kind


def test_edge_energy_counts_only_pairs_across_the_edge():
    hole = torch.zeros(1, 1, 4, 4)
    hole[..., :, 2:] = 1  # right half: 4 horizontal pairs straddle the edge
    image = torch.full((1, 3, 4, 4), -1.0)
    image[..., :, 2:] = 1.0  # a black/white step exactly on the edge
    energy, pairs = edge_energy(image, hole)
    assert float(pairs) == 4 and float(energy) == 4 * 3  # each pair: (1 - 0)^2 in 3 channels
    image[..., :, 0] = 0.3  # a column away from the edge changes no pair across it
    assert torch.equal(edge_energy(image, hole)[0], energy)


def test_psnr_of_the_kept_region_ignores_the_hole():
    source = smooth_images(2, 0)
    hole = masks_for("center", [0, 1], 32)
    result = torch.where(hole > 0, -source, source)
    assert torch.equal(psnr_known(result, source, hole), torch.full((2,), 100.0))
    noisy = result + 0.1 * (1 - hole)
    assert bool((psnr_known(noisy, source, hole) < 40).all())


def test_fid_and_kid_from_features():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(2000, 8))
    same = rng.normal(size=(500, 8))
    shifted = same + 1.0
    stats = RealStatistics(real)
    assert fid_from_features(same, stats.mu, stats.cov) < 0.2 < fid_from_features(shifted, stats.mu, stats.cov)
    assert abs(kid_from_features(same, real)) < 0.05 < kid_from_features(shifted, real)
    scores = stats.scores(shifted)
    for value, lo, hi in scores.values():
        assert lo <= value <= hi


def test_bootstrap_interval_covers_the_mean():
    values = np.random.default_rng(1).normal(size=400)
    value, lo, hi = bootstrap(lambda i: float(values[i].mean()), len(values))
    assert lo < value < hi and hi - lo < 0.5
