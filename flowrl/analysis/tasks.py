"""Tasks in results: figure group, return bounds, and mapping of other projects' task names to ours (the name
grammar, the suites and suite_of live in flowrl.tasknames).

Our task ids are `dmc:<domain>-<task>` (dm_control names, underscores kept: dmc:finger-turn_easy),
`gym:<id>` and `hb:<robot>-<task>-v<N>`.
"""

from __future__ import annotations

import re

from flowrl import tasknames
from flowrl.tasknames import suite_of  # noqa: F401  (the analysis's modules import it from here)

SUITES = tuple(tasknames.SUITES)

# dm_control suite domains, longest first so 'ball_in_cup' wins over a shorter prefix.
DMC_DOMAINS = tuple(
    sorted(
        (
            "acrobot",
            "ball_in_cup",
            "cartpole",
            "cheetah",
            "dog",
            "finger",
            "fish",
            "hopper",
            "humanoid",
            "humanoid_CMU",
            "lqr",
            "manipulator",
            "pendulum",
            "point_mass",
            "quadruped",
            "reacher",
            "stacker",
            "swimmer",
            "walker",
        ),
        key=len,
        reverse=True,
    )
)
DMC_DOMAIN_ALIASES = {"cup": "ball_in_cup"}  # TD-MPC2 writes ball_in_cup as 'cup'
DMC_HARD_DOMAINS = ("dog", "humanoid", "humanoid_CMU")  # the paper's "DMC hard" group
HB_ROBOTS = ("h1hand", "h1strong", "h1simplehand", "h1touch", "h1", "g1")

# Figure / aggregate groups, in display order.
GROUPS = ("DMC easy", "DMC hard", "HumanoidBench", "Gym")


def group_of(task: str) -> str:
    suite = suite_of(task)
    if suite == "hb":
        return "HumanoidBench"
    if suite == "gym":
        return "Gym"
    domain = task.split(":", 1)[1].split("-", 1)[0]
    return "DMC hard" if domain in DMC_HARD_DOMAINS else "DMC easy"


# Episode returns are bounded where the suite fixes episode length and per-step reward range: dm_control
# suite tasks run 1000 control steps with rewards in [0, 1], except LQR (quadratic cost, no time limit).
# Gym MuJoCo and HumanoidBench rewards have no fixed range.
DMC_RETURN_BOUNDS = (0.0, 1000.0)
DMC_UNBOUNDED_DOMAINS = ("lqr",)


def return_bounds(task: str) -> tuple[float, float]:
    """(lowest, highest) possible episode return of `task`; (-inf, inf) where the suite fixes none."""
    if suite_of(task) == "dmc" and task.split(":", 1)[1].split("-", 1)[0] not in DMC_UNBOUNDED_DOMAINS:
        return DMC_RETURN_BOUNDS
    return -float("inf"), float("inf")


def short_name(task: str) -> str:
    """Task id without the suite prefix, for plot titles."""
    return task.split(":", 1)[1] if ":" in task else task


_HB_PATTERN = re.compile(r"^(?P<robot>" + "|".join(HB_ROBOTS) + r")[-_](?P<task>.+?)[-_]v(?P<ver>\d+)$")
_GYM_PATTERN = re.compile(r"^[A-Z][A-Za-z0-9]*-v\d+$")


def map_external_task(name: str) -> str | None:
    """Another project's task name -> our task id, or None when it is not a DMC/Gym/HumanoidBench task.

    Accepts 'dog-run', 'dog_run', 'cup-catch', 'finger-turn-easy', 'cartpole_balance_sparse',
    'h1-walk-v0', 'h1_walk_v0', 'h1hand-sit_simple-v0', 'Humanoid-v4' and ids already prefixed.
    """
    name = name.strip()
    if ":" in name and name.split(":", 1)[0] in SUITES:
        return name
    hb = _HB_PATTERN.match(name)
    if hb:
        return f"hb:{hb['robot']}-{hb['task'].replace('-', '_')}-v{hb['ver']}"
    if _GYM_PATTERN.match(name):
        return f"gym:{name}"
    for alias, domain in list(DMC_DOMAIN_ALIASES.items()) + [(d, d) for d in DMC_DOMAINS]:
        for sep in ("-", "_"):
            if name.startswith(alias + sep) and len(name) > len(alias) + 1:
                rest = name[len(alias) + 1 :].replace("-", "_")
                return f"dmc:{domain}-{rest}"
    return None
