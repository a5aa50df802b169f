"""Task names, `<suite>:<id>`: the suites, how a name splits, and the name of its run directories.

The one home of these rules: the environments (flowrl.envs), the study workflow (flowrl.study, which names run
directories runs/<study>/<algo>/<task_slug>/seed<seed>) and the results pipeline (flowrl.analysis) import them
from here. Pure Python, so reading a study or a results folder never imports torch or a simulator.

    split_name("dmc:cheetah-run") == ("dmc", "cheetah-run")
    task_slug("gym:ALE/Pong-v5") == "gym_ALE_Pong-v5"     # only [A-Za-z0-9._-] survive
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

SUITES = {
    "dmc": "DeepMind Control Suite, e.g. dmc:cheetah-run",
    "gym": "gymnasium, e.g. gym:Humanoid-v5",
    "hb": "HumanoidBench, e.g. hb:h1hand-walk-v0",
}


def split_name(name: str, known_names: Callable[[], list[str]] | None = None) -> tuple[str, str]:
    """'dmc:cheetah-run' -> ('dmc', 'cheetah-run'); a clear ValueError for anything without a known suite.

    `known_names`, called only for a name without a suite prefix, lists the names to suggest from
    (flowrl.envs passes every installed suite's tasks)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a task name must be a non-empty string like 'dmc:cartpole-balance', got {name!r}")
    prefixes = ", ".join(f"{s}: ({d})" for s, d in SUITES.items())
    suite, sep, task_id = name.partition(":")
    if not sep:
        hint = suggest(name, known_names()) if known_names is not None else ""
        raise ValueError(f"Task name {name!r} has no suite prefix; names start with one of {prefixes}.{hint}")
    if suite not in SUITES:
        close = difflib.get_close_matches(suite.lower(), list(SUITES), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}:{task_id}'?" if close else ""
        raise ValueError(f"Unknown task suite {suite!r} in {name!r}; valid prefixes: {prefixes}.{hint}")
    if not task_id:
        raise ValueError(f"Task name {name!r} names no task after '{suite}:'; see list_tasks('{suite}')")
    return suite, task_id


def suite_of(name: str) -> str:
    """'hb:h1hand-walk-v0' -> 'hb' (ValueError as split_name)."""
    return split_name(name)[0]


def task_slug(name: str) -> str:
    """A filesystem-safe form of a task name: 'dmc:cartpole-balance' -> 'dmc_cartpole-balance'.

    Only [A-Za-z0-9._-] survive; everything else (the suite's ':', a gymnasium namespace's '/') becomes '_'.
    """
    suite, task_id = split_name(name)
    return f"{suite}_{re.sub(r'[^A-Za-z0-9._-]', '_', task_id)}"


def suggest(name: str, candidates: list[str]) -> str:
    """' Did you mean ...?' naming the closest of `candidates` (case ignored when nothing is close), or ''."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:  # also try ignoring case ('dmc:Cheetah-Run')
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
