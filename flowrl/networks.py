"""Network building blocks shared by all agents."""
from __future__ import annotations

import functools
import math
import platform
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


class Mish(nn.Module):
    """Mish, x * tanh(softplus(x)), as composite ops: the same function as nn.Mish (to ~1 ulp), but about 2x
    faster forward and 1.35x forward+backward on CPU, where torch's fused mish kernel is slow."""

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


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether this is an x86-64 CPU whose torch has oneDNN's float32 linear kernel (torch.ops.mkldnn._linear_pointwise,
    used by inductor) and it computes, on plain strided tensors, what F.linear does (probed once per process)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # oneDNN on other CPUs (e.g. Arm, through ACL) is not measured here: leave them on aten
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    x = torch.arange(12, dtype=torch.float32).view(3, 4) / 7
    w = torch.arange(20, dtype=torch.float32).view(4, 5).t() / 11  # (5, 4), transposed strides as in use
    b = torch.arange(5, dtype=torch.float32)
    try:
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    except RuntimeError:
        return False
    return bool(torch.allclose(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5))


CPU_MATMULS = ("auto", "onednn", "aten")
# 'auto' multiplies with oneDNN only where a layer's work, rows x d_in x d_out multiply-adds, is at least this (for an
# EnsembleSequential: its largest layer's, and then all its layers go to oneDNN): below it oneDNN's per-call cost loses
# to batched matmul. Measured on this project's 2-core AMD CPU (twin-critic trunk,
# forward+backward, aten time / oneDNN time): hidden 512 x 256 rows 1.55, 128 rows 1.31, 32 rows 0.84, 1 row 0.15;
# hidden 256 x 256 rows 1.31, 128 rows 0.94; hidden 64 x 128 rows 0.40. So paper-size updates (256 x 512 x 512) go
# to oneDNN, acting (1 or a few rows) and small networks stay on baddbmm.
ONEDNN_MIN_WORK = 2**24


def resolve_cpu_matmul(name: str) -> str:
    """'auto' stays 'auto' where oneDNN is available (oneDNN for large layers), else 'aten'; 'onednn' (oneDNN for every
    float32 CPU product, whatever its size) where it is missing is an error."""
    if name not in CPU_MATMULS:
        raise ValueError(f"cpu_matmul={name!r}: choose one of {CPU_MATMULS}")
    if name == "auto":
        return "auto" if onednn_linear_available() else "aten"
    if name == "onednn" and not onednn_linear_available():
        raise ValueError("cpu_matmul='onednn' but this torch build has no oneDNN linear kernel; use 'aten' or 'auto'")
    return name


def _members_per_input(n: int, n_x: int, layer: str) -> int:
    """r: how many consecutive members of an n-member layer share each of its n_x inputs (n_x = n, or a divisor)."""
    if n_x == 0 or n % n_x:
        raise ValueError(f"{layer} of {n} members given {n_x} inputs: expected n or a divisor of it")
    return n // n_x


