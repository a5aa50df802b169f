"""The paper's figures regenerated from runs, plus rliable-style aggregate plots (drawn here, without rliable).

Every function draws one figure at a size fixed by its content (no tight cropping) and writes PNG
and PDF. Colours come from one palette dict (palette.build_palette) and legends list algorithms in
one fixed order (palette.algo_order), so an algorithm looks and sorts the same everywhere. Reference
curves (other projects' published results) are dashed and labelled "(reference)". Bands of returns
are clipped to the task's possible returns (tasks.return_bounds): a mean - std below 0 on a DMC task
is a statement about the spread, not a return any run could have had.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from flowrl.analysis.plotting import STEP_FORMATTER, duration_unit, new_figure, save_figure, styled
from flowrl.analysis.references import STEP_AXIS
from flowrl.analysis.stats import METRIC_LABELS, METRICS
from flowrl.analysis.tasks import return_bounds, short_name

REF_SUFFIX = " (reference)"
POI_CMAP = "RdBu"
# Cells of the PoI matrix that hold no comparison (the diagonal, X against itself): mid grey and hatched,
# so they cannot be read as P = 0.5, which RdBu draws near-white.
NO_COMPARISON_COLOUR = "#9e9e9e"
BANDS = {
    "std": "mean ± std over seeds",
    "t": "mean and 95% t-interval of the mean over seeds",
    "ci": "mean and 95% percentile-bootstrap CI over seeds",
}


def ordered_handles(handles: dict[str, object], order: list[str]) -> list:
    """Legend entries in the fixed algorithm order: each algorithm, then its reference curve; others last."""
    labels = [label for algo in order for label in (algo, algo + REF_SUFFIX) if label in handles]
    return [handles[label] for label in labels + [k for k in handles if k not in labels]]


def curve_band(df: pd.DataFrame, band: str, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of a curve's band (`band` in BANDS), clipped to the task's possible returns."""
    if band == "std":
        mean, spread = df["mean"].to_numpy(), np.nan_to_num(df["std"].to_numpy())
        low, high = mean - spread, mean + spread
    elif band == "t":
        low, high = df["t_low"].to_numpy(), df["t_high"].to_numpy()
    elif band == "ci":
        low, high = df["ci_low"].to_numpy(), df["ci_high"].to_numpy()
    else:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, got {band!r}")
    return np.clip(low, *bounds), np.clip(high, *bounds)


def _finish_legend(fig, handles: list, ncol_max: int = 6) -> None:
    if handles:
        fits = max(1, int(fig.get_figwidth() / 1.7))  # about 1.7 inches per legend entry
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), ncol_max, fits), frameon=False)


def curve_grid_size(n_panels: int, ncols: int = 4) -> tuple[int, int, float, float]:
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    return nrows, ncols, max(3.1 * ncols + 0.4, 6.5), 2.4 * nrows + 1.2


