"""HumanoidBench per-task constants for normalised scores: (return - random) / (target - random).

Target ("success") returns: the `success_bar` class attribute of each HumanoidBench task, the
return at which the benchmark counts a task as solved (HumanoidBench paper, Sferrazza et al. 2024,
arXiv 2403.10506, dashed "success" lines in its learning-curve figures). Read from
github.com/carlosferrazza/humanoid-bench at commit 791405f5eacf879adbc99105adb3fee73f5a49fc
(humanoid_bench/envs/*.py; subclasses inherit their parent's bar, e.g. Run, Crawl, Stair, Slide and
Hurdle inherit Walk's 700). The bar belongs to the task, not the robot, so it applies to every robot.

Random returns: mean return of uniformly random actions, as published with SimbaV2 (Lee et al. 2025,
arXiv 2502.15280), github.com/dojeon-ai/SimbaV2 scale_rl/envs/humanoid_bench.py `HB_RANDOM_SCORE`
("10 seeds, 10 eval envs per 1 seed"), the values BRO/SimBa/SimbaV2 normalise HumanoidBench with.
They exist for the h1 (no hands) locomotion tasks and the h1hand / h1strong tasks only; other robots
(g1, h1touch, ...) need values from a normalisation YAML (see docs/results.md).
"""

from __future__ import annotations

# success_bar per HumanoidBench task name (robot-independent).
HB_TARGET_RETURN: dict[str, float] = {
    "walk": 700,
    "stand": 800,
    "run": 700,
    "reach": 12000,
    "hurdle": 700,
    "crawl": 700,
    "maze": 1200,
    "sit_simple": 750,
    "sit_hard": 750,
    "balance_simple": 800,
    "balance_hard": 800,
    "stair": 700,
    "slide": 700,
    "pole": 700,
    "push": 700,
    "cabinet": 2500,
    "highbar_simple": 750,
    "highbar_hard": 750,
    "door": 600,
    "truck": 3000,
    "cube": 370,
    "bookshelf_simple": 2000,
    "bookshelf_hard": 2000,
    "basketball": 1200,
    "window": 650,
    "spoon": 650,
    "kitchen": 4,
    "package": 1500,
    "powerlift": 800,
    "room": 400,
    "insert_small": 350,
    "insert_normal": 350,
}

# Random-policy return per HumanoidBench environment id (SimbaV2's HB_RANDOM_SCORE; its
# "h1strong-highbar-hard-v0" key is written here with the id HumanoidBench registers).
HB_RANDOM_RETURN: dict[str, float] = {
    "h1-walk-v0": 2.377,
    "h1-stand-v0": 10.545,
    "h1-run-v0": 2.02,
    "h1-reach-v0": 260.302,
    "h1-hurdle-v0": 2.214,
    "h1-crawl-v0": 272.658,
    "h1-maze-v0": 106.441,
    "h1-sit_simple-v0": 9.393,
    "h1-sit_hard-v0": 2.448,
    "h1-balance_simple-v0": 9.391,
    "h1-balance_hard-v0": 9.044,
    "h1-stair-v0": 3.112,
    "h1-slide-v0": 3.191,
    "h1-pole-v0": 20.09,
    "h1hand-push-v0": -526.8,
    "h1hand-cabinet-v0": 37.733,
    "h1strong-highbar_hard-v0": 0.178,
    "h1hand-door-v0": 2.771,
    "h1hand-truck-v0": 562.419,
    "h1hand-cube-v0": 4.787,
    "h1hand-bookshelf_simple-v0": 16.777,
    "h1hand-bookshelf_hard-v0": 14.848,
    "h1hand-basketball-v0": 8.979,
    "h1hand-window-v0": 2.713,
    "h1hand-spoon-v0": 4.661,
    "h1hand-kitchen-v0": 0.0,
    "h1hand-package-v0": -10040.932,
    "h1hand-powerlift-v0": 17.638,
    "h1hand-room-v0": 3.018,
    "h1hand-insert_small-v0": 1.653,
    "h1hand-insert_normal-v0": 1.673,
    "h1hand-walk-v0": 2.505,
    "h1hand-stand-v0": 11.973,
    "h1hand-run-v0": 1.927,
    "h1hand-reach-v0": -50.024,
    "h1hand-hurdle-v0": 2.371,
    "h1hand-crawl-v0": 278.868,
    "h1hand-maze-v0": 106.233,
    "h1hand-sit_simple-v0": 10.768,
    "h1hand-sit_hard-v0": 2.477,
    "h1hand-balance_simple-v0": 10.17,
    "h1hand-balance_hard-v0": 10.032,
    "h1hand-stair-v0": 3.161,
    "h1hand-slide-v0": 3.142,
    "h1hand-pole-v0": 19.721,
}

HB_SOURCES = {
    "target": "HumanoidBench success_bar (github carlosferrazza/humanoid-bench @791405f, arXiv 2403.10506)",
    "random": "SimbaV2 HB_RANDOM_SCORE (github dojeon-ai/SimbaV2 scale_rl/envs/humanoid_bench.py, arXiv 2502.15280)",
}


def split_hb_id(env_id: str) -> tuple[str, str] | None:
    """'h1hand-sit_simple-v0' -> ('h1hand', 'sit_simple'); None when it is not <robot>-<task>-v<N>."""
    parts = env_id.split("-")
    if len(parts) != 3 or not parts[2].startswith("v"):
        return None
    return parts[0], parts[1]


def hb_constants(env_id: str) -> tuple[float | None, float | None]:
    """(random, target) returns for a HumanoidBench id such as 'h1hand-walk-v0'; None where unknown."""
    split = split_hb_id(env_id)
    target = HB_TARGET_RETURN.get(split[1]) if split else None
    return HB_RANDOM_RETURN.get(env_id), (float(target) if target is not None else None)
