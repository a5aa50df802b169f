"""The training runner shared by every agent: collect, update, evaluate, log, checkpoint, resume.

One call of `train(cfg, out)` trains one run into one directory (docs/run-format.md). SIGTERM, SIGINT
and SIGUSR1 (what SLURM sends on preemption or time-out) make it write a checkpoint and stop with
exit status 128 + signal; running the same command again resumes from the newest checkpoint and
produces the same results as a run that never stopped (on the same hardware and software).
"""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import random
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from flowrl.agents.base import EnvSpec
from flowrl.agents.registry import get_agent_class
from flowrl.checkpoint import (CheckpointError, checkpoint_paths, load_latest_checkpoint, non_finite,
                               remove_checkpoint, save_checkpoint)
from flowrl.config import RunConfig, config_diff, config_to_dict, resume_config, with_current_defaults
from flowrl.logger import CSVLog, TensorBoard
from flowrl.networks import onednn_linear_available
from flowrl.provenance import manifest, now
from flowrl.replay import ReplayBuffer
from flowrl.subproc_env import available_cpus, step_all, subproc_envs

log = logging.getLogger("flowrl")
CHECKPOINT_FORMAT = 1
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class RunError(Exception):
    """A problem with the run's inputs or directory, reported to the user without a traceback."""


class DivergenceError(RunError):
    """Training produced NaN or inf (a loss, a parameter or an action); the run stops resumable."""


LOCK_NAME = ".flowrl.lock"  # held (flock) by the process training into a run directory
MAX_ROLLBACKS = 3  # on_divergence=rollback: consecutive rollbacks (no passing check between) before stopping


@dataclass
class RunResult:
    status: str  # "finished", "already_finished", "interrupted"
    out: Path
    step: int
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.status == "interrupted" and self.signal else 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def derived_seed(*keys: int) -> int:
    """An independent 31-bit seed for each purpose (episode resets, evaluation, random actions)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


# Purposes for derived_seed, so streams never collide.
_TRAIN_EPISODE, _EVAL_EPISODE, _EVAL_POLICY, _RANDOM_ACTIONS, _REPLAY = range(5)


# ----------------------------------------------------------------------------------- run directory
def prepare_run_dir(out: Path, cfg: RunConfig, force: bool) -> str:
    """Check the output directory; returns 'new', 'resume' or 'done'. Never deletes anything."""
    if out.exists() and not out.is_dir():
        raise RunError(f"output path {out} exists and is not a directory; choose another --out")
    if (out / "DONE").exists() and force:
        backup = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(backup)
        log.warning("--force: moved the finished run to %s and starting over", backup)
    if (out / "DONE").exists():
        return "done"
    saved_path = out / "config.yaml"
    if saved_path.exists():
        saved = yaml.safe_load(saved_path.read_text())
        diff = config_diff(with_current_defaults(saved), config_to_dict(resume_config(saved, cfg)))
        if diff:
            raise RunError(
                f"{out} holds a run with a different configuration; refusing to resume it with this one:\n"
                + "\n".join(diff)
                + "\nUse the saved settings to resume, or a new --out for a new run."
            )
        return "resume"
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunError(f"{out} is not empty and holds no run (no config.yaml); refusing to write into it. "
                       "Choose a new or empty --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"cannot write to output directory {out}: {exc.strerror or exc}. Choose a writable --out.") from exc
    return "new"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def flock_exclusive(handle, seconds: float = 2.0) -> None:
    """An exclusive flock, retried for a moment: readers such as flowrl-status take a brief shared lock to see
    whether a run is live, and a trainer starting in that instant must not take it for another trainer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RunLock:
    """An exclusive flock on <run>/.flowrl.lock while a process trains into the run, so that a second trainer is
    refused instead of interleaving its logs and checkpoints with the first one's. The kernel drops the lock with
    its process (SIGKILL too), so a stale file never blocks; the file stays and names its last holder."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.handle = open(self.path, "a+")
        try:
            flock_exclusive(self.handle)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "a process that has not said who it is"
            self.handle.close()
            raise RunError(f"another trainer is training into {out} (lock {self.path}: {holder}); refusing to start a "
                           "second one. Wait for it to finish, or stop it (SIGTERM checkpoints it) and run this "
                           "command again to resume.") from None
        except OSError as exc:  # a file system without flock (e.g. some network mounts)
            log.warning("cannot lock %s (%s); not guarding against a second trainer on this run", self.path, exc)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start_time": now(),
                                      "slurm_job_id": os.environ.get("SLURM_JOB_ID")}) + "\n")
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing the descriptor releases the flock


class _StopFlag:
    """Records the first handled signal; the loop checks it between steps."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for s in HANDLED_SIGNALS:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not in the main thread: the caller handles interruption
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            log.warning("received signal %d: checkpointing and stopping", signum)

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h)


