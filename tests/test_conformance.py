"""The agent conformance suite: every built-in agent passes it, and deliberately broken agents fail
exactly the check that targets their defect (so the suite has teeth)."""

import dataclasses

import numpy as np
import pytest
import torch

from baselines.td3 import TD3, TD3Config
from flowrl.agents.registry import BUILTIN_AGENTS
from flowrl.testing import CHECK_NAMES, Budget, ConformanceError, check_agent, conformance_test, run_check
from flowrl.testing.__main__ import main as conformance_cli
from flowrl.testing.conformance import bandit_optimum, bandit_reward, resolve_agent_class, resolve_config

# Every built-in agent x every check, one test each (the bandit checks are the slow ones: 5-40 s).
BUILTIN_CASES = [
    pytest.param(agent, check, id=f"{agent}-{check}") for agent in sorted(BUILTIN_AGENTS) for check in CHECK_NAMES
]


@pytest.mark.parametrize("agent,check", BUILTIN_CASES)
def test_builtin_agents_conform(agent, check):
    result = run_check(agent, check)
    assert result.passed, f"{agent} failed {check}: {result.detail}"


# The pytest wrapper users put in their own test files, exercised on a cheap agent.
test_td3_through_conformance_test_wrapper = conformance_test("baselines.td3:TD3", budget=Budget(bandit_updates=2500))


# ----------------------------------------------------------------------------------- broken agents
class OutOfBounds(TD3):
    """Returns tanh outputs without rescaling them to the action bounds."""

    @torch.no_grad()
    def act(self, obs, deterministic=False):
        return self.actor(obs)


class ForgetsOptimisers(TD3):
    """Checkpoints the networks but not the optimiser state."""

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if not k.endswith("_opt")}

    def load_state_dict(self, state):
        for name in ("actor", "critic", "actor_target", "critic_target"):
            getattr(self, name).load_state_dict(state[name])


class UnseededNoise(TD3):
    """Draws exploration noise from an unseeded NumPy generator instead of torch's global RNG."""

    @torch.no_grad()
    def act(self, obs, deterministic=False):
        unit = self.actor(obs)
        if not deterministic:
            unit = (unit + torch.as_tensor(np.random.default_rng().normal(0, 0.1, unit.shape), dtype=unit.dtype)).clamp(
                -1, 1
            )
        return self.scale_action(unit)


class NeverLearns(TD3):
    def update(self, batch, step):
        return {"critic_loss": torch.tensor(0.0)}


class DivergesLate(TD3):
    """Fine for a while, then its metrics turn NaN (as a diverging critic's would)."""

    def update(self, batch, step):
        metrics = super().update(batch, step)
        if step >= 1200:
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics


class IgnoresState(TD3):
    """Always the middle of the action box, whatever the state."""

    @torch.no_grad()
    def act(self, obs, deterministic=False):
        return ((self.act_low + self.act_high) / 2).expand(obs.shape[0], -1).clone()


@dataclasses.dataclass
class TupleConfig(TD3Config):
    layer_sizes: tuple = (32, 32)  # a tuple does not survive the YAML config file round trip


class TupleConfigAgent(TD3):
    Config = TupleConfig


@pytest.mark.parametrize(
    "agent,failing_check",
    [
        (OutOfBounds, "act"),
        (ForgetsOptimisers, "checkpoint"),
        (UnseededNoise, "determinism"),
        (NeverLearns, "update"),
        (DivergesLate, "nan_free"),
        (IgnoresState, "bandit"),
        (TupleConfigAgent, "config"),
    ],
)
def test_broken_agents_fail_the_check_for_their_defect(agent, failing_check):
    result = run_check(agent, failing_check, budget=Budget(bandit_updates=300))
    assert not result.passed, f"{agent.__name__} unexpectedly passed {failing_check}"
    assert result.detail


def test_check_agent_raises_naming_every_failed_check():
    with pytest.raises(ConformanceError) as err:
        check_agent(OutOfBounds, checks=["config", "act", "update"])
    assert "1 of 3" in str(err.value) and "act:" in str(err.value) and "left the bounds" in str(err.value)
    results = check_agent(OutOfBounds, checks=["act"], raise_on_failure=False)
    assert [r.passed for r in results] == [False]


def test_check_agent_returns_results_and_leaves_global_state_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    results = check_agent("td3", checks=["act", "checkpoint"])
    assert [r.name for r in results] == ["act", "checkpoint"] and all(r.passed for r in results)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads


def test_bad_arguments_are_reported_clearly():
    with pytest.raises(ValueError, match="unknown check"):
        check_agent("td3", checks=["bounds"])
    with pytest.raises(ValueError, match="Unknown algorithm 'td4'"):
        check_agent("td4")
    with pytest.raises(ValueError, match="cannot import agent"):
        resolve_agent_class("no_such_module:Agent")
    with pytest.raises(TypeError, match="not a subclass"):
        resolve_agent_class(dict)


def test_config_resolution_order():
    assert resolve_config(TD3).hidden_dim == 32  # generic tiny default
    assert resolve_config(TD3, {"hidden_dim": 8}).hidden_dim == 8  # explicit overrides
    cfg = TD3Config(hidden_dim=4)
    assert resolve_config(TD3, cfg) is cfg  # a ready config is used as is
    qvpo = resolve_agent_class("qvpo")
    assert resolve_config(qvpo).diffusion_steps == qvpo.conformance_config["diffusion_steps"]  # the agent's own


def test_bandit_reward_is_zero_only_at_the_optimum():
    obs = torch.rand(100, 2) * 2 - 1
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 3.0])
    best = low + (bandit_optimum(obs) + 1) / 2 * (high - low)
    assert torch.allclose(bandit_reward(obs, best), torch.zeros(100, 1), atol=1e-6)
    assert (bandit_reward(obs, best + 0.1) < -1e-4).all()
    assert (bandit_optimum(obs).abs() <= 0.75 + 1e-6).all()  # the optimum is strictly inside the bounds


def test_command_line(capsys):
    assert conformance_cli(["td3", "--check", "config", "--check", "act"]) == 0
    out = capsys.readouterr().out
    assert "ok   config" in out and "ok   act" in out
    assert conformance_cli([f"{OutOfBounds.__module__}:OutOfBounds", "--check", "act"]) == 1
