"""The training loop shared by every agent and any number of runs: collect, update, evaluate, log, checkpoint.

`train(cfg, out)` trains one run into one directory (docs/run-format.md); `flowrl.multiseed.train_members` trains
several runs of one algorithm in one process as one batched model. Both are `Training.run`: a single run is a
batch of one (`OneMember`, flowrl/agents/base.py). SIGTERM, SIGINT and SIGUSR1 (what SLURM sends on preemption or
time-out) make it write a checkpoint and stop with exit status 128 + signal; running the same command again resumes
from the newest checkpoint and produces the same results as a run that never stopped (on the same hardware and
software).

The pieces: flowrl/session.py (a run directory: config, manifest, lock, DONE), flowrl/members.py (one run's
environment, episode, replay, random streams, logs and checkpoint), flowrl/evaluation.py, flowrl/checkpoint.py.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from time import time
from typing import NamedTuple

import numpy as np
import torch

from flowrl import evaluation
from flowrl.agents.base import Batch, BatchedAgent, OneMember
from flowrl.agents.registry import get_agent_class, make_agent
from flowrl.checkpoint import CheckpointError, checkpoint_paths, non_finite, save_checkpoint
from flowrl.config import RunConfig
from flowrl.execution import planned_updates
from flowrl.members import Member, derived_seed
from flowrl.session import (
    LOCK_NAME,
    DivergenceError,
    RunError,
    RunLock,
    RunResult,
    RunSession,
    StopFlag,
    flock_exclusive,
    prepare_run_dir,
    resolve_device,
)
from flowrl.subproc_env import SubprocEnv, available_cpus, step_all

MAX_ROLLBACKS = 3  # on_divergence=rollback: consecutive rollbacks (no passing check between) before stopping


class Due(NamedTuple):
    """What is due after the step just finished."""

    train_row: bool
    evaluation: bool
    checkpoint: bool


class DivergenceGuard:
    """NaN or inf in the agent's state, a training metric or an action (docs/run-format.md), checked at every
    train.csv row, evaluation and checkpoint. on_divergence=stop: an error naming what diverged, when, and the last
    good checkpoint (none is ever written from a diverged state). on_divergence=rollback (single runs): the agent
    goes back to its state at the last passing check, at most MAX_ROLLBACKS times in a row, and trains on."""

    def __init__(self, agent: BatchedAgent, members: list[Member]):
        self.agent, self.members = agent, members
        self.rollback = members[0].cfg.on_divergence == "rollback"
        self.checked_step, self.in_a_row, self.good = members[0].step, 0, None
        if self.rollback:
            self.check()  # the state to roll back to

    def check(self, metrics: list[dict[str, float]] | None = None) -> bool:
        """True when the agent's state and each member's window means `metrics` are finite; otherwise `diverged`
        (which raises, or returns after a rollback: then False)."""
        found = self.non_finite_state()  # the cause, before the losses it poisons
        if found is None:
            found = next(
                (
                    (m, f"the training metric {k!r} (mean over the last {m.metric_counts.get(k, 0)} updates: {v})")
                    for m, means in zip(self.members, metrics or [])
                    for k, v in means.items()
                    if not np.isfinite(v)
                ),
                None,
            )
        if found is not None:
            self.diverged(*found)
            return False
        self.checked_step, self.in_a_row = self.members[0].step, 0
        if self.rollback:
            self.good = copy.deepcopy(self.agent.state_dict())
        return True

    def non_finite_state(self) -> tuple[Member, str] | None:
        if (where := non_finite(self.agent.state_dict())) is None:
            return None
        for i, m in enumerate(self.members):  # name the member, and the place in its own (single-run) state
            if (own := non_finite(self.agent.unstack(i))) is not None:
                return m, f"the agent's {own}"
        return self.members[0], f"the agent's {where}"

    def diverged(self, member: Member, what: str) -> None:
        """`what` of `member` is NaN or inf: roll back (and return) where allowed, else raise DivergenceError."""
        if self.rollback and self.good is not None and self.in_a_row < MAX_ROLLBACKS:
            self.agent.load_state_dict(copy.deepcopy(self.good))
            self.in_a_row += 1
            member.rollbacks += 1
            for m in self.members:
                m.reset_metrics()
            member.log.warning(
                "step %d: %s is NaN or inf; rolled the agent back to its state at step %d "
                "(on_divergence=rollback; %d in a row, %d in all)",
                member.step,
                what,
                self.checked_step,
                self.in_a_row,
                member.rollbacks,
            )
            return
        ckpts = checkpoint_paths(member.out / "checkpoints")
        last = (
            f"the last good checkpoint is {ckpts[0]} (step {int(ckpts[0].stem.split('-')[1])}), and running the "
            "same command again resumes from it"
            if ckpts
            else "there is no checkpoint yet, so running the same command again starts from step 0"
        )
        advice = (
            "rollbacks did not help; start a new run with other settings (e.g. a lower learning rate)"
            if self.rollback
            else "the same settings diverge again at the same step: resume with on_divergence=rollback, or start a "
            "new run with other settings (e.g. a lower learning rate)"
        )
        raise DivergenceError(
            f"{member.cfg.task} seed {member.cfg.seed}: training diverged: {what} is NaN or inf at step {member.step} "
            f"({member.updates} updates; the last check that passed was at step {self.checked_step}). No checkpoint "
            f"was written from the diverged state; {last}. Note {advice}."
        )


def _planned(agent, cfg):
    """`agent` told the run's planned updates where it has execution settings (what compile_update=auto decides by:
    the whole run's, so every session of a run decides alike)."""
    if hasattr(agent, "planned_updates"):
        agent.planned_updates = planned_updates(cfg.steps, cfg.start_steps, cfg.updates_per_step)
    return agent


