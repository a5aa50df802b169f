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
Below: hyperparameters, networks, sampling, losses, one update, state. How the numbers are computed (bf16, CUDA
graphs, the CPU matmul kernel) is no hyperparameter but a `flowrl.execution.Execution`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from flowrl.agents.base import Batch, EnvSpec
from flowrl.agents.ensemble_agent import EnsembleAgent
from flowrl.config import check_fields
from flowrl.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleSequential, EnsembleTwinCritic, member_draws
from flowrl.networks import activation, polyak_update


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
    lambda_placement: Literal["clamp", "multiplier"] = "clamp"  # code: lambda inside the clamp; paper: times the term
    exploration_noise: float = 0.0  # code's epsilon: + clip(U[0,1) * 0.01 * eps, +-0.25), eps *= 0.8 every 1e5 acts
    eval_noise: Literal["sample", "zero"] = "sample"  # code evaluates from fresh noise; "zero" integrates from a_0 = 0

    def __post_init__(self):
        ok = {
            "hidden_dim": self.hidden_dim > 0,
            "flow_steps": self.flow_steps > 0,
            "lr": self.lr > 0,
            "gamma": 0 <= self.gamma <= 1,
            "tau": 0 < self.tau <= 1,
            "quantile": 0 < self.quantile < 1,
            "target_update_interval": self.target_update_interval > 0,
            "lam": self.lam >= 0,
            "weight_min": 0 <= self.weight_min <= self.weight_max,
            "noise_clip": self.noise_clip > 0,
            "exploration_noise": self.exploration_noise >= 0,
        }
        check_fields(self, "FlowRL config", ok)
        activation(self.value_activation)  # raises on unknown names


# ------------------------------------------------------------------------------------------------- networks
# Every network holds `n` members (seeds) and maps (n, B, ...) to (n, B, ...): flowrl/ensemble.py.
def value_trunk(n: int, d_in: int, hidden: int, act: str) -> EnsembleSequential:
    """The official FlowRL critic/value body for `n` members: Linear, then
    LN -> Linear -> LN -> act -> Linear -> LN -> act -> Linear -> LN, then a Linear head to 1."""
    h = hidden
    # one row per block of the official layout
    # fmt: off
    return EnsembleSequential(
        EnsembleLinear(n, d_in, h), EnsembleLayerNorm(n, h),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h), activation(act),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h), activation(act),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h),
        EnsembleLinear(n, h, 1),
    )
    # fmt: on


def twin_critic(n: int, obs_dim: int, act_dim: int, hidden: int, act: str) -> EnsembleTwinCritic:
    """(Q_1, Q_2)(s, a) for `n` members, each head a `value_trunk`."""
    return EnsembleTwinCritic(n, obs_dim, act_dim, lambda members, d_in: value_trunk(members, d_in, hidden, act))


class VelocityField(nn.Module):
    """v(s, a_t, t): Linear -> LayerNorm -> ELU -> Linear -> LayerNorm -> ELU -> Linear (official layout)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        # fmt: off
        self.net = EnsembleSequential(
            EnsembleLinear(n, obs_dim + act_dim + 1, hidden), EnsembleLayerNorm(n, hidden), nn.ELU(),
            EnsembleLinear(n, hidden, hidden), EnsembleLayerNorm(n, hidden), nn.ELU(),
            EnsembleLinear(n, hidden, act_dim),
        )
        # fmt: on

    def forward(self, obs: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, a_t, t], dim=-1))

    def integrate(self, obs: torch.Tensor, a0: torch.Tensor, steps: int) -> torch.Tensor:
        """Midpoint rule from t=0 to t=1 in `steps` equal steps (pre-tanh action space)."""
        a, dt = a0, 1.0 / steps
        for i in range(steps):
            t0 = torch.full_like(a[..., :1], i * dt)
            a_mid = a + 0.5 * dt * self(obs, a, t0)
            a = a + dt * self(obs, a_mid, t0 + 0.5 * dt)
        return a


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over everything but the leading member dimension: (n, B, ...) -> (n,)."""
    return x.flatten(1).mean(dim=1)


