"""Matplotlib setup shared by every figure: headless backend, style, step formatting, saving."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DPI = 150
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
}


def styled(func):
    """Run a figure function under STYLE without changing the caller's matplotlib settings."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    return plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False, **kwargs)


def human_steps(x: float, _pos=None) -> str:
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:g}M"
    if ax >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"


STEP_FORMATTER = FuncFormatter(human_steps)

# (unit, seconds per unit): a duration is shown in the largest unit it reaches twice of (120 s -> minutes).
DURATION_UNITS = (("milliseconds", 1e-3), ("seconds", 1.0), ("minutes", 60.0), ("hours", 3600.0))
UNIT_SYMBOLS = {"milliseconds": "ms", "seconds": "s", "minutes": "min", "hours": "h"}


def duration_unit(seconds: float) -> tuple[str, float]:
    """(unit, seconds per unit) for durations up to `seconds`: milliseconds below 2 s, seconds below
    2 minutes, minutes below 2 hours, else hours."""
    name, scale = DURATION_UNITS[0]
    for unit, size in DURATION_UNITS[1:]:
        if abs(seconds) >= 2 * size:
            name, scale = unit, size
    return name, scale


def format_duration(seconds: float) -> str:
    """'45 s', '6.2 min', '3.1 h' (unit by duration_unit)."""
    unit, scale = duration_unit(seconds)
    return f"{seconds / scale:.3g} {UNIT_SYMBOLS[unit]}"


def save_figure(fig, base: Path, formats=("png", "pdf")) -> list[Path]:
    """Write base.png / base.pdf at a fixed size (figsize x DPI pixels; no tight cropping)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in formats:
        path = base.with_suffix(f".{ext}")
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    plt.close(fig)
    return paths


def pixel_size(width: float, height: float) -> tuple[int, int]:
    return int(round(width * DPI)), int(round(height * DPI))
