"""FlowRL agent: shapes, bounds, each loss term against hand-computed cases, target arithmetic, determinism."""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from flowrl.agents.base import Batch, EnvSpec
from flowrl.agents.flowrl import FlowRL, FlowRLConfig, VelocityField
from flowrl.cpu_kernels import onednn_linear_available
from flowrl.execution import Execution

SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=np.array([-2.0, 0.0]), act_high=np.array([1.0, 3.0]))


def make_agent(seed=0, execution=None, **kw):
    torch.manual_seed(seed)
    return FlowRL(SPEC, FlowRLConfig(hidden_dim=16, **kw), execution=execution)


def batch(n=8, seed=1, reward=None, not_done=None):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    action = torch.rand(n, 2, generator=g) * torch.tensor([3.0, 3.0]) + torch.tensor([-2.0, 0.0])
    r = torch.randn(n, 1, generator=g) if reward is None else torch.full((n, 1), float(reward))
    d = torch.ones(n, 1) if not_done is None else torch.full((n, 1), float(not_done))
    return Batch(obs, action, r, torch.randn(n, 3, generator=g), d)


class ConstQ(nn.Module):
    """A twin critic whose heads both output one learnable constant."""

    def __init__(self, value):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(value)))

    def forward(self, obs, action):
        q = self.p + 0.0 * action.sum(-1, keepdim=True)  # constant, but still a function of the action
        return q, q


class ConstV(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(value)))

    def forward(self, obs):
        return self.p + 0.0 * obs[..., :1]


