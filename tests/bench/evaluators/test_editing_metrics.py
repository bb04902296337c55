"""The editing and cascade metrics (bench.evaluators.seam, .psnr, .consistency): the seam score ranks an obvious paste worse than
real images, PSNR of the kept region, the cascade's consistency PSNR, and the seam score's resampled ratios."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from types import SimpleNamespace

from bench.evaluators.consistency import ConsistencyPSNR
from bench.evaluators.psnr import PSNRKnown, psnr_known
from bench.evaluators.registry import ScoringBatch
from bench.evaluators.seam import SeamScore, edge_energy
from guidance.masks import masks_for

CPU = SimpleNamespace(device=torch.device("cpu"))


def seam_score(results: torch.Tensor, real: torch.Tensor, hole: torch.Tensor) -> float:
    """The seam score written out: summed edge energy of the results over the real images'."""
    return float(edge_energy(results, hole)[0].sum() / edge_energy(real, hole)[0].sum())


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
    # error 0.05 on [0, 1] everywhere kept: 10 log10(1 / 0.05^2) = 26.02 dB (float32 rounding well inside 1e-4)
    assert torch.allclose(psnr_known(noisy, source, hole), torch.full((2,), 20 * math.log10(20)), rtol=1e-4)


def uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def batch(images: torch.Tensor, **extras: torch.Tensor) -> ScoringBatch:
    return ScoringBatch(images, [""] * len(images), None, extras)


def test_metric_classes_read_uint8_batches_and_task_extras():
    source = uint8(smooth_images(4, 0))
    hole = masks_for("center", list(range(4)), 32)
    result = torch.where(hole > 0, uint8(smooth_images(4, 1)), source)
    known = PSNRKnown.build(CPU)
    for lo in (0, 2):  # two updates: per-image values in order
        known.update(batch(result[lo:lo + 2], source=source[lo:lo + 2], mask=hole[lo:lo + 2]))
    assert torch.equal(known.compute()["psnr_known"].double(), torch.full((4,), 100.0, dtype=torch.float64))
    seam = SeamScore.for_cell(CPU)
    seam.update(batch(result, source=source, mask=hole))
    value = seam.value()
    signed = lambda x: x.float() / 127.5 - 1  # noqa: E731
    assert math.isclose(value["seam"], seam_score(signed(result), signed(source), hole), rel_tol=1e-6)
    assert math.isclose(value["seam_gap"], abs(value["seam"] - 1), rel_tol=1e-12)
    ones = torch.ones(1, 4)  # the resample that draws every image once is the plain ratio
    assert math.isclose(float(seam.resampled(ones)["seam"][0]), value["seam"], rel_tol=1e-6)


def test_consistency_psnr_is_exact_for_an_image_that_downsamples_to_its_input():
    low = uint8(smooth_images(2, 3))
    high = F.interpolate(low.float(), scale_factor=2, mode="nearest").to(torch.uint8)  # area-downsampling undoes it
    metric = ConsistencyPSNR.build(CPU)
    metric.update(batch(high, low_res=low))
    assert torch.equal(metric.compute()["consistency_psnr"].double(), torch.full((2,), 100.0, dtype=torch.float64))
