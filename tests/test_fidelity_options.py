"""Where this implementation was brought to the official code's behaviour (docs/paper-vs-code.md): the replay
batch split, acting precision, the 'solved' success key; and runs written before those options resume as they
were trained (flowrl/config.py LEGACY_VALUES)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_RUN

from flowrl.agents.base import EnvSpec
from flowrl.agents.flowrl import FlowRL, FlowRLConfig
from flowrl.cli import main as cli_main
from flowrl.config import LEGACY_VALUES, config_to_dict, resolve_config, resume_config, with_current_defaults
from flowrl.envs.common import success_value
from flowrl.execution import Execution
from flowrl.replay import ReplayBuffer


# ------------------------------------------------------------------------------------------ replay split
def test_official_split_floors_the_uniform_part_as_the_official_code():
    """The official ReplayMemory takes int(batch_size * 0.8) uniform indices and the rest recent."""
    official = ReplayBuffer(3, 1, 10, recent_fraction=0.2)
    legacy = ReplayBuffer(3, 1, 10, recent_fraction=0.2, split="round")
    assert (official.recent_count(256), legacy.recent_count(256)) == (52, 51)
    assert all(official.recent_count(b) == b - int(b * 0.8) for b in range(1, 1025))
    assert ReplayBuffer(3, 1, 10).recent_count(256) == 0  # uniform replay stays uniform
    with pytest.raises(ValueError, match="replay split 'nearest'"):
        ReplayBuffer(3, 1, 10, split="nearest")


@pytest.mark.parametrize("split, recent", [("official", 52), ("round", 51)])
def test_the_recent_part_of_a_batch_comes_from_the_recent_window(split, recent):
    rb = ReplayBuffer(1, 1, 10_000, recent_fraction=0.2, recent_window=16, split=split)
    for i in range(10_000):
        rb.add([float(i)], [0.0], 0.0, [0.0], False)
    obs = rb.sample(256).obs[:, 0]
    assert (obs[-recent:] >= 10_000 - 16).all()  # the recent indices follow the uniform ones
    assert (obs[: 256 - recent] < 10_000 - 16).sum() >= 256 - recent - 2  # uniform ones rarely hit the window


# ------------------------------------------------------------------------------------------ acting precision
def _agent(**execution):
    torch.manual_seed(0)
    spec = EnvSpec(5, 2, np.array([-1.0, -2.0]), np.array([1.0, 0.5]))
    agent = FlowRL(spec, FlowRLConfig(hidden_dim=32), execution=Execution(**execution))
    agent.seed_evaluation(7)
    return agent


def test_acting_is_float32_by_default_even_when_updates_run_in_bf16():
    obs = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    plain = _agent(amp="off").act(obs, deterministic=True)
    precision = torch.get_float32_matmul_precision()
    assert torch.equal(_agent(amp="bf16").act(obs, deterministic=True), plain)  # act_precision tf32 = float32 on CPU
    assert torch.get_float32_matmul_precision() == precision  # left as it was
    legacy = _agent(amp="bf16", act_precision="amp").act(obs, deterministic=True)
    assert not torch.equal(legacy, plain) and torch.allclose(legacy, plain, atol=0.05)  # bf16 acting, as before
    with pytest.raises(ValueError, match="act_precision='bf16'"):
        Execution(act_precision="bf16")


# ------------------------------------------------------------------------------------------ success
def test_solved_is_read_first_as_the_official_evaluation_does():
    assert success_value({"solved": True}) == 1.0
    assert success_value({"solved": 0, "success": 1}) == 0.0  # official: 'solved' before 'success'
    assert success_value({"success": np.array([1.0])}) == 1.0 and success_value({"is_success": False}) == 0.0
    assert success_value({"discount": 1.0}) is None


def test_a_gym_task_reporting_solved_has_success():
    import gymnasium

    from flowrl.envs.gym import GymEnv

    class Reach(gymnasium.Env):  # MyoSuite-style: info['solved'] only
        observation_space = gymnasium.spaces.Box(-9, 9, (2,))
        action_space = gymnasium.spaces.Box(-1, 1, (2,))

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = np.ones(2)
            return self.pos.copy(), {}

        def step(self, action):
            self.pos = self.pos + action
            return self.pos.copy(), 0.0, False, False, {"solved": bool(np.all(np.abs(self.pos) < 0.5))}

    env = GymEnv("Reach", env=Reach())
    assert env.has_success
    env.reset(0)
    assert env.step(np.array([-1.0, -1.0])).info["success"] == 1.0


# ------------------------------------------------------------------------------------------ old runs resume
def test_a_config_saved_before_the_new_keys_is_read_with_the_old_behaviour():
    cfg = resolve_config({"algo": "flowrl", "task": "dmc:cartpole-balance"})
    saved = {k: v for k, v in with_current_defaults({"algo": "flowrl"}).items() if k != "replay_split"}
    saved["execution"] = {k: v for k, v in saved["execution"].items() if k != "act_precision"}
    read = with_current_defaults(saved)
    assert read["replay_split"] == LEGACY_VALUES["replay_split"] == "round"
    assert read["execution"]["act_precision"] == LEGACY_VALUES["execution.act_precision"] == "amp"
    resumed = resume_config(saved, cfg)
    assert resumed.replay_split == "round" and resumed.execution.act_precision == "amp"
    assert (cfg.replay_split, cfg.execution.act_precision) == ("official", "tf32")  # the command's config is untouched
    # A saved config that has the keys, or a command that chose another value, keeps its own.
    assert resume_config(config_to_dict(cfg), cfg) is cfg
    chosen = resolve_config({"algo": "flowrl", "execution": {"act_precision": "float32"}})
    assert resume_config(saved, chosen).execution.act_precision == "float32"
    sac = resolve_config({"algo": "sac"})  # an agent without the key: only the run key is filled
    assert "act_precision" not in with_current_defaults({"algo": "sac"})["agent"]
    assert with_current_defaults({"algo": "sac"})["execution"] is None
    assert resume_config({"algo": "sac"}, sac).replay_split == "round"


TINY = [*TINY_RUN, "--seed", "2", "execution.amp=bf16"]  # bf16 updates on a CPU: acting precision then matters here too
OLD = ["replay_split=round", "execution.act_precision=amp"]  # what runs did before these keys existed


def _rows(out, name):
    with open(Path(out) / name) as f:
        return [{k: v for k, v in r.items() if "wall" not in k and "per_s" not in k} for r in csv.DictReader(f)]


def test_a_run_written_before_the_keys_resumes_with_the_behaviour_it_was_trained_with(tmp_path):
    reference = tmp_path / "reference"
    assert cli_main([*TINY, *OLD, "--steps", "600", "--out", str(reference)]) == 0
    new = tmp_path / "new"  # the new defaults do train differently: otherwise this test could not fail
    assert cli_main([*TINY, "--steps", "600", "--out", str(new)]) == 0
    assert _rows(new, "train.csv") != _rows(reference, "train.csv")

    out = tmp_path / "old"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowrl", *TINY, *OLD, "--steps", "600", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        rows = _rows(out, "train.csv") if (out / "train.csv").exists() else []
        if rows and int(rows[-1]["step"]) >= 300:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = yaml.safe_load((out / "config.yaml").read_text())  # as a run written before the keys existed: execution
    execution = saved.pop("execution")  # settings among the hyperparameters, no replay_split or act_precision
    del saved["replay_split"], execution["act_precision"]
    saved["agent"].update(execution)
    (out / "config.yaml").write_text(yaml.safe_dump(saved))

    assert cli_main([*TINY, "--steps", "600", "--out", str(out)]) == 0  # the same command, new defaults
    assert _rows(out, "eval.csv") == _rows(reference, "eval.csv")
    assert _rows(out, "train.csv") == _rows(reference, "train.csv")
