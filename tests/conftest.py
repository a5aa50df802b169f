"""What several test files share: a small action box, batches on it, a constant twin critic, tiny run arguments.

Test modules import them by name (`from conftest import SPEC, make_batch`): plain values rather than fixtures,
because the modules' own helpers (e.g. `make_agent`) and parametrizations build on them at import.
Markers (pyproject.toml): `slow`, `slurm`, `faults`, `signals` (the test signals a process) and `subprocess`
(it starts other processes: snakemake, flowrl-train, shell scripts), e.g. `pytest -m "not subprocess"`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flowrl.agents.base import Batch, EnvSpec

# 3-d observations; a 2-d action box that is neither symmetric nor unit-sized, so bound handling shows.
SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=np.array([-2.0, 0.0]), act_high=np.array([1.0, 3.0]))

# flowrl-train on a cheap task with every budget tiny: a run of a few hundred steps takes seconds on one core.
# Add --seed, --steps and --out (and key=value settings after them).
TINY_RUN = (
    "--algo flowrl --task dmc:cartpole-balance --no-progress start_steps=150 batch_size=32 "
    "eval_every=200 eval_episodes=1 log_every=50 agent.hidden_dim=16 torch_threads=1"
).split()


def make_batch(n: int = 8, seed: int = 1, reward: float | None = None, not_done: float = 1.0) -> Batch:
    """A batch of `n` transitions on SPEC from generator seed `seed`: standard-normal observations, actions uniform
    in SPEC's box, standard-normal rewards (or all `reward`), `not_done` for every transition."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, SPEC.obs_dim, generator=g)
    low, high = torch.as_tensor(SPEC.act_low, dtype=torch.float32), torch.as_tensor(SPEC.act_high, dtype=torch.float32)
    action = torch.rand(n, SPEC.act_dim, generator=g) * (high - low) + low
    r = torch.randn(n, 1, generator=g) if reward is None else torch.full((n, 1), float(reward))
    return Batch(obs, action, r, torch.randn(n, SPEC.obs_dim, generator=g), torch.full((n, 1), float(not_done)))


class ConstQ(nn.Module):
    """A twin critic whose heads both output one learnable constant, still a function of the action (so a policy
    loss through it builds a graph) with zero gradient with respect to it."""

    def __init__(self, value: float):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(value)))

    def forward(self, obs, action):
        q = self.p + 0.0 * action.sum(-1, keepdim=True)
        return q, q

    def q1(self, x):
        """The first head on concatenated (observation, action) inputs, as TD3's actor loss calls it."""
        return self.p + 0.0 * x.sum(-1, keepdim=True)
