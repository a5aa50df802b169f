"""Results pipeline: normalisation, alignment, missing-run report, tables, figures, summary and reference import,
on small synthetic studies written to tmp_path (the statistics themselves: tests/test_stats.py)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from flowrl.analysis.alignment import align_to_grid, make_grid, thin_grid
from flowrl.analysis.cli import main as cli_main
from flowrl.analysis.expected import ExpectedStudy, load_expected, missing_report, print_missing, target_steps
from flowrl.analysis.figures import (
    NO_COMPARISON_COLOUR,
    POI_CMAP,
    curve_band,
    curve_grid_size,
    ordered_handles,
    poi_matrix,
    poi_matrix_colours,
)
from flowrl.analysis.normalise import NormalisationError, load_normalisation
from flowrl.analysis.palette import ALGO_COLOURS, algo_order, build_palette
from flowrl.analysis.pipeline import AnalysisConfig, ablation_families, analyse, gather, run_analysis
from flowrl.analysis.plotting import duration_unit, format_duration, pixel_size
from flowrl.analysis.references import load_references
from flowrl.analysis.runs import AnalysisError, hardware_of, load_runs
from flowrl.analysis.scores import build_score_set, final_scores
from flowrl.analysis.tasks import group_of, map_external_task, return_bounds
from flowrl.analysis.tidy import add_scores, runs_to_tidy


# ----------------------------------------------------------------------------------- synthetic runs
def write_run(
    root: Path,
    algo: str,
    task: str,
    seed: int,
    steps: int,
    eval_every: int,
    returns=None,
    done: bool = True,
    upto: int | None = None,
    level: float = 500.0,
) -> Path:
    """A run directory in the docs/run-format.md layout with a linear-ish learning curve."""
    d = root / task.replace(":", "_") / algo / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "algo": algo,
                "task": task,
                "seed": seed,
                "steps": steps,
                "eval_every": eval_every,
                "agent": {"hidden_dim": 16},
            }
        )
    )
    grid = make_grid(eval_every, steps)
    if upto is not None:
        grid = grid[grid <= upto]
    if returns is None:
        rng = np.random.default_rng(hash((algo, task, seed)) % 2**32)
        returns = level * grid / steps + rng.normal(0, 10, grid.size)
    rows = ["step,return_mean,return_std,success_mean,episodes,wall_time"]
    rows += [f"{s},{r},1.0,,5,{s / 10}" for s, r in zip(grid, returns)]
    (d / "eval.csv").write_text("\n".join(rows) + "\n")
    (d / "manifest.json").write_text("{}")
    if done:
        (d / "DONE").write_text(json.dumps({"steps": steps}))
    return d


@pytest.fixture
def small_study(tmp_path):
    """2 main algorithms + 1 ablation variant, 3 tasks (DMC easy, DMC hard, HB), 3 seeds; sac's third seed on
    cheetah is unfinished and td3 has fewer seeds."""
    root = tmp_path / "runs"
    for algo, level in (("flowrl", 800), ("sac", 500), ("flowrl-no-w2", 600)):
        for task in ("dmc:cheetah-run", "dmc:dog-run", "hb:h1hand-walk-v0"):
            for seed in range(3):
                unfinished = algo == "sac" and task == "dmc:cheetah-run" and seed == 2
                write_run(
                    root,
                    algo,
                    task,
                    seed,
                    1000,
                    200 if algo != "sac" else 100,
                    level=level,
                    done=not unfinished,
                    upto=500 if unfinished else None,
                )
    for task in ("dmc:cheetah-run", "dmc:dog-run", "hb:h1hand-walk-v0"):
        for seed in range(2):
            write_run(root, "td3", task, seed, 1000, 250, level=400)
    return root


# ----------------------------------------------------------------------------------- normalisation
def test_default_normalisation():
    norm = load_normalisation(None)
    tasks = ["dmc:cheetah-run", "hb:h1hand-walk-v0", "hb:h1hand-walk-v0", "gym:Humanoid-v5", "hb:g1-walk-v0"]
    scores = norm.scores(tasks, [500.0, 700.0, 2.505, 3000.0, 700.0])
    assert scores[0] == pytest.approx(0.5)
    assert scores[1] == pytest.approx(1.0)  # HumanoidBench success bar of walk is 700
    assert scores[2] == pytest.approx(0.0)  # SimbaV2's random return for h1hand-walk-v0
    assert np.isnan(scores[3]) and np.isnan(scores[4])  # gym: none by default; g1: no published random score
    assert norm.rule_for("hb:h1-run-v0").target == 700 and norm.rule_for("hb:h1-run-v0").random == pytest.approx(2.02)
    assert norm.rule_for("hb:h1hand-kitchen-v0").target == 4
    assert norm.is_normalised("dmc:dog-run") and not norm.is_normalised("gym:Humanoid-v5")


def test_normalisation_yaml_override(tmp_path):
    path = tmp_path / "norm.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "suites": {"gym": {"method": "divide", "scale": 100}},
                "tasks": {"hb:g1-walk-v0": {"random": 10, "target": 110}, "dmc:cheetah-run": {"method": "raw"}},
            }
        )
    )
    norm = load_normalisation(path)
    scores = norm.scores(["gym:Hopper-v5", "hb:g1-walk-v0", "dmc:cheetah-run", "dmc:dog-run"], [250, 60, 321, 500])
    np.testing.assert_allclose(scores, [2.5, 0.5, 321, 0.5])
    for bad, message in (
        ({"suites": {"gym": {"method": "divide"}}}, "scale"),
        ({"suites": {"gym": {"method": "zscore"}}}, "not one of"),
        ({"suites": {"atari": {"method": "raw"}}}, "unknown suite"),
        ({"tasks": {"hb:g1-walk-v0": {"random": 1}}}, "random"),
        ({"norms": {}}, "top-level"),
    ):
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(NormalisationError, match=message):
            load_normalisation(path)


# ----------------------------------------------------------------------------------- alignment
def test_alignment_of_different_step_grids():
    grid = np.array([0, 10, 20, 30, 40])
    a = align_to_grid([0, 10, 20, 30, 40], [0, 1, 2, 3, 4], grid)
    b = align_to_grid([0, 15, 30], [0.0, 1.5, 3.0], grid)  # coarser, offset grid
    c = align_to_grid([5, 25], [0.5, 2.5], grid)  # starts late, stops early
    np.testing.assert_array_equal(a, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b, [0, 0, 1.5, 3.0, np.nan])  # last eval at or before; never past 30
    np.testing.assert_array_equal(c, [np.nan, 0.5, 0.5, np.nan, np.nan])
    with pytest.raises(ValueError):
        align_to_grid([10, 0], [1, 2], grid)
    np.testing.assert_array_equal(make_grid(300, 1000), [0, 300, 600, 900, 1000])
    thinned = thin_grid(make_grid(1, 100), 5)
    assert thinned[0] == 0 and thinned[-1] == 100 and thinned.size == 5


# ----------------------------------------------------------------------------------- missing runs
def test_missing_run_report(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "a", "dmc:cheetah-run", 0, 100, 50)
    write_run(root, "a", "dmc:cheetah-run", 1, 100, 10, done=False, upto=40)
    write_run(root, "b", "dmc:cheetah-run", 0, 60, 20)  # finished, but a smaller budget than expected
    bad = root / "broken"
    bad.mkdir()
    (bad / "config.yaml").write_text(yaml.safe_dump({"algo": "b", "task": "dmc:cheetah-run", "seed": 5, "steps": 100}))
    expect = tmp_path / "expect.yaml"
    expect.write_text(yaml.safe_dump({"algos": ["a", "b"], "tasks": ["dmc:cheetah-run"], "seeds": 2, "steps": 100}))
    records, _ = load_runs([root])
    expected = load_expected(expect)
    report = missing_report(records, expected, target_steps(expected, records))
    status = {(r.algo, r.seed): (r.status, r.last_step) for r in report.itertuples()}
    assert status[("a", 1)] == ("unfinished", 40)
    assert status[("b", 0)] == ("short", 60)
    assert status[("b", 1)][0] == "missing"
    assert status[("b", 5)][0] == "unusable"  # no eval.csv
    assert ("a", 0) not in status
    print_missing(report)
    err = capsys.readouterr().err
    assert "unfinished algo=a task=dmc:cheetah-run seed=1 reached step 40" in err
    assert "missing    algo=b task=dmc:cheetah-run seed=1" in err
    tidy, missing = gather([root], tmp_path / "out", expect=expect, quiet=True)
    assert (tmp_path / "out" / "missing_runs.csv").exists()
    assert len(pd.read_csv(tmp_path / "out" / "missing_runs.csv")) == len(report) == 4
    assert set(tidy["algo"]) == {"a", "b"}
    with pytest.raises(AnalysisError, match="steps has no entry"):
        ExpectedStudy.from_mapping({"algos": ["a"], "tasks": ["dmc:x-y"], "seeds": [0], "steps": {"dmc:z-w": 1}})


def test_duplicates_are_an_error_and_force_backups_are_skipped(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "a", "dmc:cheetah-run", 0, 100, 50)
    backup = root / "old" / "seed0.replaced-20250101-000000"
    backup.mkdir(parents=True)
    (backup / "config.yaml").write_text(
        yaml.safe_dump({"algo": "a", "task": "dmc:cheetah-run", "seed": 0, "steps": 100})
    )
    records, backups = load_runs([root])
    assert len(records) == 1 and backups == [backup]
    write_run(root / "copy", "a", "dmc:cheetah-run", 0, 100, 50)
    with pytest.raises(AnalysisError, match="more than one run directory"):
        load_runs([root])


def test_unequal_seed_counts_use_the_lowest_seeds(small_study):
    records, _ = load_runs([small_study])
    tidy = add_scores(runs_to_tidy(records), load_normalisation(None))
    final = final_scores(tidy, {t: 1000 for t in tidy["task"].unique()})
    assert not final[(final["algo"] == "sac") & (final["seed"] == 2) & (final["task"] == "dmc:cheetah-run")][
        "counted"
    ].any()
    s = build_score_set(final, ["flowrl", "sac", "td3"], sorted(tidy["task"].unique()), "all")
    assert s.matrices["flowrl"].shape == (3, 3)
    assert s.matrices["sac"].shape == (2, 3)  # one cheetah seed unfinished -> 2 runs on every task
    assert s.seeds["sac"]["dmc:dog-run"] == [0, 1]
    assert s.matrices["td3"].shape == (2, 3)
    assert any("sac: 2 run(s) per task used" in n for n in s.notes)
    expected = final[(final["algo"] == "sac") & (final["task"] == "dmc:dog-run") & final["seed"].isin([0, 1])]
    np.testing.assert_allclose(np.sort(s.matrices["sac"][:, s.tasks.index("dmc:dog-run")]), np.sort(expected["score"]))


# ----------------------------------------------------------------------------------- references
def test_reference_import_both_formats(tmp_path):
    tdmpc = tmp_path / "tdmpc2_results"
    (tdmpc / "sac").mkdir(parents=True)
    (tdmpc / "tdmpc2").mkdir()
    (tdmpc / "sac" / "dog-run.csv").write_text("step,reward,seed\n0,5.0,1\n100000,50.0,1\n0,6.0,2\n100000,70.0,2\n")
    (tdmpc / "tdmpc2" / "cup-catch.csv").write_text("step,reward,seed\n0,1.0,1\n100000,900.0,1\n")
    (tdmpc / "tdmpc2" / "mw-push.csv").write_text("step,success,seed\n0,0.0,1\n")
    simba = tmp_path / "simba.csv"
    simba.write_text(
        ",exp_name,env_name,seed,metric,env_step,value\n"
        "0,sac_simba,h1_walk_v0,9000,avg_return,0.0,2.0\n"
        "1,sac_simba,h1_walk_v0,9000,avg_success,0.0,0.0\n"
        "2,sac_simba,h1_walk_v0,9000,avg_return,50000.0,300.0\n"
        "3,sac_simba,dog_run,4000,avg_return,50000.0,40.0\n"
        "4,sac_simba,dog_run,4000,unique_coordinates,50000.0,3.0\n"
    )
    ref, notes = load_references([tdmpc, simba])
    assert ref["reference"].all()
    got = {(r.algo, r.task, r.seed, r.step): r["return"] for _, r in ref.iterrows() for r in [r]}
    assert got[("sac", "dmc:dog-run", 2, 100000)] == 70.0
    assert got[("tdmpc2", "dmc:ball_in_cup-catch", 1, 100000)] == 900.0
    assert got[("sac_simba", "hb:h1-walk-v0", 9000, 50000)] == 300.0
    assert got[("sac_simba", "dmc:dog-run", 4000, 50000)] == 40.0
    walk0 = ref[(ref["task"] == "hb:h1-walk-v0") & (ref["step"] == 0)]
    assert walk0["success"].iloc[0] == 0.0 and walk0["return"].iloc[0] == 2.0
    assert any("mw-push" in n for n in notes)  # Meta-World has no equivalent here: skipped loudly
    only, notes = load_references([tdmpc, simba], study_tasks={"dmc:dog-run"})
    assert set(only["task"]) == {"dmc:dog-run"} and any("outside this study" in n for n in notes)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(AnalysisError, match="unrecognised columns"):
        load_references([bad])


def test_reference_steps_are_environment_steps_at_action_repeat_1(tmp_path, monkeypatch):
    """Both published formats already count simulator steps (their agents repeat each action twice); the
    conversion is applied to every row, says where each project defines its count, and the axis says the unit."""
    from flowrl.analysis import figures, references

    assert {fmt: u.env_steps_per_unit for fmt, u in references.STEP_UNITS.items()} == {"tdmpc2": 1.0, "simba": 1.0}
    assert (
        "issue #45" in references.STEP_UNITS["tdmpc2"].defined_in
        and "run.py" in references.STEP_UNITS["simba"].defined_in
    )
    (tmp_path / "sac").mkdir()
    (tmp_path / "sac" / "dog-run.csv").write_text("step,reward,seed\n0,5.0,1\n100000,50.0,1\n")
    (tmp_path / "simba.csv").write_text(
        "exp_name,env_name,seed,metric,env_step,value\nsac_simba,dog_run,4000,avg_return,50000.0,40.0\n"
    )
    ref, notes = load_references([tmp_path])
    assert sorted(ref["step"]) == [0, 50000, 100000] and ref["step"].dtype == "int64"
    assert any(n.startswith("tdmpc2 steps count simulator steps") and "x1 to environment steps" in n for n in notes)
    assert any(n.startswith("simba steps count simulator steps") for n in notes)
    # A format whose column counted agent decisions at action repeat 2 would be doubled, row by row:
    monkeypatch.setitem(references.STEP_UNITS, "tdmpc2", references.StepUnit("agent decisions", 2.0, "test"))
    doubled, _ = load_references([tmp_path / "sac"])
    assert sorted(doubled["step"]) == [0, 200000]
    assert figures.STEP_AXIS == "Environment steps (action repeat 1)"
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "eval.csv").write_text("step,episode_reward\n0,1.0\n")
    with pytest.raises(AnalysisError, match="counts agent decisions"):
        load_references([tmp_path / "log"])


def test_external_task_names_map_to_ours():
    cases = {
        "dog-run": "dmc:dog-run",
        "dog_run": "dmc:dog-run",
        "cup-catch": "dmc:ball_in_cup-catch",
        "finger-turn-easy": "dmc:finger-turn_easy",
        "finger-turn_hard": "dmc:finger-turn_hard",
        "cartpole_balance_sparse": "dmc:cartpole-balance_sparse",
        "ball_in_cup-catch": "dmc:ball_in_cup-catch",
        "h1-walk-v0": "hb:h1-walk-v0",
        "h1_sit_simple_v0": "hb:h1-sit_simple-v0",
        "h1hand-sit_simple-v0": "hb:h1hand-sit_simple-v0",
        "h1strong-highbar-hard-v0": "hb:h1strong-highbar_hard-v0",
        "Humanoid-v4": "gym:Humanoid-v4",
        "mw-push": None,
        "myo-key-turn": None,
        "dmc:dog-run": "dmc:dog-run",
    }
    for name, expected in cases.items():
        assert map_external_task(name) == expected, name
    assert group_of("dmc:dog-run") == "DMC hard" and group_of("dmc:cheetah-run") == "DMC easy"
    assert ablation_families(["flowrl", "flowrl-no-w2", "flowrl-steps5", "sac"]) == {
        "flowrl": ["flowrl", "flowrl-no-w2", "flowrl-steps5"]
    }


# ----------------------------------------------------------------------------------- figure rules
def test_time_axes_choose_their_unit_by_magnitude():
    assert duration_unit(0.0005) == ("milliseconds", 1e-3) and duration_unit(1.5)[0] == "milliseconds"
    assert duration_unit(2.0) == ("seconds", 1.0) and duration_unit(119.0)[0] == "seconds"
    assert duration_unit(120.0) == ("minutes", 60.0) and duration_unit(7100.0)[0] == "minutes"
    assert duration_unit(7200.0) == ("hours", 3600.0) and duration_unit(30 * 3600.0)[0] == "hours"
    assert format_duration(372.0) == "6.2 min" and format_duration(45.0) == "45 s"
    assert format_duration(3 * 3600.0) == "3 h" and format_duration(0.0004) == "0.4 ms"


def test_return_bands_stop_at_the_tasks_possible_returns():
    df = pd.DataFrame(
        {
            "mean": [10.0, 990.0],
            "std": [30.0, 30.0],
            "t_low": [-50.0, 900.0],
            "t_high": [60.0, 1100.0],
            "ci_low": [-1.0, 980.0],
            "ci_high": [20.0, 1001.0],
        }
    )
    assert return_bounds("dmc:cheetah-run") == (0.0, 1000.0)
    low, high = curve_band(df, "std", return_bounds("dmc:cheetah-run"))
    np.testing.assert_array_equal(low, [0.0, 960.0])  # 10 - 30 would be a return no DMC episode can have
    np.testing.assert_array_equal(high, [40.0, 1000.0])
    low, high = curve_band(df, "t", return_bounds("dmc:cheetah-run"))
    np.testing.assert_array_equal(low, [0.0, 900.0])
    np.testing.assert_array_equal(high, [60.0, 1000.0])
    low, _ = curve_band(df, "ci", return_bounds("dmc:cheetah-run"))
    np.testing.assert_array_equal(low, [0.0, 980.0])
    for task in ("gym:Hopper-v5", "hb:h1hand-walk-v0", "dmc:lqr-lqr_2_1"):  # no fixed range: nothing is cut
        low, high = curve_band(df, "std", return_bounds(task))
        np.testing.assert_array_equal(low, [-20.0, 960.0])
        np.testing.assert_array_equal(high, [40.0, 1020.0])
    with pytest.raises(ValueError, match="band must be one of"):
        curve_band(df, "iqr", return_bounds("dmc:cheetah-run"))


def test_poi_matrix_diagonal_is_not_the_colour_of_one_half():
    poi = pd.DataFrame(
        {
            "algo_x": ["sac", "flowrl", "flowrl", "td3"],
            "algo_y": ["flowrl", "sac", "td3", "flowrl"],
            "poi": [0.2, 0.8, 0.5, 0.5],
            "ci_low": [0.1, 0.7, 0.3, 0.3],
            "ci_high": [0.3, 0.9, 0.7, 0.7],
        }
    )
    algos, matrix, cis = poi_matrix(poi, ["flowrl", "sac", "td3"])
    assert algos == ["flowrl", "sac", "td3"] and matrix[0, 1] == 0.8 and cis[1, 0] == (0.1, 0.3)
    colours = poi_matrix_colours(matrix)
    half = matplotlib.colormaps[POI_CMAP](0.5)
    grey = matplotlib.colors.to_rgba(NO_COMPARISON_COLOUR)
    np.testing.assert_allclose(colours[0, 2], half)  # a real P = 0.5 gets the colour map's middle
    for i in range(3):
        np.testing.assert_allclose(colours[i, i], grey)  # X against itself: no comparison, not 0.5
    assert np.abs(np.array(grey) - np.array(half)).max() > 0.3
    np.testing.assert_allclose(colours[1, 2], grey)  # sac vs td3 was not compared either


def test_one_palette_and_one_legend_order():
    palette = build_palette(["zeta", "td3", "flowrl", "alpha", "sac"])
    assert palette["flowrl"] == ALGO_COLOURS["flowrl"] and palette["sac"] == ALGO_COLOURS["sac"]
    assert len(set(palette.values())) == len(palette)  # distinct colours
    assert build_palette(["alpha", "sac", "zeta", "flowrl", "td3"]) == palette  # order of appearance does not matter
    assert algo_order(["td3", "sac", "flowrl-no-w2", "flowrl"]) == ["flowrl", "flowrl-no-w2", "sac", "td3"]
    # legend entries in the fixed order, whichever task drew an algorithm first; a reference after its algorithm
    handles = {"td3": "T", "flowrl (reference)": "R", "sac": "S", "flowrl": "F", "other": "O"}
    assert ordered_handles(handles, ["flowrl", "sac", "td3"]) == ["F", "R", "S", "T", "O"]


# ----------------------------------------------------------------------------------- end to end
def _png_ok(path: Path, expected_size: tuple[int, int] | None = None) -> None:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # something was drawn
    if expected_size:
        assert (img.shape[1], img.shape[0]) == expected_size


def test_small_study_end_to_end(small_study, tmp_path):
    manifest = {
        "device": "cpu",
        "cpu_count": 2,
        "torch_threads": 1,
        "host": "n1",
        "sessions": [{"host": "n1"}, {"host": "n2"}],
    }  # resumed on another node
    (small_study / "dmc_cheetah-run" / "flowrl" / "seed0" / "manifest.json").write_text(json.dumps(manifest))
    refs = tmp_path / "refs" / "sac"
    refs.mkdir(parents=True)
    (refs / "dog-run.csv").write_text("step,reward,seed\n0,5,1\n500,200,1\n1000,300,1\n5000,900,1\n")
    timing = tmp_path / "timing.csv"
    timing.write_text("algo,task,train_hours,inference_ms\nflowrl,dmc:dog-run,2.0,0.5\nsac,dmc:dog-run,1.0,0.3\n")
    out = tmp_path / "out"
    result = analyse(runs=[small_study], out=out, reps=60, seed=1, references=[tmp_path / "refs"], timing=timing)

    for rel in (
        "tidy.csv",
        "tidy.parquet",
        "missing_runs.csv",
        "summary.md",
        "tables/aggregate.tex",
        "tables/per_task_final.md",
        "tables/probability_of_improvement.csv",
        "tables/curves_per_task.csv",
    ):
        assert (out / rel).exists(), rel
    tidy = pd.read_parquet(out / "tidy.parquet")
    assert {"algo", "task", "suite", "seed", "step", "return", "success", "score", "reference"} <= set(tidy.columns)
    assert tidy.loc[tidy["reference"], "algo"].unique().tolist() == ["sac"]
    assert tidy.loc[tidy["reference"], "step"].max() == 5000
    # references never enter the statistics
    assert len(result.aggregates[result.aggregates["set"] == "all tasks"]) == 3 * 4  # flowrl, sac, td3 x 4 metrics
    main = result.score_sets["all tasks"]
    assert main.algos == ["flowrl", "sac", "td3"] and main.matrices["sac"].shape == (2, 3)
    assert "ablation: flowrl" in result.score_sets
    # per-task table: mean of the final returns of counted runs
    per_task = pd.read_csv(out / "tables" / "per_task_final.csv")
    row = per_task[(per_task["task"] == "dmc:dog-run") & (per_task["algo"] == "flowrl")].iloc[0]
    finals = tidy[
        (tidy["algo"] == "flowrl") & (tidy["task"] == "dmc:dog-run") & (tidy["step"] == 1000) & ~tidy["reference"]
    ]["return"]
    assert row["n_runs"] == 3 and row["return_mean"] == pytest.approx(finals.mean())
    assert row["return_ci_low"] <= row["return_mean"] <= row["return_ci_high"]
    sac_cheetah = per_task[(per_task["task"] == "dmc:cheetah-run") & (per_task["algo"] == "sac")].iloc[0]
    assert sac_cheetah["n_runs"] == 2  # the unfinished seed is not in final scores
    missing = pd.read_csv(out / "missing_runs.csv")
    assert missing[["algo", "seed", "status"]].values.tolist() == [["sac", 2, "unfinished"]]
    tex = (out / "tables" / "aggregate.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "flowrl" in tex
    summary = (out / "summary.md").read_text()
    assert "1 run(s) missing or incomplete" in summary and "Runs used" in summary
    # the study a reviewer needs to judge the numbers, and the caveats of its statistics
    study = summary.split("## Study")[1].split("## Caveats")[0]
    assert "**algorithms**: flowrl, flowrl-no-w2, sac, td3 (4)" in study
    assert "**tasks**: dmc:cheetah-run, dmc:dog-run, hb:h1hand-walk-v0 (3)" in study
    assert (
        "**seeds**: 0-2 (3 seeds) for flowrl, flowrl-no-w2, sac; 0-1 (2 seeds) for td3 (inferred from the runs found)"
    ) in study
    # 3 algorithms x 3 tasks x 3 seeds + td3 on 3 tasks x 2 seeds, 1000 steps each
    assert "**budget**: 1,000 environment steps per run; 33,000 environment steps over the 33 expected runs" in study
    assert "5 episodes every 100 environment steps (9 runs)" in study  # sac; td3 every 250, the others every 200
    assert "5 episodes every 250 environment steps (6 runs)" in study
    assert (
        "not recorded (no readable manifest.json): 32 runs; cpu: 2 CPUs, 1 torch thread (hosts n1, n2): 1 run" in study
    )
    caveat_text = summary.split("## Caveats")[1].split("## Inputs")[0]
    assert "percentile-bootstrap interval of a mean is the range [min, max]" in caveat_text
    assert "t = 12.71 for n = 2, t = 4.30 for n = 3" in caveat_text
    for group in ("DMC easy", "DMC hard", "HumanoidBench"):  # one task each
        assert f"{group}: median and mean are equal by construction" in caveat_text
    assert "all tasks: median and mean" not in caveat_text  # three tasks: the median is not the mean
    assert "t-interval of the mean" in summary.split("## Final return per task")[1]
    t_low = row["return_mean"] - 4.302652729911275 * finals.std(ddof=1) / np.sqrt(3)
    assert row["return_t_low"] == pytest.approx(t_low)
    marker = json.loads((out / "analysis.json").read_text())
    assert marker["statistics"]["bootstrap_reps"] == 60 and marker["statistics"]["bootstrap_seed"] == 1
    try:
        rliable_version = importlib.metadata.version("rliable")
    except importlib.metadata.PackageNotFoundError:
        rliable_version = None
    assert marker["versions"]["rliable"] == rliable_version
    # curves: references are flagged and cut at our last step; n is recorded per point
    curves = pd.read_csv(out / "tables" / "curves_per_task.csv")
    ref_curve = curves[(curves["task"] == "dmc:dog-run") & curves["reference"]]
    assert ref_curve["step"].tolist() == [0, 500, 1000]
    sac = curves[(curves["task"] == "dmc:cheetah-run") & (curves["algo"] == "sac") & ~curves["reference"]]
    assert sac.set_index("step").loc[500, "n"] == 3 and sac.set_index("step").loc[1000, "n"] == 2

    figs = out / "figures"
    for name in (
        "fig1_overview",
        "fig3_curves_dmc_easy",
        "fig3_curves_dmc_hard",
        "fig3_curves_humanoidbench",
        "fig4_ablation_flowrl",
        "fig7_all_tasks",
        "aggregate_intervals_all_tasks",
        "probability_of_improvement_flowrl",
        "probability_of_improvement_matrix",
        "performance_profile",
        "sample_efficiency",
    ):
        assert (figs / f"{name}.pdf").stat().st_size > 1000, name
        _png_ok(figs / f"{name}.png")
    _, _, w, h = curve_grid_size(3)  # fig7: 3 tasks in one row
    assert (w, h) == (3.1 * 3 + 0.4, 2.4 + 1.2)
    _png_ok(figs / "fig7_all_tasks.png", pixel_size(w, h))
    _png_ok(figs / "fig3_curves_dmc_hard.png", pixel_size(*curve_grid_size(1)[2:]))

    # the same inputs give the same numbers; a second run replaces only our own outputs
    again = analyse(runs=[small_study], out=out, reps=60, seed=1, references=[tmp_path / "refs"], timing=timing)
    pd.testing.assert_frame_equal(result.aggregates, again.aggregates)
    pd.testing.assert_frame_equal(result.poi, again.poi)


NO_RLIABLE = """
import importlib.abc, importlib.metadata, json, sys
class Block(importlib.abc.MetaPathFinder):  # as if rliable (and the arch it pins) were gone
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rliable", "arch"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
real_version = importlib.metadata.version
def version(name):
    if name == "rliable":
        raise importlib.metadata.PackageNotFoundError(name)
    return real_version(name)
