"""Network building blocks every agent may use: activations, MLPs, the twin critic, target updates.

Batched ensembles of networks (FlowRL's seeds and twin heads as one network) are in flowrl/ensemble.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Mish(nn.Module):
    """Mish, x * tanh(softplus(x)), as composite ops: the same function as nn.Mish (to ~1 ulp), faster on CPUs,
    where torch's fused mish kernel is slow (docs/speed.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "mish": Mish,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear layer (as the official FlowRL code)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
            nn.init.zeros_(m.bias)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu", layer_norm: bool = False) -> nn.Sequential:
    """Plain MLP: [Linear (-> LayerNorm) -> act] * len(hidden) -> Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation(act))
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class TwinCritic(nn.Module):
    """Two independent Q heads over cat(obs, action): (Q_1(s, a), Q_2(s, a)). `body(in_dim)` builds each head.
    flowrl.ensemble.EnsembleTwinCritic is the same for several members at once."""

    def __init__(self, obs_dim: int, act_dim: int, body: Callable[[int], nn.Module]):
        super().__init__()
        self.q1 = body(obs_dim + act_dim)
        self.q2 = body(obs_dim + act_dim)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x), self.q2(x)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, in place (tau=1 is a hard copy)."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if tau >= 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, tau)
