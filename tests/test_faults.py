"""The adversarial cases as a permanent suite (`pytest -m faults`): signals at every phase, hard kills during
checkpoint writes, every kind of corrupt checkpoint, divergence, a full disk, two trainers on one run, foreign
files. Each case asserts the promise of docs/run-format.md: an interrupted run resumes to the eval.csv and
train.csv of a run that never stopped (timing columns aside); nothing a user produced is lost or overwritten.

Phases are hit deterministically: the trainer runs in this process and a wrapper around a public method raises
the signal at a chosen step (the handler is the real one: it records the signal, and the loop checkpoints and
stops). Hard kills run the trainer in a child process that kills itself at a chosen byte of a checkpoint write.
"""

import csv
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

import flowrl.checkpoint
from flowrl.agents.flowrl import FlowRL
from flowrl.checkpoint import checkpoint_paths, digest_path
from flowrl.cli import main as cli_main
from flowrl.members import Member
from flowrl.session import LOCK_NAME, RunLock
from flowrl.train import Training

pytestmark = pytest.mark.faults

STEPS = 600
TINY = [*TINY_RUN, "--seed", "3", "--steps", str(STEPS), "checkpoint_every=100", "keep_checkpoints=3"]
REPO = Path(__file__).resolve().parents[1]


def run_cli(out, *extra):
    return cli_main([*TINY, "--out", str(out), *extra])


