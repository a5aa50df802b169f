"""A re-creation of the official FlowRL implementation's update path, for side-by-side speed comparison.

Written for this benchmark from a reading of github bytedance/FlowRL (model/algo.py, model/model.py,
utilis/Replaybuffer.py): the same network layouts and sizes, losses, update order and published
settings (hidden 512, batch 256, lr 3e-4, tau 0.95, delayed updates every 2, bf16 autocast on CUDA,
and torch.compile(mode="max-autotune") of the five critic/value networks and of the two update functions,
as its model/algo.py does), and its replay: a Python list of transition tuples sampled with
`random.sample` (80% uniform, 20% from the last 2048), stacked with NumPy and copied to the device
every update. Nothing here is used for training; it only exists to be timed.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _init(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


def _block(h):
    return nn.Sequential(
        nn.LayerNorm(h),
        nn.Linear(h, h),
        nn.LayerNorm(h),
        nn.GELU(),
        nn.Linear(h, h),
        nn.LayerNorm(h),
        nn.GELU(),
        nn.Linear(h, h),
        nn.LayerNorm(h),
    )


class OfficialQ(nn.Module):
    def __init__(self, obs, act, h):
        super().__init__()
        self.in1, self.b1, self.out1 = nn.Linear(obs + act, h), _block(h), nn.Linear(h, 1)
        self.in2, self.b2, self.out2 = nn.Linear(obs + act, h), _block(h), nn.Linear(h, 1)
        self.apply(_init)

    def forward(self, s, a):
        x = torch.cat([s, a], -1)
        return self.out1(self.b1(self.in1(x))), self.out2(self.b2(self.in2(x)))


class OfficialV(nn.Module):
    def __init__(self, obs, h):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs, h), _block(h), nn.Linear(h, 1))
        self.apply(_init)

    def forward(self, s):
        return self.net(s)


class OfficialFlow(nn.Module):
    def __init__(self, obs, act, h, steps, device):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(obs + act + 1, h), nn.Linear(h, h), nn.Linear(h, act)
        self.n1, self.n2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.steps, self.act, self.device = steps, act, device
        self.apply(_init)

    def forward(self, s, a, t):
        x = F.elu(self.n1(self.l1(torch.cat([s, a, t], 1))))
        return self.l3(F.elu(self.n2(self.l2(x))))

    def sample(self, s):
        t = torch.zeros(s.shape[0], 1, device=self.device)
        dt = 1.0 / self.steps
        a = torch.normal(0, 1, size=(s.shape[0], self.act), device=self.device).clamp(-1, 1)
        for _ in range(self.steps):
            v = self.forward(s, a, t)
            mid = a + v * dt / 2
            a = a + self.forward(s, mid, t + dt / 2) * dt
            t = t + dt
        return torch.tanh(a)  # DMC actions are in [-1, 1]: scale 1, bias 0


class ListReplay:
    def __init__(self, capacity, seed=0):
        random.seed(seed)
        self.capacity, self.buffer, self.position = capacity, [], 0

    def push(self, *transition):
        if len(self.buffer) < self.capacity:
            self.buffer.append(None)
        self.buffer[self.position] = transition
        self.position = (self.position + 1) % self.capacity

    def sample(self, batch_size):
        n = len(self.buffer)
        n_uniform = int(batch_size * 0.8)
        idx = random.sample(range(n), n_uniform)
        window = min(2048, n)
        if self.position - window >= 0:
            recent = list(range(self.position - window, self.position))
        else:
            recent = list(range(self.position - window + n, n)) + list(range(0, self.position))
        idx += random.sample(recent, min(batch_size - n_uniform, window))
        return map(np.stack, zip(*[self.buffer[i] for i in idx]))


class OfficialStyleFlowRL:
    """compile_: None = as the official code on CUDA (networks and update functions, max-autotune), none on CPU
    (the official code compiles there too; the CPU comparison leaves compilation out: an earlier session saw
    torch.compile give ~4% on the critic on this project's CPU); True/False force it.
    amp: None = as the official code (bf16 autocast on CUDA only); True forces bf16 autocast on a CPU too, the
    like-for-like contender for our `agent.amp=bf16` there."""

    def __init__(self, obs_dim, act_dim, device, hidden=512, steps=1, compile_=None, amp=None):
        self.device = torch.device(device)
        self.gamma, self.tau, self.quantile, self.lam = 0.99, 0.95, 0.9, 0.1
        self.amp = self.device.type == "cuda" if amp is None else amp
        self.scaler = torch.amp.GradScaler(enabled=False)  # bf16 needs no scaling, as in the official code
        self.critic = OfficialQ(obs_dim, act_dim, hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_buffer = copy.deepcopy(self.critic)
        self.critic_target_buffer = copy.deepcopy(self.critic)
        self.value = OfficialV(obs_dim, hidden).to(self.device)
        self.policy = OfficialFlow(obs_dim, act_dim, hidden, steps, self.device).to(self.device)
        self.opts = [
            torch.optim.Adam(m.parameters(), lr=3e-4)
            for m in (self.critic, self.critic_buffer, self.value, self.policy)
        ]
        if compile_ if compile_ is not None else self.device.type == "cuda":
            mode = "max-autotune"
            for name in ("critic", "critic_target", "critic_buffer", "critic_target_buffer", "value"):
                setattr(self, name, torch.compile(getattr(self, name), mode=mode))
            self.update_critic = torch.compile(self.update_critic, mode=mode)
            self.update_policy = torch.compile(self.update_policy, mode=mode)

    def _ac(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _step(self, opt, loss):
        opt.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    def update_critic(self, s, a, r, s2, m):
        critic_opt, buffer_opt, value_opt, _ = self.opts
        with self._ac():
            with torch.no_grad():
                target = r + m * self.gamma * torch.min(*self.critic_target(s2, self.policy.sample(s2)))
            q1, q2 = self.critic(s, a)
            loss = F.mse_loss(q1, target) + F.mse_loss(q2, target.clone())
        self._step(critic_opt, loss)
        with self._ac():
            with torch.no_grad():
                target_b = r + m * self.gamma * self.value(s2)
            qb1, qb2 = self.critic_buffer(s, a)
            q_buffer = torch.min(qb1, qb2)
            loss = F.mse_loss(qb1, target_b) + F.mse_loss(qb2, target_b)
        self._step(buffer_opt, loss)
        with self._ac():
            v = self.value(s)
            with torch.no_grad():
                q = torch.min(*self.critic_target_buffer(s, a))
            err = q - v
            w = torch.where(err < 0, 1 - self.quantile, self.quantile)
            loss = (w * err**2).float().mean()
        self._step(value_opt, loss)
        return q_buffer.detach().clone()

    def update_policy(self, s, a, a0, q_buffer):
        with self._ac():
            pi = self.policy.sample(s)
            q_pi = torch.min(*self.critic(s, pi))
            w = torch.relu(q_buffer - q_pi.clone()).detach()
            w = (self.lam * torch.exp(w - w.mean())).clamp(1e-3, 1)
            t = torch.rand(a.shape[0], 1, device=self.device)
            cfm = F.mse_loss(self.policy(s, t * a + (1 - t) * a0, t), a - a0)
            loss = (-q_pi + w * cfm).mean()
        self._step(self.opts[3], loss)

    def update(self, memory, batch_size, updates):
        s, a, r, s2, m = memory.sample(batch_size)
        s, a, s2 = (torch.FloatTensor(x).to(self.device) for x in (s, a, s2))
        r = torch.FloatTensor(r).to(self.device).unsqueeze(1)
        m = torch.FloatTensor(m).to(self.device).unsqueeze(1)
        a0 = torch.randn_like(a).clamp(-1, 1)
        q_buffer = self.update_critic(s, a, r, s2, m)
        if updates % 2 == 0:
            self.update_policy(s, a, a0, q_buffer)
            with torch.no_grad():
                for tgt, src in ((self.critic_target, self.critic), (self.critic_target_buffer, self.critic_buffer)):
                    for pt, ps in zip(tgt.parameters(), src.parameters()):
                        pt.data.copy_(pt.data * (1 - self.tau) + ps.data * self.tau)


def filled_replay(obs_dim, act_dim, n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    mem = ListReplay(1_000_000, seed)
    for _ in range(n):
        mem.push(
            rng.standard_normal(obs_dim).astype(np.float32),
            rng.uniform(-1, 1, act_dim).astype(np.float32),
            float(rng.standard_normal()),
            rng.standard_normal(obs_dim).astype(np.float32),
            1.0,
        )
    return mem