class ZeroVelocity(nn.Module):
    """v = 0 everywhere (with a dummy parameter so the policy loss has something to differentiate)."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, obs, a_t, t):
        return torch.zeros_like(a_t) + 0.0 * self.p

    def integrate(self, obs, a0, steps):
        return a0 + 0.0 * self.p


def test_actions_have_shape_and_respect_asymmetric_bounds():
    agent = make_agent()
    obs = torch.randn(500, 3) * 10
    for deterministic in (False, True):
        a = agent.act(obs, deterministic=deterministic)
        assert a.shape == (500, 2)
        assert torch.all(a >= torch.tensor([-2.0, 0.0])) and torch.all(a <= torch.tensor([1.0, 3.0]))
    # The flow is stochastic: different noise gives different actions for the same state.
    a1, a2 = agent.act(obs[:1].repeat(64, 1)), agent.act(obs[:1].repeat(64, 1))
    assert a1.std(0).sum() > 1e-4 and not torch.allclose(a1, a2)


def test_zero_eval_noise_is_deterministic():
    agent = make_agent(eval_noise="zero")
    obs = torch.randn(4, 3)
    assert torch.equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))


def test_midpoint_integration_exact_for_time_linear_field_and_accurate_for_linear_ode():
    vf = VelocityField(1, 1, 1, 4)
    a0 = torch.tensor([[[0.3], [-1.0]]])  # (members, batch, act)
    obs = torch.zeros(1, 2, 1)
    vf.forward = lambda s, a, t: t  # da/dt = t  ->  a(1) = a0 + 1/2 exactly under the midpoint rule
    assert torch.allclose(vf.integrate(obs, a0, 1), a0 + 0.5)
    assert torch.allclose(vf.integrate(obs, a0, 7), a0 + 0.5, atol=1e-6)
    vf.forward = lambda s, a, t: a  # da/dt = a  ->  one midpoint step gives 2.5 a0; many steps approach e * a0
    assert torch.allclose(vf.integrate(obs, a0, 1), 2.5 * a0)
    assert torch.allclose(vf.integrate(obs, a0, 50), math.e * a0, rtol=1e-3)


def test_expectile_loss_is_asymmetric():
    agent = make_agent(quantile=0.9)

    def loss(*diffs):  # one member, a batch of scalar differences
        return agent.expectile_loss(torch.tensor(diffs).view(1, -1, 1)).item()

    assert loss(2.0) == pytest.approx(0.9 * 4)
    assert loss(-2.0) == pytest.approx(0.1 * 4)
    assert loss(1.0, -1.0) == pytest.approx(0.5)
    # Under-estimating the target costs more than over-estimating it by the same amount.
    assert loss(1.0) > loss(-1.0)


def test_flow_weights_hand_computed():
    qb, qpi = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [0.0]])
    # adv = relu([-1, 3]) = [0, 3]; exp(adv - 1.5) = [e^-1.5, e^1.5]
    raw = torch.tensor([[math.exp(-1.5)], [math.exp(1.5)]])
    w = make_agent(lam=0.1).flow_weights(qb, qpi)
    assert torch.allclose(w, (0.1 * raw).clamp(1e-3, 1.0))
    assert torch.allclose(make_agent(lam=1.0).flow_weights(qb, qpi), torch.tensor([[math.exp(-1.5)], [1.0]]))
    # Paper placement: lambda is not inside the clamp.
    assert torch.allclose(
        make_agent(lam=0.1, lambda_placement="multiplier").flow_weights(qb, qpi),
        torch.tensor([[math.exp(-1.5)], [1.0]]),
    )
    tiny = make_agent(lam=1e-6).flow_weights(qb, qpi)
    assert torch.allclose(tiny, torch.full_like(tiny, 1e-3))  # lower clamp


@pytest.mark.parametrize(
    "flow_loss,placement,expected",
    [
        ("batch_mean", "clamp", [0.1 * 2.25, 0.5 * 2.25]),  # code: w_i * batch-mean MSE
        ("per_sample", "clamp", [0.1 * 0.5, 0.5 * 4.0]),  # paper: w_i * MSE_i
        ("batch_mean", "multiplier", [0.2 * 0.1 * 2.25, 0.2 * 0.5 * 2.25]),
    ],
)
def test_flow_matching_loss_hand_computed(flow_loss, placement, expected):
    agent = make_agent(flow_loss=flow_loss, lambda_placement=placement, lam=0.2)
    agent.policy = ZeroVelocity()  # v = 0, so the error is (a - a0)^2
    action = torch.tensor([[[1.0, 0.0], [2.0, 2.0]]])  # per-sample MSE 0.5 and 4.0, batch mean 2.25
    term = agent.flow_matching_loss(
        torch.zeros(1, 2, 3), action, torch.zeros(1, 2, 2), torch.rand(1, 2, 1), torch.tensor([[[0.1], [0.5]]])
    )
    assert torch.allclose(term.flatten(), torch.tensor(expected))


def test_critic_buffer_critic_and_value_targets_hand_computed():
    agent = make_agent(gamma=0.9, quantile=0.7, target_update_interval=2)
    agent.critic, agent.critic_target = ConstQ(1.0), ConstQ(2.0)
    agent.buffer_critic, agent.buffer_critic_target = ConstQ(-1.0), ConstQ(4.0)
    agent.value = ConstV(3.0)
    b = batch(n=5, reward=0.5, not_done=1.0)
    m = agent.update(b, step=1)  # odd step: no policy/target update
    target = 0.5 + 0.9 * 2.0  # r + gamma * min Q'(s', pi(s'))
    assert m["critic_loss"].item() == pytest.approx(2 * (1.0 - target) ** 2)
    target_b = 0.5 + 0.9 * 3.0  # r + gamma * V_b(s')
    assert m["buffer_critic_loss"].item() == pytest.approx(2 * (-1.0 - target_b) ** 2)
    # V_b regresses toward min Q_b'(s, a) = 4 from 3: diff +1, weight = quantile.
    assert m["value_loss"].item() == pytest.approx(0.7 * 1.0)
    # Terminal transitions do not bootstrap.
    agent2 = make_agent()
    agent2.critic, agent2.critic_target = ConstQ(1.0), ConstQ(2.0)
    m2 = agent2.update(batch(n=5, reward=0.5, not_done=0.0), step=1)
    assert m2["critic_loss"].item() == pytest.approx(2 * (1.0 - 0.5) ** 2)


def test_policy_loss_hand_computed():
    agent = make_agent(lam=0.1, noise_clip=1e-9)  # a_0 ~ 0
    agent.policy = ZeroVelocity()
    agent.critic, agent.critic_target = ConstQ(2.0), ConstQ(2.0)  # Q(s, pi(s)) = 2
    agent.buffer_critic, agent.buffer_critic_target = (
        ConstQ(5.0),
        ConstQ(5.0),
    )  # Q_b(s, a) = 5 -> adv 3 for every sample -> w = clamp(0.1 * e^0) = 0.1
    b = batch(n=6)
    m = agent.update(b, step=0)
    expected = -2.0 + 0.1 * (b.action**2).mean().item()
    assert m["policy_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert m["flow_weight_mean"].item() == pytest.approx(0.1)
    # Without the W2 constraint only -Q remains.
    agent_nc = make_agent(constraint=False)
    agent_nc.critic, agent_nc.critic_target = ConstQ(2.0), ConstQ(2.0)
    assert agent_nc.update(b, step=0)["policy_loss"].item() == pytest.approx(-2.0)


def test_delayed_updates_and_target_arithmetic():
    agent = make_agent(tau=0.95, target_update_interval=2)
    b = batch()
    policy_before = [p.clone() for p in agent.policy.parameters()]
    target_before = [p.clone() for p in agent.critic_target.parameters()]
    btarget_before = [p.clone() for p in agent.buffer_critic_target.parameters()]
    agent.update(b, step=1)  # not a multiple of 2: policy and targets untouched
    assert all(torch.equal(a, p) for a, p in zip(policy_before, agent.policy.parameters()))
    assert all(torch.equal(a, p) for a, p in zip(target_before, agent.critic_target.parameters()))
    agent.update(b, step=2)
    assert any(not torch.equal(a, p) for a, p in zip(policy_before, agent.policy.parameters()))
    for old, new, online in zip(target_before, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.05 * old + 0.95 * online, atol=1e-6)
    for old, new, online in zip(
        btarget_before, agent.buffer_critic_target.parameters(), agent.buffer_critic.parameters()
    ):
        assert torch.allclose(new, 0.05 * old + 0.95 * online, atol=1e-6)


def test_same_seed_same_training_and_state_round_trip():
    a1, a2 = make_agent(seed=3), make_agent(seed=3)
    b = batch()
    torch.manual_seed(7)
    for i in range(4):
        a1.update(b, i)
    torch.manual_seed(7)
    for i in range(4):
        a2.update(b, i)
    for p, q in zip(a1.policy.parameters(), a2.policy.parameters()):
        assert torch.equal(p, q)
    # Round trip: a fresh agent loaded from a1 continues exactly like a1.
    a3 = make_agent(seed=99)
    buf = io.BytesIO()
    torch.save(a1.state_dict(), buf)  # as a checkpoint does (an in-memory state_dict shares optimiser tensors)
    buf.seek(0)
    a3.load_state_dict(torch.load(buf, weights_only=False))
    torch.manual_seed(11)
    m1 = a1.update(b, 4)
    torch.manual_seed(11)
    m3 = a3.update(b, 4)
    assert all(torch.equal(m1[k], m3[k]) for k in m1)
    for p, q in zip(a1.critic.parameters(), a3.critic.parameters()):
        assert torch.equal(p, q)


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="quantile"):
        FlowRLConfig(quantile=1.5)
    with pytest.raises(ValueError, match="flow_steps"):
        FlowRLConfig(flow_steps=0)
    with pytest.raises(ValueError, match="flow_loss"):
        FlowRLConfig(flow_loss="sum")
    with pytest.raises(ValueError, match="activation"):
        FlowRLConfig(value_activation="swishy")
    with pytest.raises(ValueError, match="cpu_matmul"):
        Execution(cpu_matmul="mkl")


def test_forcing_onednn_without_it_fails_at_configuration(monkeypatch):
    """Before a run writes anything: the config is checked when the run's settings are resolved."""
    monkeypatch.setattr("flowrl.cpu_kernels.onednn_linear_available", lambda: False)
    with pytest.raises(ValueError, match="no oneDNN linear kernel; use 'aten' or 'auto'"):
        Execution(cpu_matmul="onednn")
    assert Execution(cpu_matmul="auto").cpu_matmul == "auto"  # auto falls back to aten there
    assert make_agent(execution=Execution(cpu_matmul="auto")).cpu_matmul == "aten"


