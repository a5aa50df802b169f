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
from torch import nn

from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.cuda_graphs import GraphedStep, tolerance, training_state
from flowrl.networks import (CPU_MATMULS, EnsembleLayerNorm, EnsembleLinear, EnsembleSequential, activation,
                             polyak_update, resolve_cpu_matmul, set_cpu_matmul)


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
    amp: Literal["auto", "off", "bf16"] = "auto"  # bf16 autocast: "auto" = on CUDA only (code); "bf16" forces it, CPU too
    act_precision: Literal["tf32", "float32", "amp"] = "tf32"  # acting and evaluation: float32, with TF32 matmuls on
    # CUDA, as the official code acts (outside its autocast, after torch.set_float32_matmul_precision("high"));
    # "float32": IEEE float32 matmuls; "amp": under the updates' autocast (bf16 where `amp` is on), what runs did
    # before this key existed: their saved configs resume with it (flowrl/config.py LEGACY_VALUES)
    cuda_graphs: bool = True  # on CUDA, replay each update as a captured CUDA graph, checked against the eager update
    # first (eager again if they differ: flowrl/cuda_graphs.py); no effect on CPU
    graph_warmup: int = 3  # eager updates per graph before it is captured (lazy init of optimiser state, cuBLAS)
    cpu_matmul: Literal["auto", "onednn", "aten"] = "auto"  # float32 CPU matmuls: oneDNN's GEMM or torch's batched
    # matmul (MKL); "auto": oneDNN for networks whose largest layer is a large product (paper-size updates), batched
    # matmul for small ones (acting, small networks); x86-64 only. The same function up to rounding. No effect on GPUs
    # or under autocast. See docs/speed.md.

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
            "graph_warmup": self.graph_warmup >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid FlowRL config value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        for key, allowed in [
            ("flow_loss", ("batch_mean", "per_sample")),
            ("lambda_placement", ("clamp", "multiplier")),
            ("eval_noise", ("sample", "zero")),
            ("amp", ("auto", "off", "bf16")),
            ("act_precision", ("tf32", "float32", "amp")),
            ("cpu_matmul", CPU_MATMULS),
        ]:
            if getattr(self, key) not in allowed:
                raise ValueError(f"FlowRL config {key}={getattr(self, key)!r}: choose one of {allowed}")
        activation(self.value_activation)  # raises on unknown names
        resolve_cpu_matmul(self.cpu_matmul)  # 'onednn' on a torch without it fails here, before a run writes anything


def value_trunk(n: int, d_in: int, hidden: int, act: str) -> EnsembleSequential:
    """The official FlowRL critic/value body for `n` members: Linear, then
    LN -> Linear -> LN -> act -> Linear -> LN -> act -> Linear -> LN, then a Linear head to 1."""
    h = hidden
    return EnsembleSequential(
        EnsembleLinear(n, d_in, h), EnsembleLayerNorm(n, h),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h), activation(act),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h), activation(act),
        EnsembleLinear(n, h, h), EnsembleLayerNorm(n, h),
        EnsembleLinear(n, h, 1),
    )


class TwinCritic(nn.Module):
    """Two Q heads per member, run as one batched network of 2n members (seed-major order)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: int, act: str):
        super().__init__()
        self.n = n
        self.net = value_trunk(2 * n, obs_dim + act_dim, hidden, act)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)  # (n, B, d): both heads of a member read the same row
        n, b = x.shape[:2]
        q = self.net(x).view(n, 2, b, 1)
        return q[:, 0], q[:, 1]


class VelocityField(nn.Module):
    """v(s, a_t, t): Linear -> LayerNorm -> ELU -> Linear -> LayerNorm -> ELU -> Linear (official layout)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = EnsembleSequential(
            EnsembleLinear(n, obs_dim + act_dim + 1, hidden), EnsembleLayerNorm(n, hidden), nn.ELU(),
            EnsembleLinear(n, hidden, hidden), EnsembleLayerNorm(n, hidden), nn.ELU(),
            EnsembleLinear(n, hidden, act_dim),
        )

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


