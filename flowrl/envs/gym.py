"""Gymnasium adapter: `gym:<registered id>`, e.g. gym:Humanoid-v5, gym:HalfCheetah-v5.

- Observations: flattened to float32 (a Box is reshaped; Dict/Tuple spaces go through gymnasium's flatten).
- Actions: must be a bounded Box; clipped to its bounds.
- terminated / truncated come from gymnasium unchanged (truncated is its TimeLimit, the id's
  max_episode_steps).
- Success: info['solved'], info['success'] or info['is_success'] where the task reports one (in that order, as
  the official FlowRL evaluation prefers 'solved'), always as info['success'];
  has_success says whether it does (checked with one step when the adapter is built).
- reset(seed) is env.reset(seed=seed), which re-seeds the env's generator. For envs that also draw from
  numpy's *global* RNG (HumanoidBench does), isolate_global_rng=True gives each episode its own global-RNG
  state, derived from the seed and swapped in only while the env runs; the caller's global RNG is untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowrl.envs.base import Step
from flowrl.envs.common import BoxEnv, check_seed, success_value


class GymEnv(BoxEnv):
    def __init__(self, env_id: str, name: str | None = None, env: Any = None, isolate_global_rng: bool = False):
        import gymnasium

        self.name = name or f"gym:{env_id}"
        self._isolate_global_rng = isolate_global_rng
        self._episode_rng: Any = np.random.RandomState(0).get_state() if isolate_global_rng else None
        self._env = env if env is not None else gymnasium.make(env_id, disable_env_checker=True)
        act_space = self._env.action_space
        if not isinstance(act_space, gymnasium.spaces.Box):
            self._env.close()
            raise ValueError(f"{self.name}: flowrl needs a continuous (Box) action space, this task has {act_space}")
        obs_space = self._env.observation_space
        self._obs_space = None if isinstance(obs_space, gymnasium.spaces.Box) else obs_space
        self._flatten_space = gymnasium.spaces.flatten
        self._set_spec(gymnasium.spaces.flatdim(obs_space), act_space.low, act_space.high)
        self._act_shape = act_space.shape
        spec = getattr(self._env, "spec", None)
        self.max_episode_steps = getattr(spec, "max_episode_steps", None)
        self.has_success = self._probe_success()

    def _probe_success(self) -> bool:
        """Whether the task reports success: take one step with the mid action and look at info."""
        self.reset(0)
        step = self.step((self.spec.act_low + self.spec.act_high) / 2)
        self._episode_over = True  # the caller must reset before stepping
        return "success" in step.info

    def _flatten(self, obs: Any) -> np.ndarray:
        if self._obs_space is not None:
            obs = self._flatten_space(self._obs_space, obs)
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def _call(self, fn, *args, **kwargs):
        if not self._isolate_global_rng:
            return fn(*args, **kwargs)
        caller_state = np.random.get_state()
        np.random.set_state(self._episode_rng)
        try:
            return fn(*args, **kwargs)
        finally:
            self._episode_rng = np.random.get_state()
            np.random.set_state(caller_state)

    def reset(self, seed: int) -> np.ndarray:
        seed = check_seed(seed)
        if self._isolate_global_rng:
            self._episode_rng = np.random.RandomState(seed).get_state()
        obs, _info = self._call(self._env.reset, seed=seed)
        self._episode_over = False
        return self._flatten(obs)

    def step(self, action: np.ndarray) -> Step:
        self._start_step()
        action = self.clip_action(action).reshape(self._act_shape).astype(self._env.action_space.dtype, copy=False)
        obs, reward, terminated, truncated, info = self._call(self._env.step, action)
        info = dict(info)
        success = success_value(info)
        if success is not None:
            info["success"] = success
        terminated, truncated = bool(terminated), bool(truncated)
        self._end_step(terminated, truncated)
        return Step(self._flatten(obs), float(reward), terminated, truncated, info)

    def close(self) -> None:
        self._env.close()
