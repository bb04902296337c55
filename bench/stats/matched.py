"""Reading a method's scale curve at a given alignment level (linear interpolation between scales).

"Guidance Matters" (arXiv:2602.22570) finds most methods match plain CFG once their scales are
calibrated to the same effect, so methods are compared at equal CLIP score rather than at equal
nominal scale: walk each method's cells in order of scale and interpolate where its CLIP score first
crosses the level. Vectorised over bootstrap replicates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["REACHED", "NOT_REACHED", "EXCEEDED", "first_crossing", "interpolate", "status"]

REACHED = "reached"
NOT_REACHED = "not reached"  # the method's curve stays below the level at every scale
EXCEEDED = "exceeded at lowest scale"  # already above the level at its lowest scale


def first_crossing(curve: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row's curve first reaches its level, walking the points in order.

    ``curve`` [B, S] (points sorted by scale), ``level`` [B]. Returns the segment index [B] (-1 where
    the level is not reached) and the fraction along that segment [B] (0 at its first point), so a
    position is ``segment + fraction`` in units of points. A lone point reaches only its own value.
    """
    curve = np.atleast_2d(np.asarray(curve, float))
    level = np.broadcast_to(np.asarray(level, float), curve.shape[:1])[:, None]
    b, s = curve.shape
    seg = np.full(b, -1)
    frac = np.full(b, np.nan)
    if s == 1:
        hit = curve[:, 0] == level[:, 0]
        seg[hit], frac[hit] = 0, 0.0
        return seg, frac
    lo, hi = curve[:, :-1], curve[:, 1:]
    with np.errstate(invalid="ignore"):
        crosses = ((lo - level) * (hi - level) <= 0) & np.isfinite(lo) & np.isfinite(hi)
    any_cross = crosses.any(1)
    first = np.argmax(crosses, axis=1)
    rows = np.flatnonzero(any_cross)
    a, c = lo[rows, first[rows]], hi[rows, first[rows]]
    span = c - a
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(span != 0, (level[rows, 0] - a) / span, 0.0)
    seg[rows], frac[rows] = first[rows], np.clip(f, 0.0, 1.0)
    return seg, frac


def interpolate(values: np.ndarray, seg: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Values [S] (or [B, S]) read at the positions ``first_crossing`` returned (NaN where not reached)."""
    values = np.asarray(values, float)
    seg = np.asarray(seg)
    values = np.broadcast_to(values, (len(seg), values.shape[-1]))
    out = np.full(len(seg), np.nan)
    ok = seg >= 0
    rows = np.flatnonzero(ok)
    if rows.size:
        start = values[rows, seg[rows]]
        end = values[rows, np.minimum(seg[rows] + 1, values.shape[1] - 1)]
        out[rows] = start + frac[rows] * (end - start)
    return out


def status(curve: np.ndarray, level: float) -> str:
    """Whether a point-estimate curve reaches ``level``, and if not, on which side it stays."""
    curve = np.asarray(curve, float)
    finite = curve[np.isfinite(curve)]
    seg, _ = first_crossing(curve[None, :], np.array([level]))
    if seg[0] >= 0:
        return REACHED
    if finite.size and finite.min() > level:
        return EXCEEDED
    return NOT_REACHED
