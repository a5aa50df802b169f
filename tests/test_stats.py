"""flowrl.analysis.stats: metrics and bootstraps against hand-computed cases (always) and against rliable called
directly (where rliable is installed; it is the reference, not a dependency of the pipeline)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flowrl.analysis import stats


# ----------------------------------------------------------------------------------- hand-computed metrics
def test_iqm_median_mean_gap_by_hand():
    # 8 runs on one task: IQM drops the lowest and highest quarter -> mean(3, 4, 5, 6) = 4.5
    assert stats.aggregate_iqm(np.arange(1.0, 9.0)[:, None]) == pytest.approx(4.5)
    # 4 runs x 2 tasks with an outlier: IQM uses the middle four of all eight scores (3, 4, 5, 6)
    assert stats.aggregate_iqm(np.array([[1.0, 100.0], [2.0, 7.0], [3.0, 6.0], [4.0, 5.0]])) == pytest.approx(4.5)
    # 3 runs x 2 tasks = 6 scores: floor(0.25 * 6) = 1 dropped at each end -> mean(2, 3, 4, 5)
    assert stats.aggregate_iqm(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 100.0]])) == pytest.approx(3.5)
    scores = np.array([[0.2, 0.4, 0.9], [0.4, 0.6, 0.1]])  # per-task means 0.3, 0.5, 0.5
    assert stats.aggregate_mean(scores) == pytest.approx((0.3 + 0.5 + 0.5) / 3)
    assert stats.aggregate_median(scores) == pytest.approx(0.5)
    two_tasks = np.array([[0.1, 0.8], [0.3, 0.6]])  # per-task means 0.2, 0.7: median of two = their mean
    assert stats.aggregate_median(two_tasks) == pytest.approx(0.45) == stats.aggregate_mean(two_tasks)
    # optimality gap with threshold 1: mean of 1 - min(score, 1) = (0.5 + 0 + 1 + 0) / 4
    assert stats.aggregate_optimality_gap(np.array([[0.5, 1.5], [0.0, 1.0]])) == pytest.approx(0.375)
    np.testing.assert_allclose(
        stats.aggregate_func(scores), [0.5, stats.aggregate_iqm(scores), 13 / 30, 1 - np.mean(scores)]
    )
    # IQM per step of a runs x tasks x steps array is the IQM of each step's runs x tasks slice
    curves = np.stack(
        [np.arange(1.0, 9.0).reshape(4, 2), np.array([[1.0, 100.0], [2.0, 7.0], [3.0, 6.0], [4.0, 5.0]])], axis=-1
    )
    np.testing.assert_allclose(stats.iqm_over_steps(curves), [4.5, 4.5])


def test_probability_of_improvement_by_hand():
    x = np.array([[3.0, 1.0], [4.0, 3.0]])  # task 0: x wins all 4 pairs; task 1: x = (1, 3) vs y = (2, 2) -> 2/4
    y = np.array([[1.0, 2.0], [2.0, 2.0]])
    assert stats.poi_statistic(x, y) == pytest.approx((1.0 + 0.5) / 2)
    assert stats.poi_statistic(y, x) == pytest.approx(1 - 0.75)
    assert stats.poi_statistic(x, x) == pytest.approx(0.5)
    # ties count one half: (1 vs 2) loses twice, (2 vs 2) ties twice -> (0 + 0.5 * 2) / 4
    assert stats.poi_statistic(np.array([[1.0], [2.0]]), np.array([[2.0], [2.0]])) == pytest.approx(0.25)
    # unequal run counts: 3 runs of X against 1 of Y, X wins 2 of the 3 pairs
    assert stats.poi_statistic(np.array([[5.0], [1.0], [7.0]]), np.array([[4.0]])) == pytest.approx(2 / 3)


def test_score_distribution_by_hand():
    scores = np.array([[0.1, 0.5], [0.9, 0.5]])
    np.testing.assert_allclose(stats.score_distribution(scores, [0.0, 0.3, 0.5, 0.95]), [1.0, 0.75, 0.25, 0.0])


# ----------------------------------------------------------------------------------- bootstraps, by hand
def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile written out (NumPy's default method)."""
    pos = q / 100 * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def test_stratified_bootstrap_by_hand_with_a_fixed_seed():
    scores = np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0]])  # 3 runs x 2 tasks
    reps, seed = 9, 3
    rs = np.random.RandomState(seed)  # rliable's stream after np.random.seed(seed): run indices per cell
    replicated = []
    for _ in range(reps):
        idx = rs.randint(0, 3, size=(3, 2))
        resample = [[scores[idx[i, t], t] for t in range(2)] for i in range(3)]
        replicated.append(sum(sum(row) for row in resample) / 6)  # the mean over runs and tasks
    expected = (_percentile(sorted(replicated), 2.5), _percentile(sorted(replicated), 97.5))
    point, interval = stats.stratified_bootstrap(scores, lambda b: b.mean(axis=(1, 2))[:, None], reps, seed)
    assert point[0] == pytest.approx(67 / 6)
    assert tuple(interval[:, 0]) == pytest.approx(expected, abs=1e-12)
    assert expected[0] < expected[1]  # the draws differ: a real interval, not a degenerate one