def progress_bar(cfg: RunConfig, initial: int):
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=initial, disable=not cfg.progress, unit="step", dynamic_ncols=True,
                mininterval=1.0 if os.isatty(2) else 30.0)


def evaluation_episodes(envs: list[list], seeds: list[int], episodes: int, act) -> list[tuple[list[float], list[float]]]:
    """Run `episodes` evaluation episodes for each member i (a seed) on its environments envs[i], all in lockstep:
    member i's k = len(envs[i]) environments play episodes 0..k-1 at once, then k..2k-1, and so on (in parallel
    where they are SubprocEnvs). Episode e of member i starts from the seed derived from (seeds[i], e).
    `act(obs, active)` gets the current observations obs[i][j] of every member's environments and which of them
    are still in an episode (active[i][j]), and returns actions[i][j] (those of inactive slots are ignored; the
    policy must not consume randomness for them, so each member sees exactly the actions it would see alone).
    Returns (returns, successes) per member, in episode order; successes only where the task reports them."""
    k = len(envs[0])
    if any(len(e) != k for e in envs):
        raise ValueError("every member needs the same number of evaluation environments")
    results = [([], []) for _ in envs]
    for first in range(0, episodes, k):
        wave = range(first, min(first + k, episodes))
        active = [[j < len(wave) for j in range(k)] for _ in envs]
        obs = [[env.reset(derived_seed(seed, _EVAL_EPISODE, first + j)) if j < len(wave)
                else np.zeros(env.spec.obs_dim, np.float32) for j, env in enumerate(member)]
               for member, seed in zip(envs, seeds)]
        totals = [[0.0] * k for _ in envs]
        success = [[None] * k for _ in envs]
        while any(map(any, active)):
            actions = act(obs, [list(a) for a in active])
            slots = [(i, j) for i, a in enumerate(active) for j in range(k) if a[j]]
            for (i, j), s in zip(slots, step_all([envs[i][j] for i, j in slots], [actions[i][j] for i, j in slots])):
                obs[i][j], totals[i][j] = s.obs, totals[i][j] + s.reward
                if "success" in s.info:
                    success[i][j] = max(float(s.info["success"]), success[i][j] or 0.0)
                if s.terminated or s.truncated:
                    active[i][j] = False
        for i, (returns, successes) in enumerate(results):
            for j in range(len(wave)):
                returns.append(totals[i][j])
                if success[i][j] is not None:
                    successes.append(success[i][j])
    return results


def eval_envs_for(task: str, k: int, in_processes: bool | None = None) -> list:
    """A run's k evaluation environments, each in its own process (stepping in parallel) or all in this process
    (the same results either way). in_processes=None: in processes when this process may use a CPU per
    environment besides its own."""
    from flowrl.envs import make_env

    if in_processes is None:
        in_processes = k > 1 and available_cpus() > k
    return subproc_envs(task, k) if in_processes else [make_env(task) for _ in range(k)]


def evaluation_policy(agent, device: torch.device):
    """`act` for evaluation_episodes of one run: the agent's evaluation policy on the run's active evaluation
    environments, as one batch."""

    def act(obs: list[list[np.ndarray]], active: list[list[bool]]) -> list[list[np.ndarray | None]]:
        rows = [j for j, a in enumerate(active[0]) if a]
        batch = torch.as_tensor(np.stack([obs[0][j] for j in rows]), dtype=torch.float32, device=device)
        actions: list[np.ndarray | None] = [None] * len(active[0])
        for j, a in zip(rows, agent.act(batch, deterministic=True).cpu().numpy()):
            actions[j] = a
        return [actions]

    return act