@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear kernel")
def test_cpu_matmul_backends_train_alike(monkeypatch):
    """oneDNN's float32 GEMMs (the CPU default on AMD CPUs where torch has them) and torch's batched matmul compute
    the same update: after 6 updates (3 policy steps, target updates) parameters agree to float32 rounding. Tolerance
    as in test_stacked_members_train_like_single_seeds: reduction-order differences of ~1e-7 relative drift by a few
    ulps through Adam; 1e-5 is far below the ~3e-4 a single update moves a parameter."""
    from flowrl import cpu_kernels

    calls = []
    real = cpu_kernels.OneDNNLinears.apply
    monkeypatch.setattr(cpu_kernels.OneDNNLinears, "apply", lambda *a: calls.append(1) or real(*a))
    agents = {}
    for backend in ("aten", "onednn"):
        agent = make_agent(seed=3, execution=Execution(cpu_matmul=backend))
        assert agent.cpu_matmul == backend
        torch.manual_seed(5)
        metrics = [agent.update(batch(seed=10 + i), i) for i in range(6)]
        agents[backend] = (agent, metrics)
        assert bool(calls) == (backend == "onednn"), backend  # the comparison is between the two paths
    (a, ma), (o, mo) = agents["aten"], agents["onednn"]
    for step_a, step_o in zip(ma, mo):
        for k in step_a:
            assert abs(step_a[k].item() - step_o[k].item()) < 1e-5 * (1 + abs(step_a[k].item())), k
    for net in ("policy", "critic", "critic_target", "buffer_critic", "buffer_critic_target", "value"):
        for (name, p), q in zip(getattr(a, net).named_parameters(), getattr(o, net).parameters()):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=f"{net}.{name}")
    obs = torch.randn(4, 3)
    torch.testing.assert_close(o.act(obs, deterministic=True), a.act(obs, deterministic=True), rtol=0, atol=1e-5)


