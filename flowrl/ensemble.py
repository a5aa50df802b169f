"""Ensemble layers: `n` independent networks (members) evaluated as one batched network.

Every tensor carries a leading member dimension, (n, B, d). Member i of an `EnsembleLinear` computes
x_i @ W_i + b_i; an `EnsembleLayerNorm` normalises each row and applies member i's own affine. Members never mix,
so stacking independently trained networks is exact (up to the order of floating-point sums), and one
batched network trains n seeds (FlowRL's `n_seeds`) or the two heads of a twin critic at once.

On CPUs in float32 the linears may multiply on oneDNN instead of baddbmm (`set_cpu_matmul`, flowrl/cpu_kernels.py):
the same function; parameters and state_dict keys are the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flowrl import cpu_kernels
from flowrl.networks import Mish


def _members_per_input(n: int, n_x: int, layer: str) -> int:
    """r: how many consecutive members of an n-member layer share each of its n_x inputs (n_x = n, or a divisor)."""
    if n_x == 0 or n % n_x:
        raise ValueError(f"{layer} of {n} members given {n_x} inputs: expected n or a divisor of it")
    return n // n_x


def _stack_members(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-member tensors -> (n, ...); one member is a view, not a copy."""
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: x (n, B, d_in) -> (n, B, d_out).

    x may also hold n / r inputs (n_x, B, d_in) that r consecutive members share (the twin critics' heads read
    the same (s, a)): the oneDNN path reads them without a copy, baddbmm gets them expanded. Each member is
    initialised Xavier-uniform with zero bias (as the official FlowRL code's layers).

    `cpu_matmul` ('auto', 'onednn' or 'aten', see `set_cpu_matmul`): in float32 on a CPU, outside autocast, oneDNN
    multiplies member by member instead of torch's batched matmul (same function).
    """

    cpu_matmul = "aten"

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        bound = math.sqrt(6.0 / (d_in + d_out))
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n, 1, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_onednn(x):
            return _stack_members(self.forward_members(x.unbind(0)))
        return self.forward_batched(x)

    def forward_batched(self, x: torch.Tensor) -> torch.Tensor:
        """All members in one baddbmm (the path on GPUs, under autocast, and for small products on CPUs)."""
        n, n_x = self.weight.shape[0], x.shape[0]
        if n_x != n:
            b, d = x.shape[1:]
            x = x.unsqueeze(1).expand(n_x, _members_per_input(n, n_x, "EnsembleLinear"), b, d).reshape(n, b, d)
        return torch.baddbmm(self.bias, x, self.weight)

    def onednn_eligible(self, x: torch.Tensor) -> bool:
        return cpu_kernels.onednn_eligible(self.cpu_matmul, x, self.weight)

    def uses_onednn(self, x: torch.Tensor) -> bool:
        return cpu_kernels.uses_onednn(self.cpu_matmul, x, self.weight)

    def forward_members(self, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Member by member on oneDNN: (B, d_in) inputs (n of them, or n / r shared by r members) -> n (B, d_out)."""
        _members_per_input(self.weight.shape[0], len(xs), "EnsembleLinear")
        return cpu_kernels.onednn_linears(self.weight, self.bias, xs)


def set_cpu_matmul(module: nn.Module, name: str) -> str:
    """Choose the CPU float32 matmul of every EnsembleLinear in `module`: 'auto' (oneDNN for layers of at least
    ONEDNN_MIN_WORK multiply-adds, baddbmm below), 'onednn' (always), 'aten' (never); returns the setting used ('auto'
    becomes 'aten' where oneDNN is missing). Under autocast, on GPUs and in other dtypes the layers use baddbmm."""
    backend = cpu_kernels.resolve_cpu_matmul(name)
    for m in module.modules():
        if isinstance(m, EnsembleLinear):
            m.cpu_matmul = backend
    return backend


class _MemberAffine(torch.autograd.Function):
    """y = x_hat * weight + bias with per-member (n, 1, d) weight and bias, in x_hat's dtype. The same values and
    gradients as torch.addcmul, whose backward also multiplies two full-size gradients by its scalar `value` (1),
    work saved here. Under CPU autocast x_hat is bf16 (layer_norm keeps its input's dtype there, as nn.LayerNorm's
    output does): y is rounded to bf16 like nn.LayerNorm's, and the weight gradients are summed in float32. Under
    CUDA autocast x_hat is float32."""

    @staticmethod
    def forward(ctx, x_hat, weight, bias):
        ctx.save_for_backward(x_hat, weight)
        return torch.addcmul(bias, x_hat, weight).to(x_hat.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_hat, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        if grad.dtype != weight.dtype:
            grad = grad.to(weight.dtype)
        return (
            (grad * weight).to(x_hat.dtype) if need_x else None,
            (grad * x_hat).sum(1, keepdim=True) if need_w else None,
            grad.sum(1, keepdim=True) if need_b else None,
        )


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a separate affine transform per member."""

    def __init__(self, n: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, dim))
        self.eps = eps
        # Several members: normalise with a constant unit affine (x * 1 + 0 is exact), then each member's own.
        # A weighted layer_norm has a faster CPU backward than an unweighted one (docs/speed.md).
        self.register_buffer("unit_weight", torch.ones(dim), persistent=False)
        self.register_buffer("unit_bias", torch.zeros(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 1:  # one member: the fused affine of layer_norm (one kernel fewer each way)
            return F.layer_norm(x, x.shape[-1:], self.weight.view(-1), self.bias.view(-1), self.eps)
        x_hat = F.layer_norm(x, x.shape[-1:], self.unit_weight, self.unit_bias, self.eps)
        return _MemberAffine.apply(x_hat, self.weight, self.bias)

    def forward_members(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Member i's LayerNorm (with its own affine, fused) on xs[i // r], (B, dim) each: n inputs, or n / r shared
        by r members, as the batched path broadcasts them."""
        n = self.weight.shape[0]
        r = _members_per_input(n, len(xs), "EnsembleLayerNorm")
        return [
            F.layer_norm(xs[i // r], xs[i // r].shape[-1:], self.weight[i, 0], self.bias[i, 0], self.eps)
            for i in range(n)
        ]


class EnsembleSequential(nn.Sequential):
    """nn.Sequential of ensemble layers (EnsembleLinear, EnsembleLayerNorm) and element-wise activations, (n, B, d) in
    and out. Where its largest EnsembleLinear multiplies with oneDNN (float32 on a CPU, `set_cpu_matmul`), all of them
    do and it runs member by member on lists of (B, d) tensors, so no (n, B, d) activation or gradient is stacked
    between layers and each LayerNorm fuses its member's affine. The same parameters and state_dict keys as
    nn.Sequential, and the same function either way."""

    ELEMENTWISE = (nn.ReLU, nn.ELU, nn.GELU, Mish, nn.Tanh, nn.SiLU, nn.Identity)

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)  # also nn.Sequential's OrderedDict form (slicing makes one)
        bad = [
            type(m).__name__ for m in self if not isinstance(m, (EnsembleLinear, EnsembleLayerNorm, *self.ELEMENTWISE))
        ]
        if bad or not any(isinstance(m, EnsembleLinear) for m in self):
            raise ValueError(
                f"EnsembleSequential takes EnsembleLinear (at least one), EnsembleLayerNorm and element-wise "
                f"activations {[c.__name__ for c in self.ELEMENTWISE]}; got {bad or 'no EnsembleLinear'}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # All linears on oneDNN, or none, decided on the largest. Checks are per call: small networks feel them.
        linears = [m for m in self if isinstance(m, EnsembleLinear)]
        if not (
            linears[0].cpu_matmul != "aten"
            and all(m.onednn_eligible(x) for m in linears)
            and any(m.uses_onednn(x) for m in linears)
        ):
            for layer in self:
                x = layer.forward_batched(x) if isinstance(layer, EnsembleLinear) else layer(x)
            return x
        xs: Sequence[torch.Tensor] = x.unbind(0)
        for layer in self:
            if isinstance(layer, (EnsembleLinear, EnsembleLayerNorm)):
                xs = layer.forward_members(xs)
            else:
                xs = [layer(xi) for xi in xs]
        return _stack_members(xs)


class EnsembleTwinCritic(nn.Module):
    """The twin critic of `n` members (flowrl.networks.TwinCritic, batched): both Q heads of every member run as one
    network of 2n members (seed-major: member i's heads are 2i and 2i + 1), reading the same cat(obs, action) row.
    `body(members, in_dim)` builds that network; its state_dict keys are `net.*`."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, body: Callable[[int, int], nn.Module]):
        super().__init__()
        self.n = n
        self.net = body(2 * n, obs_dim + act_dim)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], dim=-1)  # (n, B, d): both heads of a member read the same row
        n, b = x.shape[:2]
        q = self.net(x).view(n, 2, b, 1)
        return q[:, 0], q[:, 1]


def member_generators(n: int, device: torch.device) -> list[torch.Generator]:
    """One random stream per member, each seeded from torch's global RNG (so that a run is a function of its seed)."""
    generators = [torch.Generator(device=device) for _ in range(n)]
    for g in generators:
        g.manual_seed(int(torch.randint(0, 2**62, ()).item()))
    return generators


def member_draws(
    fn, shape, generators: Sequence[torch.Generator | None], device: torch.device, rows=None
) -> torch.Tensor:
    """One draw fn(shape) per member from that member's generator, stacked: (n, *shape). A member whose generator is
    None gets zeros and draws nothing. `rows`, a (n, B) mask (B = shape[0]) or a (n,) one of whole members: member i
    draws fn((k_i, *shape[1:])) for its k_i rows where it is true, in row order, as a single run given only those
    rows would, and gets zeros in the others."""
    if rows is None:
        return torch.stack(
            [
                fn(shape, generator=g, device=device) if g is not None else torch.zeros(shape, device=device)
                for g in generators
            ]
        )
    n, b = len(generators), shape[0]
    mask = torch.as_tensor(rows, dtype=torch.bool)
    mask = mask[:, None].expand(-1, b) if mask.dim() == 1 else mask
    if mask.shape != (n, b):
        raise ValueError(f"rows mask of shape {tuple(mask.shape)}; expected ({n}, {b}) or ({n},)")
    out = torch.zeros((n, *shape), device=device)
    for i, g in enumerate(generators):
        if g is not None and mask[i].any():
            out[i, mask[i].to(device)] = fn((int(mask[i].sum()), *shape[1:]), generator=g, device=device)
    return out