def test_independent_bootstrap_by_hand_with_a_fixed_seed():
    x = np.array([[3.0, 0.2], [1.0, 0.9], [4.0, 0.5], [2.5, 0.1]])  # 4 runs x 2 tasks
    y = np.array([[2.0, 0.4], [5.0, 0.3], [1.5, 0.8]])  # 3 runs x 2 tasks
    reps, seed = 25, 4
    rs = np.random.RandomState(seed)
    replicated = []
    for _ in range(reps):  # every replication draws X's run indices (per cell), then Y's
        ix, iy = rs.randint(0, 4, size=(4, 2)), rs.randint(0, 3, size=(3, 2))
        per_task = []
        for t in range(2):
            xs, ys = [x[i, t] for i in ix[:, t]], [y[j, t] for j in iy[:, t]]
            per_task.append(sum((a > b) + 0.5 * (a == b) for a in xs for b in ys) / 12)
        replicated.append(sum(per_task) / 2)
    replicated.sort()
    # task 0: 3 > 2, 1.5; 1 -; 4 > 2, 1.5; 2.5 > 2, 1.5 -> 6/12; task 1: 0.9 beats all 3, 0.5 beats 0.4, 0.3 -> 5/12
    for confidence in (0.5, 0.8, 0.95):
        point, interval = stats.independent_bootstrap(x, y, stats._poi_batched, reps, seed, confidence)
        assert point[0] == pytest.approx((6 / 12 + 5 / 12) / 2)
        alpha = (1 - confidence) / 2 * 100
        assert tuple(interval[:, 0]) == pytest.approx(
            (_percentile(replicated, alpha), _percentile(replicated, 100 - alpha)), abs=1e-12
        )


def test_bootstrap_mean_ci_by_hand_with_a_fixed_seed():
    values = np.array([2.0, 3.0, 7.0, 11.0])
    reps, seed = 13, 5
    idx = np.random.default_rng(seed).integers(0, 4, size=(reps, 4))
    means = sorted(sum(values[i] for i in row) / 4 for row in idx)
    low, high = stats.bootstrap_mean_ci(values[:, None], reps, seed)
    assert (low[0], high[0]) == pytest.approx((_percentile(means, 2.5), _percentile(means, 97.5)), abs=1e-12)


def test_small_n_percentile_interval_is_the_seed_range_and_the_t_interval_is_not():
    # n <= 3: the resampled mean equals the lowest (highest) value with probability n^-n >= 1/27 > 2.5%
    for values in ([1.0, 9.0], [1.0, 5.0, 9.0], [1.0, 1.5, 9.0]):
        v = np.array(values)
        low, high = stats.bootstrap_mean_ci(v[:, None], 2000, 0)
        assert (low[0], high[0]) == (min(values), max(values))
        _, interval = stats.stratified_bootstrap(v[:, None], lambda b: b.mean(axis=(1, 2))[:, None], 2000, 0)
        assert tuple(interval[:, 0]) == (min(values), max(values))
    # n = 8: 8^-8 is far below 2.5%, so the interval lies strictly inside the range
    v = np.arange(1.0, 9.0)
    low, high = stats.bootstrap_mean_ci(v[:, None], 2000, 0)
    assert 1.0 < low[0] < high[0] < 8.0
    # Student t, by hand: mean 2, s = 1, n = 3, t_{2, 0.975} = 4.302652729911275 (tables)
    t_low, t_high = stats.t_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729911275 / math.sqrt(3)
    assert (t_low, t_high) == pytest.approx((2 - half, 2 + half))
    assert t_low < 1.0 and t_high > 3.0  # wider than the seeds' range: the honest width for n = 3
    # NaN-aware along axis 0; fewer than two values: no interval
    lo, hi = stats.t_interval(np.array([[1.0, 4.0, np.nan], [3.0, np.nan, np.nan]]))
    assert lo[0] == pytest.approx(2 - 12.706204736174707)  # (1, 3): s = sqrt(2), n = 2, t_{1, 0.975} = 12.706...
    assert np.isnan(lo[1]) and np.isnan(hi[2])


def test_bootstrap_results_do_not_depend_on_chunking_and_leave_numpy_global_rng_alone(monkeypatch):
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, (4, 3))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    whole = stats.aggregate_metrics({"a": m}, reps=50, seed=1)
    taus = np.linspace(0, 1, 5)
    profile_whole = stats.performance_profiles({"a": m}, taus, reps=50, seed=1)[1]["a"]
    poi_whole = stats.probability_of_improvement({"a": m, "b": m[:2]}, [("a", "b")], reps=50, seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 7)  # a replication or two per chunk
    pd.testing.assert_frame_equal(stats.aggregate_metrics({"a": m}, reps=50, seed=1), whole)
    np.testing.assert_array_equal(stats.performance_profiles({"a": m}, taus, reps=50, seed=1)[1]["a"], profile_whole)
    pd.testing.assert_frame_equal(
        stats.probability_of_improvement({"a": m, "b": m[:2]}, [("a", "b")], reps=50, seed=1), poi_whole
    )
    other = stats.aggregate_metrics({"a": m}, reps=50, seed=2)
    assert not np.allclose(other["ci_low"], whole["ci_low"])  # the seed really drives the bootstrap