# ----------------------------------------------------------------------------------- the runner
class Runner:
    def __init__(self, cfg: RunConfig, out: Path, logger: logging.Logger = log, env_factory=None, eval_env_factory=None):
        from flowrl.envs import make_env

        self.cfg, self.out, self.log = cfg, out, logger
        self.device = resolve_device(cfg.device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)

        self.env = (env_factory or make_env)(cfg.task)
        self.eval_envs: list = []
        try:
            self._build(cfg, out, env_factory, eval_env_factory)
        except BaseException:
            for env in [self.env, *self.eval_envs]:
                env.close()
            raise

    def _build(self, cfg: RunConfig, out: Path, env_factory, eval_env_factory) -> None:
        """Everything after the training environment (apart, so that __init__ can close the environments when
        any of it fails: worker processes must not outlive a failed start)."""
        # Evaluation episodes played at once (one batched policy call per step); each in its own process, stepping
        # in parallel, when this process may use a CPU per environment besides its own (the same results either way).
        n_eval = min(cfg.eval_envs, cfg.eval_episodes)
        if eval_env_factory is None:
            eval_env_factory = eval_envs_for if env_factory is None else (lambda task, k: [env_factory(task)
                                                                                             for _ in range(k)])
        self.eval_envs = eval_env_factory(cfg.task, n_eval)
        self._closed = False
        spec: EnvSpec = self.env.spec
        self.spec = spec
        self.agent = get_agent_class(cfg.algo)(spec, cfg.agent, self.device)
        self.replay = ReplayBuffer(spec.obs_dim, spec.act_dim, min(cfg.replay_size, cfg.steps), self.device,
                                   recent_fraction=cfg.replay_recent_fraction, recent_window=cfg.replay_recent_window,
                                   seed=derived_seed(cfg.seed, _REPLAY), split=cfg.replay_split)
        self.random_actions = np.random.default_rng(derived_seed(cfg.seed, _RANDOM_ACTIONS))

        # Counters and the episode in progress (all saved in checkpoints).
        self.step = 0
        self.updates = 0
        self.episode = 0
        self.episode_return = 0.0
        self.episode_actions: list[np.ndarray] = []
        self.last_episode_return: float | None = None
        self.obs: np.ndarray | None = None
        self.wall_time = 0.0  # training seconds over all sessions
        self.last_eval: dict[str, Any] | None = None
        # Divergence guard: the step of the last check that passed; under on_divergence=rollback the agent's state
        # then, and rollbacks in a row since (reset by a passing check) and in all.
        self._checked_step = 0
        self._good_agent: dict | None = None
        self._rollbacks_in_a_row = 0
        self.rollbacks = 0

        self.eval_log = CSVLog(out / "eval.csv", ["step", "return_mean", "return_std", "success_mean", "episodes", "wall_time"])
        self.train_log = CSVLog(out / "train.csv", ["step", "updates"])
        self.tb = TensorBoard(out / "tb") if cfg.tensorboard else None
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_counts: dict[str, int] = {}
        self._last_sps = self._last_ups = 0.0  # throughput of the last logging window, for the progress bar
        self._window = (time.time(), 0, 0)  # (time, step, updates) at the start of the logging window

    # -- environment ------------------------------------------------------------------------
    def _reset_episode(self) -> None:
        self.obs = self.env.reset(derived_seed(self.cfg.seed, _TRAIN_EPISODE, self.episode))
        self.episode_return, self.episode_actions = 0.0, []

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)

    def _act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.agent.act(self._obs_tensor(obs), deterministic=deterministic)[0].cpu().numpy()

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, session_start: float) -> None:
        """`eval_episodes` episodes with the evaluation policy, isolated from the training RNG streams."""
        cfg = self.cfg
        self.check_finite()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derived_seed(cfg.seed, _EVAL_POLICY, self.step))
            self.agent.seed_evaluation(derived_seed(cfg.seed, _EVAL_POLICY, self.step))
            (returns, successes), = evaluation_episodes([self.eval_envs], [cfg.seed], cfg.eval_episodes,
                                                        evaluation_policy(self.agent, self.device))
        self.record_eval(returns, successes, session_start)

    def record_eval(self, returns: list[float], successes: list[float], session_start: float) -> None:
        row = {
            "step": self.step,
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "success_mean": float(np.mean(successes)) if successes else None,
            "episodes": len(returns),
            "wall_time": round(self.wall_time + time.time() - session_start, 3),
        }
        self.eval_log.write(row)
        if self.tb:
            self.tb.write("eval", row, self.step)
        self.last_eval = row
        self.log.info("eval step=%d return=%.2f+-%.2f", self.step, row["return_mean"], row["return_std"])

    # -- logging -----------------------------------------------------------------------------
    def _accumulate(self, metrics: dict) -> None:
        for k, v in metrics.items():
            v = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self._metric_sums[k] = self._metric_sums[k] + v if k in self._metric_sums else v.clone()
            self._metric_counts[k] = self._metric_counts.get(k, 0) + 1

    def _metric_means(self) -> dict[str, float]:
        keys = list(self._metric_sums)
        values = torch.stack([self._metric_sums[k].float().cpu() for k in keys]).tolist() if keys else []
        return {k: v / self._metric_counts[k] for k, v in zip(keys, values)}

    def _write_train_row(self, window_steps: int, window_updates: int, window_time: float) -> None:
        means = self._metric_means()
        if not self.check_finite(means):  # rolled back: the window's metrics came from the diverged state
            means = {}
        row: dict[str, Any] = {"step": self.step, "updates": self.updates}
        row.update(means)
        row["env_steps_per_s"] = window_steps / window_time if window_time > 0 else None
        row["updates_per_s"] = window_updates / window_time if window_time > 0 else None
        row["episode_return"] = self.last_episode_return
        if self.cfg.on_divergence == "rollback":
            row["rollbacks"] = self.rollbacks
        self._last_sps, self._last_ups = row["env_steps_per_s"] or 0.0, row["updates_per_s"] or 0.0
        self.train_log.write(row)
        if self.tb:
            self.tb.write("train", row, self.step)
        self._metric_sums, self._metric_counts = {}, {}

    # -- divergence guard ------------------------------------------------------------------------
    def check_finite(self, metrics: dict[str, float] | None = None) -> bool:
        """The divergence guard, run at every train.csv row, evaluation and checkpoint: `metrics` (the window's mean
        training metrics) and every tensor of the agent's state (parameters, targets, optimiser moments) must be
        finite. True when they are; otherwise `diverged` stops the run, or returns False after a rollback."""
        bad = None
        if (where := non_finite(self.agent.state_dict())) is not None:  # the cause, before the losses it poisons
            bad = f"the agent's {where}"
        if bad is None:
            bad = next((f"the training metric {k!r} (mean over the last {self._metric_counts.get(k, 0)} updates: "
                        f"{v})" for k, v in (metrics or {}).items() if not np.isfinite(v)), None)
        if bad is not None:
            self.diverged(bad)
            return False
        self._checked_step, self._rollbacks_in_a_row = self.step, 0
        if self.cfg.on_divergence == "rollback":
            self._good_agent = copy.deepcopy(self.agent.state_dict())
        return True

    def diverged(self, what: str) -> None:
        """`what` is NaN or inf. on_divergence=rollback: put the agent back to its state at the last passing check
        (at most MAX_ROLLBACKS times in a row) and return. Otherwise stop with an error naming what diverged, when,
        and the last good checkpoint (no checkpoint is ever written from a diverged state)."""
        if (self.cfg.on_divergence == "rollback" and self._good_agent is not None
                and self._rollbacks_in_a_row < MAX_ROLLBACKS):
            self.agent.load_state_dict(copy.deepcopy(self._good_agent))
            self._rollbacks_in_a_row += 1
            self.rollbacks += 1
            self._metric_sums, self._metric_counts = {}, {}
            self.log.warning("step %d: %s is NaN or inf; rolled the agent back to its state at step %d "
                             "(on_divergence=rollback; %d in a row, %d in all)", self.step, what,
                             self._checked_step, self._rollbacks_in_a_row, self.rollbacks)
            return
        ckpts = checkpoint_paths(self.out / "checkpoints")
        last = (f"the last good checkpoint is {ckpts[0]} (step {int(ckpts[0].stem.split('-')[1])}), and running the "
                "same command again resumes from it" if ckpts else
                "there is no checkpoint yet, so running the same command again starts from step 0")
        advice = ("rollbacks did not help; start a new run with other settings (e.g. a lower learning rate)"
                  if self.cfg.on_divergence == "rollback" else
                  "the same settings diverge again at the same step: resume with on_divergence=rollback, or start a "
                  "new run with other settings (e.g. a lower learning rate)")
        raise DivergenceError(
            f"{self.cfg.task} seed {self.cfg.seed}: training diverged: {what} is NaN or inf at step {self.step} "
            f"({self.updates} updates; the last check that passed was at step {self._checked_step}). No checkpoint "
            f"was written from the diverged state; {last}. Note {advice}.")

    def policy_action(self) -> np.ndarray:
        """The training policy's action for the current observation, guarded against NaN/inf."""
        for _ in range(MAX_ROLLBACKS + 1):
            action = self._act(self.obs, deterministic=False)
            if np.isfinite(action).all():
                return action
            self.diverged(f"the policy's action ({action.tolist()})")  # raises, or rolled back: act again
        raise AssertionError("unreachable: diverged() raises after MAX_ROLLBACKS rollbacks in a row")

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, session_start: float) -> Path:
        """Save everything needed to resume exactly. Refused (DivergenceError) from a diverged state; a write that
        fails (e.g. a full disk) raises CheckpointError and leaves the previous checkpoint as it was."""
        self.check_finite(self._metric_means())
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "random_actions": self.random_actions.bit_generator.state,
        }
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "updates": self.updates,
            "episode": self.episode,
            "episode_return": self.episode_return,
            "episode_actions": np.asarray(self.episode_actions, dtype=np.float32).reshape(-1, self.spec.act_dim),
            "obs": self.obs,
            "last_episode_return": self.last_episode_return,
            "last_eval": self.last_eval,
            "metric_window": ({k: v.cpu() for k, v in self._metric_sums.items()}, dict(self._metric_counts)),
            "wall_time": self.wall_time + time.time() - session_start,
            "agent": self.agent.state_dict(),
            "replay": self.replay.state_dict(),
            "rng": rng,
            "config": config_to_dict(self.cfg),
            "rollbacks": self.rollbacks,
        }
        path = save_checkpoint(self.out / "checkpoints", self.step, state, keep=self.cfg.keep_checkpoints)
        self.log.info("checkpoint %s", path.name)
        return path

    def restore(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"checkpoint format {state.get('format')} is not supported (expected {CHECKPOINT_FORMAT})")
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.step, self.updates, self.episode = state["step"], state["updates"], state["episode"]
        self.last_episode_return, self.last_eval = state["last_episode_return"], state["last_eval"]
        self.wall_time = state["wall_time"]
        self.rollbacks = state.get("rollbacks", 0)  # checkpoints written before the divergence guard have none
        sums, self._metric_counts = state["metric_window"]
        self._metric_sums = {k: v.to(self.device) for k, v in sums.items()}
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.random_actions.bit_generator.state = rng["random_actions"]
        # Rebuild the episode in progress: reset with its seed and replay its recorded actions.
        if state["obs"] is not None:
            self._reset_episode()
            for action in state["episode_actions"]:
                s = self.env.step(action)
                self.obs = s.obs
                self.episode_actions.append(action)
            self.episode_return = state["episode_return"]
            if not np.allclose(self.obs, state["obs"], atol=1e-5):
                self.log.warning("replaying the interrupted episode did not reproduce its last observation; "
                            "the environment is not deterministic, so the resumed run may differ slightly")
        else:
            self.obs = None
        dropped = self.eval_log.truncate_after(self.step) + self.train_log.truncate_after(self.step)
        if dropped:
            self.log.info("dropped %d log rows written after the checkpoint at step %d", dropped, self.step)

    # -- main loop -----------------------------------------------------------------------------
    def begin_step(self) -> np.ndarray | None:
        """Start an episode if needed; a uniform random action during warm-up, else None (the policy acts)."""
        if self.obs is None:
            self._reset_episode()
        if self.step < self.cfg.start_steps:
            return self.random_actions.uniform(self.spec.act_low, self.spec.act_high).astype(np.float32)
        return None

    def finish_step(self, action: np.ndarray, s, session_start: float, housekeeping: bool = True) -> None:
        """Store the transition, advance counters, log, and (unless `housekeeping` is False: the multi-seed
        runner does it for all seeds at once) evaluate / checkpoint when due."""
        cfg = self.cfg
        self.replay.add(self.obs, action, s.reward, s.obs, s.terminated)
        self.episode_actions.append(action)
        self.episode_return += s.reward
        self.step += 1
        if s.terminated or s.truncated:
            self.last_episode_return = self.episode_return
            self.episode += 1
            self.obs = None
        else:
            self.obs = s.obs
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            now_t = time.time()
            self._write_train_row(self.step - self._window[1], self.updates - self._window[2], now_t - self._window[0])
            self._window = (now_t, self.step, self.updates)
        if housekeeping:
            self.housekeeping(session_start)

    def due(self) -> tuple[bool, bool]:
        """(evaluation due, checkpoint due) after the step just finished."""
        cfg = self.cfg
        due_eval = self.step % cfg.eval_every == 0 or self.step == cfg.steps
        due_ckpt = bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps
        return due_eval, due_ckpt

    def needs_initial_eval(self) -> bool:
        return self.step == 0 and self.cfg.eval_at_start and not self.eval_log.read()

    def housekeeping(self, session_start: float) -> None:
        due_eval, due_ckpt = self.due()
        if due_eval:
            self.evaluate(session_start)
        if due_ckpt:
            self.checkpoint(session_start)

    def start(self, session_start: float, initial_eval: bool = True) -> None:
        """Before the first step of a session: the step-0 evaluation of a new run (unless the caller does it),
        and the throughput window."""
        self._checked_step = self.step
        if self.cfg.on_divergence == "rollback":
            self.check_finite()  # the state to roll back to
        if initial_eval and self.needs_initial_eval():
            self.evaluate(session_start)
        self._window = (time.time(), self.step, self.updates)

    def progress_postfix(self) -> dict[str, str]:
        last = None if self.last_eval is None else f"{self.last_eval['return_mean']:.1f}"
        return {"sps": f"{self._last_sps:.0f}", "ups": f"{self._last_ups:.0f}", "eval": last}

    def run(self, stop: _StopFlag, session_start: float) -> int | None:
        """Train until `steps` or a signal; returns the signal number if one stopped it."""
        cfg = self.cfg
        self.start(session_start)
        with progress_bar(cfg, self.step) as bar:
            while self.step < cfg.steps:
                if stop.signum is not None:
                    return stop.signum
                action = self.begin_step()
                if action is None:
                    action = self.policy_action()
                    for _ in range(cfg.updates_per_step):
                        self._accumulate(self.agent.update(self.replay.sample(cfg.batch_size), self.updates))
                        self.updates += 1
                self.finish_step(action, self.env.step(action), session_start)
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    bar.set_postfix(self.progress_postfix())
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.env.close()
        for env in self.eval_envs:
            env.close()
        if self.tb:
            self.tb.close()


