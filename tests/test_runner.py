"""The training runner: run directory, interrupt/resume equality, checkpoints, bad inputs."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_RUN

from flowrl.checkpoint import checkpoint_paths
from flowrl.cli import main as cli_main
from flowrl.cpu_kernels import onednn_linear_available

TINY = [*TINY_RUN, "--seed", "3"]


def run_cli(out, *extra, steps=600):
    return cli_main([*TINY, "--steps", str(steps), "--out", str(out), *extra])


def eval_rows(out):
    with open(Path(out) / "eval.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def train_rows(out):
    with open(Path(out) / "train.csv") as f:
        keep = ("step", "updates", "critic_loss", "policy_loss", "value_loss", "episode_return")
        return [{k: r.get(k) for k in keep} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run_cli(out) == 0
    return out


def test_run_directory_contents(reference_run):
    out = reference_run
    for name in ("config.yaml", "manifest.json", "eval.csv", "train.csv", "DONE", "train.log", "final_agent.pt"):
        assert (out / name).exists(), name
    rows = eval_rows(out)
    assert [int(r["step"]) for r in rows] == [0, 200, 400, 600]
    assert all(r["success_mean"] == "" for r in rows)  # cartpole has no success signal
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"git", "versions", "device", "host", "start_time", "end_time"} <= set(manifest)
    assert manifest["versions"]["torch"].startswith("2.")
    session = manifest["sessions"][0]  # each session says where it ran and whether oneDNN's GEMMs were there
    assert session["host"] == socket.gethostname() and session["onednn_linear"] == onednn_linear_available()
    train = list(csv.DictReader(open(out / "train.csv")))
    assert int(train[-1]["step"]) == 600 and int(train[-1]["updates"]) == 600 - 150
    assert float(train[-1]["env_steps_per_s"]) > 0 and train[-1]["critic_loss"] != ""
    assert not checkpoint_paths(out / "checkpoints")  # a finished run keeps only final_agent.pt


def test_finished_run_is_not_rerun(reference_run):
    before = (reference_run / "eval.csv").read_text()
    mtime = (reference_run / "DONE").stat().st_mtime
    assert run_cli(reference_run) == 0
    assert (reference_run / "eval.csv").read_text() == before
    assert (reference_run / "DONE").stat().st_mtime == mtime


def test_force_keeps_the_old_run(tmp_path):
    out = tmp_path / "run"
    assert run_cli(out, steps=200) == 0
    assert run_cli(out, "--force", steps=200) == 0
    backups = list(tmp_path.glob("run.replaced-*"))
    assert len(backups) == 1 and (backups[0] / "DONE").exists() and (out / "DONE").exists()


def _launch(out, steps=600, extra=()):
    cmd = [sys.executable, "-m", "flowrl", *TINY, "--steps", str(steps), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(out, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        path = Path(out) / "train.csv"
        if path.exists():
            rows = list(csv.DictReader(open(path)))
            if rows and int(rows[-1]["step"]) >= step:
                return
        time.sleep(0.05)
    raise TimeoutError("run did not reach the step in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_and_resume_gives_identical_results(reference_run, tmp_path, sig):
    out = tmp_path / "run"
    proc = _launch(out)
    _wait_for_step(out, 250, proc)  # past start_steps, mid-episode (cartpole episodes last 1000 steps)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "resume" in err and not (out / "DONE").exists()
    ckpts = checkpoint_paths(out / "checkpoints")
    assert ckpts, "no checkpoint written on signal"
    stopped_at = torch.load(ckpts[0], weights_only=False)["step"]
    assert 250 <= stopped_at < 600

    assert run_cli(out) == 0
    assert eval_rows(out) == eval_rows(reference_run)
    assert train_rows(out) == train_rows(reference_run)
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert [s["resumed_from_step"] for s in sessions] == [None, stopped_at]


def test_hard_kill_resumes_from_periodic_checkpoint(reference_run, tmp_path):
    out = tmp_path / "run"
    proc = _launch(out, extra=["checkpoint_every=100"])
    _wait_for_step(out, 450, proc)
    proc.kill()  # SIGKILL: no chance to checkpoint; logs may run ahead of the last checkpoint
    proc.communicate()
    assert run_cli(out, "checkpoint_every=100") == 0
    assert eval_rows(out) == eval_rows(reference_run)
    assert train_rows(out) == train_rows(reference_run)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    out = tmp_path / "run"
    proc = _launch(out, extra=["checkpoint_every=100", "keep_checkpoints=3"])
    _wait_for_step(out, 350, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    newest = checkpoint_paths(out / "checkpoints")[0]
    newest.write_bytes(b"this is not a checkpoint")
    assert run_cli(out, "checkpoint_every=100", "keep_checkpoints=3") == 0
    assert (out / "checkpoints" / (newest.name + ".corrupt")).exists()
    assert "unreadable" in (out / "train.log").read_text()
    assert (out / "DONE").exists()


def test_resume_with_different_config_is_refused(reference_run, tmp_path, capsys):
    out = tmp_path / "run"
    proc = _launch(out)
    _wait_for_step(out, 200, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert run_cli(out, "agent.lam=0.5") == 2
    err = capsys.readouterr().err
    assert "agent.lam: saved 0.1 -> now 0.5" in err and "different configuration" in err
    assert run_cli(out, "eval_envs=2") == 2  # evaluation noise is drawn per batch of episodes: not resume-safe
    assert "eval_envs: saved 1 -> now 2" in capsys.readouterr().err

    # A run written before a key existed resumes: the key takes its default, which keeps the earlier behaviour. Here
    # also in the layout before the execution: section, its settings among the hyperparameters (agent.amp, ...).
    saved = yaml.safe_load((out / "config.yaml").read_text())
    saved["agent"].update(saved.pop("execution"))
    del saved["eval_envs"], saved["agent"]["graph_warmup"], saved["agent"]["cpu_matmul"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert run_cli(out) == 0
    assert eval_rows(out) == eval_rows(reference_run)


def test_execution_settings_may_change_on_resume(reference_run, tmp_path):
    """A run resumes with other execution settings (not with other hyperparameters); each session records its own
    in manifest.json and config.yaml keeps the first. These two compute the same numbers on this CPU at this size."""
    out = tmp_path / "run"
    proc = _launch(out)
    _wait_for_step(out, 200, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    saved = (out / "config.yaml").read_text()
    assert run_cli(out, "execution.cuda_graphs=false", "execution.cpu_matmul=aten") == 0
    assert eval_rows(out) == eval_rows(reference_run)
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert sessions[0]["execution_settings"]["cuda_graphs"] is True
    assert sessions[-1]["execution_settings"]["cuda_graphs"] is False
    assert sessions[-1]["execution_settings"]["cpu_matmul"] == "aten"
    assert (out / "config.yaml").read_text() == saved


@pytest.mark.parametrize(
    "args,message",
    [
        (["--algo", "flowrll"], "Unknown algorithm 'flowrll'. Did you mean 'flowrl'"),
        (["--task", "dmc:cartpole-balanse"], "dmc:cartpole-balance"),
        (["--steps", "0"], "steps must be a positive integer"),
        (["--steps", "-5"], "steps must be a positive integer"),
        (["eval_every=0"], "eval_every must be a positive integer"),
        (["agent.hiden_dim=3"], "Did you mean 'hidden_dim'"),
        (["bogus=1"], "unknown run key 'bogus'"),
        (["batch_size=abc"], "batch_size: expected an integer"),
        (["agent.amp=bf16"], "agent.amp is an execution setting now: write execution.amp=bf16"),
        (["agent.cuda_graphs=false"], "write execution.cuda_graphs=false"),
        (["execution.ampp=bf16"], "unknown execution key 'ampp'. Did you mean 'amp'"),
        (["--algo", "sac", "execution.amp=bf16"], "execution.amp: sac has no execution settings"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, capsys, args, message):
    base = ["--algo", "flowrl", "--task", "dmc:cartpole-balance", "--steps", "100", "--out", str(tmp_path / "r")]
    assert cli_main([*base, *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("user data")
    assert cli_main(["--task", "dmc:cartpole-balance", "--steps", "100", "--out", str(blocker / "run")]) == 2
    assert "cannot write to output directory" in capsys.readouterr().err
    assert cli_main(["--task", "dmc:cartpole-balance", "--steps", "100", "--out", str(blocker)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert blocker.read_text() == "user data"


def test_non_run_directory_is_not_written_into(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli_main(["--task", "dmc:cartpole-balance", "--steps", "100", "--out", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_config_file_and_override_precedence(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dmc:walker-walk\nseed: 4\nagent:\n  hidden_dim: 32\n  lam: 0.3\n")
    assert cli_main(["--config", str(cfg), "--seed", "5", "agent.lam=0.7", "--print-config"]) == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["task"] == "dmc:walker-walk" and printed["seed"] == 5
    assert printed["agent"]["hidden_dim"] == 32 and printed["agent"]["lam"] == 0.7
    assert printed["replay_recent_fraction"] == 0.2  # FlowRL's default replay


def test_exponent_notation_is_a_number(capsys):
    """YAML 1.1 reads '1e-3' (no dot) as a string; as a float setting it must still mean 0.001."""
    assert cli_main(["--task", "dmc:cartpole-balance", "agent.lr=1e-3", "agent.lam=2E-1", "--print-config"]) == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["agent"]["lr"] == 0.001 and printed["agent"]["lam"] == 0.2
    assert cli_main(["--task", "dmc:cartpole-balance", "agent.lr=fast", "--print-config"]) == 2
    assert "agent.lr: expected a number, got 'fast'" in capsys.readouterr().err


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear kernel")
def test_resume_on_onednn_matmuls_gives_identical_results(tmp_path):
    """Paper-size CPU updates run on oneDNN's GEMMs (cpu_matmul=auto): a run on them resumes exactly too (forced here
    for a tiny network, which auto would leave on batched matmul)."""
    extra = ["execution.cpu_matmul=onednn"]
    reference = tmp_path / "reference"
    assert run_cli(reference, *extra) == 0
    out = tmp_path / "run"
    proc = _launch(out, extra=extra)
    _wait_for_step(out, 250, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert run_cli(out, *extra) == 0
    assert eval_rows(out) == eval_rows(reference)
    assert train_rows(out) == train_rows(reference)
