"""MyAgent: a minimal DDPG-style agent, the worked example of docs/adding-a-baseline.md.

A deterministic tanh actor trained to maximise Q, one critic trained toward r + gamma * Q'(s', mu'(s')),
Gaussian exploration noise, Polyak-averaged targets.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.networks import mlp, polyak_update


@dataclasses.dataclass
class MyAgentConfig:
    hidden_dim: int = 256  # cite where each default comes from, e.g. "DDPG paper, Sec. 7"
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    exploration_noise: float = 0.1  # std, in units of half the action range

    def __post_init__(self):
        if self.hidden_dim <= 0 or self.lr <= 0 or not 0 < self.tau <= 1:
            raise ValueError(f"invalid MyAgent config: {self}")


class MyAgent(Agent):
    Config = MyAgentConfig

    def __init__(self, spec: EnvSpec, config: MyAgentConfig, device: torch.device | str = "cpu"):
        super().__init__(spec, config, device)
        o, a, h = spec.obs_dim, spec.act_dim, [config.hidden_dim] * 2
        self.actor = torch.nn.Sequential(mlp(o, h, a), torch.nn.Tanh()).to(self.device)
        self.critic = mlp(o + a, h, 1).to(self.device)
        self.actor_target = torch.nn.Sequential(mlp(o, h, a), torch.nn.Tanh()).to(self.device)
        self.critic_target = mlp(o + a, h, 1).to(self.device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        unit = self.actor(obs)  # in [-1, 1]
        if not deterministic:  # randomness from torch's global RNG, which the runner seeds and saves
            unit = (unit + self.config.exploration_noise * torch.randn_like(unit)).clamp(-1, 1)
        return self.scale_action(unit)  # to [act_low, act_high]

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        action = self.unscale_action(batch.action)  # replay holds environment actions
        with torch.no_grad():
            next_q = self.critic_target(torch.cat([batch.next_obs, self.actor_target(batch.next_obs)], -1))
            target = batch.reward + batch.not_done * c.gamma * next_q
        critic_loss = F.mse_loss(self.critic(torch.cat([batch.obs, action], -1)), target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        actor_loss = -self.critic(torch.cat([batch.obs, self.actor(batch.obs)], -1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        polyak_update(self.critic_target, self.critic, c.tau)
        polyak_update(self.actor_target, self.actor, c.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach()}

    def state_dict(self) -> dict:
        names = ["actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"]
        return {n: getattr(self, n).state_dict() for n in names}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)
