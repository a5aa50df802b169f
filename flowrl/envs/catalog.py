"""Task names: which exist and checking them (with suggestions); the name grammar itself is flowrl.tasknames.

Names are `<suite>:<id>`: dmc:<domain>-<task>, gym:<gymnasium id>, hb:<HumanoidBench id>.
Nothing here imports a simulator at module import; dm_control / gymnasium are imported when a
suite's names are needed, HumanoidBench never (its ids are a static list, see hb_tasks.py).
"""

from __future__ import annotations

import importlib
import os
import re

from flowrl import tasknames
from flowrl.envs.common import SuiteNotInstalledError
from flowrl.envs.hb_tasks import HB_BUILDABLE, HB_ROBOTS, HB_TASK_IDS, HB_TASK_NAMES
from flowrl.tasknames import SUITES, suggest

_MAIN_STACK_HINT = (
    "install the main stack: pip install -r requirements/lock-cpu.txt && pip install --no-deps -e . "
    "(or conda env create -f environment.yml)"
)


def _import_suite_package(module: str, suite: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise SuiteNotInstalledError(
            f"{suite}: tasks need the '{exc.name}' package, which is not installed in this Python; {_MAIN_STACK_HINT}"
        ) from None
    except Exception as exc:  # e.g. MUJOCO_GL names a GL backend whose library this machine lacks
        gl = os.environ.get("MUJOCO_GL")
        raise SuiteNotInstalledError(
            f"{suite}: importing {module} failed ({type(exc).__name__}: {exc})"
            + (
                f" with MUJOCO_GL={gl}. That backend's library may be missing here (osmesa: apt-get install "
                "libosmesa6; egl: the GPU driver's libEGL); training renders nothing, so MUJOCO_GL=disable "
                "also works."
                if gl
                else ""
            )
        ) from exc


def split_name(name: str) -> tuple[str, str]:
    """'dmc:cheetah-run' -> ('dmc', 'cheetah-run'); a name without a suite prefix gets the closest installed names."""
    return tasknames.split_name(name, known_names=lambda: _known_names(quiet=True))


# ------------------------------------------------------------------------------- per-suite listings
def dmc_tasks() -> list[str]:
    suite = _import_suite_package("dm_control.suite", "dmc")
    return [f"dmc:{domain}-{task}" for domain, task in suite.ALL_TASKS]


def _gym_registry() -> dict:
    return _import_suite_package("gymnasium.envs.registration", "gym").registry


def gym_tasks() -> list[str]:
    """The gymnasium MuJoCo tasks (v4 and later); gym: accepts any registered id with a Box action space."""
    names = []
    for env_id, spec in _gym_registry().items():
        entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
        version = re.search(r"-v(\d+)$", env_id)
        if entry.startswith("gymnasium.envs.mujoco") and version and int(version.group(1)) >= 4:
            names.append(f"gym:{env_id}")
    return names


def hb_tasks() -> list[str]:
    return [f"hb:{task_id}" for task_id in HB_TASK_IDS]


_LISTERS = {"dmc": dmc_tasks, "gym": gym_tasks, "hb": hb_tasks}


def list_tasks(suite: str | None = None) -> list[str]:
    """Task names of one suite, or of every suite whose packages are installed here (hb: always)."""
    if suite is None:
        return _known_names(quiet=True)
    if suite not in _LISTERS:
        raise ValueError(f"Unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    return _LISTERS[suite]()


def _known_names(quiet: bool) -> list[str]:
    names = []
    for lister in _LISTERS.values():
        try:
            names += lister()
        except SuiteNotInstalledError:
            if not quiet:
                raise
    return names


# ------------------------------------------------------------------------------------ validation
def validate_task(name: str) -> str:
    """Return `name` if it names a task; otherwise raise ValueError with the closest valid names.

    Raises SuiteNotInstalledError (a ValueError) where checking a dmc:/gym: name needs a package that is
    missing. hb: names are checked against a static list, so they validate without HumanoidBench.
    """
    suite, task_id = split_name(name)
    if suite == "hb":
        if task_id not in HB_TASK_IDS:
            raise ValueError(_unknown_hb_message(name, task_id))
        return name
    if suite == "gym":
        if task_id in HB_TASK_IDS:  # registered with gymnasium once humanoid_bench is imported
            raise ValueError(f"{name!r} is a HumanoidBench task; use 'hb:{task_id}'")
        registry = _gym_registry()
        if task_id in registry:
            return name
        raise ValueError(
            f"Unknown gymnasium task {name!r} (not registered in gymnasium here)."
            f"{suggest(name, [f'gym:{i}' for i in registry])} MuJoCo tasks: list_tasks('gym')."
        )
    known = dmc_tasks()
    if name not in known:
        raise ValueError(
            f"Unknown DeepMind Control task {name!r} (names are dmc:<domain>-<task>, e.g. "
            f"dmc:cheetah-run, dmc:ball_in_cup-catch).{suggest(name, known)}"
        )
    return name


def _unknown_hb_message(name: str, task_id: str) -> str:
    robot, _, rest = task_id.partition("-")
    task = rest[: -len("-v0")] if rest.endswith("-v0") else rest
    if robot in HB_ROBOTS and task in HB_TASK_NAMES:
        robots = [r for r in HB_ROBOTS if task in HB_BUILDABLE[r]]
        return (
            f"{name!r} is registered by HumanoidBench but cannot be built: it has no model of robot '{robot}' "
            f"for '{task}'. '{task}' exists for: {', '.join(f'hb:{r}-{task}-v0' for r in robots)}"
        )
    return (
        f"Unknown HumanoidBench task {name!r} (names are hb:<robot>-<task>-v0, e.g. hb:h1hand-walk-v0)."
        f"{suggest(name, hb_tasks())}"
    )
