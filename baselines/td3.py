"""Twin Delayed DDPG (Fujimoto et al., 2018, arXiv 1802.09477), one file.

    Q      : twin critic, target  r + gamma * min Q'(s', clip(mu'(s') + clip(N(0, sigma), -c, c), -1, 1))
    mu     : deterministic tanh policy, loss  -Q1(s, mu(s)),  updated every `policy_delay` critic updates
    targets: Polyak averaging of actor and critic, on the same delayed schedule as the actor
    acting : mu(s) + N(0, exploration_noise), clipped to the action bounds

Defaults follow the authors' code, github sfujim/TD3 (TD3.py, main.py). Differences, all deliberate:
- Actions are handled in [-1, 1] internally and rescaled to the environment's bounds, so the noise scales
  (0.2, 0.5, 0.1) are fractions of each dimension's half-range; the reference multiplies them by
  max_action, which is the same for symmetric boxes.
- The runner owns random start steps, replay and the batch size (reference: 25000 start steps, batch 256).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.config import check_fields
from flowrl.networks import TwinCritic, mlp, polyak_update


@dataclasses.dataclass
class TD3Config:
    hidden_dim: int = 256  # sfujim TD3.py: 256-256 actor and critics
    hidden_layers: int = 2  # sfujim TD3.py
    lr: float = 3e-4  # sfujim TD3.py: Adam lr 3e-4 for actor and critic
    gamma: float = 0.99  # sfujim main.py --discount
    tau: float = 0.005  # sfujim main.py --tau
    policy_noise: float = 0.2  # sfujim main.py --policy_noise (target policy smoothing)
    noise_clip: float = 0.5  # sfujim main.py --noise_clip
    policy_delay: int = 2  # sfujim main.py --policy_freq
    exploration_noise: float = 0.1  # sfujim main.py --expl_noise (Gaussian std)
    activation: str = "relu"  # sfujim TD3.py

    def __post_init__(self):
        checks = {
            "hidden_dim": self.hidden_dim > 0,
            "hidden_layers": self.hidden_layers > 0,
            "lr": self.lr > 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "policy_noise": self.policy_noise >= 0,
            "noise_clip": self.noise_clip >= 0,
            "policy_delay": self.policy_delay > 0,
            "exploration_noise": self.exploration_noise >= 0,
        }
        check_fields(self, "TD3 config", checks)


class TD3(Agent):
    Config = TD3Config

    def __init__(self, spec: EnvSpec, config: TD3Config, device: torch.device | str = "cpu"):
        super().__init__(spec, config, device)
        c, o, a = config, spec.obs_dim, spec.act_dim
        hidden = [c.hidden_dim] * c.hidden_layers
        # PyTorch's default Linear initialisation, as the reference.
        self.actor = nn.Sequential(mlp(o, hidden, a, act=c.activation), nn.Tanh())
        self.critic = TwinCritic(o, a, lambda d: mlp(d, hidden, 1, act=c.activation))
        self.actor_target = nn.Sequential(mlp(o, hidden, a, act=c.activation), nn.Tanh())
        self.critic_target = TwinCritic(o, a, lambda d: mlp(d, hidden, 1, act=c.activation))
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for net in (self.actor, self.critic, self.actor_target, self.critic_target):
            net.to(self.device)
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr)

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        unit = self.actor(obs)
        if not deterministic and self.config.exploration_noise > 0:
            unit = (unit + self.config.exploration_noise * torch.randn_like(unit)).clamp(-1.0, 1.0)
        return self.scale_action(unit).clamp(self.act_low, self.act_high)

    # ----------------------------------------------------------------------------- learning
    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        action = self.unscale_action(action)

        # 1. Critic toward r + gamma * min Q'(s', smoothed mu'(s')).
        with torch.no_grad():
            noise = (torch.randn_like(action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
            target = reward + not_done * c.gamma * torch.min(*self.critic_target(next_obs, next_action))
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q1.detach().mean()}

        # 2. Delayed actor and target updates. The reference counts updates from 1 (`total_it` is
        #    incremented first), so its actor moves on updates 2, 4, ...: step + 1 here.
        if (step + 1) % c.policy_delay == 0:
            self.critic.requires_grad_(False)
            actor_loss = -self.critic.q1(torch.cat([obs, self.actor(obs)], dim=-1)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            polyak_update(self.critic_target, self.critic, c.tau)
            polyak_update(self.actor_target, self.actor, c.tau)
            metrics["actor_loss"] = actor_loss.detach()
        return metrics

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
