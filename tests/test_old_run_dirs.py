"""Run directories written by earlier code resume with this code, to the results of a run that never stopped.

tests/data/old-runs/ holds tiny runs written by the code of commit 66c83f1 (its make_fixtures.py says how): a single
FlowRL run, a single SAC run (which draws from torch's global RNG, so its saved RNG states must be restored) and
two FlowRL seeds packed as one model, each stopped by SIGTERM mid-episode at step 251 of 400, plus the eval.csv and
train.csv that code wrote for the same command run without interruption.

Tolerance: on the machine that wrote the fixtures the rows are equal to the last digit. Another CPU may round
float32 reductions differently (other SIMD kernels), and training amplifies that to ~1e-5 relative over these 250
updates (tests/test_multiseed.py measured the same for reduction order); 1e-3 relative leaves a wide margin, while
a lost or misread piece of state (RNG, replay, the episode in progress, optimiser moments) changes losses and
returns by whole percents.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest

from flowrl.cli import main as cli_main

FIXTURES = Path(__file__).parent / "data" / "old-runs"
TIMING = ("wall_time", "env_steps_per_s", "updates_per_s")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def assert_same_rows(got: list[dict[str, str]], want: list[dict[str, str]]) -> None:
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        assert g["step"] == w["step"]
        for k in g:
            if g[k] != w[k]:
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-3, abs=1e-6), (g["step"], k)


def run_dirs(root: Path, case: str) -> list[Path]:
    return (
        sorted(p for p in (root / case / "interrupted").iterdir() if p.is_dir())
        if case.endswith("packed")
        else [root / case / "interrupted"]
    )


@pytest.mark.parametrize("case", ["flowrl", "sac", "flowrl-packed"])
def test_a_run_directory_written_before_the_loop_redesign_resumes_to_the_same_results(tmp_path, case):
    args = json.loads((FIXTURES / case / "args.json").read_text())
    packed = case.endswith("packed")
    shutil.copytree(FIXTURES / case, tmp_path / case)
    runs = run_dirs(tmp_path, case)
    template = str(runs[0].parent / "seed{seed}") if packed else str(runs[0])
    assert cli_main([*args, "--out", template]) == 0
    fresh = tmp_path / "fresh"
    assert cli_main([*args, "--out", str(fresh / "seed{seed}") if packed else str(fresh)]) == 0
    for run in runs:
        sessions = json.loads((run / "manifest.json").read_text())["sessions"]
        assert [s["resumed_from_step"] for s in sessions] == [None, 251] and (run / "DONE").exists()
        new_run = fresh / run.name if packed else fresh
        expected = FIXTURES / case / "expected" / (run.name if packed else "")
        for name in ("eval.csv", "train.csv"):
            assert_same_rows(rows(run / name), rows(new_run / name))  # as an uninterrupted run of this code
            assert_same_rows(rows(run / name), rows(expected / name))  # as an uninterrupted run of that code
        assert [int(r["step"]) for r in rows(run / "eval.csv")] == [0, 100, 200, 300, 400]
