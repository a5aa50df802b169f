"""QVPO: Q-weighted Variational Policy Optimization (Ding et al., NeurIPS 2024, arXiv 2405.16173), one file.

The policy is a DDPM diffusion model over actions in [-1, 1], conditioned on the state. It is trained
with the Q-weighted variational (denoising) loss on actions the policy itself proposes:

    Q      : twin critic, target  r + gamma * min Q'(s', a'),  a' = the best (by min Q') of `target_samples`
             actions drawn from the target diffusion policy
    pi     : for each state draw `train_samples` actions, keep the best one a* by min Q, weight it by the
             clipped advantage  w = max(Q(s, a*) - mean_i Q(s, a_i), 0)  and minimise
                 w * || eps_theta(sqrt(abar_t) a* + sqrt(1 - abar_t) eps, t, s) - eps ||^2
             plus the entropy term: the same loss on `entropy_samples` uniform actions per state, weighted
             w * entropy_alpha (entropy_alpha decays linearly from 0.02 to 0.002)
    acting : draw `behavior_samples` (training) or `eval_samples` (evaluation) actions, take the best by min Q
    targets: Polyak averaging of the critic and of the diffusion policy after every update

Defaults are the official code's, github wadx2019/qvpo (main.py run as its README says, with
`--weighted --aug`; agent/qvpo.py, agent/diffusion.py, agent/model.py, agent/helpers.py,
agent/q_transform.py `qadv`). Differences, all deliberate:
- The policy loss uses the states of the update's batch; the official code draws a second, independent
  replay batch for it.
- The entropy weight decays with this agent's update count over `entropy_decay_updates`; the official code
  decays it with the environment step over the run's total steps (1e6 by default), i.e. the same schedule
  shifted by the random start steps.
- The official weight initialiser means to draw truncated normals, but its truncation loop rebinds a local
  name and never reaches the parameter, so weights are plain N(0, (1 / (2 sqrt(fan_in)))^2). That is what
  this file does.
- The runner owns random start steps, replay and the batch size (official: 10000 start steps, batch 256).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.config import check_fields
from flowrl.networks import TwinCritic, activation, mlp, polyak_update


@dataclasses.dataclass
class QVPOConfig:
    hidden_dim: int = 256  # official model.py: Critic hidden_dim=256, Model hidden_size=256
    hidden_layers: int = 3  # official model.py: three hidden Mish layers in each Q head and in the noise model
    time_dim: int = 32  # official model.py: sinusoidal time embedding size
    diffusion_steps: int = 20  # official main.py --n_timesteps
    beta_schedule: Literal["cosine", "linear", "vp"] = "cosine"  # official main.py --beta_schedule
    noise_ratio: float = 1.0  # official main.py --noise_ratio (scale of the sampling noise)
    actor_lr: float = 1e-4  # official main.py --diffusion_lr
    critic_lr: float = 3e-4  # official main.py --critic_lr
    adam_eps: float = 1e-5  # official qvpo.py: Adam(eps=1e-5) for both
    grad_clip: float = 2.0  # official main.py --ac_grad_norm (actor and critic; 0 disables)
    gamma: float = 0.99  # official main.py --gamma
    tau: float = 0.005  # official main.py --tau (critic and policy targets, every update)
    train_samples: int = 64  # official main.py --train_sample
    behavior_samples: int = 4  # official main.py --behavior_sample
    target_samples: int = 4  # official main.py --target_sample
    eval_samples: int = 32  # official main.py --eval_sample
    entropy_alpha: float = 0.02  # official main.py --entropy_alpha (initial value)
    entropy_alpha_min: float = 0.002  # official main.py: floor of the linear decay
    entropy_decay_updates: int = 1_000_000  # official main.py: decays over --num_steps (1e6)
    entropy_samples: int = 10  # official qvpo.py: 10 uniform actions per state
    policy_freq: int = 1  # official main.py --policy_freq

    def __post_init__(self):
        checks = {
            "hidden_dim": self.hidden_dim > 0,
            "hidden_layers": self.hidden_layers > 0,
            "time_dim": self.time_dim >= 4 and self.time_dim % 2 == 0,
            "diffusion_steps": self.diffusion_steps > 0,
            "noise_ratio": self.noise_ratio >= 0,
            "actor_lr": self.actor_lr > 0,
            "critic_lr": self.critic_lr > 0,
            "adam_eps": self.adam_eps > 0,
            "grad_clip": self.grad_clip >= 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "train_samples": self.train_samples > 0,
            "behavior_samples": self.behavior_samples > 0,
            "target_samples": self.target_samples > 0,
            "eval_samples": self.eval_samples > 0,
            "entropy_alpha": self.entropy_alpha >= 0,
            "entropy_alpha_min": 0 <= self.entropy_alpha_min <= max(self.entropy_alpha, 0),
            "entropy_decay_updates": self.entropy_decay_updates > 0,
            "entropy_samples": self.entropy_samples >= 0,
            "policy_freq": self.policy_freq > 0,
        }
        check_fields(self, "QVPO config", checks)


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    """Noise schedules of the official helpers.py (cosine: Nichol & Dhariwal 2021; vp: Xiao et al. 2021)."""
    if name == "cosine":
        s = 0.008
        x = np.linspace(0, steps + 1, steps + 1)
        abar = np.cos(((x / (steps + 1)) + s) / (1 + s) * np.pi * 0.5) ** 2
        abar = abar / abar[0]
        betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    elif name == "linear":
        betas = np.linspace(1e-4, 2e-2, steps)
    else:
        t, b_max, b_min = np.arange(1, steps + 1), 10.0, 0.1
        betas = 1 - np.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * t - 1) / steps**2)
    return torch.tensor(betas, dtype=torch.float32)


def normal_init_(module: nn.Module) -> None:
    """The official init as it actually runs: weights N(0, (1 / (2 sqrt(fan_in)))^2), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0 / (2.0 * math.sqrt(m.in_features)))
            nn.init.zeros_(m.bias)


