"""The agent conformance suite: does an agent honour the contract of `flowrl.agents.base.Agent`?

Run it on any agent, built-in or your own:

    from flowrl.testing import check_agent
    check_agent("myagent")                      # a registered name, a "module:Class" path, or the class
    check_agent(MyAgent, config={"hidden_dim": 32}, device="cuda")

    python -m flowrl.testing myagent            # the same from the shell

or inside pytest, one test per check:

    from flowrl.testing import conformance_test
    test_myagent_conformance = conformance_test("myagent")

Checks (each builds fresh agents with tiny networks; all together take seconds to a minute on a CPU):

  config         Config is a dataclass whose defaults build, and survives the run-config round trip
                 (YAML dump and `key=value`-style rebuild), as `flowrl-train` needs
  act            actions have shape (B, act_dim), float32, on the agent's device, finite and inside the
                 bounds (symmetric, asymmetric low=[-2, 0] high=[1, 3], 1-D), for batch sizes 1 and 17,
                 stochastic and deterministic, for huge observations too; acting changes no parameter
  update         update() changes the parameters and returns finite scalar metrics
  determinism    the same seed gives the same actions and the same parameters after several updates
  checkpoint     state_dict -> torch.save/torch.load -> a fresh agent -> load_state_dict continues exactly
                 like the original (metrics, parameters, stochastic and deterministic actions)
  nan_free       thousands of updates on random data (rewards with std 10, random terminals) stay finite
  bandit         a one-step contextual bandit with reward -mean((u - u*(s))^2) in normalised action units
                 (asymmetric bounds): trained through its own act/update by a small replay loop here, the
                 agent's evaluation return must reach >= -0.06 (optimum 0, best state-independent action
                 -0.235, random -0.56)

Network sizes: `config=` overrides the agent's Config for every check. Without it, the class attribute
`conformance_config` (a dict) is used if the agent defines one, else {"hidden_dim": 32} when Config has
a `hidden_dim` field.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flowrl.agents.base import Agent, Batch, EnvSpec

SYMMETRIC = EnvSpec(obs_dim=5, act_dim=3, act_low=-np.ones(3), act_high=np.ones(3))
ASYMMETRIC = EnvSpec(obs_dim=4, act_dim=2, act_low=np.array([-2.0, 0.0]), act_high=np.array([1.0, 3.0]))
ONE_D = EnvSpec(obs_dim=1, act_dim=1, act_low=np.array([-0.5]), act_high=np.array([0.25]))


class ConformanceError(AssertionError):
    """One or more conformance checks failed; the message lists each with what went wrong."""


@dataclass
class Budget:
    """How much work the heavier checks do (defaults fit CI on two CPU cores)."""

    batch_size: int = 32
    nan_updates: int = 2000
    bandit_batch_size: int = 64
    bandit_updates: int = 4000
    bandit_max_loss: float = 0.06  # pass: mean return >= -bandit_max_loss (random ~ -0.56, best constant action -0.235)


@dataclass
class CheckResult:
    name: str
    passed: bool
    seconds: float
    detail: str = ""

    def __str__(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        return f"{status} {self.name:<12} {self.seconds:6.1f}s  {self.detail}"


# ----------------------------------------------------------------------------------- resolving the agent
def resolve_agent_class(agent: str | type) -> type[Agent]:
    """A registered name ("sac"), an import path ("my_pkg.agent:MyAgent") or an Agent subclass."""
    if isinstance(agent, str):
        if ":" in agent:
            module, _, attr = agent.partition(":")
            try:
                cls = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"cannot import agent {agent!r}: {exc}. Use 'package.module:ClassName'.") from exc
        else:
            from flowrl.agents.registry import get_agent_class

            cls = get_agent_class(agent)
    else:
        cls = agent
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{cls!r} is not a subclass of flowrl.agents.base.Agent")
    return cls


def resolve_config(cls: type[Agent], config: Mapping[str, Any] | Any | None = None):
    """The agent config the checks use (see the module docstring)."""
    config_cls = getattr(cls, "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConformanceError(f"{cls.__name__}.Config must be a dataclass of hyperparameters, got {config_cls!r}")
    if config is not None and dataclasses.is_dataclass(config) and not isinstance(config, type):
        return config
    if config is None:
        config = getattr(cls, "conformance_config", None)
    if config is None:
        names = {f.name for f in dataclasses.fields(config_cls)}
        config = {"hidden_dim": 32} if "hidden_dim" in names else {}
    return config_cls(**dict(config))


class _Factory:
    """Builds seeded agents of one class and config on one device."""

    def __init__(self, cls: type[Agent], config, device: torch.device):
        self.cls, self.config, self.device = cls, config, device

    def __call__(self, spec: EnvSpec, seed: int) -> Agent:
        torch.manual_seed(seed)
        return self.cls(spec, self.config, self.device)


# ----------------------------------------------------------------------------------- helpers
def random_batch(
    spec: EnvSpec,
    n: int,
    generator: torch.Generator,
    device: torch.device,
    reward_scale: float = 1.0,
    terminal_prob: float = 0.0,
) -> Batch:
    """Transitions with random observations, in-bounds actions, random rewards and terminals."""
    low, high = torch.as_tensor(spec.act_low), torch.as_tensor(spec.act_high)
    obs = torch.randn(n, spec.obs_dim, generator=generator)
    action = low + torch.rand(n, spec.act_dim, generator=generator) * (high - low)
    reward = torch.randn(n, 1, generator=generator) * reward_scale
    next_obs = torch.randn(n, spec.obs_dim, generator=generator)
    not_done = (torch.rand(n, 1, generator=generator) >= terminal_prob).float()
    return Batch(*(t.to(device) for t in (obs, action, reward, next_obs, not_done)))


def _tensors(agent: Agent) -> dict[str, torch.Tensor]:
    """Every tensor in the agent's state_dict (networks, targets, optimisers...), flattened by path."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value.detach().clone()
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)

    walk("", agent.state_dict())
    return out


