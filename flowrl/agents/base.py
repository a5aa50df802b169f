"""The agent contracts: `Agent`, which every algorithm in this suite implements, and `BatchedAgent`, which an
algorithm may add to train several runs as one model.

An agent is built from the environment's observation/action specs and its own dataclass config,
acts on batches of observations, learns from replay batches and exposes its full state for
checkpoint/resume. The training loop (`flowrl.train`) owns everything else: environments,
replay, evaluation, logging, RNG bookkeeping and checkpoints. It drives every run through
`BatchedAgent`; a single run is a batch of one (`OneMember`), so any `Agent` trains unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Shapes and bounds an agent needs; observations are flat float vectors."""

    obs_dim: int
    act_dim: int
    act_low: np.ndarray  # (act_dim,) float32
    act_high: np.ndarray  # (act_dim,) float32

    def __post_init__(self):
        if self.obs_dim <= 0 or self.act_dim <= 0:
            raise ValueError(f"EnvSpec needs positive dims, got obs_dim={self.obs_dim}, act_dim={self.act_dim}")
        low = np.asarray(self.act_low, dtype=np.float32).reshape(-1)
        high = np.asarray(self.act_high, dtype=np.float32).reshape(-1)
        if low.shape != (self.act_dim,) or high.shape != (self.act_dim,):
            raise ValueError("act_low/act_high must have shape (act_dim,)")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError("action bounds must be finite with high > low")
        object.__setattr__(self, "act_low", low)
        object.__setattr__(self, "act_high", high)


class Batch(NamedTuple):
    """A replay batch on the training device. reward and not_done have shape (B, 1).

    not_done is 0 only where the episode *terminated*; time-limit truncation keeps it 1 so
    the target bootstraps.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor


class Agent(abc.ABC):
    """Base class of all agents. Subclasses set `Config` to a dataclass of hyperparameters.

    Randomness: agents draw from torch's global RNG (the runner seeds, saves and restores it),
    or keep their own generators and include them in `state_dict`.
    """

    Config: ClassVar[type]

    def __init__(self, spec: EnvSpec, config: Any, device: torch.device | str = "cpu"):
        self.spec = spec
        self.config = config
        self.device = torch.device(device)
        self.act_low = torch.as_tensor(spec.act_low, device=self.device)
        self.act_high = torch.as_tensor(spec.act_high, device=self.device)

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions (B, act_dim) within [act_low, act_high] for observations (B, obs_dim).

        deterministic=False is used for data collection, True for evaluation. Runs without autograd.
        """

    @abc.abstractmethod
    def update(self, batch: Batch, step: int) -> Mapping[str, torch.Tensor | float]:
        """One gradient update from a replay batch; `step` counts updates done before this one.

        Returns scalar metrics (tensors are fine: the runner syncs them only when it logs).
        """

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to continue training identically: networks, targets, optimisers, counters."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def seed_evaluation(self, seed: int) -> None:  # noqa: B027 (an optional hook: a no-op by default)
        """Called before each evaluation. Agents that keep their own generators reseed their evaluation
        stream here; agents on torch's global RNG need nothing (the runner isolates it during evaluation)."""

    def execution_report(self) -> dict | None:
        """How this agent ran here (e.g. whether its updates ran as CUDA graphs), as plain data for the run's
        manifest; None: nothing to report."""
        return None

    # Helpers shared by implementations -------------------------------------------------
    def scale_action(self, unit_action: torch.Tensor) -> torch.Tensor:
        """Map [-1, 1] to [act_low, act_high]."""
        return self.act_low + (unit_action + 1.0) * 0.5 * (self.act_high - self.act_low)

    def unscale_action(self, action: torch.Tensor) -> torch.Tensor:
        """Map [act_low, act_high] to [-1, 1]."""
        return 2.0 * (action - self.act_low) / (self.act_high - self.act_low) - 1.0


