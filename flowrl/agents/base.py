"""The agent contract every algorithm in this suite implements.

An agent is built from the environment's observation/action specs and its own dataclass config,
acts on batches of observations, learns from replay batches and exposes its full state for
checkpoint/resume. The training runner (`flowrl.train`) owns everything else: environments,
replay, evaluation, logging, RNG bookkeeping and checkpoints.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping, NamedTuple

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

    def seed_evaluation(self, seed: int) -> None:
        """Called before each evaluation. Agents that keep their own generators reseed their evaluation
        stream here; agents on torch's global RNG need nothing (the runner isolates it during evaluation)."""

    # Helpers shared by implementations -------------------------------------------------
    def scale_action(self, unit_action: torch.Tensor) -> torch.Tensor:
        """Map [-1, 1] to [act_low, act_high]."""
        return self.act_low + (unit_action + 1.0) * 0.5 * (self.act_high - self.act_low)

    def unscale_action(self, action: torch.Tensor) -> torch.Tensor:
        """Map [act_low, act_high] to [-1, 1]."""
        return 2.0 * (action - self.act_low) / (self.act_high - self.act_low) - 1.0