def _first_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> str | None:
    if set(a) != set(b):
        return f"different state_dict entries: {sorted(set(a) ^ set(b))[:5]}"
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k].cpu(), b[k].cpu()):
            diff = (a[k].float() - b[k].float()).abs().max().item() if a[k].shape == b[k].shape else "shape"
            return f"{k} differs (max abs diff {diff})"
    return None


def _metric_values(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ConformanceError(f"update() must return a mapping of metric name -> scalar, got {type(metrics).__name__}")
    values = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise ConformanceError(f"metric names must be strings, got {k!r}")
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise ConformanceError(f"metric {k!r} has shape {tuple(v.shape)}; metrics must be scalars")
            values[k] = float(v.detach().float().cpu())
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            values[k] = float(v)
        else:
            raise ConformanceError(f"metric {k!r} is a {type(v).__name__}; use a scalar tensor or a number")
    return values


def _actions(agent: Agent, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
    return agent.act(obs, deterministic=deterministic).detach().clone()


# ----------------------------------------------------------------------------------- the checks
def check_config(make: _Factory, budget: Budget) -> str:
    import yaml

    from flowrl.config import build_dataclass

    config_cls = make.cls.Config
    try:
        defaults = config_cls()
    except TypeError as exc:
        raise ConformanceError(f"{config_cls.__name__}() must build from defaults alone: {exc}") from exc
    for cfg in (defaults, make.config):
        as_dict = dataclasses.asdict(cfg)
        try:
            text = yaml.safe_dump(as_dict)
        except yaml.YAMLError as exc:
            raise ConformanceError(
                f"config values must be plain YAML types (numbers, strings, bools, lists): {exc}"
            ) from exc
        rebuilt = build_dataclass(config_cls, yaml.safe_load(text), "agent")
        if rebuilt != cfg:
            raise ConformanceError(f"config does not survive the YAML round trip: {cfg} -> {rebuilt}")
    return f"{len(dataclasses.fields(config_cls))} fields"


def _check_action(a, spec: EnvSpec, low: torch.Tensor, high: torch.Tensor, n: int, device: torch.device, where: str):
    """One act() result: a float32 tensor of shape (n, act_dim) on `device`, without autograd, finite, in bounds."""
    where = f"{where}, act_dim={spec.act_dim}"
    if not isinstance(a, torch.Tensor):
        raise ConformanceError(f"act() must return a torch.Tensor, got {type(a).__name__}")
    if a.shape != (n, spec.act_dim):
        raise ConformanceError(f"act() returned shape {tuple(a.shape)}, expected {(n, spec.act_dim)} ({where})")
    if a.dtype != torch.float32:
        raise ConformanceError(f"act() returned {a.dtype}, expected torch.float32 ({where})")
    if a.device.type != device.type:
        raise ConformanceError(f"act() returned a tensor on {a.device}, expected {device}")
    if a.requires_grad:
        raise ConformanceError("act() must run without autograd (decorate it with @torch.no_grad())")
    if not torch.isfinite(a).all():
        raise ConformanceError(f"act() returned non-finite actions ({where})")
    if (a < low).any() or (a > high).any():
        raise ConformanceError(
            f"act() left the bounds [{spec.act_low}, {spec.act_high}]: min {a.min(0).values.tolist()}, "
            f"max {a.max(0).values.tolist()} ({where})"
        )


def check_act(make: _Factory, budget: Budget) -> str:
    g = torch.Generator().manual_seed(1)
    for spec in (SYMMETRIC, ASYMMETRIC, ONE_D):
        agent = make(spec, seed=0)
        before = _tensors(agent)
        low, high = agent.act_low, agent.act_high
        # Act before and after a few updates (a trained policy must also stay in bounds).
        for phase in ("untrained", "trained"):
            if phase == "trained":
                for i in range(5):
                    agent.update(random_batch(spec, budget.batch_size, g, make.device, reward_scale=10.0), i)
            for n in (1, 17):
                for scale in (1.0, 100.0):
                    obs = (torch.randn(n, spec.obs_dim, generator=g) * scale).to(make.device)
                    for deterministic in (False, True):
                        a = agent.act(obs, deterministic=deterministic)
                        where = f"{phase} agent, batch {n}, obs scale {scale}, deterministic={deterministic}"
                        _check_action(a, spec, low, high, n, make.device, where)
            if phase == "untrained":  # acting may advance generators and counters, never weights or optimisers
                floats = lambda d: {k: v for k, v in d.items() if v.is_floating_point()}  # noqa: E731
                changed = _first_difference(floats(before), floats(_tensors(agent)))
                if changed:
                    raise ConformanceError(f"act() changed the agent's parameters: {changed}")
    return "3 action spaces x batch sizes 1, 17 x obs scale 1, 100"


def check_update(make: _Factory, budget: Budget) -> str:
    spec = ASYMMETRIC
    agent = make(spec, seed=0)
    g = torch.Generator().manual_seed(2)
    before = {k: v for k, v in _tensors(agent).items()}
    names: set[str] = set()
    for i in range(4):
        values = _metric_values(agent.update(random_batch(spec, budget.batch_size, g, make.device), i))
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ConformanceError(f"update {i} returned non-finite metrics: {bad}")
        names |= set(values)
    after = _tensors(agent)
    changed = [
        k for k in before if k in after and before[k].shape == after[k].shape and not torch.equal(before[k], after[k])
    ]
    if not changed:
        raise ConformanceError("4 updates changed nothing in state_dict(); does update() step its optimisers?")
    if not names:
        raise ConformanceError("update() returned no metrics; return at least the losses")
    return f"metrics: {', '.join(sorted(names))}"


def _train_and_act(
    agent: Agent, spec: EnvSpec, updates: int, batch_seed: int, rng_seed: int, device, budget, first_step=0
):
    """Updates on a fixed batch stream with torch's global RNG seeded, then a stochastic action and an
    evaluation action (seeded as the runner seeds evaluations). Returns (metrics, actions, eval actions)."""
    g = torch.Generator().manual_seed(batch_seed)
    obs = torch.randn(9, spec.obs_dim, generator=torch.Generator().manual_seed(batch_seed + 1)).to(device)
    torch.manual_seed(rng_seed)
    metrics = [
        _metric_values(
            agent.update(random_batch(spec, budget.batch_size, g, device, terminal_prob=0.1), first_step + i)
        )
        for i in range(updates)
    ]
    actions = _actions(agent, obs, False)
    torch.manual_seed(rng_seed + 1)
    agent.seed_evaluation(rng_seed + 1)
    return metrics, actions, _actions(agent, obs, True)


def check_determinism(make: _Factory, budget: Budget) -> str:
    spec = ASYMMETRIC
    runs = []
    for _ in range(2):
        agent = make(spec, seed=123)
        runs.append(
            (
                _train_and_act(agent, spec, 6, batch_seed=5, rng_seed=7, device=make.device, budget=budget),
                _tensors(agent),
            )
        )
    (m1, s1, d1), t1 = runs[0]
    (m2, s2, d2), t2 = runs[1]
    if m1 != m2:
        raise ConformanceError(
            "the same seed gave different metrics; draw all randomness from torch's global RNG "
            "or from generators seeded from it at construction"
        )
    if not torch.equal(s1, s2) or not torch.equal(d1, d2):
        raise ConformanceError("the same seed gave different actions after the same updates")
    diff = _first_difference(t1, t2)
    if diff:
        raise ConformanceError(f"the same seed gave different state after the same updates: {diff}")
    # A different seed must give a different agent (else the seed is ignored somewhere).
    other = make(spec, seed=124)
    if _first_difference(_tensors(other), _tensors(make(spec, seed=123))) is None:
        raise ConformanceError("different seeds gave identical initial agents; initialise from torch's global RNG")
    return "6 updates, same seed -> identical metrics, actions and state"


def check_checkpoint(make: _Factory, budget: Budget) -> str:
    spec = ASYMMETRIC
    original = make(spec, seed=11)
    _train_and_act(original, spec, 5, batch_seed=21, rng_seed=31, device=make.device, budget=budget)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # as the runner's checkpoints: serialised, loaded onto the CPU
    buffer.seek(0)
    state = torch.load(buffer, map_location="cpu", weights_only=False)

    restored = make(spec, seed=999)  # different initial weights, so only load_state_dict can make it equal
    restored.load_state_dict(state)
    diff = _first_difference(_tensors(original), _tensors(restored))
    if diff:
        raise ConformanceError(f"after load_state_dict the state differs from the saved one: {diff}")
    # Continue both with the same global RNG stream: everything must stay identical.
    a = _train_and_act(original, spec, 5, batch_seed=41, rng_seed=51, device=make.device, budget=budget, first_step=5)
    b = _train_and_act(restored, spec, 5, batch_seed=41, rng_seed=51, device=make.device, budget=budget, first_step=5)
    if a[0] != b[0]:
        first = next(i for i, (x, y) in enumerate(zip(a[0], b[0])) if x != y)
        raise ConformanceError(
            f"a restored agent's update {first + 1} after loading differs from the original's "
            f"({a[0][first]} vs {b[0][first]}); "
            "state_dict must hold everything that affects training (optimisers, target nets, temperatures, "
            "counters, the agent's own generators)"
        )
    if not torch.equal(a[1], b[1]):
        raise ConformanceError(
            "a restored agent's exploration actions differ from the original's after the same updates"
        )
    if not torch.equal(a[2], b[2]):
        raise ConformanceError(
            "a restored agent's evaluation actions differ from the original's after the same updates "
            "(with torch's global RNG and seed_evaluation seeded alike)"
        )
    diff = _first_difference(_tensors(original), _tensors(restored))
    if diff:
        raise ConformanceError(f"a restored agent's state drifted from the original's: {diff}")
    return "5 updates, save/load into a fresh agent, 5 more: identical"


def check_nan_free(make: _Factory, budget: Budget) -> str:
    spec = ASYMMETRIC
    agent = make(spec, seed=3)
    g = torch.Generator().manual_seed(4)
    probe = torch.randn(16, spec.obs_dim, generator=g).to(make.device)
    pool = [
        random_batch(spec, budget.batch_size, g, make.device, reward_scale=10.0, terminal_prob=0.3) for _ in range(16)
    ]
    running: dict[str, torch.Tensor] = {}
    for i in range(budget.nan_updates):
        for k, v in agent.update(pool[i % len(pool)], i).items():  # summed on the device: no sync per update
            v = torch.as_tensor(v, dtype=torch.float32, device=make.device).detach().abs().sum()
            running[k] = running[k] + v if k in running else v
        if (i + 1) % 500 == 0 or i + 1 == budget.nan_updates:
            bad = [k for k, v in running.items() if not torch.isfinite(v)]
            if bad:
                raise ConformanceError(f"metrics became non-finite within {i + 1} updates: {bad}")
            nonfinite = [k for k, v in _tensors(agent).items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if nonfinite:
                raise ConformanceError(f"state became non-finite within {i + 1} updates: {nonfinite[:5]}")
            for deterministic in (False, True):
                if not torch.isfinite(agent.act(probe, deterministic=deterministic)).all():
                    raise ConformanceError(f"actions became non-finite within {i + 1} updates")
    return f"{budget.nan_updates} updates on random data"


# The bandit: one-step episodes with state s ~ U[-1, 1]^2. In normalised action units u in [-1, 1]^2 (the
# environment's bounds are the asymmetric low=[-2, 0], high=[1, 3]) the best action is
# u*(s) = 0.75 * (s_1, sin(pi/2 * s_0)) and the reward is -mean((u - u*(s))^2), 0 at the optimum.
# Reference returns: uniform random actions about -0.56, the best state-independent action (u = 0) -0.235.
BANDIT = EnvSpec(obs_dim=2, act_dim=2, act_low=np.array([-2.0, 0.0]), act_high=np.array([1.0, 3.0]))


def bandit_optimum(obs: torch.Tensor) -> torch.Tensor:
    """u*(s) in normalised [-1, 1] action units."""
    return torch.stack([0.75 * obs[:, 1], 0.75 * torch.sin(0.5 * math.pi * obs[:, 0])], dim=-1)


def bandit_reward(obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """(B, 1) rewards for environment-unit actions."""
    low = torch.as_tensor(BANDIT.act_low, device=action.device)
    high = torch.as_tensor(BANDIT.act_high, device=action.device)
    unit = 2.0 * (action - low) / (high - low) - 1.0
    return -((unit - bandit_optimum(obs)) ** 2).mean(dim=-1, keepdim=True)


def solve_bandit(make: _Factory, budget: Budget, seed: int = 0) -> dict[str, float]:
    """Train an agent on the bandit through its own act/update, with a replay loop: 256 random transitions,
    then per iteration 4 transitions from act(deterministic=False) and one update on a uniform batch.
    Returns the mean evaluation return of the trained agent (act(deterministic=True)), of uniform random
    actions and of the best constant action, on the same 512 held-out states."""
    spec, device = BANDIT, make.device
    agent = make(spec, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    low, high = torch.as_tensor(spec.act_low), torch.as_tensor(spec.act_high)
    capacity = 256 + 4 * budget.bandit_updates
    obs_buf = torch.zeros(capacity, spec.obs_dim, device=device)
    act_buf = torch.zeros(capacity, spec.act_dim, device=device)
    rew_buf = torch.zeros(capacity, 1, device=device)
    size = 0

    def add(obs: torch.Tensor, action: torch.Tensor) -> None:
        nonlocal size
        n = obs.shape[0]
        obs_buf[size : size + n], act_buf[size : size + n] = obs, action
        rew_buf[size : size + n] = bandit_reward(obs, action)
        size += n

    def states(n: int) -> torch.Tensor:
        return (torch.rand(n, spec.obs_dim, generator=g) * 2 - 1).to(device)

    add(states(256), (low + torch.rand(256, spec.act_dim, generator=g) * (high - low)).to(device))
    for i in range(budget.bandit_updates):
        obs = states(4)
        add(obs, agent.act(obs, deterministic=False))
        idx = torch.randint(0, size, (budget.bandit_batch_size,), generator=g).to(device)
        o = obs_buf[idx]  # one-step episodes: next_obs is never bootstrapped (not_done = 0)
        agent.update(Batch(o, act_buf[idx], rew_buf[idx], o, torch.zeros_like(rew_buf[idx])), i)

    eval_obs = states(512)
    agent.seed_evaluation(seed)
    return {
        "agent": bandit_reward(eval_obs, agent.act(eval_obs, deterministic=True)).mean().item(),
        "random": bandit_reward(eval_obs, (low + torch.rand(512, 2, generator=g) * (high - low)).to(device))
        .mean()
        .item(),
        "constant": bandit_reward(eval_obs, ((low + high) / 2).to(device).expand(512, -1)).mean().item(),
    }


def check_bandit(make: _Factory, budget: Budget) -> str:
    r = solve_bandit(make, budget)
    detail = (
        f"return {r['agent']:.4f} after {budget.bandit_updates} updates (optimum 0, best constant action "
        f"{r['constant']:.3f}, random {r['random']:.3f}; pass >= {-budget.bandit_max_loss})"
    )
    if r["agent"] < -budget.bandit_max_loss:
        raise ConformanceError(f"did not solve the contextual bandit: {detail}")
    return detail


CHECKS: dict[str, Callable[[_Factory, Budget], str]] = {
    "config": check_config,
    "act": check_act,
    "update": check_update,
    "determinism": check_determinism,
    "checkpoint": check_checkpoint,
    "nan_free": check_nan_free,
    "bandit": check_bandit,
}
CHECK_NAMES = list(CHECKS)


# ----------------------------------------------------------------------------------- entry points
def run_check(
    agent: str | type,
    name: str,
    config: Mapping[str, Any] | Any | None = None,
    device: str | torch.device = "cpu",
    budget: Budget | None = None,
) -> CheckResult:
    """Run one check; returns its result (failures are reported in it, not raised)."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; choose from {', '.join(CHECK_NAMES)}")
    cls = resolve_agent_class(agent)
    device = torch.device(device)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks run fastest on one thread (and CI machines are small)
    # The checks reseed torch's global RNG; fork it (and the device's) so the caller's streams are untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            make = _Factory(cls, resolve_config(cls, config), device)
            detail, passed = CHECKS[name](make, budget or Budget()), True
        except ConformanceError as exc:
            detail, passed = str(exc), False
        except Exception as exc:  # noqa: BLE001 - a crash inside the agent is a failed check, with its cause
            detail, passed = f"raised {type(exc).__name__}: {exc}", False
        finally:
            torch.set_num_threads(threads)
    return CheckResult(name, passed, time.perf_counter() - start, detail)


def check_agent(
    agent: str | type,
    config: Mapping[str, Any] | Any | None = None,
    *,
    device: str | torch.device = "cpu",
    checks: Sequence[str] | None = None,
    budget: Budget | None = None,
    raise_on_failure: bool = True,
    verbose: bool = False,
) -> list[CheckResult]:
    """Run the conformance checks on an agent; raises ConformanceError naming every failed check."""
    names = list(checks) if checks is not None else CHECK_NAMES
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; choose from {', '.join(CHECK_NAMES)}")
    results = []
    for name in names:
        result = run_check(agent, name, config, device, budget)
        if verbose:
            print(result, flush=True)
        results.append(result)
    failed = [r for r in results if not r.passed]
    if failed and raise_on_failure:
        label = agent if isinstance(agent, str) else getattr(agent, "__name__", repr(agent))
        raise ConformanceError(
            f"{label} failed {len(failed)} of {len(results)} conformance checks:\n"
            + "\n".join(f"  {r.name}: {r.detail}" for r in failed)
        )
    return results


def conformance_test(
    agent: str | type,
    config: Mapping[str, Any] | Any | None = None,
    device: str | torch.device = "cpu",
    budget: Budget | None = None,
):
    """A pytest test function, parametrised over the checks. In a test module:

    test_myagent_conformance = conformance_test("myagent")
    """
    import pytest

    @pytest.mark.parametrize("check", CHECK_NAMES)
    def test(check: str) -> None:
        result = run_check(agent, check, config, device, budget)
        if not result.passed:
            pytest.fail(f"{check}: {result.detail}", pytrace=False)

    return test
