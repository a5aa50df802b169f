"""SAC and TD3 without this project's speed settings: the contenders `bench_speed.py` times them against.

The same networks, initialisation, losses and random draws as baselines/sac.py and baselines/td3.py (each class
here subclasses the project's agent and replaces only `update` and the optimisers), written the plain way
PyTorch RL code usually is:
- Adam's single-tensor loop (`foreach=False`) instead of fused (SAC) or multi-tensor (TD3) Adam;
- the actor's loss backpropagates into the critic's weights too (their gradients are computed, then thrown away
  by the critic's next zero_grad), instead of switching the critic's weight gradients off for that step;
- Polyak averaging one parameter at a time, instead of one multi-tensor lerp;
- metrics turned into Python numbers every update (`.item()`: on a GPU a host-device synchronisation per metric),
  instead of tensors that the runner reads only when it logs.
So a ratio ours/plain is what those settings buy on the device at hand. For timing only: `update` returns floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from baselines.sac import SAC
from baselines.td3 import TD3


def _plain_adam(params, lr):
    return torch.optim.Adam(params, lr=lr, foreach=False)


@torch.no_grad()
def _plain_polyak(target, online, tau):
    for t, p in zip(target.parameters(), online.parameters()):
        t.copy_(t * (1.0 - tau) + p * tau)


class PlainSAC(SAC):
    def __init__(self, spec, config, device="cpu"):
        super().__init__(spec, config, device)
        c = self.config
        self.policy_opt = _plain_adam(self.policy.parameters(), c.lr)
        self.critic_opt = _plain_adam(self.critic.parameters(), c.lr)
        self.alpha_opt = _plain_adam([self.log_alpha], c.lr)

    def update(self, batch, step):
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        action = self.unscale_action(action)
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = self.policy.sample(next_obs)
            q_next = torch.min(*self.critic_target(next_obs, next_action)) - alpha * next_log_prob
            target = reward + not_done * c.gamma * q_next
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        new_action, log_prob = self.policy.sample(obs)
        q_pi = torch.min(*self.critic(obs, new_action))  # the critic's weight gradients are computed too
        policy_loss = (alpha * log_prob - q_pi).mean()
        self.policy_opt.zero_grad()
        policy_loss.backward()
        self.policy_opt.step()

        metrics = {
            "critic_loss": critic_loss.item(),
            "policy_loss": policy_loss.item(),
            "q_mean": q1.mean().item(),
            "entropy": -log_prob.mean().item(),
            "alpha": alpha.item(),
        }
        if c.auto_alpha:
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics["alpha_loss"] = alpha_loss.item()
        if step % c.target_update_interval == 0:
            _plain_polyak(self.critic_target, self.critic, c.tau)
        return metrics


class PlainTD3(TD3):
    def __init__(self, spec, config, device="cpu"):
        super().__init__(spec, config, device)
        self.actor_opt = _plain_adam(self.actor.parameters(), self.config.lr)
        self.critic_opt = _plain_adam(self.critic.parameters(), self.config.lr)

    def update(self, batch, step):
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        action = self.unscale_action(action)
        with torch.no_grad():
            noise = (torch.randn_like(action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
            target = reward + not_done * c.gamma * torch.min(*self.critic_target(next_obs, next_action))
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.item(), "q_mean": q1.mean().item()}
        if (step + 1) % c.policy_delay == 0:
            actor_loss = -self.critic.q1(torch.cat([obs, self.actor(obs)], dim=-1)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            _plain_polyak(self.critic_target, self.critic, c.tau)
            _plain_polyak(self.actor_target, self.actor, c.tau)
            metrics["actor_loss"] = actor_loss.item()
        return metrics


PLAIN = {"sac": PlainSAC, "td3": PlainTD3}
