"""Sample grids: the first images of a cell, or a task's rows (source / mask / result, base / upsampled /
bicubic), nearest-neighbour upscaled so small samples stay readable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.runner.config import DEFAULT_TASK
from bench.report.runs import Run
from bench.report.format import safe_name, format_scale
from bench.runner.store import load_extras
from bench.tasks import TASKS


GRID_IMAGES = 16
GRID_UPSCALE = 3  # 32x32 emoji are unreadable at 1:1
TASK_GRID_COLUMNS = 8  # images per row of a task's row grid (source / mask / result)


def sample_grid(images: np.ndarray, max_images: int = GRID_IMAGES, upscale: int = GRID_UPSCALE) -> Image.Image:
    """A square-ish grid of the first images, nearest-neighbour upscaled so pixels stay crisp."""
    imgs = np.asarray(images)
    if imgs.ndim == 3:  # grayscale [N, H, W]
        imgs = imgs[..., None]
    if imgs.ndim != 4 or imgs.shape[-1] not in (1, 3, 4) or len(imgs) == 0:
        raise ValueError(f"expected images [N, H, W, 3] uint8, got shape {imgs.shape}")
    imgs = imgs[:max_images]
    if imgs.dtype != np.uint8:
        imgs = np.clip(imgs, 0, 255).astype(np.uint8)
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, axis=-1)
    imgs = imgs[..., :3]
    n, h, w, _ = imgs.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    out = Image.fromarray(grid)
    return out.resize((out.width * upscale, out.height * upscale), Image.NEAREST)


def row_grid(rows: Sequence[np.ndarray], max_images: int = TASK_GRID_COLUMNS, upscale: int = GRID_UPSCALE) -> Image.Image:
    """One row per array (uint8 [N, H, W, 3], the same N, H and W), the first images side by side:
    a task's rows (source / mask / result) line up column by column."""
    pad = 2
    rows = [np.asarray(r)[:max_images] for r in rows]
    n, h, w = rows[0].shape[:3]
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for c, img in enumerate(images):
            grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img[..., :3]
    out = Image.fromarray(grid)
    return out.resize((out.width * upscale, out.height * upscale), Image.NEAREST)


@dataclass
class Grid:
    run: str
    guidance: str
    scale: float
    png: Path | None
    prompts: list[str]
    shown: int  # images in the grid
    note: str  # why there is no grid, if there is none
    rows: tuple[str, ...] = ()  # a task's grid rows, top down (empty: a plain grid of samples)


def make_grids(run: Run, label: str, prefix: str, out_dir: Path) -> list[Grid]:
    """Grids of seed set 0 (the lowest one present) for every guidance and scale of a run."""
    grids = []
    task = TASKS.get((run.manifest.get("config") or {}).get("task", DEFAULT_TASK))
    rows = task.grid_rows if task is not None and task.axes else ()
    cells = run.results.groupby(["guidance", "scale"], sort=False)["seed_set"].min()
    for (g, scale), seed in cells.items():
        name = f"{g}_s{format_scale(scale)}_seed{int(seed)}.npz"
        path = run.dir / "samples" / name
        png, prompts, shown, note = None, [], 0, ""
        if not path.is_file():
            note = f"no samples saved ({path})"
        else:
            try:
                with np.load(path, allow_pickle=False) as npz:
                    images = npz["images"]
                    limit = TASK_GRID_COLUMNS if rows else GRID_IMAGES
                    shown = min(len(images), limit)
                    prompts = [str(p) for p in npz["prompts"][:limit]] if "prompts" in npz else []
                png = out_dir / "grids" / f"{prefix}{safe_name(g)}_s{format_scale(scale)}.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                image = row_grid(task.grid(images, load_extras(path))) if rows else sample_grid(images)
                image.save(png)
            except (OSError, ValueError, KeyError) as e:
                png, note = None, f"unreadable samples file {path}: {e}"
        grids.append(Grid(label, str(g), float(scale), png, prompts, shown, note, rows))
    return grids
