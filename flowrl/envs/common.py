"""Pieces every adapter shares: box action specs, action checking/clipping, seeds, success flags."""

from __future__ import annotations

from typing import Any

import numpy as np

from flowrl.agents.base import EnvSpec
from flowrl.envs.base import Env


def check_seed(seed: int) -> int:
    """Seeds are plain non-negative integers below 2**32 (what numpy's legacy RandomState accepts)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"reset(seed) needs an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def success_value(info: dict[str, Any]) -> float | None:
    """The task's success signal from a step's info: `solved` (MyoSuite's key; read first, as the official FlowRL
    evaluation reads it before `success`), `success` (HumanoidBench) or gymnasium-robotics' `is_success`."""
    for key in ("solved", "success", "is_success"):
        if key in info and info[key] is not None:
            return float(np.asarray(info[key], dtype=np.float64).reshape(-1)[0])
    return None


class BoxEnv(Env):
    """An adapter over a simulator with box actions: owns the spec, action clipping and the episode guard."""

    def _set_spec(self, obs_dim: int, act_low: np.ndarray, act_high: np.ndarray) -> None:
        low = np.asarray(act_low, dtype=np.float64).reshape(-1)
        high = np.asarray(act_high, dtype=np.float64).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(
                f"{self.name}: the action space has infinite bounds ({low} .. {high}); "
                "flowrl agents need a bounded box action space"
            )
        self.spec = EnvSpec(obs_dim=int(obs_dim), act_dim=low.size, act_low=low, act_high=high)
        self._act_low, self._act_high = low, high
        self._episode_over = True  # until the first reset

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """The action as float64 of shape (act_dim,), clipped into the action bounds."""
        a = np.asarray(action, dtype=np.float64)
        if a.size != self.spec.act_dim:
            raise ValueError(f"{self.name}: expected an action of {self.spec.act_dim} values, got shape {a.shape}")
        a = a.reshape(self.spec.act_dim)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: the action contains NaN or inf: {a}")
        return np.clip(a, self._act_low, self._act_high)

    def _start_step(self) -> None:
        if self._episode_over:
            raise RuntimeError(
                f"{self.name}: step() called before reset(seed) or after the episode ended; call reset(seed) first"
            )

    def _end_step(self, terminated: bool, truncated: bool) -> None:
        self._episode_over = terminated or truncated


class SuiteNotInstalledError(ImportError, ValueError):
    """A known suite whose packages are missing, the wrong versions or unusable here; the message says how to fix it."""
