"""The ensemble layers compute, member by member, what torch's own layers compute with the same parameters."""

import pytest
import torch
import torch.nn.functional as F

from flowrl.cpu_kernels import onednn_linear_available, resolve_cpu_matmul
from flowrl.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleSequential, set_cpu_matmul
from flowrl.networks import Mish


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ensemble_layer_norm_matches_layer_norm_per_member(n):
    torch.manual_seed(0)
    ln = EnsembleLayerNorm(n, 16)
    with torch.no_grad():  # members with different affines, so a mix-up between members would show
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(n, 5, 16, requires_grad=True)
    grad = torch.randn(n, 5, 16)
    ln(x).backward(grad)

    for i in range(n):
        xi = x.detach()[i].clone().requires_grad_(True)
        w = ln.weight.detach()[i, 0].clone().requires_grad_(True)
        b = ln.bias.detach()[i, 0].clone().requires_grad_(True)
        y = F.layer_norm(xi, (16,), w, b, ln.eps)
        y.backward(grad[i])
        torch.testing.assert_close(ln(x.detach())[i], y.detach())
        torch.testing.assert_close(x.grad[i], xi.grad)
        torch.testing.assert_close(ln.weight.grad[i, 0], w.grad)
        torch.testing.assert_close(ln.bias.grad[i, 0], b.grad)


