"""Shared helpers for the workflow tests: run Snakemake on the repository's Snakefile in a scratch directory."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[1]

# Tiny budgets: a run takes a few seconds on one CPU core.
TINY_OVERRIDES = {
    "start_steps": 200,
    "batch_size": 32,
    "agent.hidden_dim": 16,
    "device": "cpu",
    "torch_threads": 1,
    "log_every": 100,
}


def env() -> dict:
    e = dict(os.environ)
    e["MUJOCO_GL"] = "disable"
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def run_python(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python ARGS` (this interpreter) with this checkout importable, output captured (stdout and stderr together)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def train_job_args(algo: str, task: str, seeds, steps) -> list[str]:
    """`python workflow/scripts/train_job.py --algo A --task T --seeds S --steps N`; the caller adds the rest."""
    script = str(REPO / "workflow" / "scripts" / "train_job.py")
    return [sys.executable, script, "--algo", algo, "--task", task, "--seeds", str(seeds), "--steps", str(steps)]


def snakemake(args: list[str], workdir: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile -d <workdir> ARGS`, output captured (stdout and stderr together)."""
    proc = run_python(["-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args], workdir, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def load_script(name: str) -> ModuleType:
    """workflow/scripts/<name>.py as a module (the scripts are run by path, not installed)."""
    spec = importlib.util.spec_from_file_location(
        f"workflow_script_{name}", REPO / "workflow" / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_study(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {'train': 18, 'aggregate': 1, ...}."""
    counts, in_table = {}, False
    for line in dry_run_output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table, counts = True, {}
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= {"-"}:
                in_table = False
    return counts


def sessions(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "manifest.json").read_text())["sessions"]


def eval_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "eval.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines if line]
