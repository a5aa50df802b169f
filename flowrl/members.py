"""One run of a batch of runs trained in lockstep (a single run is a batch of one): its environment and the episode
in progress, its replay, its random streams, counters and logs, and its checkpoint apart from the agent.

A run is a function of its seed: `seed_process` seeds this process's global RNGs with it before the run's
environments and agent are built, and every other stream of the run (episode resets, evaluation, random actions,
replay sampling) has its own seed `derived_seed(seed, <purpose>, ...)`, so no two streams ever collide and a run
trained in a batch draws exactly what it draws alone.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowrl.config import RunConfig, config_to_dict
from flowrl.logger import CSVLog, TensorBoard
from flowrl.replay import ReplayBuffer
from flowrl.session import Clock, RunError

CHECKPOINT_FORMAT = 1
# Purposes for derived_seed, so streams never collide.
TRAIN_EPISODE, EVAL_EPISODE, EVAL_POLICY, RANDOM_ACTIONS, REPLAY = range(5)


def derived_seed(*keys: int) -> int:
    """An independent 31-bit seed for each purpose (episode resets, evaluation, random actions)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def seed_process(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (what agents drawing from torch's global RNG use)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Member:
    """Run `cfg` (writing into `out`) as one member of a batch. The agent is not here: the batch's agent holds
    every member's networks (`BatchedAgent`, flowrl/agents/base.py), and `state_dict(agent_state)` adds this
    member's to its checkpoint. Builds in the order a run's seed expects: seeding, training environment,
    evaluation environments; the caller then builds the agent (its initial weights drawn from the seeded RNGs)."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path,
        logger: logging.Logger,
        clock: Clock,
        device: torch.device,
        env_factory,
        eval_env_factory,
    ):
        self.cfg, self.out, self.log, self.clock, self.device = cfg, out, logger, clock, device
        seed_process(cfg.seed)
        self.env = env_factory(cfg.task)
        self.eval_envs: list = []
        self.tb = None
        try:  # worker processes must not outlive a failed start
            self.eval_envs = eval_env_factory(cfg.task, min(cfg.eval_envs, cfg.eval_episodes))
            self.spec = self.env.spec
            self.replay = ReplayBuffer(
                self.spec.obs_dim,
                self.spec.act_dim,
                min(cfg.replay_size, cfg.steps),
                device,
                recent_fraction=cfg.replay_recent_fraction,
                recent_window=cfg.replay_recent_window,
                seed=derived_seed(cfg.seed, REPLAY),
                split=cfg.replay_split,
            )
            self.tb = TensorBoard(out / "tb") if cfg.tensorboard else None
        except BaseException:
            self.close()
            raise
        self.random_actions = np.random.default_rng(derived_seed(cfg.seed, RANDOM_ACTIONS))
        # Counters and the episode in progress (all saved in checkpoints).
        self.step = self.updates = self.episode = self.rollbacks = 0
        self.episode_return = 0.0
        self.episode_actions: list[np.ndarray] = []
        self.last_episode_return: float | None = None
        self.obs: np.ndarray | None = None
        self.last_eval: dict[str, Any] | None = None
        self.eval_log = CSVLog(
            out / "eval.csv", ["step", "return_mean", "return_std", "success_mean", "episodes", "wall_time"]
        )
        self.train_log = CSVLog(out / "train.csv", ["step", "updates"])
        self.reset_metrics()

    # -- acting in the environment ---------------------------------------------------------------
    def reset_episode(self) -> None:
        self.obs = self.env.reset(derived_seed(self.cfg.seed, TRAIN_EPISODE, self.episode))
        self.episode_return, self.episode_actions = 0.0, []

    def begin_step(self) -> np.ndarray | None:
        """Start an episode if needed; a uniform random action during warm-up, else None (the policy acts)."""
        if self.obs is None:
            self.reset_episode()
        if self.step < self.cfg.start_steps:
            return self.random_actions.uniform(self.spec.act_low, self.spec.act_high).astype(np.float32)
        return None

    def finish_step(self, action: np.ndarray, s) -> None:
        """Store the transition `action` led to (the environment's Step `s`) and advance the counters."""
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

    # -- logs ------------------------------------------------------------------------------------
    def record_update(self, metrics: dict) -> None:
        """Count one update and add its metrics to the window's sums (tensors stay on the device until logged)."""
        for k, v in metrics.items():
            v = v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self.metric_sums[k] = self.metric_sums[k] + v if k in self.metric_sums else v.clone()
            self.metric_counts[k] = self.metric_counts.get(k, 0) + 1
        self.updates += 1

    def reset_metrics(self) -> None:
        self.metric_sums: dict[str, torch.Tensor] = {}
        self.metric_counts: dict[str, int] = {}

    def metric_means(self) -> dict[str, float]:
        keys = list(self.metric_sums)
        values = torch.stack([self.metric_sums[k].float().cpu() for k in keys]).tolist() if keys else []
        return {k: v / self.metric_counts[k] for k, v in zip(keys, values)}

    def write_train_row(self, means: dict[str, float], steps: int, updates: int, seconds: float) -> dict[str, Any]:
        """A train.csv row: the window's mean metrics and the throughput of its `steps` and `updates`."""
        row: dict[str, Any] = {"step": self.step, "updates": self.updates, **means}
        row["env_steps_per_s"] = steps / seconds if seconds > 0 else None
        row["updates_per_s"] = updates / seconds if seconds > 0 else None
        row["episode_return"] = self.last_episode_return
        if self.cfg.on_divergence == "rollback":
            row["rollbacks"] = self.rollbacks
        self.train_log.write(row)
        if self.tb:
            self.tb.write("train", row, self.step)
        self.reset_metrics()
        return row

    def record_eval(self, returns: list[float], successes: list[float]) -> None:
        row = {
            "step": self.step,
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "success_mean": float(np.mean(successes)) if successes else None,
            "episodes": len(returns),
            "wall_time": round(self.clock.seconds(), 3),
        }
        self.eval_log.write(row)
        if self.tb:
            self.tb.write("eval", row, self.step)
        self.last_eval = row
        self.log.info("eval step=%d return=%.2f+-%.2f", self.step, row["return_mean"], row["return_std"])

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self, agent_state: dict) -> dict:
        """The run's checkpoint, with `agent_state` (this member's agent) as its agent."""
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "random_actions": self.random_actions.bit_generator.state,
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "updates": self.updates,
            "episode": self.episode,
            "episode_return": self.episode_return,
            "episode_actions": np.asarray(self.episode_actions, dtype=np.float32).reshape(-1, self.spec.act_dim),
            "obs": self.obs,
            "last_episode_return": self.last_episode_return,
            "last_eval": self.last_eval,
            "metric_window": ({k: v.cpu() for k, v in self.metric_sums.items()}, dict(self.metric_counts)),
            "wall_time": self.clock.seconds(),
            "agent": agent_state,
            "replay": self.replay.state_dict(),
            "rng": rng,
            "config": config_to_dict(self.cfg),
            "rollbacks": self.rollbacks,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """Resume from checkpoint `state` (everything but its agent), or, with None, from step 0: log rows written
        after the state's step are dropped (the work since was lost)."""
        if state is None:
            self.eval_log.truncate_after(-1)
            self.train_log.truncate_after(-1)
            return
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"checkpoint format {state.get('format')} is not supported (expected {CHECKPOINT_FORMAT})")
        self.replay.load_state_dict(state["replay"])
        self.step, self.updates, self.episode = state["step"], state["updates"], state["episode"]
        self.last_episode_return, self.last_eval = state["last_episode_return"], state["last_eval"]
        self.clock.before = state["wall_time"]
        self.rollbacks = state.get("rollbacks", 0)  # checkpoints written before the divergence guard have none
        sums, self.metric_counts = state["metric_window"]
        self.metric_sums = {k: v.to(self.device) for k, v in sums.items()}
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.random_actions.bit_generator.state = rng["random_actions"]
        # Rebuild the episode in progress: reset with its seed and replay its recorded actions.
        if state["obs"] is not None:
            self.reset_episode()
            for action in state["episode_actions"]:
                self.obs = self.env.step(action).obs
                self.episode_actions.append(action)
            self.episode_return = state["episode_return"]
            if not np.allclose(self.obs, state["obs"], atol=1e-5):
                self.log.warning(
                    "replaying the interrupted episode did not reproduce its last observation; "
                    "the environment is not deterministic, so the resumed run may differ slightly"
                )
        dropped = self.eval_log.truncate_after(self.step) + self.train_log.truncate_after(self.step)
        if dropped:
            self.log.info("dropped %d log rows written after the checkpoint at step %d", dropped, self.step)

    def close(self) -> None:
        """Close the environments (their worker processes too) and TensorBoard; safe to call twice."""
        for env in [self.env, *self.eval_envs] if self.env is not None else []:
            env.close()
        self.env, self.eval_envs = None, []
        if self.tb:
            self.tb.close()
            self.tb = None
