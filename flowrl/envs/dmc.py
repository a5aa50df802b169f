"""DeepMind Control Suite adapter: `dmc:<domain>-<task>`, e.g. dmc:cheetah-run, dmc:ball_in_cup-catch.

- Observations: the task's observation dict flattened in its own (fixed) key order, as float32.
- Actions: clipped to the action spec's bounds.
- Episode end: a step with discount 0 is a true terminal state (terminated=True; no suite task except
  lqr has one); the time limit (1000 steps for every suite task but lqr) gives truncated=True.
- reset(seed) re-seeds the task's RandomState in place, so the initial state depends on the seed only.
"""

from __future__ import annotations

import math

import numpy as np

from flowrl.envs.base import Step
from flowrl.envs.common import BoxEnv, check_seed


class DMCEnv(BoxEnv):
    has_success = False

    def __init__(self, domain: str, task: str, name: str | None = None):
        from dm_control import suite

        self.name = name or f"dmc:{domain}-{task}"
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        obs_spec = self._env.observation_spec()
        self._obs_keys = tuple(obs_spec.keys())
        sizes = [int(np.prod(obs_spec[k].shape)) for k in self._obs_keys]
        self._obs_slices = [slice(a, a + n) for a, n in zip(np.cumsum([0] + sizes[:-1]), sizes)]
        act_spec = self._env.action_spec()
        self._act_shape = act_spec.shape
        low = np.broadcast_to(act_spec.minimum, act_spec.shape)
        high = np.broadcast_to(act_spec.maximum, act_spec.shape)
        self._set_spec(sum(sizes), low, high)
        step_limit = float(getattr(self._env, "_step_limit", math.inf))  # time_limit / control_timestep
        self.max_episode_steps = int(round(step_limit)) if math.isfinite(step_limit) else None

    def _flatten(self, observation) -> np.ndarray:
        flat = np.empty(self.spec.obs_dim, dtype=np.float32)
        for key, where in zip(self._obs_keys, self._obs_slices):
            flat[where] = np.asarray(observation[key]).reshape(-1)
        return flat

    def reset(self, seed: int) -> np.ndarray:
        self._env.task.random.seed(check_seed(seed))
        time_step = self._env.reset()
        self._episode_over = False
        return self._flatten(time_step.observation)

    def step(self, action: np.ndarray) -> Step:
        self._start_step()
        time_step = self._env.step(self.clip_action(action).reshape(self._act_shape))
        ended = time_step.last()
        terminated = bool(ended and time_step.discount == 0.0)
        truncated = bool(ended and not terminated)
        self._end_step(terminated, truncated)
        return Step(self._flatten(time_step.observation), float(time_step.reward or 0.0), terminated, truncated, {})

    @property
    def physics(self):
        """The underlying dm_control physics (for rendering or inspection)."""
        return self._env.physics

    def close(self) -> None:
        self._env.close()