@pytest.mark.parametrize("n", [1, 2])
def test_ensemble_layer_norm_under_cpu_autocast_behaves_like_nn_layer_norm(n):
    """Under CPU bf16 autocast nn.LayerNorm keeps its bf16 input's dtype; so do both of our paths (one member:
    layer_norm's own affine; several: the member affine), with float32 parameter gradients."""
    torch.manual_seed(0)
    ln = EnsembleLayerNorm(n, 16)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(n, 5, 16, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(n, 5, 16, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ln(x)
    y.backward(grad)
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert ln.weight.grad.dtype == torch.float32 and ln.bias.grad.dtype == torch.float32
    for i in range(n):
        ref = torch.nn.LayerNorm(16)
        with torch.no_grad():
            ref.weight.copy_(ln.weight[i, 0])
            ref.bias.copy_(ln.bias[i, 0])
        xi = x.detach()[i].clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yi = ref(xi)
        yi.backward(grad[i])
        assert yi.dtype == torch.bfloat16
        torch.testing.assert_close(y[i].float(), yi.float(), atol=0.02, rtol=0.02)  # bf16 rounding
        torch.testing.assert_close(x.grad[i].float(), xi.grad.float(), atol=0.05, rtol=0.02)
        torch.testing.assert_close(ln.weight.grad[i, 0], ref.weight.grad, atol=0.05, rtol=0.02)
        torch.testing.assert_close(ln.bias.grad[i, 0], ref.bias.grad, atol=0.05, rtol=0.02)


def test_ensemble_layer_norm_frozen_affine_still_passes_input_gradients():
    torch.manual_seed(0)
    ln = EnsembleLayerNorm(2, 8).requires_grad_(False)  # as the critic inside FlowRL's policy step
    x = torch.randn(2, 4, 8, requires_grad=True)
    ln(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert ln.weight.grad is None and ln.bias.grad is None
    assert set(ln.state_dict()) == {"weight", "bias"}  # the unit affine is not saved in checkpoints


def test_ensemble_linear_matches_linear_per_member():
    torch.manual_seed(0)
    lin = EnsembleLinear(3, 7, 4)
    with torch.no_grad():
        lin.bias.normal_()
    x = torch.randn(3, 5, 7)
    y = lin(x)
    for i in range(3):
        torch.testing.assert_close(y[i], F.linear(x[i], lin.weight[i].T, lin.bias[i, 0]))


def test_mish_is_torch_mish():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    torch.testing.assert_close(Mish()(x), F.mish(x))


onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear kernel")


def _members(n, d_in, d_out, backend):
    torch.manual_seed(0)
    lin = EnsembleLinear(n, d_in, d_out)
    with torch.no_grad():
        lin.bias.normal_()
    lin.cpu_matmul = backend
    return lin


@onednn
@pytest.mark.parametrize(
    "n, n_x, d_in, d_out", [(1, 1, 7, 4), (2, 2, 9, 5), (3, 3, 6, 1), (4, 2, 5, 3), (2, 1, 40, 30)]
)
def test_onednn_ensemble_linear_matches_baddbmm_values_and_gradients(n, n_x, d_in, d_out):
    """Member i of the oneDNN path computes x[i // r] @ W[i] + b[i] (r = n / n_x members share an input, as the twin
    critics' heads do), with every gradient, to float32 precision. Shapes on both sides of d_in vs d_out (the weight
    gradient transposes the smaller activation)."""
    x = torch.randn(n_x, 6, d_in, dtype=torch.float64)
    grad = torch.randn(n, 6, d_out, dtype=torch.float64)
    results = {}
    for backend in ("aten", "onednn"):
        lin = _members(n, d_in, d_out, backend)
        xi = x.float().requires_grad_(True)
        y = lin(xi)
        y.backward(grad.float())
        results[backend] = (y.detach(), xi.grad, lin.weight.grad, lin.bias.grad)
    # float64 reference, member by member
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    r = n // n_x
    ref_y = torch.stack([x[i // r] @ w[i] + b[i] for i in range(n)])
    ref_gx = torch.stack([sum(grad[i] @ w[i].T for i in range(j * r, (j + 1) * r)) for j in range(n_x)])
    ref_gw = torch.stack([x[i // r].T @ grad[i] for i in range(n)])
    ref_gb = grad.sum(1, keepdim=True)
    for backend, got in results.items():
        for value, ref in zip(got, (ref_y, ref_gx, ref_gw, ref_gb)):
            assert value.dtype == torch.float32 and value.shape == ref.shape, backend
            # float32 rounding of sums of ~40 terms: ~1e-6 relative; bf16 arithmetic would be off by ~1e-2
            torch.testing.assert_close(value.double(), ref, rtol=2e-5, atol=2e-5, msg=backend)


@onednn
def test_onednn_ensemble_linear_skips_gradients_nobody_asked_for():
    lin = _members(2, 5, 3, "onednn").requires_grad_(False)  # a frozen critic: gradients to the input only
    x = torch.randn(2, 4, 5, requires_grad=True)
    lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is None and lin.bias.grad is None
    lin.requires_grad_(True)
    x = torch.randn(2, 4, 5)  # an observation: no input gradient
    lin(x).sum().backward()
    assert lin.weight.grad is not None and lin.bias.grad is not None


@onednn
def test_onednn_path_is_left_under_autocast_and_in_other_dtypes(monkeypatch):
    """bf16 autocast and float64 use baddbmm (autocast casts it; oneDNN's kernel here is the float32 one)."""
    lin = _members(2, 5, 3, "onednn")
    calls = []
    monkeypatch.setattr(
        "flowrl.cpu_kernels.OneDNNLinears.apply", lambda *a: calls.append(1) or pytest.fail("oneDNN used")
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(torch.randn(2, 4, 5)).dtype == torch.bfloat16
    assert lin.double()(torch.randn(2, 4, 5, dtype=torch.float64)).dtype == torch.float64
    assert not calls


@onednn
@pytest.mark.parametrize("n", [1, 2])
def test_ensemble_sequential_member_by_member_is_the_batched_network(n):
    """On the oneDNN path EnsembleSequential runs member by member (lists of (B, d)): the same outputs, input and
    parameter gradients as the batched (n, B, d) network, to float32 rounding."""

    def net():
        torch.manual_seed(1)
        seq = EnsembleSequential(
            EnsembleLinear(2 * n, 6, 16),
            EnsembleLayerNorm(2 * n, 16),
            torch.nn.GELU(),
            EnsembleLinear(2 * n, 16, 16),
            EnsembleLayerNorm(2 * n, 16),
            torch.nn.ELU(),
            EnsembleLinear(2 * n, 16, 1),
        )
        with torch.no_grad():
            for p in seq.parameters():
                p.add_(0.1 * torch.randn_like(p))  # distinct members, LayerNorm affines included
        return seq

    x = torch.randn(n, 8, 6)
    out = {}
    for backend in ("aten", "onednn"):
        seq = net()
        assert set_cpu_matmul(seq, backend) == backend
        xi = x.clone().requires_grad_(True)
        y = seq(xi)  # n inputs, each shared by two members (the twin critics' layout)
        y.pow(2).sum().backward()
        out[backend] = [y.detach(), xi.grad] + [p.grad for p in seq.parameters()]
    assert out["onednn"][0].shape == (2 * n, 8, 1)
    for a, b in zip(out["aten"], out["onednn"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@onednn
def test_auto_takes_onednn_for_large_products_only(monkeypatch):
    """'auto': oneDNN where rows x d_in x d_out >= ONEDNN_MIN_WORK (where it beats batched matmul), baddbmm below
    (acting, small networks); EnsembleSequential decides on its largest layer and then runs all its layers on one
    path."""
    from flowrl import cpu_kernels

    calls = []
    real = cpu_kernels.OneDNNLinears.apply
    monkeypatch.setattr(cpu_kernels.OneDNNLinears, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(cpu_kernels, "onednn_gemm_speedup", lambda: 2.0)  # a CPU where 'auto' uses oneDNN
    big = EnsembleLinear(2, 512, 512)
    assert set_cpu_matmul(big, "auto") == "auto"
    rows = cpu_kernels.ONEDNN_MIN_WORK // (512 * 512)
    with torch.no_grad():
        big(torch.randn(2, rows - 1, 512))
        assert calls == []
        big(torch.randn(2, rows, 512))
        assert calls == [(2, 512, 512)]
        seq = EnsembleSequential(
            EnsembleLinear(1, 7, 512), torch.nn.GELU(), EnsembleLinear(1, 512, 512), EnsembleLinear(1, 512, 1)
        )
        set_cpu_matmul(seq, "auto")
        seq(torch.randn(1, 1, 7))  # acting: one row
        assert len(calls) == 1
        seq(torch.randn(1, rows, 7))
        assert [c[1:] for c in calls[1:]] == [(7, 512), (512, 512), (512, 1)]


@onednn
def test_auto_uses_onednn_only_where_its_gemm_measures_well_ahead(monkeypatch):
    from flowrl import cpu_kernels

    speedup = cpu_kernels.onednn_gemm_speedup()  # the real probe, on this machine
    assert 0.05 < speedup < 20, speedup  # a ratio of two timings of the same product, not a placeholder
    assert cpu_kernels.onednn_gemm_speedup() == speedup  # measured once per process
    assert resolve_cpu_matmul("auto") == ("auto" if speedup >= cpu_kernels.ONEDNN_MIN_SPEEDUP else "aten")
    for measured, expected in [(2.0, "auto"), (1.5, "auto"), (1.2, "aten"), (0.8, "aten")]:
        monkeypatch.setattr(cpu_kernels, "onednn_gemm_speedup", lambda m=measured: m)
        assert resolve_cpu_matmul("auto") == expected, measured
        assert set_cpu_matmul(EnsembleLinear(2, 512, 512), "auto") == expected
        assert resolve_cpu_matmul("onednn") == "onednn"  # forcing it works on any CPU that has the kernel
    # Each run's manifest says which kernel auto chose and the timing it went by (execution_report).
    import numpy as np

    from flowrl.agents.base import EnvSpec
    from flowrl.agents.flowrl import FlowRL, FlowRLConfig

    spec = EnvSpec(3, 2, -np.ones(2, np.float32), np.ones(2, np.float32))
    for measured, start in [
        (2.0, "auto: oneDNN for calls of >= 2^24"),
        (1.2, "aten (auto: oneDNN's GEMM measured 1.20x"),
    ]:
        monkeypatch.setattr(cpu_kernels, "onednn_gemm_speedup", lambda m=measured: m)
        report = FlowRL(spec, FlowRLConfig(hidden_dim=8)).execution_report()["cpu_matmul"]
        assert report.startswith(start), report
    forced = FlowRL(spec, FlowRLConfig(hidden_dim=8), execution=FlowRL.Execution(cpu_matmul="aten"))
    assert forced.execution_report()["cpu_matmul"] == "aten (set)"


def test_cpu_matmul_names_are_checked(monkeypatch):
    assert resolve_cpu_matmul("aten") == "aten"
    with pytest.raises(ValueError, match="choose one of"):
        resolve_cpu_matmul("mkl")
    monkeypatch.setattr("flowrl.cpu_kernels.onednn_linear_available", lambda: False)
    assert resolve_cpu_matmul("auto") == "aten"
    with pytest.raises(ValueError, match="no oneDNN linear kernel; use 'aten' or 'auto'"):
        resolve_cpu_matmul("onednn")


@onednn
def test_float32_cpu_layers_do_take_the_onednn_path(monkeypatch):
    """The comparisons above would pass if the oneDNN path were never taken: count its calls."""
    from flowrl import cpu_kernels

    calls = []
    real = cpu_kernels.OneDNNLinears.apply
    monkeypatch.setattr(cpu_kernels.OneDNNLinears, "apply", lambda *a: calls.append(len(a) - 2) or real(*a))
    lin = _members(2, 5, 3, "onednn")
    lin(torch.randn(1, 4, 5)).sum().backward()
    assert calls == [1]  # one shared input for the two members
    seq = EnsembleSequential(EnsembleLinear(2, 5, 8), EnsembleLayerNorm(2, 8), torch.nn.GELU(), EnsembleLinear(2, 8, 1))
    assert set_cpu_matmul(seq, "onednn") == "onednn"
    seq(torch.randn(2, 4, 5))
    assert calls == [1, 2, 2]
    set_cpu_matmul(seq, "aten")
    seq(torch.randn(2, 4, 5))
    assert calls == [1, 2, 2]


@onednn
def test_onednn_linear_refuses_double_backward():
    lin = _members(2, 5, 3, "onednn")
    x = torch.randn(2, 4, 5, requires_grad=True)
    (g,) = torch.autograd.grad(lin(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward|once_differentiable|twice"):
        g.pow(2).sum().backward()


def test_ensemble_sequential_takes_only_layers_it_can_run_member_by_member():
    with pytest.raises(ValueError, match="Softmax"):
        EnsembleSequential(EnsembleLinear(2, 5, 3), torch.nn.Softmax(dim=-1))
    with pytest.raises(ValueError, match="no EnsembleLinear"):
        EnsembleSequential(torch.nn.GELU())
    seq = EnsembleSequential(EnsembleLinear(2, 5, 3), torch.nn.GELU(), EnsembleLinear(2, 3, 1))
    assert isinstance(seq[:1], EnsembleSequential)
    with pytest.raises(ValueError, match="2 members given 3 inputs"):
        seq(torch.randn(3, 4, 5))


@onednn
def test_shared_inputs_reach_every_member_through_a_leading_layer_norm():
    """A sequential that begins with a LayerNorm broadcasts a shared input to every member on both paths."""
    out = {}
    for backend in ("aten", "onednn"):
        torch.manual_seed(2)
        seq = EnsembleSequential(EnsembleLayerNorm(2, 6), EnsembleLinear(2, 6, 3))
        with torch.no_grad():
            seq[0].weight.normal_()
        set_cpu_matmul(seq, backend)
        out[backend] = seq(torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(0)))
    assert out["onednn"].shape == (2, 4, 3)
    torch.testing.assert_close(out["onednn"], out["aten"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 members given 3 inputs"):
        seq[0].forward_members(list(torch.randn(3, 4, 6)))
