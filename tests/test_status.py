"""flowrl-status on real run directories in every state, and flowrl-plan on a tiny study and on measured runs.

The runs are real tiny flowrl-train runs of one study (study file -> runs/st/...): finished, stopped by SIGTERM
(checkpoint), killed by SIGKILL, running (a live trainer; and a copy held by a live child's lock), failed (a workflow
job refused by the runner, error in its job log), queued (not started), and corrupted copies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import TINY_OVERRIDES, env, run_python, train_job_args, write_study

from flowrl import status
from flowrl.plan import load_table, make_plan, plan_text, run_rates
from flowrl.study import load_study_file, override_args

STEPS = 1000
SLUG = "dmc_cartpole-balance"


def make_study(tmp_path: Path, seeds=9) -> Path:
    return write_study(
        tmp_path / "study.yaml",
        study="st",
        algos=["sac"],
        tasks=["dmc:cartpole-balance"],
        seeds=seeds,
        steps=STEPS,
        eval_every=250,
        eval_episodes=1,
        overrides={**TINY_OVERRIDES, "checkpoint_every": 250},
        resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 1000, "runtime": 10},
    )


def run_dir(tmp_path: Path, seed: int) -> Path:
    return tmp_path / "runs" / "st" / "sac" / SLUG / f"seed{seed}"


def trainer(study_file: Path, tmp_path: Path, seed: int, steps: int = STEPS) -> subprocess.Popen:
    """flowrl-train exactly as the workflow's job for this run starts it."""
    study = load_study_file(study_file)
    cmd = [
        sys.executable,
        "-m",
        "flowrl",
        "--algo",
        "sac",
        "--task",
        "dmc:cartpole-balance",
        "--seed",
        str(seed),
        "--steps",
        str(steps),
        "--out",
        str(run_dir(tmp_path, seed)),
        "--no-progress",
        *override_args(study.overrides_for("sac")),
    ]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=120, what="it"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def checkpointed(run: Path) -> bool:
    return (
        any(re.fullmatch(r"ckpt-\d+\.pt", p.name) for p in (run / "checkpoints").glob("*"))
        if (run / "checkpoints").is_dir()
        else False
    )


def rows(text: str) -> dict[int, list[str]]:
    """The board's run lines by seed: cells split where two or more spaces separate them."""
    out = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 8 and cells[0] == "sac" and cells[2].isdigit():
            out[int(cells[2])] = cells
    return out


def run_state(run: Path, **kw) -> status.Run:
    return status.inspect(status.Run("sac", "dmc:cartpole-balance", 0, run, STEPS, **kw))


