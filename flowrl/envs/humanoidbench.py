"""HumanoidBench adapter: `hb:<id>`, e.g. hb:h1hand-walk-v0, hb:h1-crawl-v0 (ids in flowrl/envs/hb_tasks.py).

HumanoidBench is gymnasium-based, so this is the gymnasium adapter plus three things:
- it needs HumanoidBench's own stack (mujoco 3.1.6, dm_control 1.0.20, gymnasium 0.29; see
  docs/environments.md); with anything else a clear error says how to set that up;
- the env is built with render_mode=None (HumanoidBench's default, rgb_array, opens an offscreen GL
  context at construction), so training needs no GL; MUJOCO_GL matters only for rendering;
- several tasks draw their initial state (goals, object poses) from numpy's *global* RNG, so the
  adapter isolates it (GymEnv's isolate_global_rng): reset(seed) stays a pure function of the seed
  and the caller's global RNG is left untouched.
Success: info['success'] where the task reports it (basketball, bookshelf_*, cabinet, kitchen,
package, push, truck), or info['solved'] for a task that reports that (the official FlowRL evaluation reads
'solved' first; see flowrl.envs.common.success_value); the other tasks define success as an episode return
above the task's `success_bar`, exposed as the `success_bar` attribute.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from flowrl.envs.common import SuiteNotInstalledError
from flowrl.envs.gym import GymEnv

INSTALL_HINT = (
    "HumanoidBench runs in its own Python environment (it needs mujoco 3.1.6, dm_control 1.0.20, gymnasium 0.29, "
    "numpy<2; the main stack has mujoco 3.17). Set it up with\n"
    "  python3.11 -m venv .venv-hb\n"
    "  .venv-hb/bin/pip install -r requirements/humanoidbench.txt\n"
    "  .venv-hb/bin/pip install --no-deps -r requirements/humanoidbench-package.txt\n"
    "  .venv-hb/bin/pip install --no-deps -e .\n"
    "or on a cluster: conda env create -f environment-humanoidbench.yml (then the two --no-deps lines). "
    "Run training from that environment; MUJOCO_GL=egl (GPU) or osmesa (CPU) is needed only for rendering. "
    "Details: docs/environments.md"
)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_humanoid_bench():
    """Import humanoid_bench (registering its ids with gymnasium) or explain how to get a working one."""
    if importlib.util.find_spec("humanoid_bench") is None:
        raise SuiteNotInstalledError(f"HumanoidBench (humanoid_bench) is not installed in this Python.\n{INSTALL_HINT}")
    wrong = []
    mujoco_v, gym_v = _version("mujoco"), _version("gymnasium")
    if mujoco_v and tuple(int(p) for p in mujoco_v.split(".")[:2]) >= (3, 2):
        wrong.append(f"mujoco {mujoco_v} (needs 3.1.x)")
    if gym_v and int(gym_v.split(".")[0]) >= 1:
        wrong.append(f"gymnasium {gym_v} (needs 0.29)")
    if wrong:
        raise SuiteNotInstalledError(
            f"HumanoidBench does not work with {', '.join(wrong)} in this Python.\n{INSTALL_HINT}"
        )
    try:
        import humanoid_bench
    except ImportError as exc:
        raise SuiteNotInstalledError(f"importing humanoid_bench failed: {exc}\n{INSTALL_HINT}") from exc
    return humanoid_bench


class HumanoidBenchEnv(GymEnv):
    def __init__(self, env_id: str, name: str | None = None):
        import_humanoid_bench()
        import gymnasium

        env = gymnasium.make(env_id, render_mode=None, disable_env_checker=True)
        super().__init__(env_id, name=name or f"hb:{env_id}", env=env, isolate_global_rng=True)
        task = getattr(env.unwrapped, "task", None)
        self.success_bar: float | None = getattr(task, "success_bar", None)
