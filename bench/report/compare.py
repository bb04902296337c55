"""Comparison grids for the report: one row per prompt, one column per scale (or per method), same noise.

Every cell of a run draws sample ``i`` from the same prompt and the same initial noise, so a row
shows what guidance alone changed. Each image is its own inline PNG beside the escaped caption,
so the caption sits on its row whatever the browser width.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.report.format import format_scale

__all__ = ["ROWS", "load_cell_samples", "compare_grids_html"]

ROWS = 8  # prompts per grid
TILE = 96  # pixels per image on the page


def load_cell_samples(run_dir: Path, guidance: str, scale: float, seed_set: int) -> dict[int, tuple[np.ndarray, str]]:
    """Sample index -> (image, caption) of one cell's seed set; empty when the file is missing or unreadable."""
    path = Path(run_dir) / "samples" / f"{guidance}_s{format_scale(scale)}_seed{seed_set}.npz"
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            images = npz["images"]
            prompts = [str(p) for p in npz["prompts"]] if "prompts" in npz.files else [""] * len(images)
            indices = [int(i) for i in npz["indices"]] if "indices" in npz.files else list(range(len(images)))
    except (OSError, ValueError, KeyError):
        return {}
    return {i: (img, text) for i, img, text in zip(indices, images, prompts)}


def _png(image: np.ndarray) -> str:
    """One image as a nearest-neighbour upscaled inline PNG tag."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    arr = np.clip(arr[..., :3], 0, 255).astype(np.uint8)
    factor = max(1, TILE // max(arr.shape[0], 1))
    img = Image.fromarray(arr).resize((arr.shape[1] * factor, arr.shape[0] * factor), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{img.width}" height="{img.height}" alt="">'


def _grid(title: str, columns: Sequence[tuple[str, dict[int, tuple[np.ndarray, str]]]]) -> str:
    """A table: caption column, then one column per (header, samples)."""
    shared = sorted(set.intersection(*(set(s) for _, s in columns))) if columns else []
    if not shared:
        return ""
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    head = "".join(f"<th>{e(h)}</th>" for h, _ in columns)
    rows = []
    for i in shared[:ROWS]:
        caption = columns[0][1][i][1]
        cells = "".join(f"<td>{_png(samples[i][0])}</td>" for _, samples in columns)
        rows.append(f'<tr><td class="caption">{e(caption)}</td>{cells}</tr>')
    return (f"<h3>{e(title)}</h3><div class=\"scroll\"><table class=\"cmp\"><thead><tr><th>prompt (sample index "
            f"order)</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def compare_grids_html(run_dir: Path, results: pd.DataFrame, bests: Sequence[tuple[str, float]], label: str = "") -> str:
    """Per method: its scales side by side; then every method at its chosen scale side by side."""
    seed = int(results["seed_set"].min())
    suffix = f" ({label})" if label else ""
    parts = []
    for g, group in results.groupby("guidance", sort=False):
        scales = sorted({float(s) for s in group["scale"]})
        cols = [(f"scale {format_scale(s)}", load_cell_samples(run_dir, str(g), s, seed)) for s in scales]
        parts.append(_grid(f"{g}: scales side by side, seed set {seed}{suffix}", [c for c in cols if c[1]]))
    if len(bests) > 1:
        cols = [(f"{g} {format_scale(s)}", load_cell_samples(run_dir, g, s, seed)) for g, s in bests]
        parts.append(_grid(f"Methods at their chosen scale, seed set {seed}{suffix}", [c for c in cols if c[1]]))
    return "".join(parts)