class NoiseModel(nn.Module):
    """eps_theta(x_t, t, s): a sinusoidal time embedding through a small MLP, concatenated with x_t and s."""

    def __init__(self, obs_dim: int, act_dim: int, c: QVPOConfig):
        super().__init__()
        self.time_dim = c.time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(c.time_dim, c.hidden_dim), activation("mish"), nn.Linear(c.hidden_dim, c.time_dim)
        )
        self.net = mlp(act_dim + c.time_dim + obs_dim, [c.hidden_dim] * c.hidden_layers, act_dim, act="mish")

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.time_dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, self.time_mlp(self.time_embedding(t)), obs], dim=-1))


class DiffusionPolicy(nn.Module):
    """A DDPM over actions in [-1, 1] that predicts the noise; x_0 predictions are clipped to [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, c: QVPOConfig):
        super().__init__()
        self.act_dim, self.steps, self.noise_ratio = act_dim, c.diffusion_steps, c.noise_ratio
        self.model = NoiseModel(obs_dim, act_dim, c)
        betas = beta_schedule(c.beta_schedule, c.diffusion_steps)
        abar = torch.cumprod(1.0 - betas, dim=0)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        buffers = {
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1.0 - abar).sqrt(),
            "sqrt_recip_abar": (1.0 / abar).sqrt(),
            "sqrt_recipm1_abar": (1.0 / abar - 1.0).sqrt(),
            "post_mean_x0": betas * abar_prev.sqrt() / (1.0 - abar),
            "post_mean_xt": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
            "post_std": (0.5 * post_var.clamp(min=1e-20).log()).exp(),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)  # derived from the config, not state

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """Ancestral sampling from x_T ~ N(0, I) down to x_0; no noise is added at the last step."""
        x = torch.randn(obs.shape[0], self.act_dim, device=obs.device)
        for i in reversed(range(self.steps)):
            t = torch.full((obs.shape[0],), i, device=obs.device, dtype=torch.long)
            eps = self.model(x, t, obs)
            x0 = (self.sqrt_recip_abar[i] * x - self.sqrt_recipm1_abar[i] * eps).clamp(-1.0, 1.0)
            x = self.post_mean_x0[i] * x0 + self.post_mean_xt[i] * x
            if i > 0:
                x = x + self.post_std[i] * self.noise_ratio * torch.randn_like(x)
        return x.clamp(-1.0, 1.0)

    def loss(self, actions: torch.Tensor, obs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted denoising loss: mean over samples and action dims of w * (eps_theta - eps)^2."""
        t = torch.randint(0, self.steps, (actions.shape[0],), device=actions.device)
        noise = torch.randn_like(actions)
        x_t = self.sqrt_abar[t, None] * actions + self.sqrt_one_minus_abar[t, None] * noise
        return (weights * (self.model(x_t, t, obs) - noise) ** 2).mean()