def _run_logger(out: Path) -> logging.Logger:
    """A logger for one run: its own train.log, and the console through the 'flowrl' logger."""
    logger = logging.getLogger(f"flowrl.run.{out.resolve()}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


class RunSession:
    """One run directory in this process: opened new or resumed (or found finished), then closed."""

    def __init__(self, cfg: RunConfig, out: str | Path, force: bool = False, env_factory=None, eval_env_factory=None):
        from flowrl.envs import validate_task

        self.cfg, self.out, self.env_factory, self.eval_env_factory = cfg, Path(out), env_factory, eval_env_factory
        cfg.validate()
        validate_task(cfg.task)
        state = prepare_run_dir(self.out, cfg, force)
        self.lock = None
        if state != "done":
            self.lock = RunLock(self.out)
            try:  # again under the lock: another trainer may have finished (or begun) it meanwhile
                state = prepare_run_dir(self.out, cfg, force=False)
            except BaseException:
                self.lock.release()
                raise
            if state == "done":
                self.lock.release()
        self.finished_before = state == "done"
        if self.finished_before:
            log.warning("%s is already finished (DONE exists); not re-running. Use --force to retrain.", self.out)
            return
        self.log = _run_logger(self.out)
        try:
            self._open(state)
        except BaseException:
            self.release()
            raise

    def _open(self, state: str) -> None:
        if state == "resume":  # settings added since the run was written keep the behaviour it was trained with
            self.cfg = resume_config(yaml.safe_load((self.out / "config.yaml").read_text()), self.cfg)
        cfg, out = self.cfg, self.out
        self.manifest_path = out / "manifest.json"
        self.info = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else manifest(resolve_device(cfg.device))
        if state == "new":
            (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        self.runner = Runner(cfg, out, self.log, self.env_factory, self.eval_env_factory)
        resumed_from = None
        if state == "resume":
            ckpt, path = load_latest_checkpoint(out / "checkpoints", map_location="cpu", logger=self.log)
            if ckpt is not None:
                self.runner.restore(ckpt)
                resumed_from = self.runner.step
                self.log.info("resumed from %s at step %d", path.name, self.runner.step)
            else:
                self.runner.eval_log.truncate_after(-1)
                self.runner.train_log.truncate_after(-1)
                self.log.info("no usable checkpoint in %s: starting from step 0", out)
        self.session = {"start_time": now(), "resumed_from_step": resumed_from, "host": socket.gethostname(),
                        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                        "onednn_linear": onednn_linear_available()}  # what FlowRL's cpu_matmul=auto may use here
        self.info.setdefault("sessions", []).append(self.session)
        _write_json(self.manifest_path, self.info)
        self.session_start = time.time()

    def restart_clock(self) -> None:
        """Count this session's wall time from now (it waited while other runs of its process trained)."""
        self.session["start_time"] = now()
        self.session_start = time.time()

    def already_finished(self) -> RunResult:
        done = json.loads((self.out / "DONE").read_text() or "{}")
        return RunResult("already_finished", self.out, int(done.get("steps", self.cfg.steps)))

    def close(self, signum: int | None, checkpoint: bool = True) -> RunResult:
        """Checkpoint and record the interruption, or write the final agent and the DONE marker.
        checkpoint=False: the session trained nothing (stopped before its turn), so the run stays as it was."""
        runner, out = self.runner, self.out
        self.session.update(end_time=now(), end_step=runner.step)
        report = getattr(runner.agent, "execution_report", None)  # how the agent ran here (CUDA graphs, their check)
        if report is not None:
            self.session.setdefault("execution", report())  # a batched run's sessions already hold its agent's
        if signum is not None and runner.step < self.cfg.steps:
            if checkpoint:
                runner.checkpoint(self.session_start)
            self.session["stopped_by_signal"] = signum
            _write_json(self.manifest_path, self.info)
            runner.close()
            return RunResult("interrupted", out, runner.step, signum)
        runner.close()
        self.info["end_time"] = now()
        _write_json(self.manifest_path, self.info)
        # The run is complete: keep the final agent; the resume checkpoints (with the replay) are no longer needed.
        torch.save(runner.agent.state_dict(), out / "final_agent.pt")
        for p in checkpoint_paths(out / "checkpoints"):
            remove_checkpoint(p)
        final = runner.last_eval or {}
        _write_json(out / "DONE", {"steps": runner.step, "end_time": self.info["end_time"],
                                   "final_return": final.get("return_mean"),
                                   "wall_time": runner.wall_time + time.time() - self.session_start})
        return RunResult("finished", out, runner.step)

    def fail(self, exc: BaseException) -> None:
        """Record an error that ended this session (in train.log and the manifest); the run stays resumable."""
        self.log.error("%s", exc)
        if getattr(self, "session", None) is not None:
            self.session.update(end_time=now(), end_step=self.runner.step, error=f"{type(exc).__name__}: {exc}")
            try:
                _write_json(self.manifest_path, self.info)
            except OSError:  # e.g. the full disk that caused the error
                pass

    def release(self) -> None:
        """Close the environments (also after an error), the run's log handlers and its lock."""
        if getattr(self, "runner", None) is not None:
            self.runner.close()
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()
        if self.lock is not None:
            self.lock.release()


def train(cfg: RunConfig, out: str | Path, force: bool = False) -> RunResult:
    """Train one run into `out` (new, resumed, or skipped when already finished)."""
    run = RunSession(cfg, out, force)
    if run.finished_before:
        return run.already_finished()
    try:
        with _StopFlag() as stop:
            signum = run.runner.run(stop, run.session_start)
            signum = signum if signum is not None else stop.signum
        return run.close(signum)
    except (RunError, CheckpointError) as exc:
        run.fail(exc)
        raise
    finally:
        run.release()


__all__ = ["train", "RunSession", "RunResult", "RunError", "Runner", "derived_seed", "prepare_run_dir", "resolve_device"]