def eval_rows(out):
    with open(Path(out) / "eval.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def train_rows(out):
    with open(Path(out) / "train.csv") as f:
        return [
            {k: v for k, v in r.items() if k not in ("env_steps_per_s", "updates_per_s")} for r in csv.DictReader(f)
        ]


def assert_same_as_reference(out, reference):
    assert (out / "DONE").exists()
    assert eval_rows(out) == eval_rows(reference)
    assert train_rows(out) == train_rows(reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run_cli(out) == 0
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped by SIGTERM during step 350 (so at 351) with checkpoints at 100, 200, 300 and 351."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with raise_signal_at(Member, "begin_step", lambda r: r.step == 350):
        assert run_cli(out) == 128 + signal.SIGTERM
    assert [int(p.stem.split("-")[1]) for p in checkpoint_paths(out / "checkpoints")] == [351, 300, 200]
    return out


class raise_signal_at:
    """Wrap `owner.name` so that it raises `sig` (once) in this process when `when(self)` holds, before (or, with
    after=True, after) doing its work."""

    def __init__(self, owner, name, when, sig=signal.SIGTERM, times=1, after=False):
        self.owner, self.name, self.when, self.sig, self.times, self.after = owner, name, when, sig, times, after
        self.fired = 0

    def __enter__(self):
        original = self.original = getattr(self.owner, self.name)

        def wrapped(obj, *args, **kwargs):
            fire = self.fired == 0 and self.when(obj)
            if fire and not self.after:
                self._fire()
            result = original(obj, *args, **kwargs)
            if fire and self.after:
                self._fire()
            return result

        setattr(self.owner, self.name, wrapped)
        return self

    def _fire(self):
        self.fired += 1
        for _ in range(self.times):
            signal.raise_signal(self.sig)

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.original)
        assert self.fired, f"the fault at {self.owner.__name__}.{self.name} was never injected"


def _eval_call_counter():
    calls = {"n": 0}

    def second_evaluation(training):
        calls["n"] += 1
        return calls["n"] == 2  # the evaluation at step 200

    return second_evaluation


def _nth_call(n):
    calls = {"n": 0}

    def nth(_obj):
        calls["n"] += 1
        return calls["n"] == n

    return nth


def _checkpoint_write_counter():
    seen = {"n": 0}

    def in_second_checkpoint(writer):
        seen["n"] += 1 if writer is not seen.get("last") else 0
        seen["last"] = writer
        return seen["n"] == 2  # the first bytes of the checkpoint at step 200

    return in_second_checkpoint


PHASES = {
    "warm-up": lambda: (Member, "begin_step", lambda r: r.step == 100),
    "update": lambda: (FlowRL, "update", _nth_call(100)),
    "evaluation": lambda: (Training, "evaluate", _eval_call_counter()),
    "checkpoint-write": lambda: (flowrl.checkpoint.HashingWriter, "write", _checkpoint_write_counter()),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["TERM", "INT", "USR1"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_checkpoints_and_resumes_to_the_same_results(reference, tmp_path, phase, sig):
    out = tmp_path / "run"
    owner, name, when = PHASES[phase]()
    with raise_signal_at(owner, name, when, sig):
        assert run_cli(out) == 128 + sig
    assert not (out / "DONE").exists() and checkpoint_paths(out / "checkpoints")
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)


def test_a_second_signal_while_stopping_changes_nothing(reference, tmp_path):
    out = tmp_path / "run"
    with raise_signal_at(Member, "begin_step", lambda r: r.step == 260, times=3):
        assert run_cli(out) == 128 + signal.SIGTERM
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)


def test_a_signal_racing_the_final_step_finishes_the_run(reference, tmp_path):
    out = tmp_path / "run"
    with raise_signal_at(Member, "finish_step", lambda r: r.step == STEPS - 1, after=True):
        rc = run_cli(out)
    assert rc == 0 and (out / "DONE").exists()  # all steps were done: the run is complete, not interrupted
    assert_same_as_reference(out, reference)


# ------------------------------------------------------------------------------ hard kills in checkpoint writes
KILLER = textwrap.dedent("""
    import os, signal, sys
    import flowrl.checkpoint as ck
    from flowrl.cli import main
    where, at_step = sys.argv[1], int(sys.argv[2])

    original_save, original_replace = ck.save_checkpoint, os.replace
    def save(directory, step, state, keep=2):
        if step == at_step and where == "mid-write":
            write = ck.HashingWriter.write
            def write_then_die(self, data):
                n = write(self, data)
                if self.f.tell() > 4096:
                    os.kill(os.getpid(), signal.SIGKILL)
                return n
            ck.HashingWriter.write = write_then_die
        if step == at_step and where == "between-renames":
            def replace(src, dst):
                original_replace(src, dst)
                if str(dst).endswith(".sha256"):  # the digest is in place, the checkpoint not yet
                    os.kill(os.getpid(), signal.SIGKILL)
            ck.os.replace = replace
        return original_save(directory, step, state, keep)
    ck.save_checkpoint = save
    import flowrl.train
    flowrl.train.save_checkpoint = save
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("where", ["mid-write", "between-renames"])
def test_a_hard_kill_during_a_checkpoint_write_resumes_from_the_previous_one(reference, tmp_path, where):
    out = tmp_path / "run"
    env = {**os.environ, "MUJOCO_GL": "disable", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, where, "300", *TINY, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert [int(p.stem.split("-")[1]) for p in checkpoint_paths(out / "checkpoints")] == [200, 100]
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)
    assert "interrupted checkpoint write" in (out / "train.log").read_text()


# ------------------------------------------------------------------------------ corrupt checkpoints
def _garble(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    n = len(data)
    if where == "truncated":
        data = data[: n // 2]
    elif where == "zero-length":
        data = bytearray()
    elif where == "zeroed":
        data = bytearray(n)
    else:
        start = {"head": 0, "middle": n // 2, "tail": n - 64}[where]
        for i in range(start, start + 32):
            data[i] ^= 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["truncated", "zero-length", "zeroed", "head", "middle", "tail"])
def test_a_corrupt_newest_checkpoint_is_set_aside_and_the_previous_one_used(reference, interrupted, tmp_path, kind):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    newest = checkpoint_paths(out / "checkpoints")[0]
    _garble(newest, kind)
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)
    assert (out / "checkpoints" / (newest.name + ".corrupt")).exists()  # kept for inspection, never deleted
    log = (out / "train.log").read_text()
    assert f"checkpoint {newest} is unreadable or corrupt" in log and "resumed from ckpt-0000000300.pt" in log


def _rewrite_with_digest(path: Path, state) -> None:
    torch.save(state, path)
    digest_path(path).write_text(f"{flowrl.checkpoint.file_digest(path)}  {path.name}\n")


@pytest.mark.parametrize("kind", ["foreign", "nan-weights"])
def test_a_checkpoint_with_a_valid_digest_but_wrong_content_is_refused(reference, interrupted, tmp_path, kind):
    """A file that is intact but is not a usable flowrl checkpoint (another program's file under the name, or
    weights that are NaN) is refused like a damaged one."""
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    newest = checkpoint_paths(out / "checkpoints")[0]
    if kind == "foreign":
        _rewrite_with_digest(newest, {"model": torch.zeros(3)})
    else:
        state = torch.load(newest, weights_only=False)
        next(iter(state["agent"]["policy"].values())).view(-1)[0] = float("nan")
        _rewrite_with_digest(newest, state)
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)
    log = (out / "train.log").read_text()
    assert ("not a flowrl checkpoint" if kind == "foreign" else "holds NaN or inf") in log


def test_a_checkpoint_written_before_digests_loads_with_a_note(reference, interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    for p in checkpoint_paths(out / "checkpoints"):
        digest_path(p).unlink()
    assert run_cli(out) == 0
    assert_same_as_reference(out, reference)
    log = (out / "train.log").read_text()
    assert "has no digest" in log and "resumed from ckpt-0000000351.pt" in log


def test_every_checkpoint_has_a_digest_that_sha256sum_accepts(interrupted):
    ckpts = checkpoint_paths(interrupted / "checkpoints")
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum on this machine")
    proc = subprocess.run(
        ["sha256sum", "-c", *[digest_path(p).name for p in ckpts]],
        cwd=ckpts[0].parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout.count(": OK") == len(ckpts)


# ------------------------------------------------------------------------------ divergence
class poison_parameters_at:
    """After FlowRL's update number `at` (counted in this process), a policy weight becomes NaN (`times` times)."""

    def __init__(self, at, times=1, what="parameter"):
        self.at, self.times, self.what, self.count = at, times, what, 0

    def __enter__(self):
        original = self.original = FlowRL.update

        def update(agent, batch, step):
            metrics = original(agent, batch, step)
            self.count += 1
            if self.count >= self.at and self.times:
                self.times -= 1
                if self.what == "parameter":
                    with torch.no_grad():
                        next(agent.policy.parameters()).view(-1)[0] = float("nan")
                else:
                    metrics = {**metrics, "critic_loss": torch.tensor(float("inf"))}
            return metrics

        FlowRL.update = update
        return self

    def __exit__(self, *exc):
        FlowRL.update = self.original


@pytest.mark.parametrize("what", ["parameter", "loss"])
def test_divergence_stops_the_run_naming_what_when_and_the_last_good_checkpoint(reference, tmp_path, capsys, what):
    out = tmp_path / "run"
    with poison_parameters_at(at=400 - 150, what=what):  # the update of step 399, just before the check at 400
        assert run_cli(out) == 2
    err = capsys.readouterr().err
    named = "the agent's policy." if what == "parameter" else "the training metric 'critic_loss'"
    assert "training diverged" in err and named in err and "at step 400" in err, err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'ckpt-0000000300.pt'}" in err
    assert [int(p.stem.split("-")[1]) for p in checkpoint_paths(out / "checkpoints")] == [300, 200, 100]
    assert not (out / "DONE").exists()
    assert (
        "training diverged" in (out / "manifest.json").read_text()
        and "training diverged" in (out / "train.log").read_text()
    )
    assert run_cli(out) == 0  # resumable: without the fault it finishes as if nothing had happened
    assert_same_as_reference(out, reference)


def test_a_non_finite_action_stops_the_run_before_the_environment_sees_it(tmp_path, capsys):
    out = tmp_path / "run"
    original = FlowRL.act
    training_calls = {"n": 0}

    def act(agent, obs, deterministic=False):
        action = original(agent, obs, deterministic)
        training_calls["n"] += not deterministic
        return action * float("nan") if not deterministic and training_calls["n"] == 100 else action

    FlowRL.act = act
    try:
        assert run_cli(out) == 2
    finally:
        FlowRL.act = original
    err = capsys.readouterr().err
    assert "the policy's action ([nan])" in err and "training diverged" in err


def test_rollback_recovers_from_a_transient_divergence(tmp_path):
    out = tmp_path / "run"
    with poison_parameters_at(at=100):
        assert run_cli(out, "on_divergence=rollback") == 0
    rows = list(csv.DictReader(open(out / "train.csv")))
    assert rows[-1]["rollbacks"] == "1" and all(r["critic_loss"] != "nan" for r in rows)
    assert "rolled the agent back" in (out / "train.log").read_text()


def test_rollback_gives_up_on_a_persistent_divergence(tmp_path, capsys):
    out = tmp_path / "run"
    with poison_parameters_at(at=100, times=10**6):
        assert run_cli(out, "on_divergence=rollback") == 2
    assert "rollbacks did not help" in capsys.readouterr().err


def test_a_diverged_run_may_resume_with_rollback(tmp_path):
    """on_divergence is resume-safe: it changes nothing until a run diverges."""
    out = tmp_path / "run"
    with poison_parameters_at(at=400 - 150):
        assert run_cli(out) == 2
    assert run_cli(out, "on_divergence=rollback") == 0


# ------------------------------------------------------------------------------ disk, locks, foreign files
def test_a_full_disk_names_the_disk_and_keeps_the_previous_checkpoint(reference, tmp_path, capsys, monkeypatch):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], stderr=subprocess.PIPE)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        out = mnt / "run"
        filler = mnt / "filler"

        def fill(training):  # right before the checkpoint at step 200 is written: nothing left on the disk
            if training.step == 200:
                with open(filler, "wb", buffering=0) as f:
                    for block in (1 << 20, 4096, 1):
                        try:
                            while True:
                                f.write(b"\0" * block)
                        except OSError:
                            pass

        checkpoint = Training.checkpoint

        def fill_then_checkpoint(training, *args):
            fill(training)
            return checkpoint(training, *args)

        monkeypatch.setattr(Training, "checkpoint", fill_then_checkpoint)
        rc = run_cli(out)
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert rc == 2, err
        assert f"could not write checkpoint ckpt-0000000200.pt into {out / 'checkpoints'}" in err
        assert f"file system mounted at {mnt}" in err and "ckpt-0000000100.pt is intact" in err
        assert [p.name for p in checkpoint_paths(out / "checkpoints")] == ["ckpt-0000000100.pt"]
        assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
        filler.unlink()
        assert run_cli(out) == 0
        assert_same_as_reference(out, reference)
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_second_trainer_on_the_same_run_is_refused(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "MUJOCO_GL": "disable", "PYTHONPATH": str(REPO)}
    long = [*TINY, "--steps", "100000", "--out", str(out)]  # still training when the second one starts
    first = subprocess.Popen(
        [sys.executable, "-m", "flowrl", *long], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while not (out / "train.csv").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "flowrl", *long],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"another trainer is training into {out}" in second.stderr
        assert f'"pid": {first.pid}' in second.stderr  # names the holder
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    RunLock(out).release()  # the lock died with its holder: the same command may now resume