class Training:
    """Runs in lockstep: `members` (one per run directory, all at the same step, with the same settings but task
    and seed) and their batched `agent`."""

    def __init__(self, members: list[Member], agent: BatchedAgent, device: torch.device):
        self.members, self.agent, self.device = members, agent, device
        self.cfg = members[0].cfg
        self.guard = DivergenceGuard(agent, members)
        self.rates = (0.0, 0.0)  # env steps and updates per second in the last train.csv window

    @classmethod
    def open(cls, sessions: list[RunSession], env_factory, eval_env_factory) -> Training:
        """The members of `sessions` and their agent: a single run's own agent as a batch of one, or the members'
        agents stacked. A new run's agent is built right after its Member, from the RNGs seeded with its seed."""
        cfg = sessions[0].cfg
        device = resolve_device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        single = len(sessions) == 1
        members, states = [], []
        try:
            for s in sessions:
                members.append(m := Member(s.cfg, s.out, s.log, s.clock, device, env_factory, eval_env_factory))
                resumed, checkpoint, s.checkpoint = s.checkpoint is not None, s.checkpoint, None
                fresh = make_agent(s.cfg, m.spec, device) if single or not resumed else None
                m.load_state_dict(checkpoint)
                states.append(checkpoint["agent"] if resumed else fresh.state_dict())
            if single:
                if resumed:
                    fresh.load_state_dict(states[0])
                return cls(members, OneMember(_planned(fresh, cfg)), device)
            agent_cls = get_agent_class(cfg.algo)  # built with the run's execution settings where it has any
            execution = {} if getattr(agent_cls, "Execution", None) is None else {"execution": cfg.execution}
            stacked = agent_cls.stack(states, members[0].spec, cfg.agent, device, **execution)
            return cls(members, _planned(stacked, cfg), device)
        except BaseException:
            for m in members:
                m.close()
            raise

    @property
    def step(self) -> int:
        return self.members[0].step

    def run(self, stop: StopFlag) -> int | None:
        """Train until `steps` or a signal; returns the signal number if one stopped it."""
        cfg, members = self.cfg, self.members
        first = [m for m in members if m.step == 0 and cfg.eval_at_start and not m.eval_log.read()]
        if first:
            self.evaluate(first)
        self.window = (time(), self.step, members[0].updates)
        with progress_bar(cfg, self.step) as bar:
            while self.step < cfg.steps:
                if stop.signum is not None:
                    return stop.signum
                actions = [m.begin_step() for m in members]
                if actions[0] is None:  # warm-up is over (for every member: they are at the same step)
                    actions = self.policy_actions()
                    for _ in range(cfg.updates_per_step):
                        self.update()
                for m, action, s in zip(members, actions, step_all([m.env for m in members], actions)):
                    m.finish_step(action, s)
                due = self.due()
                if due.train_row:
                    self.write_train_rows()
                if due.evaluation:
                    self.evaluate()
                if due.checkpoint:
                    self.checkpoint()
                bar.update(1)
                if due.train_row:
                    bar.set_postfix(
                        sps=f"{self.rates[0]:.0f}",
                        ups=f"{self.rates[1]:.0f}",
                        eval=None if members[0].last_eval is None else f"{members[0].last_eval['return_mean']:.1f}",
                    )
        return None

    def due(self) -> Due:
        step, cfg = self.step, self.cfg
        return Due(
            train_row=step % cfg.log_every == 0 or step == cfg.steps,
            evaluation=step % cfg.eval_every == 0 or step == cfg.steps,
            checkpoint=bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step < cfg.steps,
        )

    def policy_actions(self) -> list[np.ndarray]:
        """Each member's training action for its observation, guarded against NaN/inf (after a rollback the
        restored agent acts again)."""
        obs = torch.stack([torch.as_tensor(m.obs, dtype=torch.float32, device=self.device)[None] for m in self.members])
        for _ in range(MAX_ROLLBACKS + 1):
            actions = list(self.agent.act_members(obs, deterministic=False).cpu().numpy()[:, 0])
            bad = next(((m, a) for m, a in zip(self.members, actions) if not np.isfinite(a).all()), None)
            if bad is None:
                return actions
            self.guard.diverged(bad[0], f"the policy's action ({bad[1].tolist()})")  # raises, or rolled back
        raise AssertionError("unreachable: diverged() raises after MAX_ROLLBACKS rollbacks in a row")

    def update(self) -> None:
        """One update of every member, each from a batch of its own replay."""
        batch = Batch(*map(torch.stack, zip(*[m.replay.sample(self.cfg.batch_size) for m in self.members])))
        metrics = self.agent.update_members(batch, self.members[0].updates)
        for i, m in enumerate(self.members):
            m.record_update({k: v[i] for k, v in metrics.items()})

    def write_train_rows(self) -> None:
        """Each member's train.csv row for the window since the last one."""
        now, (then, step, updates) = time(), self.window
        means = [m.metric_means() for m in self.members]
        if not self.guard.check(means):  # rolled back: the window's metrics came from the diverged state
            means = [{} for _ in self.members]
        rows = [
            m.write_train_row(mm, m.step - step, m.updates - updates, now - then) for m, mm in zip(self.members, means)
        ]
        self.rates = (rows[0]["env_steps_per_s"] or 0.0, rows[0]["updates_per_s"] or 0.0)
        self.window = (now, self.step, self.members[0].updates)

    def evaluate(self, record: list[Member] | None = None) -> None:
        """Every member's evaluation at this step (flowrl/evaluation.py); the rows of `record` (default: all) are
        written."""
        self.guard.check()
        members = self.members
        results = evaluation.evaluate(
            self.agent,
            [m.eval_envs for m in members],
            [m.cfg.seed for m in members],
            self.step,
            self.cfg.eval_episodes,
            self.device,
        )
        for m, (returns, successes) in zip(members, results):
            if record is None or m in record:
                m.record_eval(returns, successes)

    def checkpoint(self) -> None:
        """Save every member's checkpoint. Refused (DivergenceError) from a diverged state; a write that fails
        (e.g. a full disk) raises CheckpointError and leaves the previous checkpoint as it was."""
        self.guard.check([m.metric_means() for m in self.members])
        for i, m in enumerate(self.members):
            path = save_checkpoint(
                m.out / "checkpoints", m.step, m.state_dict(self.agent.unstack(i)), keep=m.cfg.keep_checkpoints
            )
            m.log.info("checkpoint %s", path.name)

    def finish(self, sessions: list[RunSession], signum: int | None) -> list[RunResult]:
        """After `run`: checkpoint and record the interruption, or write each run's final agent and DONE (also when
        a signal raced the final step: then every step was done)."""
        execution = self.agent.execution_report()
        if signum is not None and self.step < self.cfg.steps:
            self.checkpoint()
            return [s.interrupted(m.step, signum, execution) for s, m in zip(sessions, self.members)]
        return [
            s.finished(m.step, self.agent.unstack(i), m.last_eval, execution)
            for i, (s, m) in enumerate(zip(sessions, self.members))
        ]

    def close(self) -> None:
        for m in self.members:
            m.close()


