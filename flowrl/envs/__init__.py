"""Environments by name: `make_env('dmc:cheetah-run')`, `make_env('gym:Humanoid-v5')`, `make_env('hb:h1hand-walk-v0')`.

Every adapter returns flat float32 observations, clips actions to the box bounds, separates true
terminal states (terminated) from time limits (truncated), and makes reset(seed) a pure function
of the seed. See docs/environments.md. Simulators are imported only when an adapter is built.
"""

from __future__ import annotations

from flowrl.envs.base import Env, Step
from flowrl.envs.catalog import list_tasks, split_name, validate_task
from flowrl.envs.common import SuiteNotInstalledError
from flowrl.tasknames import SUITES, task_slug

__all__ = ["Env", "Step", "SUITES", "SuiteNotInstalledError", "list_tasks", "make_env", "task_slug", "validate_task"]


def make_env(name: str) -> Env:
    """Build the environment a task name refers to (ValueError with suggestions for unknown names)."""
    validate_task(name)
    suite, task_id = split_name(name)
    if suite == "dmc":
        from flowrl.envs.dmc import DMCEnv

        domain, task = task_id.split("-", 1)
        return DMCEnv(domain, task, name=name)
    if suite == "gym":
        from flowrl.envs.gym import GymEnv

        return GymEnv(task_id, name=name)
    from flowrl.envs.humanoidbench import HumanoidBenchEnv

    return HumanoidBenchEnv(task_id, name=name)
