"""oneDNN's float32 GEMM for the ensemble layers on x86-64 CPUs (`execution.cpu_matmul`).

torch sends CPU float32 matmuls to its default BLAS; x86 builds of torch also ship oneDNN's linear kernel
(`torch.ops.mkldnn._linear_pointwise`, a private op that inductor uses). For an `EnsembleLinear` (flowrl/ensemble.py)
this module computes, member by member, what `torch.baddbmm` computes for all members at once:

    y_i = x_{i // r} @ W_i + b_i,   i = 0 .. n-1,   r = n / len(x)  (r members share an input: the twin critics)

forward and backward each one oneDNN float32 GEMM per product: the same function up to the order of float32 sums
(tested against float64 references and the batched path, values and every gradient). Which path a call takes:

    'aten'    never oneDNN;
    'onednn'  every float32 CPU call outside autocast;
    'auto'    (the default) on CPUs where oneDNN's GEMM measures at least ONEDNN_MIN_SPEEDUP times as fast as the
              default one (`onednn_gemm_speedup`, timed once per process), a network call whose largest layer does
              at least ONEDNN_MIN_WORK multiply-adds per member (rows x d_in x d_out), where oneDNN's per-call cost
              is repaid; smaller calls (acting, small networks) stay on baddbmm. On other CPUs, or where oneDNN is
              missing or fails its check, 'auto' is 'aten'.

GPUs, bf16 autocast, other dtypes and a compiled update (`execution.compile_update`) always take baddbmm.
docs/speed.md has the measurements behind the rule.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CPU_MATMULS = ("auto", "onednn", "aten")
# 'auto' multiplies with oneDNN where a network call's largest layer does at least this many multiply-adds per member:
# a paper-size update (256 rows x 512 x 512) is at it; acting (1 to a few rows) and small networks are far below.
ONEDNN_MIN_WORK = 2**24
# 'auto' uses oneDNN on a CPU only where its float32 GEMM, timed once per process at a paper-size product
# (ONEDNN_PROBE_SHAPE), is at least this many times as fast as torch's default BLAS: the member-by-member path spends
# some of what a faster GEMM gains (copies, more calls), so a small lead does not pay (the CPUs measured, and the
# leads that did and did not pay: docs/speed.md, "cpu_matmul per CPU"). `python bench/bench_speed.py --hidden ...`
# measures whole updates on the machine at hand and names the fastest setting per size; `execution.cpu_matmul` then
# overrides the rule.
ONEDNN_MIN_SPEEDUP = 1.5
ONEDNN_PROBE_SHAPE = (256, 512, 512)  # rows x d_in x d_out: one layer of a paper-size update at batch 256


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor id (e.g. GenuineIntel, AuthenticAMD), from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def onednn_gemm_speedup() -> float:
    """How many times as fast oneDNN's float32 GEMM is as torch's default one (addmm) on this CPU, at
    ONEDNN_PROBE_SHAPE with the weight transposed as the ensemble layers pass it and with this process's current
    thread count: the median of 5 alternating rounds' ratios of the best of 3 timed calls each, after a warm-up;
    some tens of milliseconds, once per process and thread count. 0.0 where oneDNN's kernel is missing."""
    return _gemm_speedup(torch.get_num_threads())


@functools.cache
def _gemm_speedup(threads: int) -> float:
    if not onednn_linear_available():
        return 0.0
    rows, d_in, d_out = ONEDNN_PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)  # its own stream: the probe consumes none of the global RNG
    x = torch.randn(rows, d_in, generator=gen)
    w_t = torch.randn(d_in, d_out, generator=gen).t()  # (d_out, d_in) with transposed strides, as in use
    b = torch.randn(d_out, generator=gen)
    kernels = (lambda: torch.addmm(b, x, w_t.t()), lambda: _onednn_mm(x, w_t, b))

    def best_of(fn, reps=3):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    with torch.no_grad():
        for fn in kernels:
            best_of(fn, 2)  # warm-up: oneDNN builds its primitive at the first call
        ratios = sorted(best_of(kernels[0]) / best_of(kernels[1]) for _ in range(5))
    return ratios[len(ratios) // 2]


def onednn_pays_here() -> bool:
    """Whether 'auto' should use oneDNN for large products on this CPU: its GEMM measured at least ONEDNN_MIN_SPEEDUP
    times as fast as the default one (`onednn_gemm_speedup`)."""
    return onednn_gemm_speedup() >= ONEDNN_MIN_SPEEDUP


@functools.cache
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


def resolve_cpu_matmul(name: str) -> str:
    """'auto' stays 'auto' where oneDNN is available and pays (oneDNN for large layers), else 'aten'; 'onednn'
    (oneDNN for every float32 CPU product, whatever its size) where it is missing is an error."""
    if name not in CPU_MATMULS:
        raise ValueError(f"cpu_matmul={name!r}: choose one of {CPU_MATMULS}")
    if name == "auto":
        return "auto" if onednn_linear_available() and onednn_pays_here() else "aten"
    if name == "onednn" and not onednn_linear_available():
        raise ValueError("cpu_matmul='onednn' but this torch build has no oneDNN linear kernel; use 'aten' or 'auto'")
    return name


def onednn_eligible(backend: str, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN may multiply x by this layer's weight: chosen ('auto' or 'onednn'), float32 on a CPU, outside autocast,
    and not while torch.compile traces (`execution.compile_update`): inductor cannot lower this private op on the
    views a traced update hands it, and it picks the GEMM of the products it sees itself."""
    return (
        backend != "aten"
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


def uses_onednn(backend: str, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The layer with `weight` (n, d_in, d_out) multiplies x (.., rows, d_in) on oneDNN under `backend`."""
    work = x.shape[-2] * weight.shape[1] * weight.shape[2]  # multiply-adds per member
    return onednn_eligible(backend, x, weight) and (backend == "onednn" or work >= ONEDNN_MIN_WORK)


def _onednn_mm(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w_t.T (+ bias) in float32 by oneDNN. x (B, k) is made contiguous (a copy if it is not); w_t (m, k) may have
    any strides."""
    return torch.ops.mkldnn._linear_pointwise(x, w_t, bias, "none", [], "")


def _onednn_outer(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """x.T @ grad, (d_in, d_out), transposing (copying) whichever of the two activations is smaller."""
    if grad.shape[1] < x.shape[1]:
        return _onednn_mm(grad.t(), x.t()).t()
    return _onednn_mm(x.t(), grad.t())


def _stack(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


class OneDNNLinears(torch.autograd.Function):
    """ys[i] = xs[i // r] @ weight[i] + bias[i] for the n members of an EnsembleLinear, from and to lists of (B, d)
    tensors (r = n / len(xs) members share an input: the twin critics' heads read the same (s, a)); every product,
    forward and backward, one oneDNN float32 GEMM. The same function as baddbmm up to reduction order."""

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
            gw = _stack([_onednn_outer(xs[i // r], grads[i]) for i in range(n)]).contiguous()
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


def onednn_linears(weight: torch.Tensor, bias: torch.Tensor, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The n members' products on oneDNN: weight (n, d_in, d_out), bias (n, 1, d_out), xs n or n / r (B, d_in)
    inputs (r consecutive members share each) -> n (B, d_out) outputs, differentiable once."""
    return OneDNNLinears.apply(weight, bias, *xs)