def progress_bar(cfg: RunConfig, initial: int):
    from tqdm import tqdm

    return tqdm(
        total=cfg.steps,
        initial=initial,
        disable=not cfg.progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0 if os.isatty(2) else 30.0,
    )


def train_group(sessions: list[RunSession], stop: StopFlag, env_factory, eval_env_factory) -> list[RunResult]:
    """Train `sessions` (runs at the same step) in lockstep until done or `stop`; an error is recorded in each."""
    training = None
    try:
        training = Training.open(sessions, env_factory, eval_env_factory)
        signum = training.run(stop)
        return training.finish(sessions, signum if signum is not None else stop.signum)
    except (RunError, CheckpointError) as exc:
        for i, s in enumerate(sessions):
            s.fail(exc, training.members[i].step if training is not None else s.step)
        raise
    finally:
        if training is not None:
            training.close()


def train_runs(
    cfg: RunConfig, runs: list[tuple[str, int]], outs: list, force: bool = False, env_processes: bool | None = None
) -> list[RunResult]:
    """Train `cfg` for every (task, seed) of `runs` into the matching `outs` directory (new, resumed, or skipped
    when finished). Runs at the same step and with the same agent settings train in lockstep as one batched model,
    one group after another; after a signal the groups not yet trained stay as they were. env_processes: each
    training environment in its own process, and the evaluation environments too when each gets a CPU; None (a
    single run's default): training in this process, evaluation in processes when k > 1 environments get a CPU each."""
    from flowrl.envs import make_env

    n_eval = min(cfg.eval_envs, cfg.eval_episodes)
    eval_factory = functools.partial(
        evaluation.eval_envs_for,
        in_processes=None if env_processes is None else (env_processes and available_cpus() > len(runs) * n_eval),
    )
    env_factory = SubprocEnv if env_processes else make_env
    sessions: list[RunSession] = []
    try:
        for (task, seed), out in zip(runs, outs):
            sessions.append(RunSession(dataclasses.replace(cfg, task=task, seed=seed), out, force))
    except BaseException:
        for s in sessions:
            if not s.finished_before:
                s.release()
        raise
    results = {id(s): s.already_finished() for s in sessions if s.finished_before}
    active = [s for s in sessions if not s.finished_before]
    groups: dict[tuple[int, str, str], list[RunSession]] = {}
    for s in active:  # runs resumed with other agent or execution settings (an old run's LEGACY_VALUES) train apart
        groups.setdefault((s.step, repr(s.cfg.agent), repr(s.cfg.execution)), []).append(s)
    try:
        with StopFlag() as stop:
            for n, key in enumerate(sorted(groups)):
                group = groups[key]
                if stop.signum is not None:
                    results.update((id(s), s.interrupted(s.step, stop.signum)) for s in group)
                    continue
                if n:  # this group's session starts now, not when its run directory was opened
                    for s in group:
                        s.restart_clock()
                results.update(zip(map(id, group), train_group(group, stop, env_factory, eval_factory)))
    finally:
        for s in active:
            s.release()
    return [results[id(s)] for s in sessions]


def train(cfg: RunConfig, out, force: bool = False) -> RunResult:
    """Train one run into `out` (new, resumed, or skipped when already finished)."""
    (result,) = train_runs(cfg, [(cfg.task, cfg.seed)], [out], force)
    return result


__all__ = [
    "train",
    "train_runs",
    "Training",
    "DivergenceGuard",
    "Due",
    "RunSession",
    "RunResult",
    "RunError",
    "DivergenceError",
    "RunLock",
    "LOCK_NAME",
    "flock_exclusive",
    "derived_seed",
    "prepare_run_dir",
    "resolve_device",
]