def test_bad_bootstrap_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one run"):
        stats.stratified_bootstrap(np.empty((0, 3)), stats._aggregates_batched, 10, 0)
    with pytest.raises(ValueError, match="runs x tasks"):
        stats.stratified_bootstrap(np.ones(3), stats._aggregates_batched, 10, 0)
    with pytest.raises(ValueError, match="same tasks"):
        stats.independent_bootstrap(np.ones((2, 3)), np.ones((2, 2)), stats._poi_batched, 10, 0)
    with pytest.raises(ValueError, match="confidence"):
        stats.stratified_bootstrap(np.ones((2, 2)), stats._aggregates_batched, 10, 0, confidence=1.5)


# ----------------------------------------------------------------------------------- against rliable
def test_aggregates_equal_rliable_called_directly():
    rly = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    matrices = {"a": rng.normal(0.6, 0.2, (5, 4)), "b": rng.normal(0.4, 0.2, (3, 4)), "c": rng.normal(0.5, 0.1, (2, 2))}
    ours = stats.aggregate_metrics(matrices, reps=300, seed=7)
    for algo, m in matrices.items():
        np.random.seed(7)  # rliable's random_state does not reach its resampling: it draws from the global RNG
        point, interval = rly.get_interval_estimates(
            {algo: m},
            lambda x: np.array(
                [
                    metrics.aggregate_median(x),
                    metrics.aggregate_iqm(x),
                    metrics.aggregate_mean(x),
                    metrics.aggregate_optimality_gap(x),
                ]
            ),
            reps=300,
        )
        rows = ours[ours["algo"] == algo].set_index("metric")
        for j, metric in enumerate(stats.METRICS):
            assert rows.loc[metric, "value"] == pytest.approx(point[algo][j], abs=1e-12)
            assert rows.loc[metric, "ci_low"] == pytest.approx(interval[algo][0, j], abs=1e-12)
            assert rows.loc[metric, "ci_high"] == pytest.approx(interval[algo][1, j], abs=1e-12)
        assert rows["n_runs"].iloc[0] == m.size
        for f_ours, f_rly in (
            (stats.aggregate_iqm, metrics.aggregate_iqm),
            (stats.aggregate_mean, metrics.aggregate_mean),
            (stats.aggregate_median, metrics.aggregate_median),
            (stats.aggregate_optimality_gap, metrics.aggregate_optimality_gap),
        ):
            assert f_ours(m) == pytest.approx(f_rly(m), abs=1e-12)


def test_probability_of_improvement_equals_rliable():
    rly = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(3)
    for _ in range(50):  # ties included
        a = rng.integers(0, 4, (rng.integers(1, 6), 3)).astype(float)
        b = rng.integers(0, 4, (rng.integers(1, 6), 3)).astype(float)
        assert stats.poi_statistic(a, b) == pytest.approx(metrics.probability_of_improvement(a, b), abs=1e-12)
    mats = {"a": rng.normal(1, 1, (5, 3)), "b": rng.normal(0, 1, (4, 3))}
    ours = stats.probability_of_improvement(mats, [("a", "b")], reps=200, seed=5).iloc[0]
    np.random.seed(5)
    point, interval = rly.get_interval_estimates(
        {"a,b": (mats["a"], mats["b"])}, metrics.probability_of_improvement, reps=200
    )
    assert ours["poi"] == pytest.approx(point["a,b"], abs=1e-12)
    assert [ours["ci_low"], ours["ci_high"]] == pytest.approx(np.ravel(interval["a,b"]).tolist(), abs=1e-12)


def test_performance_profile_and_sample_efficiency_equal_rliable():
    rly = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(1)
    m = rng.uniform(0, 1, (4, 3))
    taus = np.linspace(0, 1, 11)
    profiles, cis = stats.performance_profiles({"a": m}, taus, reps=100, seed=2)
    np.random.seed(2)
    p, c = rly.create_performance_profile({"a": m}, taus, reps=100)
    np.testing.assert_allclose(profiles["a"], p["a"])
    np.testing.assert_allclose(cis["a"], c["a"])
    curves = rng.uniform(0, 1, (4, 3, 6))
    points, intervals = stats.sample_efficiency({"a": curves}, reps=100, seed=2)
    np.random.seed(2)
    p, c = rly.get_interval_estimates(
        {"a": curves}, lambda s: np.array([metrics.aggregate_iqm(s[..., i]) for i in range(s.shape[-1])]), reps=100
    )
    np.testing.assert_allclose(points["a"], p["a"])
    np.testing.assert_allclose(intervals["a"], c["a"])
