"""FlowRL: a flow-based policy for online RL (Lv et al., 2025, arXiv 2506.12811).

The policy is a state-conditioned velocity field v(s, a_t, t). An action is made by integrating
da/dt = v from clipped Gaussian noise a_0 over `flow_steps` midpoint steps, then tanh-squashing and
rescaling to the action bounds. The actor maximises min-Q through the flow while a flow-matching term
pulls it toward replay actions that beat the current policy under a "behaviour-optimal" critic Q_b,
bounding the Wasserstein-2 distance to that behaviour-optimal policy:

    Q   : twin critic, target  r + gamma * min Q'(s', pi(s'))
    Q_b : twin "buffer" critic, target  r + gamma * V_b(s')
    V_b : expectile regression (quantile tau_e) of min Q_b'(s, a) over buffer actions a
    pi  : loss  -min Q(s, pi(s)) + w(s, a) * || v(s, a_t, t) - (a - a_0) ||^2
          w = clamp(lambda * exp(A - mean(A)), 1e-3, 1),  A = relu(min Q_b(s, a) - min Q(s, pi(s)))

Defaults follow the official code (github bytedance/FlowRL); where the paper differs the paper's
version is an option. docs/paper-vs-code.md lists every difference and the key that selects it.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.networks import TwinQ, activation, flowrl_value_trunk, polyak_update, xavier_init_


@dataclasses.dataclass
class FlowRLConfig:
    hidden_dim: int = 512  # all networks (code: hidden_size 512)
    flow_steps: int = 1  # midpoint steps from t=0 to t=1 (code: steps 1; paper ablates 1/5/10)
    lr: float = 3e-4  # Adam, all networks (code)
    gamma: float = 0.99
    tau: float = 0.95  # code: target <- (1 - tau) * target + tau * online, every target_update_interval updates
    target_update_interval: int = 2  # delayed policy + target updates (code)
    quantile: float = 0.9  # expectile of V_b (code; it suggests 0.8 for unseen HumanoidBench tasks)
    lam: float = 0.1  # lambda (code: `lamda`, the "lagrange_multiplier" argument)
    weight_min: float = 1e-3  # clamp of the flow-matching weights (code: CFM_MIN, CFM_MAX)
    weight_max: float = 1.0
    noise_clip: float = 1.0  # a_0 ~ clip(N(0, I), -noise_clip, noise_clip) (code: 1)
    constraint: bool = True  # False drops the flow-matching (W2) term: the paper's ablation
    value_activation: str = "gelu"  # critics and V_b (code: GELU; the paper's table says mish)
    flow_loss: Literal["batch_mean", "per_sample"] = "batch_mean"  # code: w_i * batch-mean MSE; paper: w_i * MSE_i
    lambda_placement: Literal["clamp", "multiplier"] = "clamp"  # code: lambda inside the clamp; paper: multiplies the term
    exploration_noise: float = 0.0  # code's epsilon: + clip(U[0,1) * 0.01 * eps, +-0.25), eps *= 0.8 every 1e5 acts
    eval_noise: Literal["sample", "zero"] = "sample"  # code evaluates from fresh noise; "zero" integrates from a_0 = 0
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast, on CUDA only ("auto": on when the device is CUDA)

    def __post_init__(self):
        checks = {
            "hidden_dim": self.hidden_dim > 0,
            "flow_steps": self.flow_steps > 0,
            "lr": self.lr > 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "target_update_interval": self.target_update_interval > 0,
            "quantile": 0 < self.quantile < 1,
            "lam": self.lam >= 0,
            "weight_min": 0 <= self.weight_min <= self.weight_max,
            "noise_clip": self.noise_clip > 0,
            "exploration_noise": self.exploration_noise >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid FlowRL config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        for key, allowed in [
            ("flow_loss", ("batch_mean", "per_sample")),
            ("lambda_placement", ("clamp", "multiplier")),
            ("eval_noise", ("sample", "zero")),
            ("amp", ("auto", "off", "bf16")),
        ]:
            if getattr(self, key) not in allowed:
                raise ValueError(f"FlowRL config {key}={getattr(self, key)!r}: choose one of {allowed}")
        activation(self.value_activation)  # raises on unknown names


class VelocityField(nn.Module):
    """v(s, a_t, t): Linear -> LayerNorm -> ELU -> Linear -> LayerNorm -> ELU -> Linear (official layout)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim + act_dim + 1, hidden),
            nn.LayerNorm(hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.ELU(),
            nn.Linear(hidden, act_dim),
        )

    def forward(self, obs: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, a_t, t], dim=-1))

    def integrate(self, obs: torch.Tensor, a0: torch.Tensor, steps: int) -> torch.Tensor:
        """Midpoint rule from t=0 to t=1 in `steps` equal steps (pre-tanh action space)."""
        a, dt = a0, 1.0 / steps
        for i in range(steps):
            t0 = torch.full_like(a[:, :1], i * dt)
            a_mid = a + 0.5 * dt * self(obs, a, t0)
            a = a + dt * self(obs, a_mid, t0 + 0.5 * dt)
        return a


