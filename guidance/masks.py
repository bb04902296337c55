"""Inpainting masks: which pixels an edit regenerates (1) and which it keeps (0).

Every mask is drawn from its own random stream, seeded by (seed, global sample index, kind), so a
sample's mask is the same whatever the batch size or the batch it lands in, as the samplers' noise
(guidance.rng). Kinds, as GLIDE's and LaMa's training masks:

- center: the centred square of half the side;
- half: the left, right, top or bottom half;
- box: one axis-aligned box of 30-60% of each side, anywhere;
- strokes: 1-4 thick random polylines (brush strokes).

A user's mask is a black-and-white image file of the sample's size: white (255) marks what to
regenerate, black (0) what to keep; `load_mask` checks it.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

MASK_KINDS = ("center", "half", "box", "strokes")


def _rng(seed: int, index: int, kind: str) -> np.random.Generator:
    digest = hashlib.sha256(f"mask:{seed}:{index}:{kind}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _strokes(rng: np.random.Generator, size: int) -> np.ndarray:
    hole = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(1, 5))):
        width = rng.uniform(0.06, 0.14) * size
        y, x = rng.uniform(0.15, 0.85, 2) * size
        for _ in range(int(rng.integers(2, 6))):
            angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.45) * size
            ny = float(np.clip(y + length * math.sin(angle), 0, size - 1))
            nx = float(np.clip(x + length * math.cos(angle), 0, size - 1))
            # distance of every pixel to the segment (y, x) -> (ny, nx)
            dy, dx = ny - y, nx - x
            t = np.clip(((yy - y) * dy + (xx - x) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
            hole |= (yy - (y + t * dy)) ** 2 + (xx - (x + t * dx)) ** 2 <= (width / 2) ** 2
            y, x = ny, nx
    return hole


def draw_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One [size, size] bool hole mask of `kind` from `rng`."""
    hole = np.zeros((size, size), bool)
    if kind == "center":
        lo = size // 4
        hole[lo:size - lo, lo:size - lo] = True
    elif kind == "half":
        side = int(rng.integers(4))
        h = size // 2
        [lambda: hole[:, :h], lambda: hole[:, h:], lambda: hole[:h], lambda: hole[h:]][side]()[...] = True
    elif kind == "box":
        bh, bw = (rng.uniform(0.3, 0.6, 2) * size).astype(int).clip(1, size)
        y, x = int(rng.integers(0, size - bh + 1)), int(rng.integers(0, size - bw + 1))
        hole[y:y + bh, x:x + bw] = True
    elif kind == "strokes":
        hole = _strokes(rng, size)
    else:
        raise ValueError(f"unknown mask kind {kind!r}; valid: {', '.join(MASK_KINDS)}")
    return hole


def check_kinds(kinds: Sequence[str]) -> list[str]:
    kinds = [k.strip() for k in kinds if k.strip()]
    bad = [k for k in kinds if k not in MASK_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown mask kind(s) {bad or kinds}; --masks takes a comma-separated subset of "
                         f"{', '.join(MASK_KINDS)}")
    return kinds


def masks_for(kind: str, indices: Sequence[int], size: int, seed: int = 0) -> Tensor:
    """[B, 1, size, size] float hole masks (1 = regenerate) of global sample `indices`."""
    return torch.from_numpy(np.stack([draw_mask(kind, size, _rng(seed, int(i), kind)) for i in indices])
                            .astype(np.float32))[:, None]


def random_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """[n, 1, size, size] training masks: a kind chosen uniformly per image, drawn from `generator`."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device).tolist()
    kinds = torch.randint(0, len(MASK_KINDS), (n,), generator=generator, device=generator.device).tolist()
    masks = [draw_mask(MASK_KINDS[k], size, np.random.default_rng(s)) for k, s in zip(kinds, seeds)]
    return torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]


def check_mask(hole: Tensor, size: int, what: str = "mask") -> Tensor:
    """A user's hole mask [.., H, W] checked: the sample's size, binary, neither empty nor everything."""
    if hole.shape[-2:] != (size, size):
        raise ValueError(f"{what} is {hole.shape[-1]}x{hole.shape[-2]} pixels but samples are {size}x{size}; "
                         f"resize the mask to {size}x{size}")
    values = torch.unique(hole)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"{what} is not binary (values {values[:4].tolist()}...); give a mask of 0 (keep) and "
                         f"1 (regenerate) only, e.g. a black-and-white image")
    if bool((hole == 0).all()):
        raise ValueError(f"{what} regenerates nothing (all zeros): mark the region to regenerate with 1 (white)")
    if bool((hole == 1).all()):
        raise ValueError(f"{what} regenerates everything (all ones): that is plain sampling; keep some region (0, "
                         f"black), or run without a mask")
    return hole


def load_mask(path: str | Path, size: int) -> Tensor:
    """[1, 1, size, size] hole mask from an image file: white (255) regenerates, black (0) keeps."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.size != (size, size):  # checked on the header: a huge image is never decoded
                    raise ValueError(f"mask file {path} is {image.size[0]}x{image.size[1]} pixels but samples are "
                                     f"{size}x{size}; resize the mask to {size}x{size}")
                grey = np.asarray(image.convert("L"))
    except FileNotFoundError:
        raise ValueError(f"mask file {path} not found; pass an existing black-and-white image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"mask file {path} is not an image PIL can read; pass a PNG of {size}x{size} "
                         f"(white = regenerate, black = keep)") from None
    hole = torch.from_numpy(grey.astype(np.float32) / 255.0)
    return check_mask(hole, size, f"mask file {path}")[None, None]