importlib.metadata.version = version
from flowrl.analysis import analyse
result = analyse(runs=[sys.argv[1]], out=sys.argv[2], reps=20, seed=0)
assert "rliable" not in sys.modules and "arch" not in sys.modules
print(json.dumps({"algos": result.score_sets["all tasks"].algos}))
"""


@pytest.mark.subprocess
def test_pipeline_works_without_rliable(tmp_path):
    root = tmp_path / "runs"
    for algo, level in (("flowrl", 800), ("sac", 400)):
        for task in ("dmc:cheetah-run", "dmc:walker-walk"):
            for seed in range(2):
                write_run(root, algo, task, seed, 400, 200, level=level)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", NO_RLIABLE, str(root), str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"algos": ["flowrl", "sac"]}
    marker = json.loads((out / "analysis.json").read_text())
    assert marker["versions"]["rliable"] is None
    assert "rliable is not installed" in marker["statistics"]["rliable_reference"]
    assert "rliable is not installed" in (out / "summary.md").read_text()
    for name in ("performance_profile", "probability_of_improvement_matrix", "sample_efficiency", "fig7_all_tasks"):
        _png_ok(out / "figures" / f"{name}.png")
    agg = pd.read_csv(out / "tables" / "aggregate.csv")
    assert len(agg) == 2 * 4 and (agg["ci_low"] <= agg["value"]).all() and (agg["value"] <= agg["ci_high"]).all()


def test_hardware_from_manifests():
    assert (
        hardware_of(
            {"device": "cuda:0", "gpu": "NVIDIA H200", "host": "g1", "sessions": [{"host": "g1"}, {"host": "g1"}]}
        )
        == "cuda: NVIDIA H200 (host g1)"
    )
    assert (
        hardware_of(
            {
                "device": "cpu",
                "cpu_count": 16,
                "torch_threads": 4,
                "host": "a",
                "sessions": [{"host": "a"}, {"host": "b"}],
            }
        )
        == "cpu: 16 CPUs, 4 torch threads (hosts a, b)"
    )
    assert hardware_of({}) is None


def test_cli_and_output_directory_safety(small_study, tmp_path, capsys):
    out = tmp_path / "cli_out"
    assert cli_main(["--runs", str(small_study), "--out", str(out), "--reps", "30", "--no-figures"]) == 0
    assert (out / "summary.md").exists() and not (out / "figures").exists()
    assert "unfinished algo=sac" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli_main(["--runs", str(small_study), "--out", str(foreign)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert cli_main(["--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    with pytest.raises(AnalysisError, match="reps"):
        AnalysisConfig(runs=[small_study], out=tmp_path / "o3", reps=1)


def test_one_default_number_of_bootstrap_reps(tmp_path):
    from workflow_helpers import load_script

    from flowrl import study as flowrl_study
    from flowrl.analysis import stats
    from flowrl.analysis.cli import build_parser

    repo = Path(__file__).resolve().parents[1]
    aggregate = load_script("aggregate")

    assert build_parser().parse_args(["--runs", "r", "--out", "o"]).reps == stats.DEFAULT_REPS
    assert AnalysisConfig(runs=["r"], out="o").reps == stats.DEFAULT_REPS
    # a study that sets no reps (the default study) leaves them to the analysis; the workflow adds no second default
    default = flowrl_study.load_study(yaml.safe_load((repo / "config" / "default.yaml").read_text()), semantic=False)
    assert "reps" not in default.config["analysis"]
    run = tmp_path / "runs" / "dmc_cartpole-balance" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "sac", "task": "dmc:cartpole-balance", "seed": 0}))
    calls = []
    for i, analysis in enumerate((default.config["analysis"], {"reps": 50, "seed": 0})):
        study = {
            "expected": {"algos": ["sac"], "tasks": ["dmc:cartpole-balance"], "seeds": [0], "steps": 10},
            "runs": {"sac": {"dmc:cartpole-balance": {"0": str(run)}}},
            "analysis": analysis,
        }
        assert (
            aggregate.main(
                [
                    "--study-json",
                    json.dumps(study),
                    "--runs",
                    str(tmp_path / "runs"),
                    "--out",
                    str(tmp_path / "out"),
                    "--work",
                    str(tmp_path / f"work{i}"),
                ],
                run=lambda cmd: calls.append(cmd) or 0,
            )
            == 0
        )
    assert "--reps" not in calls[0]
    assert calls[1][calls[1].index("--reps") + 1] == "50"  # a study's own choice is passed on


def test_no_usable_runs_is_a_clear_error(tmp_path):
    root = tmp_path / "runs"
    d = root / "r"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"algo": "a", "task": "dmc:cheetah-run", "seed": 0, "steps": 10}))
    with pytest.raises(AnalysisError, match="no usable runs"):
        run_analysis(AnalysisConfig(runs=[root], out=tmp_path / "out", reps=20))