def test_stacked_members_train_like_single_seeds():
    """N seeds as one batched model == N single agents, up to float reduction order.

    Tolerance: members differ from single runs only in the order of floating-point reductions inside
    batched matmuls (~1 ulp of float32 per op, ~1e-7 relative); over 10 Adam steps of size lr=3e-4 the
    parameters can drift by a few ulps, so 1e-6 absolute is ~30x the observed 3e-8 yet far below the
    3e-4 change a single update makes.
    """
    singles = []
    for s in range(3):
        torch.manual_seed(s)
        singles.append(FlowRL(SPEC, FlowRLConfig(hidden_dim=16)))
    stacked = FlowRL.stack([a.state_dict() for a in singles], SPEC, FlowRLConfig(hidden_dim=16))
    for step in range(10):
        batches = [batch(seed=100 * step + i) for i in range(3)]
        single_metrics = [a.update(b, step) for a, b in zip(singles, batches)]
        member_metrics = stacked.update_members(Batch(*(torch.stack(x) for x in zip(*batches))), step)
        for i, m in enumerate(single_metrics):
            for k, v in m.items():
                assert abs(v.item() - member_metrics[k][i].item()) < 1e-5 * (1 + abs(v.item())), (k, i)
    for i, a in enumerate(singles):
        member, single = stacked.unstack(i), a.state_dict()
        for net in ("policy", "critic", "critic_target", "buffer_critic", "value"):
            for k in single[net]:
                assert torch.allclose(member[net][k], single[net][k], atol=1e-6), (net, k)
    obs = torch.randn(3, 5, 3)
    acts = stacked.act_members(obs)
    for i, a in enumerate(singles):
        assert torch.allclose(acts[i], a.act(obs[i]), atol=1e-5)
    # An unstacked member continues as a single agent.
    again = FlowRL(SPEC, FlowRLConfig(hidden_dim=16))
    again.load_state_dict(stacked.unstack(2))
    assert torch.allclose(again.act(obs[2], deterministic=True), singles[2].act(obs[2], deterministic=True))


def test_graph_bookkeeping_on_cpu_matches_plain_updates():
    """The CUDA-graph path's bookkeeping (static inputs, one graph per phase, eager warm-up, re-capture after
    a state load) with an eager stand-in for capture, against plain updates: identical on the CPU."""
    from flowrl.cuda_graphs import eager_capture

    plain = make_agent(seed=5)
    graphed = make_agent(seed=5)
    graphed._graphs = graphed.graphed_updates(capture=eager_capture)
    bs = [batch(seed=200 + i) for i in range(12)]
    for step, b in enumerate(bs):
        m1, m2 = plain.update(b, step), graphed.update(b, step)
        assert set(m1) == set(m2) and all(torch.equal(m1[k], m2[k]) for k in m1), step
    assert set(graphed._graphs.graphs) == {"policy", "critics"}  # both phases captured after their warm-ups
    assert graphed.execution_report()["cuda_graphs"] == "on"
    for p, q in zip(plain.policy.parameters(), graphed.policy.parameters()):
        assert torch.equal(p, q)
    buf = io.BytesIO()
    torch.save(plain.state_dict(), buf)  # a copy, as a checkpoint (an in-memory state_dict shares optimiser tensors)
    buf.seek(0)
    graphed.load_state_dict(torch.load(buf, weights_only=False))
    assert graphed._graphs.graphs == {}  # optimiser tensors were replaced: graphs must be captured again
    for step, b in enumerate(bs, start=12):
        m1, m2 = plain.update(b, step), graphed.update(b, step)
        assert all(torch.equal(m1[k], m2[k]) for k in m1), step