@pytest.fixture(scope="module")
def study_tree(tmp_path_factory):
    """runs/st/ with seeds 0-8 in every state (see the module docstring); returns (tmp_path, study file, facts)."""
    tmp_path = tmp_path_factory.mktemp("status")
    study_file = make_study(tmp_path)
    facts = {}
    done, stopped, killed, refused = (trainer(study_file, tmp_path, s) for s in (0, 1, 6, 3))
    for seed, proc in ((1, stopped), (6, killed), (3, refused)):
        wait_for(lambda s=seed, p=proc: checkpointed(run_dir(tmp_path, s)) or p.poll() is not None, what=f"seed {seed}")
        assert proc.poll() is None, f"seed {seed} ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
    # A live trainer is running, whatever its lock says.
    facts["live"] = run_state(run_dir(tmp_path, 1)).state
    killed.send_signal(signal.SIGKILL)
    for proc in (stopped, refused):
        proc.send_signal(signal.SIGTERM)
    for proc in (done, stopped, killed, refused):
        proc.wait(timeout=300)
    assert done.returncode == 0 and stopped.returncode == 128 + signal.SIGTERM
    assert (run_dir(tmp_path, 6) / ".flowrl.lock").is_file(), "flowrl-train holds <run>/.flowrl.lock (RunLock)"
    # Workflow jobs (train_job.py) that fail: seed 3's with another budget (the runner refuses to resume with it),
    # seed 8's with a bad setting (refused before a run directory exists).
    for seed, steps, setting in ((3, STEPS + 1000, "start_steps=200"), (8, STEPS, "agent.hidden_dim=wide")):
        log = tmp_path / "runs" / "st" / "logs" / "sac" / SLUG / f"seeds-{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            rc = subprocess.run(
                [
                    *train_job_args("sac", "dmc:cartpole-balance", seed, steps),
                    "--run-dir",
                    f"runs/st/sac/{SLUG}/seed{{seed}}",
                    "--mode",
                    "single",
                    "--marker",
                    f"runs/st/jobs/sac/{SLUG}/seeds-{seed}.done",
                    "--",
                    setting,
                ],
                cwd=tmp_path,
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
            ).returncode
        assert rc != 0
    assert not run_dir(tmp_path, 8).exists()
    # Seed 2: a copy of the stopped run, held by a live child's lock. Seed 5: its checkpoint only as sidecars.
    shutil.copytree(run_dir(tmp_path, 1), run_dir(tmp_path, 2))
    shutil.copytree(run_dir(tmp_path, 1), run_dir(tmp_path, 5))
    for ckpt in (run_dir(tmp_path, 5) / "checkpoints").glob("ckpt-*.pt"):
        ckpt.rename(ckpt.with_name(ckpt.name + ".corrupt"))
        ckpt.with_name(ckpt.name + ".sha256").write_text("0" * 64 + "\n")
    # Seed 4: a finished run whose eval.csv got garbled. Seed 7: not started.
    shutil.copytree(run_dir(tmp_path, 0), run_dir(tmp_path, 4))
    (run_dir(tmp_path, 4) / "eval.csv").write_text("step,return_mean\n0,12.5\n500,not-a-number\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(600)",
            str(run_dir(tmp_path, 2) / ".flowrl.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    yield tmp_path, study_file, facts
    holder.kill()
    holder.wait()


def board_of(capsys, *args) -> str:
    assert status.main([*args, "--no-squeue"]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.signals
def test_every_state_from_a_study_file(study_tree, capsys):
    tmp_path, study_file, facts = study_tree
    assert facts["live"] == "running"
    text = board_of(capsys, str(study_file), "-d", str(tmp_path))
    by_seed = rows(text)
    assert sorted(by_seed) == list(range(9)), text
    state = {seed: cells[3] for seed, cells in by_seed.items()}
    assert state[0] == "finished" and by_seed[0][4] == f"{STEPS}/{STEPS}" and f"@{STEPS}" in by_seed[0][5]
    assert state[1] == "interrupted" and state[2] == "running" and state[3] == "failed"
    assert state[4] == "corrupt: eval.csv"
    assert state[5] == "interrupted" and state[6] == "interrupted" and state[7] == "queued" and state[8] == "failed"
    assert by_seed[7][4] == f"-/{STEPS}"
    lines = text.splitlines()

    def notes(seed):
        i = next(i for i, line in enumerate(lines) if rows(line).get(seed))
        return "\n".join(lines[i + 1 : i + 3])

    ckpt_step = max(int(p.name[5:-3]) for p in (run_dir(tmp_path, 1) / "checkpoints").glob("ckpt-*.pt"))
    assert f"checkpoint at step {ckpt_step}" in notes(1)
    assert "no checkpoint" in notes(5), "*.pt.corrupt and *.pt.sha256 are not checkpoints"
    assert "killed?" in notes(6), "a SIGKILLed trainer leaves its session open and its lock free"
    failed = notes(3)
    assert f"log: {tmp_path / 'runs/st/logs/sac' / SLUG / 'seeds-3.log'}" in failed
    assert "error:" in failed and "different configuration" in failed
    assert "seeds-8.log" in notes(8) and "hidden_dim" in notes(8)
    assert "line 3: not a number" in notes(4) and str(run_dir(tmp_path, 4)) in notes(4)
    # Interrupted and running runs show their rate and an ETA; the study total counts every state.
    assert float(by_seed[1][6]) > 0 and by_seed[1][7] not in ("-", "?")
    total = lines[-1]
    assert total.startswith("9 runs: 1 finished, 1 running, 3 interrupted, 2 failed, 1 queued, 1 corrupt")
    assert "1/9 done" in total and "CPU-hours used" in total and "run-hours remaining" in total
    used = float(re.search(r"([0-9.]+) CPU-hours used", total).group(1))
    assert 0 < used < 1


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.signals
def test_runs_folder_and_console_entry(study_tree):
    tmp_path, _, _ = study_tree
    proc = run_python(["-m", "flowrl.status", "runs/st", "--no-squeue"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout
    state = {seed: cells[3] for seed, cells in rows(proc.stdout).items()}
    assert state[0] == "finished" and state[2] == "running" and state[3] == "failed"
    assert 7 not in state and 8 not in state  # no run directory: a runs folder only knows the runs it holds
    assert state[4].startswith("corrupt") and "runs/st/logs/sac" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("7 runs:")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.signals
def test_corrupt_files_are_named_not_fatal(study_tree, tmp_path):
    source = run_dir(study_tree[0], 0)
    garble = {
        "config.yaml": "algo: [sac\n",
        "manifest.json": '{"sessions": [',
        "train.csv": "step,updates\n1,x\n",
        "DONE": "[1, 2]",
    }
    for name, text in garble.items():
        run = tmp_path / name / "sac" / SLUG / "seed0"
        shutil.copytree(source, run)
        (run / name).write_text(text)
        got = run_state(run)
        assert got.state == "corrupt" and got.note.startswith(f"{name} ("), (name, got.note)
    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "sac" / SLUG / "seed0"
    shutil.copytree(source, binary)
    (binary / "eval.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert run_state(binary).state == "corrupt"


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.signals
def test_watch_redraws_until_interrupted(study_tree):
    tmp_path, study_file, _ = study_tree
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowrl.status", str(study_file), "--watch", "0.5", "--no-squeue"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C in a terminal reaches a foreground process whose SIGINT is at its default. A runner
        # started in the background of a non-interactive shell (as CI may be) ignores SIGINT, the child
        # inherits that, and Python then installs no KeyboardInterrupt handler: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if sum(ln.startswith("9 runs:") for ln in seen) == 2:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # leave no watcher behind; the assertion below reports it
            proc.wait()
    assert proc.returncode == 0 and sum(ln.startswith("9 runs:") for ln in seen) == 2, "".join(seen)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert status.main([str(tmp_path / "nope.yaml")]) == 2
    assert "no such study file or runs folder" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\nalgos: sac\n")
    assert status.main([str(bad)]) == 2
    assert "invalid" in capsys.readouterr().err


@pytest.mark.subprocess
def test_lock_without_flock_falls_back_to_the_holder(tmp_path, monkeypatch):
    """On a file system without flock: a lock naming this host and a live pid means running; a dead pid not."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"algo": "sac", "task": "dmc:cartpole-balance", "seed": 0, "steps": 100})
    )
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".flowrl.lock").write_text(f'{{"pid": {child.pid}, "host": "{os.uname().nodename}"}}\n')

        def no_flock(fd, op):
            raise OSError(37, "No locks available")

        monkeypatch.setattr(status.fcntl, "flock", no_flock)
        assert run_state(run).state == "running"
    finally:
        child.kill()
        child.wait()
    assert run_state(run).state == "interrupted"


@pytest.mark.subprocess
def test_a_run_without_its_own_lock_is_running_while_its_job_lock_is_held(tmp_path):
    """Runs written before <run>/.flowrl.lock existed: the workflow job's lock tells whether they train."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"algo": "sac", "task": "dmc:cartpole-balance", "seed": 0, "steps": 100})
    )
    (run / "manifest.json").write_text('{"sessions": [{"start_time": "2026-12-01T10:00:00+00:00"}]}')
    job_lock = tmp_path / "seeds-0.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(60)",
            str(job_lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_state(run, job_lock=job_lock).state == "running"
    finally:
        holder.kill()
        holder.wait()
    stopped = run_state(run, job_lock=job_lock)
    assert stopped.state == "interrupted" and "killed?" in stopped.note


# ------------------------------------------------------------------------------------------- the planner
@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.signals
def test_plan_from_the_study_runs_train_csv(study_tree, tmp_path):
    """With runs in runs/<study>/, their train.csv rates replace the table's (finished runs first)."""
    root, study_file, _ = study_tree
    study = load_study_file(study_file)
    plans = make_plan(study, root / "runs" / "st", load_table())
    p = plans["sac"]
    assert "2 finished runs' train.csv" in p.rate.source and p.rate.exact  # seed 0 and its copy, seed 4
    rows_ = status._csv(run_dir(root, 0) / "train.csv", ("step", "updates", "env_steps_per_s"))
    learn_t, learn_n, warm_t, warm_n = run_rates(rows_)
    assert p.rate.steps_per_s == pytest.approx(learn_n / learn_t)
    warm = 200  # TINY_OVERRIDES start_steps
    one = warm / (warm_n / warm_t) + (STEPS - warm) / (learn_n / learn_t)
    assert p.run_seconds == pytest.approx(9 * one)
    text = plan_text(study, root, cores=2)
    assert "measured on" in text and "runs/st" in text