def _stack_members(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-member tensors -> (n, ...); one member is a view, not a copy."""
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


def _onednn_mm(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w_t.T (+ bias) in float32 by oneDNN. x (B, k) is made contiguous (a copy if it is not); w_t (m, k) may have
    any strides."""
    return torch.ops.mkldnn._linear_pointwise(x, w_t, bias, "none", [], "")


def _onednn_outer(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """x.T @ grad, (d_in, d_out), transposing (copying) whichever of the two activations is smaller."""
    if grad.shape[1] < x.shape[1]:
        return _onednn_mm(grad.t(), x.t()).t()
    return _onednn_mm(x.t(), grad.t())


class _OneDNNLinears(torch.autograd.Function):
    """ys[i] = xs[i // r] @ weight[i] + bias[i] for the n members of an EnsembleLinear, from and to lists of (B, d)
    tensors (r = n / len(xs) members share an input: the twin critics' heads read the same (s, a)); every product,
    forward and backward, one oneDNN float32 GEMM. The same function as baddbmm up to reduction order. On this
    project's AMD CPU oneDNN multiplies at about the cores' peak, ~2x the rate of torch's default CPU BLAS (MKL)."""

    @staticmethod
    def forward(ctx, weight, bias, *xs):
        n = weight.shape[0]
        ctx.r = n // len(xs)
        ctx.save_for_backward(weight, *xs)
        return tuple(_onednn_mm(xs[i // ctx.r], weight[i].t(), bias[i, 0]) for i in range(n))

    @staticmethod
    @once_differentiable  # no double backward: an error rather than silently wrong second derivatives
    def backward(ctx, *grads):
        weight, *xs = ctx.saved_tensors
        r, n, need = ctx.r, weight.shape[0], ctx.needs_input_grad
        grads = [g.contiguous() for g in grads]
        gw = gb = None
        if need[0]:
            gw = _stack_members([_onednn_outer(xs[i // r], grads[i]) for i in range(n)]).contiguous()
        if need[1]:
            gb = torch.stack([g.sum(0, keepdim=True) for g in grads])
        gxs = []
        for j in range(len(xs)):
            g = None
            if need[2 + j]:
                for i in range(j * r, (j + 1) * r):
                    gi = _onednn_mm(grads[i], weight[i])
                    g = gi if g is None else g + gi
            gxs.append(g)
        return (gw, gb, *gxs)


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: x (n, B, d_in) -> (n, B, d_out).

    x may also hold n / r inputs (n_x, B, d_in) that r consecutive members share (the twin critics' heads read
    the same (s, a)): the oneDNN path reads them without a copy, baddbmm gets them expanded. Each member is
    initialised Xavier-uniform with zero bias (as the official FlowRL code's layers). Members never mix, so stacking
    independently trained models is exact.

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
        """oneDNN may multiply x here: it is chosen ('auto' or 'onednn'), float32 on a CPU, outside autocast."""
        return (self.cpu_matmul != "aten" and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))

    def work(self, x: torch.Tensor) -> int:
        """Multiply-adds per member for input x: rows x d_in x d_out."""
        return x.shape[-2] * self.weight.shape[1] * self.weight.shape[2]

    def uses_onednn(self, x: torch.Tensor) -> bool:
        return self.onednn_eligible(x) and (self.cpu_matmul == "onednn" or self.work(x) >= ONEDNN_MIN_WORK)

    def forward_members(self, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Member by member on oneDNN: (B, d_in) inputs (n of them, or n / r shared by r members) -> n (B, d_out)."""
        _members_per_input(self.weight.shape[0], len(xs), "EnsembleLinear")
        return _OneDNNLinears.apply(self.weight, self.bias, *xs)


def set_cpu_matmul(module: nn.Module, name: str) -> str:
    """Choose the CPU float32 matmul of every EnsembleLinear in `module`: 'auto' (oneDNN for layers of at least
    ONEDNN_MIN_WORK multiply-adds, baddbmm below), 'onednn' (always), 'aten' (never); returns the setting used ('auto'
    becomes 'aten' where oneDNN is missing). Under autocast, on GPUs and in other dtypes the layers use baddbmm."""
    backend = resolve_cpu_matmul(name)
    for m in module.modules():
        if isinstance(m, EnsembleLinear):
            m.cpu_matmul = backend
    return backend


class _MemberAffine(torch.autograd.Function):
    """y = x_hat * weight + bias with per-member (n, 1, d) weight and bias, in x_hat's dtype. The same values and
    gradients as torch.addcmul, whose backward also multiplies two full-size gradients by its scalar `value` (1):
    about 30% of a two-member LayerNorm's forward+backward on CPU, saved here. Under CPU autocast x_hat is bf16
    (layer_norm keeps its input's dtype there, as nn.LayerNorm's output does): y is rounded to bf16 like
    nn.LayerNorm's, and the weight gradients are summed in float32. Under CUDA autocast x_hat is float32."""

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
        return ((grad * weight).to(x_hat.dtype) if need_x else None,
                (grad * x_hat).sum(1, keepdim=True) if need_w else None,
                grad.sum(1, keepdim=True) if need_b else None)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a separate affine transform per member."""

    def __init__(self, n: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, dim))
        self.eps = eps
        # Several members: normalise with a constant unit affine (x * 1 + 0 is exact), then each member's own.
        # layer_norm's backward is ~1.4x faster on CPU with a weight than without one.
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
        return [F.layer_norm(xs[i // r], xs[i // r].shape[-1:], self.weight[i, 0], self.bias[i, 0], self.eps)
                for i in range(n)]


class EnsembleSequential(nn.Sequential):
    """nn.Sequential of ensemble layers (EnsembleLinear, EnsembleLayerNorm) and element-wise activations, (n, B, d) in
    and out. Where its largest EnsembleLinear multiplies with oneDNN (float32 on a CPU, `set_cpu_matmul`), all of them
    do and it runs member by member on lists of (B, d) tensors, so no (n, B, d) activation or gradient is stacked
    between layers and each LayerNorm fuses its member's affine: ~9% of a paper-size FlowRL update on this project's
    CPU. The same parameters and state_dict keys as nn.Sequential, and the same function either way."""

    ELEMENTWISE = (nn.ReLU, nn.ELU, nn.GELU, Mish, nn.Tanh, nn.SiLU, nn.Identity)

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)  # also nn.Sequential's OrderedDict form (slicing makes one)
        bad = [type(m).__name__ for m in self
               if not isinstance(m, (EnsembleLinear, EnsembleLayerNorm, *self.ELEMENTWISE))]
        if bad or not any(isinstance(m, EnsembleLinear) for m in self):
            raise ValueError(f"EnsembleSequential takes EnsembleLinear (at least one), EnsembleLayerNorm and element-wise "
                             f"activations {[c.__name__ for c in self.ELEMENTWISE]}; got {bad or 'no EnsembleLinear'}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # All linears on oneDNN, or none, decided on the largest. Checks are per call: small networks feel them.
        linears = [m for m in self if isinstance(m, EnsembleLinear)]
        if not (linears[0].cpu_matmul != "aten" and all(m.onednn_eligible(x) for m in linears)
                and any(m.uses_onednn(x) for m in linears)):
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
