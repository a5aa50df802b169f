"""Soft Actor-Critic (Haarnoja et al., 2018, arXiv 1801.01290 and 1812.05905), one file.

    Q      : twin critic, target  r + gamma * (min Q'(s', a') - alpha * log pi(a'|s')),  a' ~ pi(s')
    pi     : tanh-squashed Gaussian, loss  alpha * log pi(a|s) - min Q(s, a),  a ~ pi(s) (reparameterised)
    alpha  : automatic temperature, loss  -log_alpha * (log pi(a|s) + target_entropy),  target_entropy = -act_dim
    targets: Polyak averaging of the critic every `target_update_interval` updates

Defaults follow the widely used PyTorch reference github pranz24/pytorch-soft-actor-critic (sac.py,
model.py, main.py), with automatic entropy tuning switched on as in the SAC v2 paper (the repository
has it as the `--automatic_entropy_tuning` flag). Differences from that code, all deliberate:
- Actions are handled in [-1, 1] internally (critic inputs, log-probabilities, the entropy target) and
  rescaled to the environment's bounds on the way out. For the usual [-1, 1] action boxes this is
  identical; for other boxes it makes the entropy target independent of the action units.
- The temperature used in an update is the one from before that update (the reference code uses its
  fixed `--alpha` 0.2 in the very first update, then exp(log_alpha)).
- The tanh correction of the log-density is the exact, overflow-free 2 * (log 2 - x - softplus(-2x))
  instead of log(1 - tanh(x)^2 + 1e-6).
The runner owns random start steps, replay and the batch size (reference: 10000 start steps, batch 256).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.config import check_fields
from flowrl.networks import TwinCritic, mlp, polyak_update, xavier_init_


@dataclasses.dataclass
class SACConfig:
    hidden_dim: int = 256  # pranz24 main.py --hidden_size 256
    hidden_layers: int = 2  # pranz24 model.py: two hidden layers in the policy and each Q head
    lr: float = 3e-4  # pranz24 --lr 0.0003 (policy, critic and temperature)
    gamma: float = 0.99  # pranz24 --gamma
    tau: float = 0.005  # pranz24 --tau
    target_update_interval: int = 1  # pranz24 --target_update_interval
    auto_alpha: bool = True  # SAC v2 (arXiv 1812.05905); pranz24 --automatic_entropy_tuning
    # pranz24: log_alpha starts at 0 when tuning; with auto_alpha=False this is the fixed alpha (pranz24 --alpha 0.2)
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -act_dim (pranz24 sac.py, "as given in the paper")
    log_std_min: float = -20.0  # pranz24 model.py LOG_SIG_MIN
    log_std_max: float = 2.0  # pranz24 model.py LOG_SIG_MAX
    activation: str = "relu"  # pranz24 model.py

    def __post_init__(self):
        checks = {
            "hidden_dim": self.hidden_dim > 0,
            "hidden_layers": self.hidden_layers > 0,
            "lr": self.lr > 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "target_update_interval": self.target_update_interval > 0,
            "init_alpha": self.init_alpha > 0,
            "log_std_min": self.log_std_min < self.log_std_max,
        }
        check_fields(self, "SAC config", checks)


class GaussianPolicy(nn.Module):
    """MLP trunk with mean and log-std heads; samples are tanh-squashed into [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, c: SACConfig):
        super().__init__()
        self.net = mlp(obs_dim, [c.hidden_dim] * c.hidden_layers, 2 * act_dim, act=c.activation)
        self.log_std_min, self.log_std_max = c.log_std_min, c.log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised squashed sample in [-1, 1] and its log-density (B, 1)."""
        mean, log_std = self(obs)
        std = log_std.exp()
        noise = torch.randn_like(mean)
        pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        gaussian_log_prob = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # Change of variables through tanh: log(1 - tanh(x)^2) = 2 * (log 2 - x - softplus(-2x)), stable for large |x|.
        log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
        return action, (gaussian_log_prob - log_det).sum(dim=-1, keepdim=True)


class SAC(Agent):
    Config = SACConfig

    def __init__(self, spec: EnvSpec, config: SACConfig, device: torch.device | str = "cpu"):
        super().__init__(spec, config, device)
        c, o, a = config, spec.obs_dim, spec.act_dim
        q_body = lambda d: mlp(d, [c.hidden_dim] * c.hidden_layers, 1, act=c.activation)  # noqa: E731
        self.policy = GaussianPolicy(o, a, c)
        self.critic = TwinCritic(o, a, q_body)
        xavier_init_(self.policy)  # pranz24 model.py weights_init_: xavier_uniform (gain 1), zero bias
        xavier_init_(self.critic)
        self.critic_target = TwinCritic(o, a, q_body)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for net in (self.policy, self.critic, self.critic_target):
            net.to(self.device)
        self.critic_target.requires_grad_(False)

        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_alpha), device=self.device))
        self.target_entropy = float(-a if c.target_entropy is None else c.target_entropy)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr, fused=True)

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if deterministic:
            unit = torch.tanh(self.policy(obs)[0])  # the mean action, as the reference evaluates
        else:
            unit = self.policy.sample(obs)[0]
        return self.scale_action(unit).clamp(self.act_low, self.act_high)

    # ----------------------------------------------------------------------------- learning
    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        action = self.unscale_action(action)
        alpha = self.log_alpha.detach().exp()

        # 1. Critic toward the soft Bellman target.
        with torch.no_grad():
            next_action, next_log_prob = self.policy.sample(next_obs)
            q_next = torch.min(*self.critic_target(next_obs, next_action)) - alpha * next_log_prob
            target = reward + not_done * c.gamma * q_next
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # 2. Policy: maximise min Q + entropy (gradients reach Q's input only).
        self.critic.requires_grad_(False)
        new_action, log_prob = self.policy.sample(obs)
        q_pi = torch.min(*self.critic(obs, new_action))
        policy_loss = (alpha * log_prob - q_pi).mean()
        self.policy_opt.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.policy_opt.step()
        self.critic.requires_grad_(True)

        # 3. Temperature toward the entropy target.
        metrics = {
            "critic_loss": critic_loss.detach(),
            "policy_loss": policy_loss.detach(),
            "q_mean": q1.detach().mean(),
            "entropy": -log_prob.detach().mean(),
            "alpha": alpha,
        }
        if c.auto_alpha:
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics["alpha_loss"] = alpha_loss.detach()

        if step % c.target_update_interval == 0:
            polyak_update(self.critic_target, self.critic, c.tau)
        return metrics

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "policy_opt": self.policy_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.policy_opt.load_state_dict(state["policy_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