class FlowRL(Agent):
    Config = FlowRLConfig
    replay_recent_fraction = 0.2  # official replay: 20% of each batch from the most recent 2048 transitions

    def __init__(self, spec: EnvSpec, config: FlowRLConfig, device: torch.device | str = "cpu"):
        super().__init__(spec, config, device)
        c, o, a = config, spec.obs_dim, spec.act_dim
        value_body = lambda d: flowrl_value_trunk(d, c.hidden_dim, c.value_activation)  # noqa: E731
        self.policy = VelocityField(o, a, c.hidden_dim)
        self.critic = TwinQ(o, a, value_body)
        self.critic_target = TwinQ(o, a, value_body)
        self.buffer_critic = TwinQ(o, a, value_body)
        self.buffer_critic_target = TwinQ(o, a, value_body)
        self.value = value_body(o)
        for net in (self.policy, self.critic, self.buffer_critic, self.value):
            xavier_init_(net)
        # As the official code: all four critics start from the same weights.
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.buffer_critic.load_state_dict(self.critic.state_dict())
        self.buffer_critic_target.load_state_dict(self.critic.state_dict())
        for net in self._networks().values():
            net.to(self.device)
        for target in (self.critic_target, self.buffer_critic_target):
            target.requires_grad_(False)

        self.policy_opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr)
        self.buffer_critic_opt = torch.optim.Adam(self.buffer_critic.parameters(), lr=c.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.lr)

        self.scale = (self.act_high - self.act_low) / 2.0
        self.bias = (self.act_high + self.act_low) / 2.0
        self.noise_level = c.exploration_noise
        self.act_calls = 0
        # The agent's own random stream (noise a_0, flow-matching times, exploration), seeded from torch's
        # global RNG at construction so a run is a function of its seed; saved in state_dict.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.eval_generator = torch.Generator(device=self.device)  # evaluation never touches the training stream
        use_amp = c.amp == "bf16" or (c.amp == "auto")
        self.amp = use_amp and self.device.type == "cuda"

    # ----------------------------------------------------------------------------- acting
    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _randn(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=generator or self.generator, device=self.device)

    def seed_evaluation(self, seed: int) -> None:
        self.eval_generator.manual_seed(seed)

    def sample(self, obs: torch.Tensor, zero_noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Integrate the flow from a_0 and squash into the action bounds (differentiable)."""
        shape = (obs.shape[0], self.spec.act_dim)
        if zero_noise:
            a0 = torch.zeros(shape, device=obs.device, dtype=obs.dtype)
        else:
            a0 = self._randn(shape, generator).clamp(-self.config.noise_clip, self.config.noise_clip)
        x = self.policy.integrate(obs, a0, self.config.flow_steps)
        return torch.tanh(x) * self.scale + self.bias

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        zero = deterministic and self.config.eval_noise == "zero"
        with self._autocast():
            action = self.sample(obs, zero_noise=zero, generator=self.eval_generator if deterministic else None).float()
        if not deterministic and self.config.exploration_noise > 0:
            self.act_calls += 1
            if self.act_calls % 100_000 == 0:
                self.noise_level *= 0.8
            uniform = torch.rand(action.shape, generator=self.generator, device=self.device)
            noise = (uniform * 0.01 * self.noise_level).clamp(-0.25, 0.25)
            action = action + noise
        return torch.maximum(torch.minimum(action, self.act_high), self.act_low)

    # ----------------------------------------------------------------------------- learning
    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def expectile_loss(self, diff: torch.Tensor) -> torch.Tensor:
        """mean(|quantile - 1(diff < 0)| * diff^2) with diff = target - prediction."""
        weight = torch.where(diff < 0, 1.0 - self.config.quantile, self.config.quantile)
        return (weight * diff.float() ** 2).mean()

    def flow_weights(self, q_buffer: torch.Tensor, q_pi: torch.Tensor) -> torch.Tensor:
        """Per-sample weights of the flow-matching term (no gradient)."""
        c = self.config
        adv = torch.relu(q_buffer - q_pi).detach()
        w = torch.exp(adv - adv.mean())
        if c.lambda_placement == "clamp":
            w = c.lam * w
        return w.clamp(c.weight_min, c.weight_max)

    def flow_matching_loss(self, obs, action, a0, t, weights) -> torch.Tensor:
        """Weighted conditional flow matching toward buffer actions along the straight path a_0 -> a."""
        c = self.config
        a_t = t * action + (1.0 - t) * a0
        err = (self.policy(obs, a_t, t) - (action - a0)).float() ** 2
        if c.flow_loss == "batch_mean":
            term = weights * err.mean()  # code: per-sample weights times the batch-mean MSE
        else:
            term = weights * err.mean(dim=-1, keepdim=True)
        if c.lambda_placement == "multiplier":
            term = c.lam * term
        return term

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        c = self.config
        obs, action, reward, next_obs, not_done = batch
        a0 = self._randn(action.shape).clamp(-c.noise_clip, c.noise_clip)  # drawn first, as the code does

        with self._autocast():
            # 1. Critic toward r + gamma * min Q'(s', pi(s')).
            with torch.no_grad():
                q1_next, q2_next = self.critic_target(next_obs, self.sample(next_obs))
                target = reward + not_done * c.gamma * torch.min(q1_next, q2_next)
            q1, q2 = self.critic(obs, action)
            critic_loss = F.mse_loss(q1.float(), target.float()) + F.mse_loss(q2.float(), target.float())
        self._step(self.critic_opt, critic_loss)

        with self._autocast():
            # 2. Buffer critic toward r + gamma * V_b(s').
            with torch.no_grad():
                target_b = reward + not_done * c.gamma * self.value(next_obs)
            qb1, qb2 = self.buffer_critic(obs, action)
            q_buffer = torch.min(qb1, qb2).detach()
            buffer_loss = F.mse_loss(qb1.float(), target_b.float()) + F.mse_loss(qb2.float(), target_b.float())
        self._step(self.buffer_critic_opt, buffer_loss)

        with self._autocast():
            # 3. V_b: expectile regression on the target buffer critic at buffer actions.
            with torch.no_grad():
                q_target_b = torch.min(*self.buffer_critic_target(obs, action))
            value_loss = self.expectile_loss(q_target_b - self.value(obs))
        self._step(self.value_opt, value_loss)

        metrics = {
            "critic_loss": critic_loss.detach(),
            "buffer_critic_loss": buffer_loss.detach(),
            "value_loss": value_loss.detach(),
            "q_mean": q1.detach().float().mean(),
            "q_buffer_mean": q_buffer.float().mean(),
        }
        # 4. Delayed policy update and target updates.
        if step % c.target_update_interval == 0:
            metrics.update(self._update_policy(obs, action, a0, q_buffer))
            polyak_update(self.critic_target, self.critic, c.tau)
            polyak_update(self.buffer_critic_target, self.buffer_critic, c.tau)
        return metrics

    def _update_policy(self, obs, action, a0, q_buffer) -> dict[str, torch.Tensor]:
        c = self.config
        self.critic.requires_grad_(False)  # gradients flow through Q to the action only: skip Q's weight gradients
        with self._autocast():
            q_pi = torch.min(*self.critic(obs, self.sample(obs))).float()
            loss = -q_pi
            if c.constraint:
                weights = self.flow_weights(q_buffer.float(), q_pi)
                t = torch.rand(action.shape[0], 1, generator=self.generator, device=self.device)
                loss = loss + self.flow_matching_loss(obs, action, a0, t, weights)
            policy_loss = loss.mean()
        self._step(self.policy_opt, policy_loss)
        self.critic.requires_grad_(True)
        out = {"policy_loss": policy_loss.detach(), "q_pi_mean": q_pi.detach().mean()}
        if c.constraint:
            out["flow_weight_mean"] = weights.mean()
        return out

    # ----------------------------------------------------------------------------- state
    def _networks(self) -> dict[str, nn.Module]:
        return {
            "policy": self.policy,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "buffer_critic": self.buffer_critic,
            "buffer_critic_target": self.buffer_critic_target,
            "value": self.value,
        }

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "policy_opt": self.policy_opt,
            "critic_opt": self.critic_opt,
            "buffer_critic_opt": self.buffer_critic_opt,
            "value_opt": self.value_opt,
        }

    def state_dict(self) -> dict:
        state = {k: v.state_dict() for k, v in {**self._networks(), **self._optimizers()}.items()}
        state["counters"] = {"noise_level": self.noise_level, "act_calls": self.act_calls}
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in {**self._networks(), **self._optimizers()}.items():
            v.load_state_dict(state[k])
        self.noise_level = state["counters"]["noise_level"]
        self.act_calls = state["counters"]["act_calls"]
        self.generator.set_state(state["generator"].cpu())
