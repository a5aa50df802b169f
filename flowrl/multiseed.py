"""Several seeds of one algorithm and task (or of several tasks with the same shapes) trained in one process,
as one batched model.

Each seed keeps everything a single run has (environment, replay, RNG streams, logs, checkpoints,
its own run directory in the same format); only the networks are stacked, so one batched forward,
backward and optimiser step serves all seeds. A seed's results equal a single run with that seed up to
floating-point reduction order, and its run directory can be resumed by this runner or as a single run.
Agents opt in by providing `stack(states, spec, config, device)`, `unstack(i)`, `act_members` (with a
`members` mask for evaluation), `update_members` and `seed_evaluation_members` (FlowRL does).

Evaluation runs every seed's episodes in lockstep with one batched policy call per step (and the evaluation
environments in parallel processes with `env_processes`): each seed's evaluation stream and episode seeds are
those of its single run, so its eval.csv matches the single run's up to floating-point reduction order.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from flowrl.agents.base import Batch
from flowrl.agents.registry import get_agent_class
from flowrl.checkpoint import CheckpointError
from flowrl.config import RunConfig
from flowrl.envs import make_env
from flowrl.subproc_env import SubprocEnv, available_cpus, step_all
from flowrl.train import (_EVAL_POLICY, RunError, RunResult, RunSession, _StopFlag, derived_seed,
                          eval_envs_for, evaluation_episodes, progress_bar)


def supports_members(algo: str) -> bool:
    cls = get_agent_class(algo)
    return all(hasattr(cls, m) for m in ("stack", "unstack", "act_members", "update_members", "seed_evaluation_members"))


def train_seeds(cfg: RunConfig, seeds: list[int], outs: list[str | Path], force: bool = False,
                env_processes: bool = False) -> list[RunResult]:
    """Train `cfg` for every seed in `seeds` into the matching `outs` directories, in lockstep."""
    return train_members(cfg, [(cfg.task, s) for s in seeds], outs, force, env_processes)


def train_members(cfg: RunConfig, members: list[tuple[str, int]], outs: list[str | Path], force: bool = False,
                  env_processes: bool = False) -> list[RunResult]:
    """Train `cfg` for every (task, seed) in `members` into the matching `outs` directories, in lockstep as one
    batched model. Tasks trained together need the same observation and action shapes and action bounds
    (e.g. the four dmc:dog-* tasks); each member's run is its single run of that task and seed."""
    if len(members) != len(outs) or len(set(members)) != len(members) or len(set(map(str, outs))) != len(outs):
        raise RunError("give distinct (task, seed) pairs and one distinct output directory per pair")
    if not supports_members(cfg.algo):
        raise RunError(f"algorithm {cfg.algo!r} cannot train several seeds or tasks as one batched model; "
                       "train each task and seed as its own run (one flowrl-train per run)")
    if cfg.on_divergence == "rollback":
        raise RunError("on_divergence=rollback works for single runs only (a packed model would roll back every "
                       "member); use on_divergence=stop, or train the run that diverged on its own")
    check_same_shapes(sorted({task for task, _ in members}))
    factory = SubprocEnv if env_processes else make_env
    # Evaluation environments in processes too when every one of them gets a CPU (with eval_envs k, a pack of n
    # runs has n * k), else all in this process.
    n_eval = min(cfg.eval_envs, cfg.eval_episodes)
    eval_factory = functools.partial(eval_envs_for,
                                     in_processes=env_processes and available_cpus() > len(members) * n_eval)

    sessions: list[RunSession] = []
    try:
        for (t, s), o in zip(members, outs):
            sessions.append(RunSession(dataclasses.replace(cfg, task=t, seed=s), o, force, env_factory=factory,
                                       eval_env_factory=eval_factory))
    except BaseException:
        for s in sessions:
            if not s.finished_before:
                s.release()
        raise
    results = {id(s): s.already_finished() for s in sessions if s.finished_before}
    active = [s for s in sessions if not s.finished_before]
    # Runs that stopped at different steps (e.g. some finished or were added later) train in lockstep groups of
    # equal steps, one group after another. After a signal the groups not yet trained stay as they were.
    groups: dict[tuple[int, str], list[RunSession]] = {}
    for s in active:
        # Runs resumed with another agent setting (an old run's LEGACY_VALUES, flowrl/config.py) train apart.
        groups.setdefault((s.runner.step, repr(s.cfg.agent)), []).append(s)
    try:
        with _StopFlag() as stop:
            for n, step in enumerate(sorted(groups)):
                if stop.signum is not None:
                    for s in groups[step]:
                        results[id(s)] = s.close(stop.signum, checkpoint=False)
                    continue
                if n:  # this group's session starts now, not when its run directory was opened
                    for s in groups[step]:
                        s.restart_clock()
                try:
                    trained = _train_lockstep(cfg, groups[step], stop)
                except (RunError, CheckpointError) as exc:
                    for s in groups[step]:
                        s.fail(exc)
                    raise
                for s, r in zip(groups[step], trained):
                    results[id(s)] = r
    finally:
        for s in active:
            s.release()
    return [results[id(s)] for s in sessions]


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
    if any(sp.obs_dim != first.obs_dim or sp.act_dim != first.act_dim or not np.array_equal(sp.act_low, first.act_low)
           or not np.array_equal(sp.act_high, first.act_high) for sp in specs.values()):
        detail = "; ".join(f"{t}: obs {sp.obs_dim}, act {sp.act_dim}, low {sp.act_low.tolist()}, high {sp.act_high.tolist()}"
                           for t, sp in specs.items())
        raise RunError(f"tasks trained as one batched model need the same observation and action shapes and action "
                       f"bounds ({detail}); train these tasks in separate processes")