class QVPO(Agent):
    Config = QVPOConfig
    # Small settings for the conformance suite (flowrl.testing): tiny networks, few diffusion steps and samples.
    conformance_config = {"hidden_dim": 32, "diffusion_steps": 5, "train_samples": 8, "eval_samples": 8}

    def __init__(self, spec: EnvSpec, config: QVPOConfig, device: torch.device | str = "cpu"):
        super().__init__(spec, config, device)
        c, o, a = config, spec.obs_dim, spec.act_dim
        q_body = lambda d: mlp(d, [c.hidden_dim] * c.hidden_layers, 1, act="mish")  # noqa: E731
        self.actor = DiffusionPolicy(o, a, c)
        self.critic = TwinCritic(o, a, q_body)
        normal_init_(self.actor)
        normal_init_(self.critic)
        self.actor_target = DiffusionPolicy(o, a, c)
        self.critic_target = TwinCritic(o, a, q_body)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for net in (self.actor, self.critic, self.actor_target, self.critic_target):
            net.to(self.device)
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, eps=c.adam_eps, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, eps=c.adam_eps, fused=True)

    # ----------------------------------------------------------------------------- acting
    @staticmethod
    @torch.no_grad()
    def candidates(obs: torch.Tensor, n: int, policy: DiffusionPolicy, critic: TwinCritic):
        """n actions per state from `policy`, scored by min Q: (actions (n, B, A), q (n, B, 1))."""
        batch = obs.shape[0]
        repeated = obs.repeat(n, 1)  # sample-major: row k * B + b is state b
        actions = policy.sample(repeated)
        q = torch.min(*critic(repeated, actions))
        return actions.view(n, batch, -1), q.view(n, batch, 1)

    @staticmethod
    def best(actions: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The highest-scoring candidate per state: (actions (B, A), q (B, 1))."""
        idx = q.argmax(dim=0, keepdim=True)  # (1, B, 1)
        best_actions = actions.gather(0, idx.expand(1, *actions.shape[1:]))[0]
        return best_actions, q.gather(0, idx)[0]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        n = self.config.eval_samples if deterministic else self.config.behavior_samples
        unit, _ = self.best(*self.candidates(obs, n, self.actor, self.critic))
        return self.scale_action(unit).clamp(self.act_low, self.act_high)

    # ----------------------------------------------------------------------------- learning
    def entropy_alpha(self, step: int) -> float:
        c = self.config
        decayed = c.entropy_alpha * (1.0 - step / c.entropy_decay_updates)
        return min(c.entropy_alpha, max(c.entropy_alpha_min, decayed))

    def _step(self, opt: torch.optim.Optimizer, net: nn.Module, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), max_norm=self.config.grad_clip)
        opt.step()

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor | float]:
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        action = self.unscale_action(action)

        # 1. Critic toward r + gamma * min Q'(s', best of the target policy's samples).
        with torch.no_grad():
            _, q_next = self.best(*self.candidates(next_obs, c.target_samples, self.actor_target, self.critic_target))
            target = reward + not_done * c.gamma * q_next
        q1, q2 = self.critic(obs, action)
        critic_loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        self._step(self.critic_opt, self.critic, critic_loss)
        metrics: dict[str, torch.Tensor | float] = {"critic_loss": critic_loss.detach(), "q_mean": q1.detach().mean()}

        # 2. Policy: the Q-weighted variational loss on the best of its own samples, plus the entropy term.
        if step % c.policy_freq == 0:
            with torch.no_grad():
                actions, q = self.candidates(obs, c.train_samples, self.actor, self.critic)
                best_actions, q_best = self.best(actions, q)
                weights = (q_best - q.mean(dim=0)).clamp(min=0.0)  # official q_transform "qadv"
            alpha = self.entropy_alpha(step)
            states, targets, w = obs, best_actions, weights
            if alpha > 0 and c.entropy_samples > 0:
                k = c.entropy_samples
                uniform = torch.rand(k * obs.shape[0], self.spec.act_dim, device=self.device) * 2.0 - 1.0
                states = torch.cat([obs, obs.repeat(k, 1)])
                targets = torch.cat([best_actions, uniform])
                w = torch.cat([weights, weights.repeat(k, 1) * alpha])
            actor_loss = self.actor.loss(targets, states, w)
            self._step(self.actor_opt, self.actor, actor_loss)
            metrics.update(actor_loss=actor_loss.detach(), advantage_mean=weights.mean(), entropy_alpha=alpha)

        # 3. Targets, every update.
        polyak_update(self.critic_target, self.critic, c.tau)
        polyak_update(self.actor_target, self.actor, c.tau)
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
