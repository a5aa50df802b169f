"""The ensemble layers compute, member by member, what torch's own layers compute with the same parameters."""
import pytest
import torch
import torch.nn.functional as F

from flowrl.networks import EnsembleLayerNorm, EnsembleLinear, Mish


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