def _train_lockstep(cfg: RunConfig, sessions: list[RunSession], stop: _StopFlag) -> list[RunResult]:
    runners = [s.runner for s in sessions]
    lead = runners[0]
    agent = type(lead.agent).stack([r.agent.state_dict() for r in runners], lead.spec, sessions[0].cfg.agent,
                                   lead.device)  # the sessions' agent config: the same for all (grouped by it)

    def sync(i: int) -> None:  # runner i's own agent takes seed i's weights (for its checkpoint and final files)
        runners[i].agent.load_state_dict(agent.unstack(i))

    initial = [s for s in sessions if s.runner.needs_initial_eval()]
    if initial:
        _evaluate_lockstep(agent, sessions, record=initial)
    for s in sessions:
        s.runner.start(s.session_start, initial_eval=False)
    with progress_bar(cfg, lead.step) as bar:
        while lead.step < cfg.steps:
            if stop.signum is not None:
                break
            actions = [r.begin_step() for r in runners]
            if actions[0] is None:
                obs = torch.stack([r._obs_tensor(r.obs) for r in runners])  # (n, 1, obs_dim)
                acted = agent.act_members(obs, deterministic=False).cpu().numpy()
                actions = [a[0] for a in acted]
                for r, a in zip(runners, actions):
                    if not np.isfinite(a).all():
                        r.diverged(f"the policy's action ({a.tolist()})")
                for _ in range(cfg.updates_per_step):
                    batch = Batch(*(torch.stack(x) for x in zip(*[r.replay.sample(cfg.batch_size) for r in runners])))
                    metrics = agent.update_members(batch, lead.updates)
                    for i, r in enumerate(runners):
                        r._accumulate({k: v[i] for k, v in metrics.items()})
                        r.updates += 1
            for s, a, step in zip(sessions, actions, step_all([r.env for r in runners], actions)):
                s.runner.finish_step(a, step, s.session_start, housekeeping=False)
            due_eval, due_ckpt = lead.due()  # the seeds are in lockstep: due together
            if due_eval:
                _evaluate_lockstep(agent, sessions)
            if due_ckpt:
                for i, s in enumerate(sessions):
                    sync(i)
                    s.runner.checkpoint(s.session_start)
            bar.update(1)
            if lead.step % cfg.log_every == 0:
                bar.set_postfix(lead.progress_postfix())
    signum = stop.signum
    out = []
    for i, s in enumerate(sessions):
        sync(i)
        if hasattr(agent, "execution_report"):  # the batched agent ran the updates, not the runner's own
            s.session["execution"] = agent.execution_report()
        out.append(s.close(signum))
    return out


def _evaluate_lockstep(agent, sessions: list[RunSession], record: list[RunSession] | None = None) -> None:
    """Evaluate every seed at once with the batched agent; write the rows of `record` (default: all)."""
    runners = [s.runner for s in sessions]
    lead = runners[0]
    seeds = [r.cfg.seed for r in runners]
    devices = [lead.device] if lead.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived_seed(seeds[0], _EVAL_POLICY, lead.step))
        agent.seed_evaluation_members([derived_seed(seed, _EVAL_POLICY, lead.step) for seed in seeds])

        def act(obs, active):  # obs[i][j]: seed i's evaluation environment j
            batch = torch.as_tensor(np.stack([np.stack(o) for o in obs]), dtype=torch.float32, device=lead.device)
            return list(agent.act_members(batch, deterministic=True, members=active).cpu().numpy())

        results = evaluation_episodes([r.eval_envs for r in runners], seeds, lead.cfg.eval_episodes, act)
    for s, (returns, successes) in zip(sessions, results):
        if record is None or s in record:
            s.runner.record_eval(returns, successes, s.session_start)