def _step(opts: tuple[torch.optim.Optimizer, ...], loss: torch.Tensor) -> None:
    """One backward of `loss`, then a step of each optimiser in `opts` (whose networks it trains)."""
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in opts:
        opt.step()


class FlowRL(EnsembleAgent):
    """FlowRL for one seed, or for `n_seeds` seeds trained in lockstep as one batched model.

    Every tensor inside carries a leading member dimension (n, B, ...); `act`/`update` take single-seed shapes,
    `act_members`/`update_members` stacked ones. Members share nothing but the computation: losses are summed over
    members, each member's gradients and Adam state are its own, so member i trains exactly as a single run of its
    seed (up to floating-point reduction order). State, stacking and CUDA graphs: flowrl/agents/ensemble_agent.py.
    """

    Config = FlowRLConfig
    networks = ("policy", "critic", "critic_target", "buffer_critic", "buffer_critic_target", "value")
    targets = ("critic_target", "buffer_critic_target")
    counters = ("noise_level", "act_calls")
    update_name = "FlowRL update"
    replay_recent_fraction = 0.2  # official replay: 20% of each batch from the most recent 2048 transitions

    def __init__(self, spec: EnvSpec, config: FlowRLConfig, device="cpu", n_seeds: int = 1, execution=None):
        super().__init__(spec, config, device, n_seeds, execution)
        c, o, a, n = config, spec.obs_dim, spec.act_dim, n_seeds
        self.policy = VelocityField(n, o, a, c.hidden_dim)
        critics = [twin_critic(n, o, a, c.hidden_dim, c.value_activation) for _ in range(4)]
        self.critic, self.critic_target, self.buffer_critic, self.buffer_critic_target = critics
        self.value = value_trunk(n, o, c.hidden_dim, c.value_activation)
        for copy in (self.critic_target, self.buffer_critic, self.buffer_critic_target):
            copy.load_state_dict(self.critic.state_dict())  # as the official code: the four critics start equal
        self.scale = (self.act_high - self.act_low) / 2.0
        self.bias = (self.act_high + self.act_low) / 2.0
        self.noise_level, self.act_calls = c.exploration_noise, 0
        self.finish_init(c.lr)  # after the networks drew their initial weights: then the member streams are seeded

    # ------------------------------------------------------------------------------------------ sampling
    def flow_noise(self, batch_size: int, generators=None) -> torch.Tensor:
        """a_0 ~ clip(N(0, I), -noise_clip, noise_clip) per member: (n, B, act_dim)."""
        a0 = member_draws(torch.randn, (batch_size, self.spec.act_dim), generators or self.generators, self.device)
        return a0.clamp(-self.config.noise_clip, self.config.noise_clip)

    def sample(self, obs: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """Integrate the flow from a_0 and squash into the action bounds (differentiable). obs: (n, B, obs_dim)."""
        x = self.policy.integrate(obs, a0, self.config.flow_steps)
        return torch.tanh(x) * self.scale + self.bias

    @torch.no_grad()
    def act_members(self, obs: torch.Tensor, deterministic: bool = False, members=None) -> torch.Tensor:
        """Actions (n, B, act_dim) for observations (n, B, obs_dim). `members` (evaluation only): which rows act for
        real, a (n, B) mask (or (n,) for whole members); member i draws noise for those rows only."""
        n, b = obs.shape[:2]
        if deterministic and self.config.eval_noise == "zero":
            a0 = torch.zeros((n, b, self.spec.act_dim), device=self.device)
        elif members is not None:
            if not deterministic:
                raise ValueError("act_members(members=...) is for evaluation: every member acts in training")
            a0 = member_draws(torch.randn, (b, self.spec.act_dim), self.eval_generators, self.device, rows=members)
            a0 = a0.clamp(-self.config.noise_clip, self.config.noise_clip)
        else:
            a0 = self.flow_noise(b, self.eval_generators if deterministic else self.generators)
        with self.execution.acting(self.device):
            action = self.sample(obs, a0).float()
        if not deterministic and self.config.exploration_noise > 0:
            self.act_calls += 1
            if self.act_calls % 100_000 == 0:
                self.noise_level *= 0.8
            uniform = member_draws(torch.rand, action.shape[1:], self.generators, self.device)
            action = action + (uniform * 0.01 * self.noise_level).clamp(-0.25, 0.25)
        return torch.maximum(torch.minimum(action, self.act_high), self.act_low)

    # ------------------------------------------------------------------------------------------ losses
    def expectile_loss(self, diff: torch.Tensor) -> torch.Tensor:
        """Per-member mean(|quantile - 1(diff < 0)| * diff^2), diff = target - prediction of shape (n, B, 1)."""
        weight = torch.where(diff < 0, 1.0 - self.config.quantile, self.config.quantile)
        return batch_mean(weight * diff.float() ** 2)

    def flow_weights(self, q_buffer: torch.Tensor, q_pi: torch.Tensor) -> torch.Tensor:
        """Per-sample weights of the flow-matching term, (n, B, 1); batch means are per member. No gradient."""
        c = self.config
        adv = torch.relu(q_buffer - q_pi).detach()
        w = torch.exp(adv - adv.mean(dim=-2, keepdim=True))
        if c.lambda_placement == "clamp":
            w = c.lam * w
        return w.clamp(c.weight_min, c.weight_max)

    def flow_matching_loss(self, obs, action, a0, t, weights) -> torch.Tensor:
        """Weighted conditional flow matching toward buffer actions along the straight path a_0 -> a: (n, B, 1)."""
        c = self.config
        a_t = t * action + (1.0 - t) * a0
        err = (self.policy(obs, a_t, t) - (action - a0)).float() ** 2
        if c.flow_loss == "batch_mean":
            term = weights * batch_mean(err)[:, None, None]  # code: per-sample weights times the batch-mean MSE
        else:
            term = weights * err.mean(dim=-1, keepdim=True)
        if c.lambda_placement == "multiplier":
            term = c.lam * term
        return term

    def critic_losses(self, batch: Batch, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Steps 1-3 of an update: the per-member losses (n,) of Q, Q_b and V_b (with their graphs), the metrics of
        their Q values, and min Q_b(s, a) at the buffer actions (n, B, 1; no gradient) for the policy step."""
        c, autocast = self.config, lambda: self.execution.autocast(self.device)
        obs, action, reward, next_obs, not_done = batch
        # One autocast block per network's loss: V_b runs under no_grad in step 2 and with gradients in step 3, and
        # torch versions whose autocast weight-cast cache outlives no_grad would hand step 3 bf16 weights without
        # autograd history (no gradient for V_b); leaving a block clears that cache.
        with autocast():
            # 1. Critic toward r + gamma * min Q'(s', pi(s')).
            with torch.no_grad():
                q1_next, q2_next = self.critic_target(next_obs, self.sample(next_obs, noise["next_a0"]))
                target = (reward + not_done * c.gamma * torch.min(q1_next, q2_next)).float()
            q1, q2 = self.critic(obs, action)
            critic_loss = batch_mean((q1.float() - target) ** 2) + batch_mean((q2.float() - target) ** 2)

        with autocast():
            # 2. Buffer critic toward r + gamma * V_b(s').
            with torch.no_grad():
                target_b = (reward + not_done * c.gamma * self.value(next_obs)).float()
            qb1, qb2 = self.buffer_critic(obs, action)
            q_buffer = torch.min(qb1, qb2).detach()
            buffer_loss = batch_mean((qb1.float() - target_b) ** 2) + batch_mean((qb2.float() - target_b) ** 2)

        with autocast():
            # 3. V_b: expectile regression on the target buffer critic at buffer actions.
            with torch.no_grad():
                q_target_b = torch.min(*self.buffer_critic_target(obs, action))
            value_loss = self.expectile_loss(q_target_b.float() - self.value(obs).float())
        return {
            "critic_loss": critic_loss,
            "buffer_critic_loss": buffer_loss,
            "value_loss": value_loss,
            "q_mean": batch_mean(q1.detach().float()),
            "q_buffer_mean": batch_mean(q_buffer.float()),
            "q_buffer": q_buffer,
        }

    def policy_loss(
        self, batch: Batch, noise: dict[str, torch.Tensor], q_buffer: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Step 4: the per-member policy loss (n,), -min Q(s, pi(s)) plus the weighted flow-matching term, with the
        metrics of Q(s, pi(s)) and of the weights. The critic's weights take no gradient (`update_step` freezes it)."""
        c = self.config
        obs, action = batch.obs, batch.action
        with self.execution.autocast(self.device):
            q_pi = torch.min(*self.critic(obs, self.sample(obs, noise["pi_a0"]))).float()
            loss = -q_pi
            if c.constraint:
                weights = self.flow_weights(q_buffer.float(), q_pi)
                loss = loss + self.flow_matching_loss(obs, action, noise["a0"], noise["t"], weights)
            out = {"policy_loss": batch_mean(loss), "q_pi_mean": batch_mean(q_pi.detach())}
        if c.constraint:
            out["flow_weight_mean"] = batch_mean(weights)
        return out

    # ------------------------------------------------------------------------------------------ one update
    def update_members(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One update of every member from stacked batches (n, B, ...). Metrics have shape (n,)."""
        policy_phase = step % self.config.target_update_interval == 0
        noise = self.update_noise(batch.obs.shape[1], policy_phase)
        return self.run_update("policy" if policy_phase else "critics", batch, noise)

    def update_noise(self, batch_size: int, policy_phase: bool) -> dict[str, torch.Tensor]:
        """Every random draw of one update, per member and in the order the eager code consumes its stream:
        a_0 for flow matching (drawn first, as the code does), a_0 for pi(s'), and on policy steps a_0 for pi(s)
        and the flow-matching times t."""
        noise = {"a0": self.flow_noise(batch_size), "next_a0": self.flow_noise(batch_size)}
        if policy_phase:
            noise["pi_a0"] = self.flow_noise(batch_size)
            if self.config.constraint:
                noise["t"] = member_draws(torch.rand, (batch_size, 1), self.generators, self.device)
        return noise

    def update_step(self, phase: str, batch: Batch, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The update itself, given its random draws: pure device work (capturable as a CUDA graph)."""
        losses = self.compiled("critic_losses")(batch, noise)
        q_buffer = losses.pop("q_buffer")
        # The official code steps Q, Q_b and V_b in turn. The three train disjoint networks, and no loss reads a network
        # that an earlier step changes (Q_b's target reads V_b before V_b's step, V_b's reads the target Q_b), so one
        # backward of their sum gives each network the gradient of its own loss at the same weights: the same steps,
        # with one backward pass instead of three.
        critic_side = losses["critic_loss"] + losses["buffer_critic_loss"] + losses["value_loss"]
        _step((self.critic_opt, self.buffer_critic_opt, self.value_opt), critic_side.sum())
        metrics = {k: v.detach() for k, v in losses.items()}
        if phase != "policy":
            return metrics

        # 4. Delayed policy update, then the target updates.
        self.critic.requires_grad_(False)  # gradients flow through Q to the action only: skip Q's weight gradients
        try:  # (also when a CUDA-graph capture stops in here)
            out = self.compiled("policy_loss")(batch, noise, q_buffer)
            _step((self.policy_opt,), out["policy_loss"].sum())
        finally:
            self.critic.requires_grad_(True)
        metrics.update({k: v.detach() for k, v in out.items()})
        polyak_update(self.critic_target, self.critic, self.config.tau)
        polyak_update(self.buffer_critic_target, self.buffer_critic, self.config.tau)
        return metrics