def test_the_lock_is_held_while_training_and_released_after(tmp_path, monkeypatch):
    out = tmp_path / "run"
    held = []

    def probe(training):
        with open(out / LOCK_NAME) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)

    evaluate = Training.evaluate

    def probe_then_evaluate(training, *args):
        probe(training)
        return evaluate(training, *args)

    monkeypatch.setattr(Training, "evaluate", probe_then_evaluate)
    assert run_cli(out) == 0
    assert held and all(held)
    with open(out / LOCK_NAME) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the trainer is done


def test_an_out_holding_user_files_is_never_touched(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert run_cli(out) == 2
    assert "holds no run" in capsys.readouterr().err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]


# ------------------------------------------------------------------------------ the workflow
@pytest.mark.slow
def test_an_interrupted_study_reruns_only_what_is_missing_and_reports_corrupt_runs(tmp_path):
    """Ctrl-C while the second of two jobs trains: the re-run trains only that job (resuming its run when it had
    checkpointed), never the finished one. A run whose eval.csv is then garbled is listed in missing_runs.csv,
    not silently dropped from the results."""
    import pandas as pd
    from workflow_helpers import TINY_OVERRIDES, env, job_counts, sessions, snakemake, write_study

    study = write_study(
        tmp_path / "study.yaml",
        study="faults",
        algos=["sac"],
        tasks=["dmc:cartpole-balance"],
        seeds=2,
        steps=3000,
        eval_every=1000,
        eval_episodes=1,
        overrides={**TINY_OVERRIDES, "checkpoint_every": 100},
        resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 1000, "runtime": 10},
        analysis={"reps": 50, "seed": 0},
    )
    runs = tmp_path / "runs" / "faults" / "sac" / "dmc_cartpole-balance"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path),
        "--cores",
        "1",
        "--configfile",
        str(study),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own process group, as a terminal's job
    try:
        deadline = time.time() + 300
        while True:  # one run finished, the other started
            done = [s for s in (0, 1) if (runs / f"seed{s}" / "DONE").exists()]
            started = [s for s in (0, 1) if s not in done and (runs / f"seed{s}" / "train.csv").exists()]
            if done and started:
                break
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-4000:]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SIGINT to snakemake and its jobs
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    (finished,), (stopped,) = done, started
    assert not (runs / f"seed{stopped}" / "DONE").exists(), "the job finished before the interrupt: " + out[-2000:]
    finished_eval = (runs / f"seed{finished}" / "eval.csv").read_bytes()

    rerun = snakemake(["--cores", "1", "--configfile", str(study)], tmp_path, check=True)
    assert job_counts(rerun.stdout).get("train") == 1, rerun.stdout[-3000:]
    assert len(sessions(runs / f"seed{finished}")) == 1  # never retrained
    assert (runs / f"seed{finished}" / "eval.csv").read_bytes() == finished_eval
    stopped_sessions = sessions(runs / f"seed{stopped}")
    assert (runs / f"seed{stopped}" / "DONE").exists() and len(stopped_sessions) == 2
    if checkpoint_paths(runs / f"seed{stopped}" / "checkpoints") or stopped_sessions[0].get("stopped_by_signal"):
        assert stopped_sessions[1]["resumed_from_step"], stopped_sessions

    (runs / f"seed{finished}" / "eval.csv").write_bytes(b"\x00\xff garbage \x13\n\x01,\x02,\x03\n")
    snakemake(["figures", "--cores", "1", "--configfile", str(study)], tmp_path, check=True)
    missing = pd.read_csv(tmp_path / "results" / "faults" / "missing_runs.csv")
    row = missing[missing["seed"] == finished]
    assert len(row) == 1, missing
    assert "eval.csv" in " ".join(map(str, row.iloc[0].values)), row
