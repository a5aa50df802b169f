"""rliable statistics with stratified-bootstrap confidence intervals, reproducible from a seed.

rliable's bootstraps draw from NumPy's global RNG (its `random_state` argument does not reach the
resampling), so every call here is preceded by `np.random.seed(seed)`. Each algorithm (or pair) is
bootstrapped in its own seeded call, so its interval does not depend on which other algorithms exist.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.stats
from rliable import library as rly
from rliable import metrics

METRICS = ("median", "iqm", "mean", "optimality_gap")
METRIC_LABELS = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}


def aggregate_func(scores: np.ndarray) -> np.ndarray:
    """Median, IQM, mean and optimality gap (threshold 1) of a runs x tasks score matrix."""
    return np.array([metrics.aggregate_median(scores), metrics.aggregate_iqm(scores),
                     metrics.aggregate_mean(scores), metrics.aggregate_optimality_gap(scores)])


def interval_estimates(score_dict: dict, func, reps: int, seed: int, confidence: float = 0.95):
    """rly.get_interval_estimates for each key in its own call, after seeding NumPy's global RNG."""
    points, intervals = {}, {}
    for key, scores in score_dict.items():
        np.random.seed(seed)
        p, i = rly.get_interval_estimates({key: scores}, func, reps=reps, confidence_interval_size=confidence)
        points[key], intervals[key] = p[key], i[key]
    return points, intervals


def aggregate_metrics(matrices: dict[str, np.ndarray], reps: int, seed: int, confidence: float = 0.95) -> pd.DataFrame:
    points, intervals = interval_estimates(matrices, aggregate_func, reps, seed, confidence)
    rows = []
    for algo, m in matrices.items():
        for j, metric in enumerate(METRICS):
            rows.append({"algo": algo, "metric": metric, "value": float(points[algo][j]),
                         "ci_low": float(intervals[algo][0, j]), "ci_high": float(intervals[algo][1, j]),
                         "n_runs": int(m.size), "runs_per_task": int(m.shape[0]), "n_tasks": int(m.shape[1])})
    return pd.DataFrame(rows)


def poi_statistic(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's metrics.probability_of_improvement, computed without a scipy call per task.

    Per task, the Mann-Whitney U statistic of X over Y divided by n_x * n_y is
    (#pairs with x > y + 0.5 * #ties) / (n_x * n_y); averaged over tasks. Identical columns give 0.5
    under this formula, as rliable special-cases. tests/test_analysis.py checks equality with rliable.
    """
    x = scores_x[:, None, :]
    y = scores_y[None, :, :]
    wins = (x > y).sum(axis=(0, 1)) + 0.5 * (x == y).sum(axis=(0, 1))
    return float(np.mean(wins / (scores_x.shape[0] * scores_y.shape[0])))


def probability_of_improvement(matrices: dict[str, np.ndarray], pairs: list[tuple[str, str]], reps: int,
                               seed: int, confidence: float = 0.95) -> pd.DataFrame:
    """P(X > Y) averaged over tasks (Mann-Whitney U per task) with CIs, for each (X, Y) pair."""
    score_dict = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in pairs}
    points, intervals = interval_estimates(score_dict, poi_statistic, reps, seed, confidence)
    rows = []
    for x, y in pairs:
        key = f"{x},{y}"
        rows.append({"algo_x": x, "algo_y": y, "poi": float(points[key]), "ci_low": float(np.ravel(intervals[key])[0]),
                     "ci_high": float(np.ravel(intervals[key])[1]), "runs_x": int(matrices[x].shape[0]),
                     "runs_y": int(matrices[y].shape[0]), "n_tasks": int(matrices[x].shape[1])})
    return pd.DataFrame(rows)


def performance_profiles(matrices: dict[str, np.ndarray], taus: np.ndarray, reps: int, seed: int,
                         confidence: float = 0.95):
    """Score-distribution performance profiles: fraction of runs with score > tau, with CIs."""
    profiles, cis = {}, {}
    for algo, m in matrices.items():
        np.random.seed(seed)
        p, c = rly.create_performance_profile({algo: m}, taus, reps=reps, confidence_interval_size=confidence)
        profiles[algo], cis[algo] = p[algo], c[algo]
    return profiles, cis


def iqm_over_steps(scores: np.ndarray) -> np.ndarray:
    """IQM at every step of a runs x tasks x steps array: rliable's aggregate_iqm per step, vectorised."""
    return scipy.stats.trim_mean(scores.reshape(-1, scores.shape[-1]), proportiontocut=0.25, axis=0)


def sample_efficiency(curves: dict[str, np.ndarray], reps: int, seed: int, confidence: float = 0.95):
    """IQM vs steps with CIs from runs x tasks x steps arrays."""
    return interval_estimates(curves, iqm_over_steps, reps, seed, confidence)


def bootstrap_mean_ci(values: np.ndarray, reps: int, seed: int, confidence: float = 0.95, axis: int = 0):
    """Percentile-bootstrap CI of the mean over `axis` (runs), NaN-aware; a fresh RNG from `seed` per call."""
    values = np.asarray(values, dtype=float)
    values = np.moveaxis(values, axis, 0)
    n = values.shape[0]
    if n == 0:
        shape = values.shape[1:]
        return np.full(shape, np.nan), np.full(shape, np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n))
    with warnings.catch_warnings():  # all-NaN columns (no run reached that step) give NaN quietly
        warnings.simplefilter("ignore", category=RuntimeWarning)
        means = np.nanmean(values[idx], axis=1)
        alpha = (1 - confidence) / 2 * 100
        low, high = np.nanpercentile(means, [alpha, 100 - alpha], axis=0)
    return low, high
