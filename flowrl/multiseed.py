"""Several seeds of one algorithm and task (or of several tasks with the same shapes) trained in one process,
as one batched model.

Each seed keeps everything a single run has (environment, replay, RNG streams, logs, checkpoints,
its own run directory in the same format); only the networks are stacked, so one batched forward,
backward and optimiser step serves all seeds. A seed's results equal a single run with that seed up to
floating-point reduction order, and its run directory can be resumed by this runner or as a single run.
The training loop is the single run's (`flowrl.train.Training`); agents opt in by implementing
`flowrl.agents.base.BatchedAgent` (FlowRL does).

Evaluation runs every seed's episodes in lockstep with one batched policy call per step (and the evaluation
environments in parallel processes with `env_processes`): each seed's evaluation stream and episode seeds are
those of its single run, so its eval.csv matches the single run's up to floating-point reduction order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowrl.agents.base import BatchedAgent
from flowrl.agents.registry import get_agent_class
from flowrl.config import RunConfig
from flowrl.envs import make_env
from flowrl.session import RunError, RunResult
from flowrl.train import train_runs


def supports_members(algo: str) -> bool:
    return issubclass(get_agent_class(algo), BatchedAgent)


def train_seeds(
    cfg: RunConfig, seeds: list[int], outs: list[str | Path], force: bool = False, env_processes: bool = False
) -> list[RunResult]:
    """Train `cfg` for every seed in `seeds` into the matching `outs` directories, in lockstep."""
    return train_members(cfg, [(cfg.task, s) for s in seeds], outs, force, env_processes)


def train_members(
    cfg: RunConfig,
    members: list[tuple[str, int]],
    outs: list[str | Path],
    force: bool = False,
    env_processes: bool = False,
) -> list[RunResult]:
    """Train `cfg` for every (task, seed) in `members` into the matching `outs` directories, in lockstep as one
    batched model. Tasks trained together need the same observation and action shapes and action bounds
    (e.g. the four dmc:dog-* tasks); each member's run is its single run of that task and seed."""
    if len(members) != len(outs) or len(set(members)) != len(members) or len(set(map(str, outs))) != len(outs):
        raise RunError("give distinct (task, seed) pairs and one distinct output directory per pair")
    if not supports_members(cfg.algo):
        raise RunError(
            f"algorithm {cfg.algo!r} cannot train several seeds or tasks as one batched model; "
            "train each task and seed as its own run (one flowrl-train per run)"
        )
    if cfg.on_divergence == "rollback":
        raise RunError(
            "on_divergence=rollback works for single runs only (a packed model would roll back every "
            "member); use on_divergence=stop, or train the run that diverged on its own"
        )
    check_same_shapes(sorted({task for task, _ in members}))
    return train_runs(cfg, members, outs, force, env_processes)


def check_same_shapes(tasks: list[str]) -> None:
    """Tasks in one batched model must agree on observation size, action size and action bounds."""
    if len(tasks) < 2:
        return
    specs = {}
    for task in tasks:
        env = make_env(task)
        specs[task] = env.spec
        env.close()
    first = specs[tasks[0]]
    if any(
        sp.obs_dim != first.obs_dim
        or sp.act_dim != first.act_dim
        or not np.array_equal(sp.act_low, first.act_low)
        or not np.array_equal(sp.act_high, first.act_high)
        for sp in specs.values()
    ):
        detail = "; ".join(
            f"{t}: obs {sp.obs_dim}, act {sp.act_dim}, low {sp.act_low.tolist()}, high {sp.act_high.tolist()}"
            for t, sp in specs.items()
        )
        raise RunError(
            f"tasks trained as one batched model need the same observation and action shapes and action "
            f"bounds ({detail}); train these tasks in separate processes"
        )
