"""The workflow on a real single-node SLURM cluster (scripts/slurm-local.sh): submission with `--profile slurm`,
GPU requests, and a training job cancelled mid-run (scancel) that resumes from its checkpoint when the
workflow is run again. Skips, saying why, where SLURM cannot be installed and started (not root, no apt-get)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_helpers import REPO, TINY_OVERRIDES, env, eval_steps, sessions, write_study

from flowrl import status

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.subprocess, pytest.mark.signals]  # scancel

# Test-only settings on top of `--profile slurm`, for speed: poll job states every few seconds.
SLURM_TEST_FLAGS = ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3"]


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get("FLOWRL_SKIP_SLURM") == "1":
        pytest.skip("FLOWRL_SKIP_SLURM=1")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm-local.sh"), "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    if proc.returncode == 3:
        pytest.skip(f"no SLURM cluster here: {proc.stdout.strip()}")
    assert proc.returncode == 0, f"scripts/slurm-local.sh start failed:\n{proc.stdout}"
    yield


def slurm_snakemake(workdir: Path, study: Path, *extra: str, background: bool = False):
    # From the repository root, exactly as users run it: snakemake --cores 32 --profile slurm ...
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "32",
        "--profile",
        "slurm",
        "-d",
        str(workdir),
        "--configfile",
        str(study),
        *SLURM_TEST_FLAGS,
        *extra,
    ]
    log = open(workdir / f"snakemake-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    if background:
        return proc, Path(log.name)
    proc.wait(timeout=480)
    return proc, Path(log.name)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def checkpointed_job(run: Path):
    """The SLURM job id training `run`, once the run has written a periodic checkpoint (else None)."""
    try:
        job = sessions(run)[-1].get("slurm_job_id")
    except (FileNotFoundError, KeyError, IndexError, ValueError):
        return None
    return job if job and list((run / "checkpoints").glob("ckpt-*.pt")) else None


def status_board(workdir: Path, study: Path) -> dict[int, status.Run]:
    """flowrl-status's view of the study (with squeue), by seed."""
    list_runs, _, _, _ = status.source(study, workdir)
    return {run.seed: run for run in status.collect(list_runs, stale=300, use_squeue=True)}


def test_study_on_slurm_with_a_cancelled_job_resuming(slurm_cluster, tmp_path):
    steps = 3000
    study = write_study(
        tmp_path / "study.yaml",
        study="slurm",
        algos=["sac"],
        tasks=["dmc:cartpole-balance"],
        seeds=2,
        steps=steps,
        eval_every=1000,
        eval_episodes=1,
        overrides={**TINY_OVERRIDES, "checkpoint_every": 500},
        resources={"gpu": 1, "cpus_per_task": 1, "mem_mb": 500, "runtime": 10},
        analysis={"reps": 50, "seed": 0},
    )
    runs = tmp_path / "runs" / "slurm" / "sac" / "dmc_cartpole-balance"
    victim, other = runs / "seed0", runs / "seed1"

    # 1) Submit; cancel seed 0's job once it has checkpointed. No automatic retry here, so the workflow
    #    stops with that job failed and the run left unfinished.
    proc, log = slurm_snakemake(tmp_path, study, "--retries", "0", background=True)
    try:
        job_id = wait_for(lambda: checkpointed_job(victim), 240, "seed 0 to train under SLURM and checkpoint")
        info = subprocess.run(["scontrol", "show", "job", job_id], stdout=subprocess.PIPE, text=True).stdout
        assert "gres:gpu:1" in info, info  # the study's gpu: 1 became --gpus=1
        live = status_board(tmp_path, study)[0]
        assert live.state == "running" and live.slurm.startswith("RUNNING"), live  # flowrl-status sees the SLURM job
        subprocess.run(["scancel", job_id], check=True)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = log.read_text()
    assert proc.returncode != 0, first[-4000:]
    assert not (victim / "DONE").exists() and eval_steps(victim)[-1] < steps
    assert (victim / "config.yaml").is_file(), "the cancelled run directory must survive"
    assert not (tmp_path / "runs/slurm/jobs/sac/dmc_cartpole-balance/seeds-0.done").exists()
    board = status_board(tmp_path, study)
    assert board[0].state == "interrupted" and board[0].note.startswith("checkpoint at step"), board[0]
    assert (board[1].state == "finished") == (other / "DONE").is_file() and board[1].state != "running", board[1]

    # 2) Run the workflow again: seed 0 resumes from its checkpoint in a new SLURM job; seed 1 is not retrained.
    other_sessions = len(sessions(other)) if (other / "DONE").exists() else None
    proc, log = slurm_snakemake(tmp_path, study)
    second = log.read_text()
    assert proc.returncode == 0, second[-4000:]
    history = sessions(victim)
    assert len(history) == 2 and history[0]["slurm_job_id"] == job_id and history[1]["slurm_job_id"] != job_id
    assert history[1]["resumed_from_step"] and history[1]["resumed_from_step"] >= 500
    assert "resumed from" in (victim / "train.log").read_text()
    assert (victim / "DONE").is_file() and eval_steps(victim) == [0, 1000, 2000, 3000]
    if other_sessions is not None:
        assert len(sessions(other)) == other_sessions
    assert (other / "DONE").is_file()
    assert [r.state for r in status_board(tmp_path, study).values()] == ["finished", "finished"]
    for name in ("tidy.csv", "summary.md"):
        assert (tmp_path / "results" / "slurm" / name).is_file()
    assert list((tmp_path / "results" / "slurm" / "figures").glob("*.png"))
    print(
        f"cancelled job {job_id}: first session ended by signal {history[0].get('stopped_by_signal')} "
        f"at step {history[0].get('end_step')}; resumed from step {history[1]['resumed_from_step']}"
    )


def test_profile_retries_resubmit_a_cancelled_job_which_resumes(slurm_cluster, tmp_path):
    """profiles/slurm/profile.yaml's `retries`: a job stopped by SLURM (here scancel; on clusters a time limit or
    preemption) is submitted again within the same workflow run and continues from its checkpoint."""
    study = write_study(
        tmp_path / "study.yaml",
        study="retry",
        algos=["sac"],
        tasks=["dmc:cartpole-balance"],
        seeds=[7],
        steps=2000,
        eval_every=1000,
        eval_episodes=1,
        overrides={**TINY_OVERRIDES, "checkpoint_every": 500},
        resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 500, "runtime": 10},
        analysis={"reps": 50, "seed": 0},
    )
    run = tmp_path / "runs" / "retry" / "sac" / "dmc_cartpole-balance" / "seed7"
    proc, log = slurm_snakemake(tmp_path, study, background=True)
    try:
        job_id = wait_for(lambda: checkpointed_job(run), 240, "the run to train under SLURM and checkpoint")
        subprocess.run(["scancel", job_id], check=True)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-4000:]
    history = sessions(run)
    assert len(history) == 2 and history[1]["resumed_from_step"] >= 500
    assert history[1]["slurm_job_id"] != job_id
    assert (run / "DONE").is_file() and eval_steps(run) == [0, 1000, 2000]
