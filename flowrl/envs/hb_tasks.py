"""HumanoidBench's task ids, kept here so names can be checked without HumanoidBench installed.

Derived from humanoid_bench at commit 791405f5eacf879adbc99105adb3fee73f5a49fc (the commit pinned in
requirements/humanoidbench-package.txt): `import humanoid_bench` registers `<robot>-<task>-v0` for every
robot x task pair, but only the pairs with a model file `assets/envs/<robot>_<control>_<task>.xml`
can be built. Those are listed here; the other registered pairs fail inside HumanoidBench.
When moving the pin, regenerate these tuples from the new commit.
"""

from __future__ import annotations

HB_COMMIT = "791405f5eacf879adbc99105adb3fee73f5a49fc"

# Every robot and task HumanoidBench registers (env.py: ROBOTS, TASKS).
HB_ROBOTS = ("h1", "h1hand", "h1simplehand", "h1strong", "h1touch", "g1")
HB_TASK_NAMES = tuple(
    (
        "stand walk run kitchen maze hurdle cube bookshelf_simple bookshelf_hard highbar_simple highbar_hard "
        "crawl window spoon door push reach basketball truck package cabinet sit_simple sit_hard "
        "balance_simple balance_hard stair slide pole room insert_normal insert_small powerlift"
    ).split()
)

# The tasks each robot has a model for (so `<robot>-<task>-v0` can be built).
_FULL = tuple(t for t in HB_TASK_NAMES if t not in ("highbar_simple", "highbar_hard"))
HB_BUILDABLE: dict[str, tuple[str, ...]] = {
    "h1": tuple(
        (
            "stand walk run maze hurdle highbar_simple crawl door push reach basketball truck package sit_simple "
            "sit_hard balance_simple balance_hard stair slide pole"
        ).split()
    ),
    "h1hand": _FULL,
    "h1simplehand": ("stand",),
    "h1strong": ("highbar_hard",),
    "h1touch": _FULL,
    "g1": _FULL,
}

HB_TASK_IDS: tuple[str, ...] = tuple(
    f"{robot}-{task}-v0" for robot in HB_ROBOTS for task in HB_TASK_NAMES if task in HB_BUILDABLE[robot]
)

# The main benchmark of the HumanoidBench paper (its README's list).
HB_MAIN_BENCHMARK: tuple[str, ...] = tuple(
    f"h1hand-{task}-v0" for task in HB_TASK_NAMES if task not in ("highbar_simple", "highbar_hard")
) + ("h1strong-highbar_hard-v0",)
