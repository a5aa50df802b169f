"""The environment adapter interface shared by every suite (dmc:, gym:, hb:)."""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import numpy as np

from flowrl.agents.base import EnvSpec


class Step(NamedTuple):
    obs: np.ndarray  # flat float32 (obs_dim,)
    reward: float
    terminated: bool  # a true terminal state: no bootstrapping
    truncated: bool  # time limit or other cut-off: bootstrap from obs
    info: dict[str, Any]  # "success" (float/bool) where the task defines it


class Env(abc.ABC):
    """A single environment with flat float32 observations and box actions.

    reset(seed) must be a pure function of the seed: the same seed gives the same initial state
    whatever happened before. The runner relies on this to resume mid-episode exactly (it resets
    with the episode's seed and replays the episode's recorded actions).
    """

    name: str
    spec: EnvSpec
    max_episode_steps: int | None
    has_success: bool = False

    @abc.abstractmethod
    def reset(self, seed: int) -> np.ndarray: ...

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> Step: ...

    def close(self) -> None:  # noqa: B027 (an optional hook: a no-op by default)
        pass
