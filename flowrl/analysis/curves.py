"""Learning curves on common step grids (alignment rule in alignment.py).

Per-task curves use every readable run of an algorithm, each up to its own last evaluation, so the
number of runs `n` behind a point can fall along the curve while a study is still running (it is
written next to every point). Aggregate (IQM) curves use exactly the runs of the final-score
aggregate, which all reached the target step.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from flowrl.analysis.alignment import align_to_grid, make_grid, thin_grid
from flowrl.analysis.scores import ScoreSet
from flowrl.analysis.stats import bootstrap_mean_ci, t_interval

CURVE_COLUMNS = [
    "task",
    "group",
    "algo",
    "reference",
    "step",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "t_low",
    "t_high",
    "value",
]


def eval_interval(df: pd.DataFrame) -> int:
    """The coarsest evaluation interval among the runs in df (median step gap of each run)."""
    gaps = []
    for _, run in df.groupby(["algo", "seed"]):
        steps = np.sort(run["step"].unique())
        if steps.size > 1:
            gaps.append(int(np.median(np.diff(steps))))
    return max(gaps) if gaps else 1


def run_matrix(df: pd.DataFrame, grid: np.ndarray, value: str) -> tuple[list[int], np.ndarray]:
    """Seeds and a runs x grid matrix of `value` for the runs (one algorithm, one task) in df."""
    seeds, rows = [], []
    for seed, run in df.groupby("seed", sort=True):
        run = run.sort_values("step")
        seeds.append(int(seed))
        rows.append(align_to_grid(run["step"].to_numpy(), run[value].to_numpy(), grid))
    return seeds, (np.vstack(rows) if rows else np.empty((0, grid.size)))


def _summarise(matrix: np.ndarray, reps: int, seed: int, confidence: float) -> dict[str, np.ndarray]:
    n = np.sum(np.isfinite(matrix), axis=0)
    with warnings.catch_warnings():  # steps no run reached give NaN quietly
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(matrix, axis=0)
        std = np.where(n > 1, np.nanstd(matrix, axis=0, ddof=1), np.nan)
    low, high = bootstrap_mean_ci(matrix, reps, seed, confidence)
    t_low, t_high = t_interval(matrix, confidence)
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high, "t_low": t_low, "t_high": t_high}


def per_task_curves(
    tidy: pd.DataFrame, value: str, reps: int, seed: int, confidence: float = 0.95, grid_step: int | None = None
) -> pd.DataFrame:
    """Mean, std, percentile-bootstrap CI, t-interval and n of `value` ('return' or 'score') per task, algorithm and
    grid step.

    Our runs: grid of `grid_step` (default: the task's coarsest eval interval) up to the last step
    evaluated. References: their own evaluation steps, cut at the last step of our runs on that task
    (left out when fewer than two of their evaluations fall in that range).
    """
    frames = []
    for task, task_df in tidy.groupby("task", sort=True):
        ours = task_df[~task_df["reference"]]
        if ours.empty:
            continue
        last = int(ours["step"].max())
        grid = make_grid(grid_step or eval_interval(ours), last)
        for (algo, is_ref), df in task_df.groupby(["algo", "reference"], sort=True):
            g = grid
            if is_ref:
                steps = np.sort(df.loc[df["step"] <= last, "step"].unique())
                if steps.size < 2:  # a single point cannot be drawn as a curve
                    continue
                g = steps
            _, matrix = run_matrix(df, g, value)
            stats = _summarise(matrix, reps, seed, confidence)
            frames.append(
                pd.DataFrame(
                    {
                        "task": task,
                        "group": df["group"].iloc[0],
                        "algo": algo,
                        "reference": bool(is_ref),
                        "step": g,
                        **stats,
                        "value": value,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]


def aggregate_curves(
    tidy: pd.DataFrame, score_set: ScoreSet, targets: dict[str, int], grid_step: int | None, max_points: int
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """Grid and runs x tasks x steps score arrays for the runs of `score_set` (IQM-vs-steps curves)."""
    ours = tidy[~tidy["reference"] & tidy["task"].isin(score_set.tasks)]
    final = min(targets[t] for t in score_set.tasks)
    grid = thin_grid(make_grid(grid_step or eval_interval(ours), final), max_points)
    arrays = {}
    for algo in score_set.algos:
        per_task = []
        for task in score_set.tasks:
            df = ours[(ours["algo"] == algo) & (ours["task"] == task) & ours["seed"].isin(score_set.seeds[algo][task])]
            _, m = run_matrix(df, grid, "score")
            per_task.append(m)
        arrays[algo] = np.stack(per_task, axis=1)  # runs x tasks x steps
    notes = []
    ok = np.all([np.all(np.isfinite(a), axis=(0, 1)) for a in arrays.values()], axis=0)
    if not ok.all():
        notes.append(
            f"IQM curve: steps {grid[~ok].tolist()} left out (some runs were not evaluated there, "
            "e.g. no evaluation at step 0)"
        )
        grid = grid[ok]
        arrays = {a: v[..., ok] for a, v in arrays.items()}
    return grid, arrays, notes