@styled
def task_curves_figure(
    curves: pd.DataFrame,
    tasks: list[str],
    order: list[str],
    palette: dict[str, str],
    title: str,
    band: str,
    base: Path,
    ylabel: str = "Return",
) -> list[Path]:
    """One panel per task: mean curve per algorithm with a band (BANDS), clipped to the task's return bounds
    (`value` 'return' only; other values are not clipped)."""
    nrows, ncols, width, height = curve_grid_size(len(tasks))
    fig, axes = new_figure(width, height, nrows, ncols)
    seen: dict[str, Line2D] = {}
    for i, task in enumerate(tasks):
        ax = axes[i // ncols][i % ncols]
        task_df = curves[curves["task"] == task]
        bounds = return_bounds(task) if ylabel == "Return" else (-np.inf, np.inf)
        counts = []  # runs behind each of our algorithms' curves on this task
        for algo in order:
            for is_ref in (False, True):
                df = task_df[(task_df["algo"] == algo) & (task_df["reference"] == is_ref)]
                if df.empty:
                    continue
                colour = palette.get(algo, "black")
                style = "--" if is_ref else "-"
                label = algo + (REF_SUFFIX if is_ref else "")
                df = df[np.isfinite(df["mean"].to_numpy())]
                x, mean = df["step"].to_numpy(), df["mean"].to_numpy()
                low, high = curve_band(df, band, bounds)
                (line,) = ax.plot(x, mean, style, color=colour, lw=1.6 if not is_ref else 1.3, label=label)
                ax.fill_between(x, low, high, color=colour, alpha=0.15 if not is_ref else 0.08, lw=0)
                seen.setdefault(label, line)
                if not is_ref:
                    counts.append(int(df["n"].max()))
        runs = (
            ""
            if not counts
            else (
                f" (n={counts[0]} runs each)"
                if min(counts) == max(counts)
                else f" (n={min(counts)}–{max(counts)} runs per algorithm)"
            )
        )
        ax.set_title(short_name(task) + runs, fontsize=9)
        ax.xaxis.set_major_formatter(STEP_FORMATTER)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
        if i // ncols == nrows - 1 or i + ncols >= len(tasks):
            ax.set_xlabel(STEP_AXIS)
    for j in range(len(tasks), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    clipped = any(np.isfinite(return_bounds(t)).any() for t in tasks) and ylabel == "Return"
    fig.suptitle(
        f"{title}\n{BANDS[band]}" + (" (bands cut at the task's possible returns)" if clipped else ""), fontsize=10
    )
    _finish_legend(fig, ordered_handles(seen, order))
    return save_figure(fig, base)


@styled
def overview_figure(
    agg: pd.DataFrame,
    set_order: list[str],
    order: list[str],
    palette: dict[str, str],
    timing: pd.DataFrame | None,
    base: Path,
    metric: str = "iqm",
) -> list[Path]:
    """Fig. 1 style: final normalised score per task set (bars with CIs), training time, inference time."""
    has_train = timing is not None and timing["train_hours"].notna().any()
    has_infer = timing is not None and timing["inference_ms"].notna().any()
    n_panels = 1 + has_train + has_infer
    fig, axes = new_figure(4.0 + 1.0 * len(set_order) + 3.2 * (n_panels - 1), 3.8, 1, n_panels)
    ax = axes[0][0]
    algos = [a for a in order if a in set(agg["algo"])]
    width = 0.8 / max(1, len(algos))
    handles = []
    for k, algo in enumerate(algos):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(set_order):
            r = agg[(agg["set"] == name) & (agg["algo"] == algo) & (agg["metric"] == metric)]
            if r.empty:
                continue
            r = r.iloc[0]
            xs.append(i + (k - (len(algos) - 1) / 2) * width)
            ys.append(r["value"])
            lo.append(r["value"] - r["ci_low"])
            hi.append(r["ci_high"] - r["value"])
        bars = ax.bar(
            xs, ys, width * 0.95, yerr=[lo, hi], color=palette[algo], capsize=2, label=algo, error_kw={"lw": 0.8}
        )
        handles.append(bars)
    labels = []
    for name in set_order:
        sub = agg[(agg["set"] == name) & (agg["metric"] == metric)]
        n_tasks = int(sub["n_tasks"].max())
        labels.append(f"{name}\n({n_tasks} task{'s' if n_tasks != 1 else ''})")
    ax.set_xticks(range(len(set_order)), labels)
    ax.set_ylabel(f"Normalised score ({METRIC_LABELS[metric]})")
    ax.set_title(f"(a) Final normalised score, {METRIC_LABELS[metric]} ± 95% CI")
    ax.grid(axis="x", visible=False)
    panel = 1
    for column, to_seconds, per, title in (
        ("train_hours", 3600.0, "run", "Training wall time"),
        ("inference_ms", 1e-3, "action", "Inference time per step"),
    ):
        if timing is None or not timing[column].notna().any():
            continue
        ax = axes[0][panel]
        per_algo = timing.dropna(subset=[column]).groupby("algo")[column]
        names = [a for a in order if a in per_algo.groups]
        means = np.array([per_algo.get_group(a).mean() for a in names]) * to_seconds
        stds = (
            np.array([per_algo.get_group(a).std(ddof=1) if per_algo.get_group(a).size > 1 else 0.0 for a in names])
            * to_seconds
        )
        unit, scale = duration_unit(float(np.max(means + stds)))  # the axis unit fits the tallest bar
        # times are >= 0: the lower whisker stops at zero
        ax.bar(
            range(len(names)),
            means / scale,
            0.7,
            yerr=[np.minimum(stds, means) / scale, stds / scale],
            color=[palette[a] for a in names],
            capsize=2,
        )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel(f"{unit.capitalize()} per {per}")
        ax.set_title(f"({'abc'[panel]}) {title}\n(mean ± std over tasks/runs)")
        ax.grid(axis="x", visible=False)
        panel += 1
    _finish_legend(fig, handles)
    return save_figure(fig, base)


@styled
def interval_figure(agg: pd.DataFrame, order: list[str], palette: dict[str, str], title: str, base: Path) -> list[Path]:
    """rliable-style aggregate metrics: one panel per metric, a 95% CI bar and point estimate per algorithm."""
    algos = [a for a in order if a in set(agg["algo"])]
    fig, axes = new_figure(2.7 * len(METRICS) + 0.8, 1.2 + 0.38 * len(algos), 1, len(METRICS))
    for j, metric in enumerate(METRICS):
        ax = axes[0][j]
        for k, algo in enumerate(algos):
            r = agg[(agg["algo"] == algo) & (agg["metric"] == metric)].iloc[0]
            ax.plot([r["ci_low"], r["ci_high"]], [k, k], color=palette[algo], lw=7, alpha=0.75, solid_capstyle="butt")
            ax.plot([r["value"]], [k], "|", color="black", ms=12, mew=1.5)
        ax.set_xlabel(METRIC_LABELS[metric] + (" (lower is better)" if metric == "optimality_gap" else ""))
        ax.set_yticks(range(len(algos)), algos)
        ax.tick_params(axis="y", labelleft=j == 0)
        ax.set_ylim(len(algos) - 0.4, -0.6)  # first algorithm on top
        ax.grid(axis="y", visible=False)
    n = agg.groupby("algo")["n_runs"].first()
    fig.suptitle(
        f"{title}: normalised score, point estimate and 95% stratified-bootstrap CI "
        f"(runs used: {', '.join(f'{a} {n[a]}' for a in algos)})",
        fontsize=9,
    )
    return save_figure(fig, base)


@styled
def poi_figure(
    poi: pd.DataFrame, palette: dict[str, str], title: str, base: Path, order: list[str] | None = None
) -> list[Path]:
    """Probability that algorithm X beats Y on a random task (rliable's PoI plot, drawn here so that
    pairs whose interval has zero width stay visible): 95% CI bar and point estimate per pair, the pairs
    in `order` of Y."""
    rows = list(poi.itertuples())
    if order is not None:
        rank = {a: i for i, a in enumerate(order)}
        rows.sort(key=lambda r: (rank.get(r.algo_x, len(rank)), rank.get(r.algo_y, len(rank))))
    fig, axes = new_figure(6.0, 1.2 + 0.45 * len(rows))
    ax = axes[0][0]
    for k, r in enumerate(rows):
        ax.plot([r.ci_low, r.ci_high], [k, k], color=palette[r.algo_y], lw=9, alpha=0.75, solid_capstyle="butt")
        ax.plot([r.poi], [k], "o", color=palette[r.algo_y], mec="black", ms=6)
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_yticks(
        range(len(rows)), [f"{r.algo_x} > {r.algo_y}\n(runs {r.runs_x} vs {r.runs_y}, {r.n_tasks} tasks)" for r in rows]
    )
    ax.set_xlabel("P(X > Y) on a randomly chosen task")
    ax.grid(axis="y", visible=False)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, base)


def poi_matrix(poi: pd.DataFrame, order: list[str]) -> tuple[list[str], np.ndarray, dict]:
    """Algorithms in `order`, the P(row > column) matrix (NaN: no comparison, e.g. the diagonal) and CIs."""
    algos = [a for a in order if a in set(poi["algo_x"]) | set(poi["algo_y"])]
    matrix = np.full((len(algos), len(algos)), np.nan)
    cis = {}
    for r in poi.itertuples():
        i, j = algos.index(r.algo_x), algos.index(r.algo_y)
        matrix[i, j], cis[i, j] = r.poi, (r.ci_low, r.ci_high)
    return algos, matrix, cis


def poi_matrix_colours(matrix: np.ndarray, cmap: str = POI_CMAP) -> np.ndarray:
    """RGBA per cell: the colour map on [0, 1] where a probability exists, NO_COMPARISON_COLOUR where not."""
    import matplotlib

    colours = matplotlib.colormaps[cmap](np.nan_to_num(np.clip(matrix, 0, 1), nan=0.5))
    colours[~np.isfinite(matrix)] = to_rgba(NO_COMPARISON_COLOUR)
    return colours


@styled
def poi_matrix_figure(poi: pd.DataFrame, order: list[str], title: str, base: Path) -> list[Path]:
    """Heat map of P(row > column) for every pair of algorithms; the diagonal (an algorithm against itself,
    not compared) grey and hatched, never the colour of 0.5."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    algos, matrix, cis = poi_matrix(poi, order)
    n = len(algos)
    size = 2.4 + 0.9 * n
    fig, axes = new_figure(size + 1.0, size + 0.3)
    ax = axes[0][0]
    ax.imshow(poi_matrix_colours(matrix))
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                lo, hi = cis[i, j]
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}\n[{lo:.2f}, {hi:.2f}]",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(matrix[i, j] - 0.5) > 0.3 else "black",
                )
            else:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="white", hatch="//", lw=0))
                ax.text(
                    j,
                    i,
                    "same\nalgorithm" if i == j else "not\ncompared",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black",
                    bbox={"facecolor": NO_COMPARISON_COLOUR, "lw": 0, "pad": 1},
                )
    ax.set_xticks(range(n), algos, rotation=30, ha="right")
    ax.set_yticks(range(n), algos)
    ax.set_xlabel("Algorithm Y")
    ax.set_ylabel("Algorithm X")
    ax.grid(False)
    fig.colorbar(ScalarMappable(Normalize(0, 1), matplotlib.colormaps[POI_CMAP]), ax=ax, label="P(X > Y)")
    fig.legend(
        handles=[Patch(facecolor=NO_COMPARISON_COLOUR, hatch="//", edgecolor="white", label="no comparison (X = Y)")],
        loc="outside lower center",
        frameon=False,
    )
    ax.set_title(title + " (95% CI in brackets)", fontsize=9)
    return save_figure(fig, base)


@styled
def profile_figure(
    profiles: dict, cis: dict, taus: np.ndarray, order: list[str], palette: dict[str, str], title: str, base: Path
) -> list[Path]:
    """Score distributions: fraction of runs with normalised score > tau, with 95% CI bands."""
    algos = [a for a in order if a in profiles]
    fig, axes = new_figure(6.0, 4.2)
    ax = axes[0][0]
    for algo in algos:
        ax.plot(taus, profiles[algo], color=palette[algo], lw=2, label=algo)
        ax.fill_between(taus, cis[algo][0], cis[algo][1], color=palette[algo], alpha=0.2, lw=0)
    ax.set_xlabel(r"Normalised score $\tau$")
    ax.set_ylabel(r"Fraction of runs with score $> \tau$")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(handles=[Line2D([], [], color=palette[a], lw=2, label=a) for a in algos], frameon=False)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, base)


@styled
def sample_efficiency_figure(
    panels: list[tuple[str, np.ndarray, dict, dict, dict]], order: list[str], palette: dict[str, str], base: Path
) -> list[Path]:
    """IQM normalised score vs environment steps with 95% CI bands, one panel per task set.

    panels: (set name, grid, points, intervals, runs used per algorithm)."""
    fig, axes = new_figure(0.6 + 4.0 * len(panels), 3.9, 1, len(panels))
    handles = {}
    for ax, (name, grid, points, intervals, used) in zip(axes[0], panels):
        algos = [a for a in order if a in points]
        for algo in algos:
            (line,) = ax.plot(grid, points[algo], color=palette[algo], lw=1.8, label=algo)
            ax.fill_between(grid, intervals[algo][0], intervals[algo][1], color=palette[algo], alpha=0.18, lw=0)
            handles.setdefault(algo, line)
        ax.xaxis.set_major_formatter(STEP_FORMATTER)
        ax.set_xlabel(STEP_AXIS)
        ax.set_ylabel("IQM normalised score")
        ax.set_title(f"{name}\nruns: " + ", ".join(f"{a} {used[a]}" for a in algos), fontsize=8.5)
    fig.suptitle("Sample efficiency: IQM with 95% stratified-bootstrap CI")
    _finish_legend(fig, [handles[a] for a in order if a in handles])
    return save_figure(fig, base)
