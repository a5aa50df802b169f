"""Network building blocks shared by all agents."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
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


def flowrl_value_trunk(in_dim: int, hidden: int, act: str = "gelu") -> nn.Sequential:
    """The official FlowRL value/critic body: Linear, then
    LN -> Linear -> LN -> act -> Linear -> LN -> act -> Linear -> LN, then a Linear head to 1."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LayerNorm(hidden),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        activation(act),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        activation(act),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.Linear(hidden, 1),
    )


class TwinQ(nn.Module):
    """Two independent Q heads over cat(obs, action). `body(in_dim)` builds each head."""

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
