"""The statistics of the pipeline, in NumPy: rliable's metrics and stratified bootstrap, reproducible from a seed.

rliable (Agarwal et al. 2021) is the reference these are checked against (tests/test_stats.py, where it is
installed), not a dependency: its repository is archived and it survives only through pins (arch < 8,
pandas < 3), so the pipeline computes everything itself.

Metrics of a runs x tasks score matrix S (n runs, T tasks), as rliable.metrics defines them:
  mean            (1/T) sum_t m_t,   m_t = (1/n) sum_i S[i, t]      (the per-task mean scores)
  median          median_t m_t     (T = 2: the mean of m_1, m_2, i.e. equal to `mean`)
  IQM             mean of the middle 50% of all n*T scores: scipy.stats.trim_mean(S, 0.25, axis=None),
                  which drops floor(0.25 * n*T) scores at each end
  optimality gap  1 - mean_{i,t} min(S[i, t], 1)
  P(X > Y)        (1/T) sum_t [#{(i, j): X[i,t] > Y[j,t]} + #{ties}/2] / (n_X n_Y)   (Mann-Whitney U / n_X n_Y)

Stratified bootstrap (rliable's StratifiedBootstrap with arch's percentile interval): replication b draws,
for every cell of S's shape independently, a run index uniform on 0..n-1 and takes S[idx[b, i, t, ...], t, ...]
(runs resampled within each task, and within each step of a runs x tasks x steps array); the interval is the
100 a/2 and 100 (1 - a/2) percentiles (np.percentile, linear) of the replicated statistic, a = 1 - confidence.
The indices come from `np.random.RandomState(seed)`, the same MT19937 stream rliable draws after
`np.random.seed(seed)` (its `random_state` argument does not reach the resampling), so these intervals are
rliable's intervals to rounding; NumPy's global RNG is left alone. One bootstrap per algorithm (or pair), each
from `seed`, so an algorithm's interval does not depend on which other algorithms are present.

Percentile intervals of a mean over few runs are too narrow: for n <= 3 the 95% percentile interval is the
range [min, max] of the n values (the bootstrap mean equals the minimum with probability n^-n >= 2.5%), whatever
their spread. `t_interval` is the interval reported for per-task means next to it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.stats

DEFAULT_REPS = 2000  # bootstrap replications wherever none are given (CLI, AnalysisConfig, workflow studies)
METRICS = ("median", "iqm", "mean", "optimality_gap")
METRIC_LABELS = {"median": "Median", "iqm": "IQM", "mean": "Mean", "optimality_gap": "Optimality gap"}
CHUNK_ELEMENTS = 2**22  # resampled values held at once (memory bound of a bootstrap; results do not depend on it)


# ----------------------------------------------------------------------------------- metrics
def aggregate_mean(scores: np.ndarray) -> float:
    return float(np.mean(np.mean(scores, axis=0)))


def aggregate_median(scores: np.ndarray) -> float:
    return float(np.median(np.mean(scores, axis=0)))


def aggregate_iqm(scores: np.ndarray) -> float:
    return float(scipy.stats.trim_mean(np.asarray(scores, dtype=float), proportiontocut=0.25, axis=None))


def aggregate_optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    return float(gamma - np.mean(np.minimum(scores, gamma)))


def _aggregates_batched(x: np.ndarray) -> np.ndarray:
    """(B, n, T) -> (B, 4): median, IQM, mean, optimality gap of each of B score matrices."""
    task_means = np.mean(x, axis=1)
    flat = x.reshape(x.shape[0], -1)
    return np.stack(
        [
            np.median(task_means, axis=1),
            scipy.stats.trim_mean(flat, proportiontocut=0.25, axis=1),
            np.mean(task_means, axis=1),
            1.0 - np.mean(np.minimum(flat, 1.0), axis=1),
        ],
        axis=1,
    )


def aggregate_func(scores: np.ndarray) -> np.ndarray:
    """Median, IQM, mean and optimality gap (threshold 1) of a runs x tasks score matrix."""
    return _aggregates_batched(np.asarray(scores, dtype=float)[None])[0]


def _poi_batched(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B, n_x, T), (B, n_y, T) -> (B, 1): P(X > Y) averaged over tasks (ties count 1/2)."""
    a, b = x[:, :, None, :], y[:, None, :, :]
    wins = np.sum(a > b, axis=(1, 2)) + 0.5 * np.sum(a == b, axis=(1, 2))
    return np.mean(wins / (x.shape[1] * y.shape[1]), axis=1)[:, None]