class BatchedAgent(abc.ABC):
    """`n` runs ("members") of one algorithm trained as one model, for one batched forward, backward and optimiser
    step per update. Every tensor carries a leading member dimension (n, B, ...); members share nothing but the
    computation, so member i learns exactly as a single run of its seed would (up to floating-point reduction
    order). A member's state (`unstack(i)`) is that single run's agent state, and single runs' states `stack` into
    one agent, so a run's checkpoints are the same whether it trained alone or in a batch.

    The training loop drives every run through this interface. An `Agent` that implements it (inheriting this class
    or only defining its methods, as FlowRL does) can train several seeds or tasks in one process (--seeds, --tasks);
    any other trains as a batch of one through `OneMember`.
    """

    n: int  # members

    @classmethod
    @abc.abstractmethod
    def stack(cls, states: list[dict], spec: EnvSpec, config: Any, device: torch.device | str = "cpu") -> BatchedAgent:
        """One agent of len(states) members from single runs' `state_dict`s, members in that order."""

    @abc.abstractmethod
    def unstack(self, i: int) -> dict:
        """Member i's state: a single run's `state_dict`."""

    @abc.abstractmethod
    def act_members(self, obs: torch.Tensor, deterministic: bool = False, members=None) -> torch.Tensor:
        """Actions (n, B, act_dim) for observations (n, B, obs_dim), as `Agent.act` per member. `members`
        (evaluation only): a (n, B) (or (n,)) mask of the rows that act for real; a member draws its randomness for
        those rows only, as its single run given just them would, and the other rows' actions are ignored."""

    @abc.abstractmethod
    def update_members(self, batch: Batch, step: int) -> Mapping[str, Sequence]:
        """One update of every member from stacked batches (n, B, ...); metrics[name][i] is member i's."""

    @abc.abstractmethod
    def seed_evaluation_members(self, seeds: list[int]) -> None:
        """`Agent.seed_evaluation` of member i with seeds[i]."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """The whole batch's state (what a rollback restores)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def execution_report(self) -> dict | None:
        """As `Agent.execution_report`, for the whole batch."""
        return None

    @classmethod
    def __subclasshook__(cls, sub):
        if cls is BatchedAgent:
            return all(callable(getattr(sub, m, None)) for m in cls.__abstractmethods__) or NotImplemented
        return NotImplemented


class OneMember(BatchedAgent):
    """Any `Agent` as a batch of one: each call unwraps the member dimension and calls the Agent API, so a single
    run trains exactly through `act`, `update` and `seed_evaluation`, whatever else its agent implements."""

    n = 1

    def __init__(self, agent: Agent):
        self.agent = agent

    @classmethod
    def stack(cls, states, spec, config, device="cpu"):
        raise TypeError("OneMember wraps an existing agent: OneMember(agent)")

    def unstack(self, i: int) -> dict:
        if i != 0:
            raise IndexError(f"a batch of one has no member {i}")
        return self.agent.state_dict()

    def act_members(self, obs: torch.Tensor, deterministic: bool = False, members=None) -> torch.Tensor:
        if members is None:
            return self.agent.act(obs[0], deterministic=deterministic).unsqueeze(0)
        mask = torch.as_tensor(members, dtype=torch.bool).reshape(1, -1).expand(1, obs.shape[1])[0]
        rows = mask.nonzero().squeeze(1).to(obs.device)  # only the acting rows reach the agent
        actions = torch.zeros(1, obs.shape[1], self.agent.spec.act_dim, device=obs.device)
        if len(rows):
            actions[0, rows] = self.agent.act(obs[0, rows], deterministic=deterministic)
        return actions

    def update_members(self, batch: Batch, step: int) -> Mapping[str, Sequence]:
        metrics = self.agent.update(Batch(*(x[0] for x in batch)), step)
        return {k: [v] for k, v in metrics.items()}

    def seed_evaluation_members(self, seeds: list[int]) -> None:
        (seed,) = seeds
        self.agent.seed_evaluation(seed)

    def state_dict(self) -> dict:
        return self.agent.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)

    def execution_report(self) -> dict | None:
        return self.agent.execution_report()


def map_states(states: list, fn: Callable[[list[torch.Tensor]], torch.Tensor]):
    """Walk several state dicts of the same structure together: fn(list of corresponding tensors) for each tensor;
    dicts and lists of dicts are walked; any other value is the first state's."""
    first = states[0]
    if isinstance(first, dict):
        return {k: map_states([s[k] for s in states], fn) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], dict):
        return [map_states([s[i] for s in states], fn) for i in range(len(first))]
    if isinstance(first, torch.Tensor):
        return fn(states)
    return first


def stack_states(states: list[dict], per_member: tuple[str, ...] = ()) -> dict:
    """The batched state of single runs' states: tensors with a leading member dimension concatenate along it, the
    lists under the top-level keys `per_member` (one entry per member, e.g. generator states) concatenate, and
    everything else (0-d tensors such as Adam's step, counters, optimiser settings) is the first state's: members
    trained in lockstep agree on it."""
    out = map_states(states, lambda xs: torch.cat(xs) if xs[0].dim() else xs[0])
    for key in per_member:
        out[key] = [entry for s in states for entry in s[key]]
    return out


def unstack_state(state: dict, i: int, n: int, per_member: tuple[str, ...] = ()) -> dict:
    """Member i's single-run state out of the batched `state` of `n` members (a copy; the inverse of
    `stack_states`)."""
    out = map_states(
        [state], lambda xs: xs[0].view(n, -1, *xs[0].shape[1:])[i].clone() if xs[0].dim() else xs[0].clone()
    )
    for key in per_member:
        out[key] = [state[key][i]]
    return out
