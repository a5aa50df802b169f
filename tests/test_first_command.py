"""The README's first command, `bash scripts/study.sh`, on a fresh clone: it trains the study and writes its results.

The clone is of the committed history (what a visitor gets), made in a scratch directory. Its `.venv` reuses the
environment this suite runs in (a directory of links to it, with the pin stamp that scripts/setup.sh checks), so
nothing is installed; setup.sh itself is exercised by scripts/test.sh. The study is the default one with a
`--config` override small enough to train in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import REPO, eval_steps

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TINY = [
    "algos=[sac]",
    "tasks=[dmc:cartpole-balance]",
    "seeds=1",
    "steps=300",
    "eval_every=150",
    "eval_episodes=1",
    "overrides={start_steps: 100, batch_size: 32, agent.hidden_dim: 16, log_every: 100, checkpoint_every: 0}",
    "analysis={reps: 50}",
]


def fresh_clone(dest: Path) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and the repository's history (a git checkout)")
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    return dest


def link_environment(clone: Path) -> None:
    """clone/.venv: links to this interpreter's virtual environment, stamped as scripts/setup.sh stamps a .venv
    built from the clone's pins (sha256 of requirements/lock-cpu.txt followed by pyproject.toml)."""
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix) or not (venv / "pyvenv.cfg").is_file():
        pytest.skip("run the suite from a virtual environment (scripts/test.sh uses .venv) to reuse it here")
    target = clone / ".venv"
    target.mkdir()
    for entry in venv.iterdir():
        if entry.name != ".lock-sha256":
            (target / entry.name).symlink_to(entry)
    pins = (clone / "requirements" / "lock-cpu.txt").read_bytes() + (clone / "pyproject.toml").read_bytes()
    (target / ".lock-sha256").write_text(hashlib.sha256(pins).hexdigest() + "\n")


def test_readme_first_command_trains_the_default_study_on_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    # results/ may hold committed evidence (results/fidelity/); the study's own outputs are not in a clone.
    assert not (clone / "runs").exists() and not (clone / "results" / "default").exists(), (
        "a fresh clone holds no study output"
    )
    assert (clone / "examples" / "results-default" / "summary.md").is_file(), "the example output is committed"
    link_environment(clone)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        ["bash", "scripts/study.sh", "--cores", "2", "--config", *TINY],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "setup: .venv ready" not in proc.stdout, "the linked environment must be taken as up to date"
    assert "Nothing to be done" not in proc.stdout

    run = clone / "runs" / "default" / "sac" / "dmc_cartpole-balance" / "seed0"
    assert (run / "DONE").is_file() and eval_steps(run) == [0, 150, 300]
    results = clone / "results" / "default"
    tidy = pd.read_csv(results / "tidy.csv")
    ours = tidy[~tidy["reference"].astype(bool)]
    assert set(ours["algo"]) == {"sac"} and ours["step"].max() == 300
    assert (results / "summary.md").stat().st_size > 0
    assert list((results / "figures").glob("*.png")) and list((results / "tables").glob("*.csv"))
    # The study's outputs are ignored by git: a user's runs and results never end up in a commit by accident.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored=no"], cwd=clone, stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    assert status == "", f"study outputs not ignored by git:\n{status}"