def poi_statistic(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's metrics.probability_of_improvement without a scipy call per task.

    Per task, the Mann-Whitney U statistic of X over Y divided by n_x n_y is
    (#pairs with x > y + 0.5 #ties) / (n_x n_y); averaged over tasks. Identical columns give 0.5 under this
    formula, the value rliable special-cases for them.
    """
    return float(_poi_batched(np.asarray(scores_x, dtype=float)[None], np.asarray(scores_y, dtype=float)[None])[0, 0])


def _iqm_steps_batched(x: np.ndarray) -> np.ndarray:
    """(B, n, T, S) -> (B, S): IQM over runs x tasks at every step."""
    return scipy.stats.trim_mean(x.reshape(x.shape[0], -1, x.shape[-1]), proportiontocut=0.25, axis=1)


def iqm_over_steps(scores: np.ndarray) -> np.ndarray:
    """IQM at every step of a runs x tasks x steps array (rliable's aggregate_iqm per step)."""
    return _iqm_steps_batched(np.asarray(scores, dtype=float)[None])[0]


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs x tasks scores above each threshold tau (rliable's score distribution)."""
    return _profile_batched(np.asarray(scores, dtype=float)[None], np.asarray(taus, dtype=float))[0]


def _profile_batched(x: np.ndarray, taus: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    return np.mean(flat[:, :, None] > taus[None, None, :], axis=1)


# ----------------------------------------------------------------------------------- bootstrap
def _check(scores: np.ndarray, what: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim < 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(
            f"{what}: expected a runs x tasks (x ...) array with at least one run and one task, "
            f"got shape {scores.shape}"
        )
    return scores


def _check_settings(reps: int, confidence: float) -> None:
    if int(reps) < 1:
        raise ValueError(f"bootstrap reps must be a positive integer, got {reps}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _percentile_interval(values: np.ndarray, confidence: float) -> np.ndarray:
    """(reps, k) replicated statistics -> (2, k) lower and upper percentile bounds (arch's arithmetic)."""
    alpha = (1.0 - confidence) / 2
    return np.percentile(values, [100 * alpha, 100 * (1.0 - alpha)], axis=0)


def _resample(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """scores (n, T, ...), idx (B, n, T, ...) of run indices -> (B, n, T, ...) with
    [b, i, t] = scores[idx[b, i, t], t]."""
    return np.take_along_axis(np.broadcast_to(scores, (idx.shape[0],) + scores.shape), idx, axis=1)


def stratified_bootstrap(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    reps: int,
    seed: int,
    confidence: float = 0.95,
    expansion: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and (2, k) percentile interval of `statistic` under the stratified bootstrap.

    statistic: (B, n, T, ...) -> (B, k), B score arrays at once. `expansion`: how many values the statistic
    holds per resampled value (sizes the chunks; the result does not depend on it).
    """
    scores = _check(scores, "stratified bootstrap")
    _check_settings(reps, confidence)
    point = np.atleast_1d(statistic(scores[None])[0])
    rs = np.random.RandomState(seed)
    chunk = max(1, CHUNK_ELEMENTS // (scores.size * max(1, expansion)))
    values = []
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)  # one draw of `size` replications = `size` consecutive draws (same stream)
        idx = rs.randint(0, scores.shape[0], size=(size,) + scores.shape)
        values.append(np.asarray(statistic(_resample(scores, idx))).reshape(size, -1))
    return point, _percentile_interval(np.concatenate(values), confidence)


def independent_bootstrap(
    scores_x: np.ndarray,
    scores_y: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    reps: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """rliable's StratifiedIndependentBootstrap: X and Y resampled independently (each within tasks), X's
    indices drawn before Y's in every replication. statistic: (B, n_x, T), (B, n_y, T) -> (B, k)."""
    x, y = _check(scores_x, "independent bootstrap (X)"), _check(scores_y, "independent bootstrap (Y)")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"X and Y must have the same tasks: shapes {x.shape} and {y.shape}")
    _check_settings(reps, confidence)
    point = np.atleast_1d(statistic(x[None], y[None])[0])
    rs = np.random.RandomState(seed)
    chunk = max(1, CHUNK_ELEMENTS // (x.shape[0] * y.size))
    values = []
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)
        ix, iy = np.empty((size,) + x.shape, dtype=np.int64), np.empty((size,) + y.shape, dtype=np.int64)
        for b in range(size):  # interleaved draws: X's then Y's indices, replication by replication
            ix[b] = rs.randint(0, x.shape[0], size=x.shape)
            iy[b] = rs.randint(0, y.shape[0], size=y.shape)
        values.append(np.asarray(statistic(_resample(x, ix), _resample(y, iy))).reshape(size, -1))
    return point, _percentile_interval(np.concatenate(values), confidence)


def interval_estimates(score_dict: dict, statistic, reps: int, seed: int, confidence: float = 0.95, expansion: int = 1):
    """{key: point}, {key: (2, k) interval} for each key's array (or (X, Y) pair), each bootstrapped from `seed`."""
    points, intervals = {}, {}
    for key, scores in score_dict.items():
        if isinstance(scores, tuple):
            points[key], intervals[key] = independent_bootstrap(*scores, statistic, reps, seed, confidence)
        else:
            points[key], intervals[key] = stratified_bootstrap(scores, statistic, reps, seed, confidence, expansion)
    return points, intervals


# ----------------------------------------------------------------------------------- pipeline statistics
def aggregate_metrics(matrices: dict[str, np.ndarray], reps: int, seed: int, confidence: float = 0.95) -> pd.DataFrame:
    points, intervals = interval_estimates(matrices, _aggregates_batched, reps, seed, confidence)
    rows = []
    for algo, m in matrices.items():
        for j, metric in enumerate(METRICS):
            rows.append(
                {
                    "algo": algo,
                    "metric": metric,
                    "value": float(points[algo][j]),
                    "ci_low": float(intervals[algo][0, j]),
                    "ci_high": float(intervals[algo][1, j]),
                    "n_runs": int(m.size),
                    "runs_per_task": int(m.shape[0]),
                    "n_tasks": int(m.shape[1]),
                }
            )
    return pd.DataFrame(rows)


def probability_of_improvement(
    matrices: dict[str, np.ndarray], pairs: list[tuple[str, str]], reps: int, seed: int, confidence: float = 0.95
) -> pd.DataFrame:
    """P(X > Y) averaged over tasks (Mann-Whitney U per task) with CIs, for each (X, Y) pair."""
    score_dict = {f"{x},{y}": (matrices[x], matrices[y]) for x, y in pairs}
    points, intervals = interval_estimates(score_dict, _poi_batched, reps, seed, confidence)
    rows = []
    for x, y in pairs:
        key = f"{x},{y}"
        rows.append(
            {
                "algo_x": x,
                "algo_y": y,
                "poi": float(points[key][0]),
                "ci_low": float(intervals[key][0, 0]),
                "ci_high": float(intervals[key][1, 0]),
                "runs_x": int(matrices[x].shape[0]),
                "runs_y": int(matrices[y].shape[0]),
                "n_tasks": int(matrices[x].shape[1]),
            }
        )
    return pd.DataFrame(rows)


def performance_profiles(
    matrices: dict[str, np.ndarray], taus: np.ndarray, reps: int, seed: int, confidence: float = 0.95
):
    """Score-distribution performance profiles: fraction of runs with score > tau, with (2, len(taus)) CIs."""
    taus = np.asarray(taus, dtype=float)
    return interval_estimates(
        matrices, lambda x: _profile_batched(x, taus), reps, seed, confidence, expansion=taus.size
    )


def sample_efficiency(curves: dict[str, np.ndarray], reps: int, seed: int, confidence: float = 0.95):
    """IQM vs steps with CIs from runs x tasks x steps arrays."""
    return interval_estimates(curves, _iqm_steps_batched, reps, seed, confidence)


# ----------------------------------------------------------------------------------- per-task means
def bootstrap_mean_ci(values: np.ndarray, reps: int, seed: int, confidence: float = 0.95, axis: int = 0):
    """Percentile-bootstrap CI of the mean over `axis` (runs), NaN-aware; a fresh RNG from `seed` per call.

    For n <= 3 values the 95% interval is [min, max] of the values (see the module docstring)."""
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


def t_interval(values: np.ndarray, confidence: float = 0.95, axis: int = 0):
    """Student-t interval of the mean over `axis`, NaN-aware: mean -+ t_{n-1, 1-a/2} s / sqrt(n).

    s is the sample standard deviation (ddof 1) of the n finite values; NaN where n < 2. Exact for normal
    data and, unlike the percentile bootstrap, it widens as n falls (t_{1, 0.975} = 12.7, t_{2, 0.975} = 4.30).
    """
    values = np.moveaxis(np.asarray(values, dtype=float), axis, 0)
    n = np.sum(np.isfinite(values), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        sd = np.nanstd(values, axis=0, ddof=1)
        q = scipy.stats.t.ppf(1 - (1 - confidence) / 2, np.maximum(n - 1, 1))
    half = np.where(n >= 2, q * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean - half, mean + half


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """The result of `tost_welch`: difference of means x - y, its 1 - 2 alpha interval, and the TOST verdict."""

    difference: float
    low: float  # the 100 (1 - 2 alpha)% Welch interval of the difference
    high: float
    margin: float
    p_lower: float  # H0: difference <= -margin
    p_upper: float  # H0: difference >= +margin
    df: float
    alpha: float

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper)

    @property
    def equivalent(self) -> bool:
        return self.p < self.alpha


def tost_welch(x, y, margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided tests (Schuirmann 1987) of equivalence of two means within +-margin, Welch's t.

    d = mean(x) - mean(y), se = sqrt(s_x^2 / n_x + s_y^2 / n_y), Welch-Satterthwaite degrees of freedom
    df = se^4 / ((s_x^2/n_x)^2 / (n_x - 1) + (s_y^2/n_y)^2 / (n_y - 1)). H0: |mu_x - mu_y| >= margin is
    rejected at level alpha when both one-sided nulls are: p_lower = P(T_df >= (d + margin) / se) and
    p_upper = P(T_df <= (d - margin) / se) are below alpha, which is the same as the 100 (1 - 2 alpha)%
    interval d -+ t_{df, 1-alpha} se lying inside (-margin, margin). With few runs se is large and the test
    rarely concludes equivalence: "not shown equivalent" is not "shown different".
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or len(x) < 2 or len(y) < 2:
        raise ValueError(f"tost_welch needs two 1-D samples of at least 2 values each, got shapes {x.shape}, {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("tost_welch: the samples hold NaN or inf")
    if not margin > 0:
        raise ValueError(f"tost_welch: margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"tost_welch: alpha must be in (0, 0.5), got {alpha} (0.05 gives a 90% interval)")
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    d = float(x.mean() - y.mean())
    se = float(np.sqrt(vx + vy))
    if se == 0.0:  # both samples constant: the difference is known exactly
        inside = abs(d) < margin
        p = 0.0 if inside else 1.0
        return Equivalence(d, d, d, margin, p, p, math.inf, alpha)
    df = float((vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)))
    p_lower = float(scipy.stats.t.sf((d + margin) / se, df))
    p_upper = float(scipy.stats.t.cdf((d - margin) / se, df))
    half = float(scipy.stats.t.ppf(1 - alpha, df)) * se
    return Equivalence(d, d - half, d + half, margin, p_lower, p_upper, df, alpha)