def test_failed_graph_capture_falls_back_to_eager_updates():
    def broken_capture(run):
        raise RuntimeError("operation not permitted when stream is capturing")

    plain, graphed = make_agent(seed=6), make_agent(seed=6)
    graphed._graphs = graphed.graphed_updates(capture=broken_capture)
    with pytest.warns(RuntimeWarning, match="CUDA graphs off, capture failed"):
        for step in range(10):
            b = batch(seed=300 + step)
            m1, m2 = plain.update(b, step), graphed.update(b, step)
            assert all(torch.equal(m1[k], m2[k]) for k in m1), step
    assert graphed._graphs.graphs == {}
    assert graphed.execution_report()["cuda_graphs"].startswith("off: capture failed (operation not permitted")


def test_loaded_state_keeps_this_agents_optimizer_settings():
    """Optimizer.load_state_dict would take fused/capturable from the file: a checkpoint written with CUDA graphs
    (capturable) or by an older version (not fused) must still load into an agent that keeps its own settings."""
    import copy

    a = make_agent(4)
    for i in range(3):
        a.update(batch(seed=10 + i), i)
    state = copy.deepcopy(a.state_dict())
    for name in ("policy_opt", "critic_opt", "buffer_critic_opt", "value_opt"):
        for group in state[name]["param_groups"]:
            group.update(fused=False, capturable=True)
    b = make_agent(5)
    b.load_state_dict(state)
    for opt in b._optimizers().values():
        assert all(g["fused"] is True and g["capturable"] is False for g in opt.param_groups)
    for i in range(3, 6):  # and training continues exactly as the agent that wrote the state
        m_a, m_b = a.update(batch(seed=10 + i), i), b.update(batch(seed=10 + i), i)
        assert all(torch.equal(m_a[k], m_b[k]) for k in m_a)


def test_one_backward_gives_each_critic_side_network_the_gradient_of_its_own_loss():
    """update_step takes one backward of Q's, Q_b's and V_b's summed losses. That equals three backwards in turn only
    if each loss reaches its own network's weights and no other's (targets, V_b(s') and pi(s') under no_grad): checked
    per network against the gradient of its loss alone, and every other loss's gradient there is absent."""
    from tests.conftest import SPEC as BATCH_SPEC
    from tests.conftest import make_batch

    torch.manual_seed(0)
    agent = FlowRL(BATCH_SPEC, FlowRLConfig(hidden_dim=16), "cpu")
    batch = Batch(*(x.unsqueeze(0) for x in make_batch(32, seed=3)))
    losses = agent.critic_losses(batch, agent.update_noise(32, policy_phase=False))
    own = {"critic_loss": agent.critic, "buffer_critic_loss": agent.buffer_critic, "value_loss": agent.value}
    total = sum(losses[k] for k in own).sum()
    for name, net in own.items():
        params = list(net.parameters())
        summed = torch.autograd.grad(total, params, retain_graph=True)
        alone = torch.autograd.grad(losses[name].sum(), params, retain_graph=True)
        for g_sum, g_alone in zip(summed, alone, strict=True):
            assert g_alone.abs().sum() > 0, name  # the loss trains its network
            torch.testing.assert_close(g_sum, g_alone, rtol=0, atol=0)
        for other in own.keys() - {name}:
            grads = torch.autograd.grad(losses[other].sum(), params, retain_graph=True, allow_unused=True)
            assert all(g is None for g in grads), f"{other} reaches {name}'s network"
    for frozen in (agent.policy, agent.critic_target, agent.buffer_critic_target):
        assert all(p.grad is None for p in frozen.parameters())