class FlowRL(Agent):
    """FlowRL for one seed, or for `n_seeds` seeds trained in lockstep as one batched model.

    Every tensor inside carries a leading member dimension (n, B, ...); the Agent API (`act`, `update`)
    takes and returns single-seed shapes (B, ...), `act_members`/`update_members` the stacked ones.
    Members share nothing but the computation: losses are summed over members, each member's
    gradient and Adam state are its own, so member i trains exactly as a single run of its seed
    (up to floating-point reduction order). `FlowRL.stack`/`unstack` convert between the two.
    """

    Config = FlowRLConfig
    replay_recent_fraction = 0.2  # official replay: 20% of each batch from the most recent 2048 transitions

    def __init__(self, spec: EnvSpec, config: FlowRLConfig, device: torch.device | str = "cpu", n_seeds: int = 1):
        super().__init__(spec, config, device)
        c, o, a, n = config, spec.obs_dim, spec.act_dim, n_seeds
        self.n = n
        self.policy = VelocityField(n, o, a, c.hidden_dim)
        self.critic = TwinCritic(n, o, a, c.hidden_dim, c.value_activation)
        self.critic_target = TwinCritic(n, o, a, c.hidden_dim, c.value_activation)
        self.buffer_critic = TwinCritic(n, o, a, c.hidden_dim, c.value_activation)
        self.buffer_critic_target = TwinCritic(n, o, a, c.hidden_dim, c.value_activation)
        self.value = value_trunk(n, o, c.hidden_dim, c.value_activation)
        # As the official code: all four critics start from the same weights.
        for copy in (self.critic_target, self.buffer_critic, self.buffer_critic_target):
            copy.load_state_dict(self.critic.state_dict())
        for net in self._networks().values():
            net.to(self.device)
        self.cpu_matmul = set_cpu_matmul(nn.ModuleList(self._networks().values()), c.cpu_matmul)
        for target in (self.critic_target, self.buffer_critic_target):
            target.requires_grad_(False)

        # Fused Adam: one kernel per step instead of a dozen per tensor (4x faster on this project's CPU), the same
        # update rule. Capturable keeps its step counter on the device so the step can live inside a CUDA graph.
        graphed = c.cuda_graphs and self.device.type == "cuda"
        adam = dict(lr=c.lr, fused=True, capturable=graphed)
        self.policy_opt = torch.optim.Adam(self.policy.parameters(), **adam)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), **adam)
        self.buffer_critic_opt = torch.optim.Adam(self.buffer_critic.parameters(), **adam)
        self.value_opt = torch.optim.Adam(self.value.parameters(), **adam)
        for opt in self._optimizers().values():
            opt._warned_capturable_if_run_uncaptured = True  # torch warns once per optimiser about the eager warm-ups
        self._capturable = graphed

        self.scale = (self.act_high - self.act_low) / 2.0
        self.bias = (self.act_high + self.act_low) / 2.0
        self.noise_level = c.exploration_noise
        self.act_calls = 0
        # Each member's own random stream (noise a_0, flow-matching times, exploration), seeded from torch's
        # global RNG at construction so a run is a function of its seed; saved in state_dict.
        self.generators = [torch.Generator(device=self.device) for _ in range(n)]
        for g in self.generators:
            g.manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.eval_generators = [torch.Generator(device=self.device) for _ in range(n)]  # never the training stream
        # bf16 autocast: "auto" enables it on CUDA only (as the official code); "bf16" also on CPUs with bf16 units.
        self.amp = c.amp == "bf16" or (c.amp == "auto" and self.device.type == "cuda")
        self._graphs = self.graphed_updates() if graphed else None

    # ----------------------------------------------------------------------------- randomness
    def _draw(self, fn, shape, generators) -> torch.Tensor:
        """One draw of `shape` per member from that member's generator, stacked: (n, *shape). A member whose
        generator is None gets zeros and draws nothing."""
        return torch.stack([fn(shape, generator=g, device=self.device) if g is not None
                            else torch.zeros(shape, device=self.device) for g in generators])

    def seed_evaluation(self, seed: int) -> None:
        self.seed_evaluation_members([seed] * self.n)

    def seed_evaluation_members(self, seeds: list[int]) -> None:
        """Seed member i's evaluation stream with seeds[i] (as a single run of that seed seeds its own)."""
        for g, seed in zip(self.eval_generators, seeds, strict=True):
            g.manual_seed(seed)

    # ----------------------------------------------------------------------------- acting
    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def _act_precision(self):
        """Acting and evaluation in `config.act_precision`. On CUDA the float32 matmul precision is set for the call
        and restored after; on CPUs it is left alone (there "high" may let oneDNN multiply in reduced precision)."""
        if self.config.act_precision == "amp":
            with self._autocast():
                yield
            return
        if self.device.type != "cuda":
            yield
            return
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if self.config.act_precision == "tf32" else "highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(precision)

    def flow_noise(self, batch_size: int, generators=None) -> torch.Tensor:
        """a_0 ~ clip(N(0, I), -noise_clip, noise_clip) per member: (n, B, act_dim)."""
        a0 = self._draw(torch.randn, (batch_size, self.spec.act_dim), generators or self.generators)
        return a0.clamp(-self.config.noise_clip, self.config.noise_clip)

    def sample(self, obs: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        """Integrate the flow from a_0 and squash into the action bounds (differentiable). obs: (n, B, obs_dim)."""
        x = self.policy.integrate(obs, a0, self.config.flow_steps)
        return torch.tanh(x) * self.scale + self.bias

    @torch.no_grad()
    def act_members(self, obs: torch.Tensor, deterministic: bool = False, members=None) -> torch.Tensor:
        """Actions (n, B, act_dim) for observations (n, B, obs_dim). `members` (evaluation only): which rows act for
        real, a (n, B) mask (or (n,) for whole members). Member i draws noise for its acting rows only, as a single
        run given just those rows would; the other rows get meaningless actions."""
        n, b = obs.shape[:2]
        if deterministic and self.config.eval_noise == "zero":
            a0 = torch.zeros((n, b, self.spec.act_dim), device=self.device)
        elif members is not None:
            if not deterministic:
                raise ValueError("act_members(members=...) is for evaluation: every member acts in training")
            a0 = self._masked_eval_noise(torch.as_tensor(members, dtype=torch.bool), b)
        else:
            a0 = self.flow_noise(b, self.eval_generators if deterministic else self.generators)
        with self._act_precision():
            action = self.sample(obs, a0).float()
        if not deterministic and self.config.exploration_noise > 0:
            self.act_calls += 1
            if self.act_calls % 100_000 == 0:
                self.noise_level *= 0.8
            uniform = self._draw(torch.rand, action.shape[1:], self.generators)
            action = action + (uniform * 0.01 * self.noise_level).clamp(-0.25, 0.25)
        return torch.maximum(torch.minimum(action, self.act_high), self.act_low)

    def _masked_eval_noise(self, mask: torch.Tensor, batch_size: int) -> torch.Tensor:
        if mask.dim() == 1:
            mask = mask[:, None].expand(-1, batch_size)
        if mask.shape != (self.n, batch_size):
            raise ValueError(f"members mask of shape {tuple(mask.shape)}; expected ({self.n}, {batch_size}) or ({self.n},)")
        a0 = torch.zeros((self.n, batch_size, self.spec.act_dim), device=self.device)
        for i, g in enumerate(self.eval_generators):
            if mask[i].any():
                a0[i, mask[i].to(self.device)] = self.flow_noise(int(mask[i].sum()), [g])[0]
        return a0

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if self.n != 1:
            self._single_only("act")
        return self.act_members(obs.unsqueeze(0), deterministic)[0]

    def _single_only(self, what: str):
        raise RuntimeError(f"{what}() takes one seed's tensors; this agent holds {self.n} seeds: use {what}_members()")

    # ----------------------------------------------------------------------------- learning
    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

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

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if self.n != 1:
            self._single_only("update")
        metrics = self.update_members(Batch(*(x.unsqueeze(0) for x in batch)), step)
        return {k: v[0] for k, v in metrics.items()}

    def update_noise(self, batch_size: int, policy_phase: bool) -> dict[str, torch.Tensor]:
        """Every random draw of one update, per member and in the order the eager code consumes its stream:
        a_0 for flow matching (drawn first, as the code does), a_0 for pi(s'), and on policy steps a_0 for pi(s)
        and the flow-matching times t."""
        noise = {"a0": self.flow_noise(batch_size), "next_a0": self.flow_noise(batch_size)}
        if policy_phase:
            noise["pi_a0"] = self.flow_noise(batch_size)
            if self.config.constraint:
                noise["t"] = self._draw(torch.rand, (batch_size, 1), self.generators)
        return noise

    def update_members(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One update of every member from stacked batches (n, B, ...). Metrics have shape (n,)."""
        policy_phase = step % self.config.target_update_interval == 0
        noise = self.update_noise(batch.obs.shape[1], policy_phase)
        if self._graphs is not None:
            return self._graphs("policy" if policy_phase else "critics", batch, noise)
        return self._update_core(batch, noise, policy_phase)

    def graphed_updates(self, capture=None) -> GraphedStep:
        """The update as CUDA graphs, one per phase ("policy": with the delayed policy step, "critics": without),
        each checked against the eager update before use (flowrl/cuda_graphs.py). `capture`: what records a graph;
        tests pass flowrl.cuda_graphs.eager_capture (or a faulty one) to run this path on CPUs:
        `agent._graphs = agent.graphed_updates(capture)`."""
        return GraphedStep(lambda phase, batch, noise: self._update_core(batch, noise, phase == "policy"),
                           lambda: training_state(self._networks(), self._optimizers()), self.device,
                           self.config.graph_warmup, tolerance(self.amp), capture, name="FlowRL update")

    def execution_report(self) -> dict:
        """How this agent's updates ran, as plain data (a run's manifest records it): {"cuda_graphs": "on" |
        "off: <reason>" | "pending: <why>", "graph_check": the graph-vs-eager differences measured per phase}."""
        if self._graphs is not None:
            return self._graphs.report()
        why = "agent.cuda_graphs=false" if not self.config.cuda_graphs else f"not on CUDA (device {self.device})"
        return {"cuda_graphs": f"off: {why}"}

    def _update_core(self, batch: Batch, noise: dict[str, torch.Tensor], policy_phase: bool) -> dict[str, torch.Tensor]:
        """The update itself, given its random draws: pure device work (capturable as a CUDA graph)."""
        c = self.config
        obs, action, reward, next_obs, not_done = batch

        with self._autocast():
            # 1. Critic toward r + gamma * min Q'(s', pi(s')).
            with torch.no_grad():
                q1_next, q2_next = self.critic_target(next_obs, self.sample(next_obs, noise["next_a0"]))
                target = (reward + not_done * c.gamma * torch.min(q1_next, q2_next)).float()
            q1, q2 = self.critic(obs, action)
            critic_loss = batch_mean((q1.float() - target) ** 2) + batch_mean((q2.float() - target) ** 2)
        self._step(self.critic_opt, critic_loss.sum())

        with self._autocast():
            # 2. Buffer critic toward r + gamma * V_b(s').
            with torch.no_grad():
                target_b = (reward + not_done * c.gamma * self.value(next_obs)).float()
            qb1, qb2 = self.buffer_critic(obs, action)
            q_buffer = torch.min(qb1, qb2).detach()
            buffer_loss = batch_mean((qb1.float() - target_b) ** 2) + batch_mean((qb2.float() - target_b) ** 2)
        self._step(self.buffer_critic_opt, buffer_loss.sum())

        with self._autocast():
            # 3. V_b: expectile regression on the target buffer critic at buffer actions.
            with torch.no_grad():
                q_target_b = torch.min(*self.buffer_critic_target(obs, action))
            value_loss = self.expectile_loss(q_target_b.float() - self.value(obs).float())
        self._step(self.value_opt, value_loss.sum())

        metrics = {
            "critic_loss": critic_loss.detach(),
            "buffer_critic_loss": buffer_loss.detach(),
            "value_loss": value_loss.detach(),
            "q_mean": batch_mean(q1.detach().float()),
            "q_buffer_mean": batch_mean(q_buffer.float()),
        }
        # 4. Delayed policy update and target updates.
        if policy_phase:
            metrics.update(self._update_policy(obs, action, noise, q_buffer))
            polyak_update(self.critic_target, self.critic, c.tau)
            polyak_update(self.buffer_critic_target, self.buffer_critic, c.tau)
        return metrics

    def _update_policy(self, obs, action, noise, q_buffer) -> dict[str, torch.Tensor]:
        c = self.config
        self.critic.requires_grad_(False)  # gradients flow through Q to the action only: skip Q's weight gradients
        try:  # (also when a CUDA-graph capture stops in here)
            with self._autocast():
                q_pi = torch.min(*self.critic(obs, self.sample(obs, noise["pi_a0"]))).float()
                loss = -q_pi
                if c.constraint:
                    weights = self.flow_weights(q_buffer.float(), q_pi)
                    loss = loss + self.flow_matching_loss(obs, action, noise["a0"], noise["t"], weights)
                policy_loss = batch_mean(loss)
            self._step(self.policy_opt, policy_loss.sum())
        finally:
            self.critic.requires_grad_(True)
        out = {"policy_loss": policy_loss.detach(), "q_pi_mean": batch_mean(q_pi.detach())}
        if c.constraint:
            out["flow_weight_mean"] = batch_mean(weights)
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
        state["generators"] = [g.get_state() for g in self.generators]
        state["eval_generators"] = [g.get_state() for g in self.eval_generators]
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in {**self._networks(), **self._optimizers()}.items():
            v.load_state_dict(state[k])
        # Optimizer.load_state_dict also takes `fused`/`capturable` from the saved groups: a checkpoint written on a
        # CPU (not capturable) would make every later CUDA-graph capture fail, one written with graphs would ask a
        # CPU for capturable steps. Keep this agent's own settings; fused/capturable Adam keeps `step` on the device.
        for opt in self._optimizers().values():
            for group in opt.param_groups:
                group.update(fused=True, capturable=self._capturable)
                for p in group["params"]:
                    st = opt.state.get(p)
                    if st and "step" in st:
                        st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(p.device)
        if self._graphs is not None:
            self._graphs.reset()  # optimiser state tensors were replaced: the captured graphs point at the old ones
        self.noise_level = state["counters"]["noise_level"]
        self.act_calls = state["counters"]["act_calls"]
        if len(state["generators"]) != self.n:
            raise ValueError(f"state holds {len(state['generators'])} seeds, this agent {self.n}")
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s.cpu())
        for g, s in zip(self.eval_generators, state["eval_generators"]):
            g.set_state(s.cpu())

    # ----------------------------------------------------------------------------- seeds <-> members
    @classmethod
    def stack(cls, states: list[dict], spec: EnvSpec, config: FlowRLConfig, device="cpu") -> "FlowRL":
        """One agent training len(states) seeds, from single-seed state_dicts (members in that order)."""
        agent = cls(spec, config, device, n_seeds=len(states))
        merged = _map_leaves(states, lambda xs: torch.cat(xs) if xs[0].dim() else xs[0])
        merged["counters"] = states[0]["counters"]
        merged["generators"] = [s["generators"][0] for s in states]
        merged["eval_generators"] = [s["eval_generators"][0] for s in states]
        agent.load_state_dict(merged)
        return agent

    def unstack(self, i: int) -> dict:
        """The single-seed state_dict of member i (loadable into FlowRL(n_seeds=1))."""
        state = self.state_dict()
        out = _map_leaves([state], lambda xs: xs[0].view(self.n, -1, *xs[0].shape[1:])[i].clone()
                          if xs[0].dim() else xs[0].clone())
        out["counters"] = dict(state["counters"])
        out["generators"] = [state["generators"][i]]
        out["eval_generators"] = [state["eval_generators"][i]]
        return out


def _map_leaves(states: list[dict], fn):
    """Apply fn to the list of corresponding tensors of several nested state dicts (non-tensors: first one)."""
    first = states[0]
    if isinstance(first, dict):
        return {k: _map_leaves([s[k] for s in states], fn) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], dict):
        return [_map_leaves([s[i] for s in states], fn) for i in range(len(first))]
    if isinstance(first, torch.Tensor):
        return fn(states)
    return first
