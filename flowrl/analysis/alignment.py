"""Put runs evaluated on different step grids onto one common grid.

Rule: the value of a run at grid step g is its last evaluation at a step <= g ("last observation
carried forward"), and NaN when g lies before the run's first evaluation or after its last one.
A run is never extrapolated past its last evaluation, and never interpolated.
"""

from __future__ import annotations

import numpy as np


def align_to_grid(steps, values, grid) -> np.ndarray:
    """Values of one run (sorted eval `steps`, `values`) at each step of `grid`."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=np.int64)
    out = np.full(grid.shape, np.nan)
    if steps.size == 0:
        return out
    if np.any(np.diff(steps) <= 0):
        raise ValueError("evaluation steps must be strictly increasing")
    idx = np.searchsorted(steps, grid, side="right") - 1
    valid = (idx >= 0) & (grid <= steps[-1])
    out[valid] = values[idx[valid]]
    return out


def make_grid(every: int, final: int, start: int = 0) -> np.ndarray:
    """start, start+every, ... up to and including `final` (added when not a multiple of `every`)."""
    if every <= 0:
        raise ValueError(f"grid step must be positive, got {every}")
    grid = np.arange(start, final + 1, every, dtype=np.int64)
    if grid.size == 0 or grid[-1] != final:
        grid = np.append(grid, np.int64(final))
    return grid


def thin_grid(grid: np.ndarray, max_points: int) -> np.ndarray:
    """At most `max_points` evenly spread points of `grid`, always keeping its first and last."""
    if max_points < 2 or grid.size <= max_points:
        return grid
    idx = np.unique(np.round(np.linspace(0, grid.size - 1, max_points)).astype(int))
    return grid[idx]
