"""Fidelity evidence: the equivalence test on final returns, the learning-curve report, the official runner.

The runner itself (bench/official_run.py) needs a checkout of github bytedance/FlowRL, which this repository
does not ship: set FLOWRL_OFFICIAL=/path/to/FlowRL to run a short official training through it. Its refusals
(no checkout, an existing run) are tested always.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from flowrl.analysis.stats import tost_welch

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = os.environ.get("FLOWRL_OFFICIAL")


# ------------------------------------------------------------------------------------------ TOST
def test_tost_by_hand():
    # x = 1, 2, 3; y = 2, 3, 4: d = -1, s^2 = 1 each, se = sqrt(2/3), Welch df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    eq = tost_welch([1, 2, 3], [2, 3, 4], margin=2.0)
    se = math.sqrt(2 / 3)
    assert eq.difference == pytest.approx(-1.0)
    assert eq.df == pytest.approx(4.0)
    assert eq.p_lower == pytest.approx(scipy.stats.t.sf(1 / se, 4))  # (d + margin) / se = 1 / se
    assert eq.p_upper == pytest.approx(scipy.stats.t.cdf(-3 / se, 4))  # (d - margin) / se = -3 / se
    assert eq.low == pytest.approx(-1 - 2.131847 * se, rel=1e-6)  # t_{4, 0.95} = 2.131847
    assert eq.p == eq.p_lower and not eq.equivalent  # 0.14: three seeds cannot show a margin of 2 here


def test_tost_agrees_with_shifted_one_sided_welch_tests():
    rng = np.random.default_rng(0)
    x, y = rng.normal(800, 40, 5), rng.normal(780, 60, 4)
    eq = tost_welch(x, y, margin=100)
    lower = scipy.stats.ttest_ind(x + 100, y, equal_var=False, alternative="greater").pvalue
    upper = scipy.stats.ttest_ind(x - 100, y, equal_var=False, alternative="less").pvalue
    assert eq.p_lower == pytest.approx(lower) and eq.p_upper == pytest.approx(upper)
    # equivalence at alpha <=> the 90% interval inside (-margin, margin)
    assert eq.equivalent == (-100 < eq.low and eq.high < 100)


def test_tost_concludes_equivalence_only_when_the_interval_fits():
    assert tost_welch([800, 801, 799, 800], [802, 798, 800, 801], margin=10).equivalent
    assert not tost_welch([800, 801, 799, 800], [702, 698, 700, 701], margin=10).equivalent
    with pytest.raises(ValueError, match="at least 2 values"):
        tost_welch([1.0], [1.0, 2.0], margin=1)
    # constant samples: the difference is known exactly
    assert tost_welch([5.0, 5.0], [7.0, 7.0], margin=3).equivalent
    assert not tost_welch([5.0, 5.0], [9.0, 9.0], margin=3).equivalent
    with pytest.raises(ValueError, match="alpha must be in"):
        tost_welch([1.0, 2.0], [1.0, 2.0], margin=1, alpha=0.5)
    with pytest.raises(ValueError, match="margin must be > 0"):
        tost_welch([1.0, 2.0], [1.0, 2.0], margin=0)


# --------------------------------------------------------------------------------- curve report
def _run_dir(
    root: Path, task: str, side: str, seed: int, returns: list[float], done: bool = True, at_start: bool = False
) -> None:
    """A finished (or not) run directory; `at_start`: the first return is an evaluation at step 0 (ours' default)."""
    run = root / task / side / f"seed{seed}"
    run.mkdir(parents=True)
    steps = [5000 * (i + 1 - at_start) for i in range(len(returns))]
    pd.DataFrame(
        {
            "step": steps,
            "return_mean": returns,
            "return_std": 0.0,
            "success_mean": "",
            "episodes": 5,
            "wall_time": [10.0 * (i + 1) for i in range(len(returns))],
        }
    ).to_csv(run / "eval.csv", index=False)
    if done:
        (run / "DONE").write_text(json.dumps({"steps": steps[-1]}))


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """python bench/<script> ARGS with this checkout importable; stdout and stderr captured apart."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def _report(*args):
    return _bench("fidelity_report.py", *args)


@pytest.mark.subprocess
def test_report_tables_statistics_and_figure(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed, (mid, end) in enumerate([(400, 810), (500, 820), (450, 830)]):
        _run_dir(runs, "cartpole-swingup", "ours", seed, [0, 100, mid, end], at_start=True)
    for seed, (mid, end) in enumerate([(300, 800), (600, 840), (420, 790)]):
        _run_dir(runs, "cartpole-swingup", "official", seed, [90, mid, end])
    _run_dir(runs, "cartpole-swingup", "official", 3, [95, 200], done=False)  # unfinished: left out, named
    proc = _report("--runs", str(runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert (row.ours_seeds, row.official_seeds, row.final_step) == (3, 3, 15000)
    assert row.ours_final_mean == 820.0 and row.official_final_mean == pytest.approx(810.0)
    eq = tost_welch([810, 820, 830], [800, 840, 790], margin=100)
    assert row.difference == pytest.approx(round(eq.difference, 1))
    assert row.tost_p == pytest.approx(round(eq.p, 4)) and bool(row.equivalent) == eq.equivalent
    # At the steps both evaluated (not ours' step 0), ours' means 100, 450, 820 against the official ranges
    # [90, 90], [300, 600], [790, 840]: outside at the first
    assert (row.steps_inside_envelope, row.steps) == (2, 3)
    curves = pd.read_csv(out / "cartpole-swingup.csv")
    assert len(curves) == 21 and set(curves.implementation) == {"ours", "official"}
    assert (out / "curves.png").stat().st_size > 10_000
    assert "seed3 (no DONE: unfinished)" in (out / "summary.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == 6 and report["margin"] == 100
    assert "manifest.json" in report["runs"][-1]["error"]  # these made-up runs have no provenance; it says so


@pytest.mark.subprocess
def test_report_keeps_tasks_whose_runs_are_gone(tmp_path):
    out = tmp_path / "out"
    for seed, end in enumerate([810, 820, 830]):  # full-precision returns, as the runs write them
        _run_dir(tmp_path / "a", "cartpole-swingup", "ours", seed, [100 / 3, end + 1 / 7])
        _run_dir(tmp_path / "a", "cartpole-swingup", "official", seed, [90 + 2 / 3, end - 20 + 3**0.5])
    assert _report("--runs", str(tmp_path / "a"), "--out", str(out)).returncode == 0
    first_curves = (out / "cartpole-swingup.csv").read_text()
    first_row = pd.read_csv(out / "summary.csv").iloc[0]
    # A later report of another task, from a runs folder without cartpole's run directories
    for seed, end in enumerate([600, 650]):
        _run_dir(tmp_path / "b", "walker-stand", "ours", seed, [200, 400, end])
        _run_dir(tmp_path / "b", "walker-stand", "official", seed, [210, 380, end + 10])
    _run_dir(tmp_path / "b", "cartpole-swingup", "ours", 7, [50], done=False)  # unfinished: cartpole is still kept
    proc = _report("--runs", str(tmp_path / "b"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert _report("--runs", str(tmp_path / "b"), "--out", str(out)).returncode == 0  # again: nothing piles up
    left_out = json.loads((out / "report.json").read_text())["left_out"]
    assert len(left_out) == 1 and "cartpole-swingup/ours/seed7 (no DONE: unfinished)" in left_out[0]
    assert f"kept from {out}: cartpole-swingup (no finished run of it under" in proc.stdout
    summary = pd.read_csv(out / "summary.csv").set_index("task")
    assert list(summary.index) == ["cartpole-swingup", "walker-stand"]
    kept = summary.loc["cartpole-swingup"]
    assert (kept.ours_final_mean, kept.official_final_mean, kept.tost_p) == (
        first_row.ours_final_mean,
        first_row.official_final_mean,
        first_row.tost_p,
    )
    assert summary.loc["walker-stand"].ours_final_mean == 625.0
    assert (out / "cartpole-swingup.csv").read_text() == first_curves
    runs = [r["run"] for r in json.loads((out / "report.json").read_text())["runs"]]
    assert sorted(runs) == sorted(
        [f"walker-stand/{s}/seed{k}" for s in ("ours", "official") for k in (0, 1)]
        + [f"cartpole-swingup/{s}/seed{k}" for s in ("ours", "official") for k in (0, 1, 2)]
    )
    # A damaged report.json (the kept task's provenance) is refused, not silently dropped
    report_json = (out / "report.json").read_text()
    (out / "report.json").write_text(report_json[:40])
    proc = _report("--runs", str(tmp_path / "b"), "--out", str(out))
    assert proc.returncode != 0 and "report.json" in proc.stderr and "restore it from git" in proc.stderr
    (out / "report.json").write_text(report_json)
    # Deleting a task's curve table drops it from the next report
    (out / "cartpole-swingup.csv").unlink()
    assert _report("--runs", str(tmp_path / "b"), "--out", str(out)).returncode == 0
    assert list(pd.read_csv(out / "summary.csv")["task"]) == ["walker-stand"]
    # A damaged curve table is refused, not silently dropped or misread
    (out / "walker-stand.csv").write_text("task,step\nwalker-stand,5\n")
    (out / "summary.csv").write_text("task\nwalker-stand\n")
    proc = _report("--runs", str(tmp_path / "a"), "--out", str(out))
    assert proc.returncode != 0 and "walker-stand.csv: not a curve table" in proc.stderr


@pytest.mark.subprocess
def test_report_refuses_runs_of_different_budgets(tmp_path):
    for seed in (0, 1):
        _run_dir(tmp_path / "runs", "walker-stand", "ours", seed, [100, 200, 300])
        _run_dir(tmp_path / "runs", "walker-stand", "official", seed, [100, 200 + 300 * seed][: 1 + seed])
    proc = _report("--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0 and not (tmp_path / "out").exists()
    assert "walker-stand: the runs end at different steps (" in proc.stderr and "official seed0: 5000" in proc.stderr


@pytest.mark.subprocess
def test_report_refuses_a_task_with_fewer_than_two_runs_per_side(tmp_path):
    _run_dir(tmp_path / "runs", "walker-stand", "ours", 0, [100, 200])
    _run_dir(tmp_path / "runs", "walker-stand", "ours", 1, [100, 200])
    _run_dir(tmp_path / "runs", "walker-stand", "official", 0, [100, 200])
    proc = _report("--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "needs >= 2 finished runs of each side, got ours 2, official 1" in proc.stderr


# ------------------------------------------------------------------------------- official runner
def _official_run(*args):
    return _bench("official_run.py", *args)


@pytest.mark.subprocess
def test_official_runner_refuses_what_it_cannot_use(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval.csv").write_text("step,return_mean\n5000,1.0\n")
    proc = _official_run("--official", str(tmp_path), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "eval.csv exists; this would overwrite" in proc.stderr
    assert (tmp_path / "run" / "eval.csv").read_text() == "step,return_mean\n5000,1.0\n"
    proc = _official_run("--official", str(tmp_path), "--out", str(tmp_path / "new"))
    assert proc.returncode == 2, proc.stderr
    assert "is not a checkout of github bytedance/FlowRL" in proc.stderr and "git clone" in proc.stderr
    assert not (tmp_path / "new" / "eval.csv").exists()
    proc = _official_run("--official", str(tmp_path), "--eval-every", "500", "--out", str(tmp_path / "new"))
    assert proc.returncode == 2 and "must be a multiple of 1000: the official loop evaluates on its" in proc.stderr


@pytest.mark.subprocess
@pytest.mark.skipif(
    not OFFICIAL,
    reason="set FLOWRL_OFFICIAL to a checkout of github bytedance/FlowRL "
    "(git clone https://github.com/bytedance/FlowRL) to train it through bench/official_run.py",
)
def test_official_runner_trains_the_official_loop_and_records_its_evaluations(tmp_path):
    out = tmp_path / "official" / "seed0"
    proc = _official_run(
        "--official",
        OFFICIAL,
        "--task",
        "dmc:cartpole-balance",
        "--steps",
        "2000",
        "--eval-every",
        "1000",
        "--eval-episodes",
        "1",
        "--start-steps",
        "500",
        "--hidden",
        "32",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    evals = pd.read_csv(out / "eval.csv")
    assert evals["step"].tolist() == [1000, 2000]  # the official schedule: no step-0 evaluation
    assert (evals["return_mean"] > 0).all() and (evals["episodes"] == 1).all()
    meta = json.loads((out / "official-run.json").read_text())
    assert meta["config"]["hidden_size"] == 32 and meta["config"]["quantile"] == 0.9
    assert (out / "DONE").is_file()
    assert list((out / "results").rglob("config.log"))  # main.py's own record of its settings
