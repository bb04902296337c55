"""Masks: deterministic per (seed, sample index, kind), independent of the batch; bad masks get one clear line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from guidance.masks import MASK_KINDS, check_kinds, check_mask, load_mask, masks_for, random_masks


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_are_deterministic_and_independent_of_the_batch(kind):
    whole = masks_for(kind, list(range(8)), 32, seed=3)
    again = masks_for(kind, list(range(8)), 32, seed=3)
    pieces = torch.cat([masks_for(kind, [i], 32, seed=3) for i in range(8)])
    shuffled = masks_for(kind, [5, 2], 32, seed=3)
    assert torch.equal(whole, again) and torch.equal(whole, pieces)
    assert torch.equal(shuffled, whole[[5, 2]])
    assert whole.shape == (8, 1, 32, 32)
    assert set(torch.unique(whole).tolist()) <= {0.0, 1.0}
    holes = whole.sum((1, 2, 3))
    assert bool((holes > 0).all()) and bool((holes < 32 * 32).all())  # never empty, never everything


def test_masks_change_with_the_seed_where_they_are_random():
    for kind in ("box", "strokes"):
        assert not torch.equal(masks_for(kind, list(range(8)), 32, 0), masks_for(kind, list(range(8)), 32, 1))
    assert torch.equal(masks_for("center", [0, 1], 32, 0), masks_for("center", [0, 1], 32, 1))
    half = masks_for("half", list(range(8)), 32, 0)
    assert bool((half.sum((1, 2, 3)) == 32 * 16).all())


def test_training_masks_follow_their_generator():
    a = random_masks(6, 32, torch.Generator().manual_seed(0))
    b = random_masks(6, 32, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (6, 1, 32, 32)


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown mask kind.*center, half, box, strokes"):
        check_kinds(["center", "circle"])


@pytest.mark.parametrize("mask, message", [
    (torch.ones(16, 16), "is 16x16 pixels but samples are 32x32; resize"),
    (torch.ones(32, 32), "regenerates everything \\(all ones\\)"),
    (torch.zeros(32, 32), "regenerates nothing \\(all zeros\\)"),
    (torch.full((32, 32), 0.5), "is not binary"),
])
def test_bad_masks_get_one_clear_line(mask, message):
    with pytest.raises(ValueError, match=message) as err:
        check_mask(mask, 32)
    assert "\n" not in str(err.value)


def test_mask_files(tmp_path):
    good = np.zeros((32, 32), np.uint8)
    good[8:24, 8:24] = 255
    Image.fromarray(good).save(tmp_path / "good.png")
    mask = load_mask(tmp_path / "good.png", 32)
    assert mask.shape == (1, 1, 32, 32) and float(mask.sum()) == 16 * 16
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="is not an image PIL can read"):
        load_mask(tmp_path / "notes.png", 32)
    with pytest.raises(ValueError, match="not found"):
        load_mask(tmp_path / "missing.png", 32)
    grey = good.copy()
    grey[0, 0] = 100
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="is not binary"):
        load_mask(tmp_path / "grey.png", 32)
    Image.fromarray(good).resize((64, 64)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match="is 64x64 pixels but samples are 32x32"):
        load_mask(tmp_path / "big.png", 32)
