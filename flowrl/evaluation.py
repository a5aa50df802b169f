"""Evaluation, one way for every run: each member of a batch (a single run is a batch of one) plays its
`eval_episodes` episodes with the evaluation policy, all members in lockstep with one batched policy call per step.

Member i's episode e starts from the seed derived from (seed_i, e), and its policy's randomness is seeded from
(seed_i, step) and isolated from the training streams, so a member's evaluation is exactly its single run's
(up to floating-point reduction order inside a batched policy call).
"""

from __future__ import annotations

import numpy as np
import torch

from flowrl.agents.base import BatchedAgent
from flowrl.members import EVAL_EPISODE, EVAL_POLICY, derived_seed
from flowrl.subproc_env import available_cpus, step_all, subproc_envs


def evaluation_episodes(
    envs: list[list], seeds: list[int], episodes: int, act
) -> list[tuple[list[float], list[float]]]:
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
        obs = [
            [
                env.reset(derived_seed(seed, EVAL_EPISODE, first + j))
                if j < len(wave)
                else np.zeros(env.spec.obs_dim, np.float32)
                for j, env in enumerate(member)
            ]
            for member, seed in zip(envs, seeds)
        ]
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


def evaluation_policy(agent: BatchedAgent, device: torch.device):
    """`act` for evaluation_episodes: the agent's evaluation policy on every member's environments at once, only
    the active ones acting for real (`BatchedAgent.act_members(members=...)`)."""

    def act(obs: list[list[np.ndarray]], active: list[list[bool]]) -> list[np.ndarray]:
        batch = torch.as_tensor(np.stack([np.stack(o) for o in obs]), dtype=torch.float32, device=device)
        return list(agent.act_members(batch, deterministic=True, members=active).cpu().numpy())

    return act


def evaluate(
    agent: BatchedAgent, envs: list[list], seeds: list[int], step: int, episodes: int, device: torch.device
) -> list[tuple[list[float], list[float]]]:
    """The evaluation at training step `step` of every member (member i: seed seeds[i], environments envs[i]):
    (returns, successes) per member. Training's random streams are left as they were."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived_seed(seeds[0], EVAL_POLICY, step))
        agent.seed_evaluation_members([derived_seed(seed, EVAL_POLICY, step) for seed in seeds])
        return evaluation_episodes(envs, seeds, episodes, evaluation_policy(agent, device))
