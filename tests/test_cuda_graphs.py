"""FlowRL's CUDA-graph update path against the eager one. Needs a CUDA device; skipped elsewhere (CI has none).

The graphed update replays the same kernels on the same inputs (the batch and the update's random draws
are made eagerly, then copied into the graph's static tensors), so it must give the same numbers as the
eager update, keep doing so across the policy/no-policy phases, survive a checkpoint round trip (the graphs
are re-captured against the loaded optimiser state), and batch several seeds like single runs.
"""

import copy
import io

import numpy as np
import pytest
import torch

from flowrl.agents.base import Batch, EnvSpec
from flowrl.agents.flowrl import FlowRL, FlowRLConfig
from flowrl.cuda_graphs import capture_cuda_graph
from flowrl.execution import Execution

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SPEC = EnvSpec(17, 6, -np.ones(6, np.float32), np.ones(6, np.float32))
DEV = "cuda"


def make(seed, n_seeds=1, **execution):
    torch.manual_seed(seed)
    return FlowRL(SPEC, FlowRLConfig(hidden_dim=64), DEV, n_seeds=n_seeds, execution=Execution(**execution))


def batches(n, seed=0, members=None, size=32):
    g = torch.Generator().manual_seed(seed)
    lead = () if members is None else (members,)
    out = []
    for _ in range(n):
        out.append(
            Batch(
                torch.randn(*lead, size, 17, generator=g),
                torch.rand(*lead, size, 6, generator=g) * 2 - 1,
                torch.randn(*lead, size, 1, generator=g),
                torch.randn(*lead, size, 17, generator=g),
                (torch.rand(*lead, size, 1, generator=g) > 0.1).float(),
            )
        )
    return [Batch(*(x.to(DEV) for x in b)) for b in out]


def params(agent):
    return [p.detach().clone() for net in agent._networks().values() for p in net.parameters()]


# bf16 autocast rounds to 8 bits of mantissa: the same kernels still give the same bits, but allow for a
# different cuBLAS algorithm choice inside and outside a capture (never run on a GPU yet).
@pytest.mark.parametrize("amp,tol", [("off", 1e-6), ("bf16", 1e-2)])
def test_graphed_update_equals_eager(amp, tol):
    eager, graphed = make(0, amp=amp, cuda_graphs=False), make(0, amp=amp, cuda_graphs=True)
    assert graphed._graphs is not None and eager._graphs is None
    start = params(eager)
    for step, b in enumerate(batches(14)):  # 3 eager warm-ups per phase, then both graphs captured and replayed
        m_eager, m_graph = eager.update(b, step), graphed.update(b, step)
        assert set(m_eager) == set(m_graph)
        for k in m_eager:
            assert torch.allclose(m_eager[k], m_graph[k], rtol=tol, atol=tol), (step, k)
    assert set(graphed._graphs.graphs) == {"policy", "critics"}
    report = graphed.execution_report()  # each graph passed its check against the eager update
    assert report["cuda_graphs"] == "on" and all(c["passed"] for c in report["graph_check"]["phases"].values()), report
    # Compare what the 14 updates changed (~1e-3 per parameter), not the parameters themselves.
    for p0, p, q in zip(start, params(eager), params(graphed)):
        assert torch.allclose(p - p0, q - p0, rtol=tol, atol=tol * 1e-2)
    for g1, g2 in zip(eager.generators, graphed.generators):
        assert torch.equal(g1.get_state(), g2.get_state())  # the same random draws were consumed


def test_graphed_metrics_are_not_overwritten_by_later_updates():
    agent = make(1)
    bs = batches(12, seed=3)
    kept = [agent.update(b, i) for i, b in enumerate(bs)]
    snapshot = [{k: v.clone() for k, v in m.items()} for m in kept]
    agent.update(bs[0], 12)
    for m, s in zip(kept, snapshot):
        assert all(torch.equal(m[k], s[k]) for k in m)
    assert len({float(m["critic_loss"]) for m in kept[-4:]}) > 1  # replays produce fresh values


def test_graphed_checkpoint_round_trip_continues_identically():
    # float32: graph replays (a) are compared with eager warm-ups (b) bit for bit up to 1e-6.
    a = make(2, amp="off")
    bs = batches(20, seed=5)
    for i in range(10):
        a.update(bs[i], i)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make(99, amp="off")
    b.load_state_dict(torch.load(buf, weights_only=False))
    for i in range(10, 20):
        a.update(bs[i], i)
        b.update(bs[i], i)
    for p, q in zip(params(a), params(b)):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-6)
    # Loading state into a graphed agent re-captures: a further load and update must still track.
    a.load_state_dict(copy.deepcopy(b.state_dict()))  # a copy: loading a live agent's state would share its Adam state
    m_a, m_b = a.update(bs[0], 20), b.update(bs[0], 20)
    assert all(torch.allclose(m_a[k], m_b[k]) for k in m_a)


def test_graphed_seeds_match_graphed_single_runs():
    """Tolerance as tests/test_flowrl_agent.py's stacked check (float32 reduction order), for 12 updates."""
    singles = [make(s, amp="off") for s in range(3)]
    stacked = FlowRL.stack(
        [a.state_dict() for a in singles], SPEC, FlowRLConfig(hidden_dim=64), DEV, execution=Execution(amp="off")
    )
    per_seed = [batches(12, seed=10 + s) for s in range(3)]
    for step in range(12):
        member = stacked.update_members(Batch(*(torch.stack(x) for x in zip(*[p[step] for p in per_seed]))), step)
        for i, a in enumerate(singles):
            m = a.update(per_seed[i][step], step)
            for k, v in m.items():
                assert abs(v.item() - member[k][i].item()) < 1e-4 * (1 + abs(v.item())), (step, k, i)
    for i, a in enumerate(singles):
        single = a.state_dict()
        for net in ("policy", "critic", "value"):
            for k, v in stacked.unstack(i)[net].items():
                assert torch.allclose(v, single[net][k], atol=1e-5), (net, k)


def test_a_real_graph_with_wrong_metrics_is_dropped():
    """The self-check on a real capture: a graph whose metrics come back wrong is caught, and training continues
    eagerly with the numbers of an agent that never had graphs."""

    def wrong_metrics(run):
        replay, output = capture_cuda_graph(run)
        return replay, lambda: output() + 1.0

    plain, faulty = make(3, amp="off", cuda_graphs=False), make(3, amp="off")
    faulty._graphs = faulty.graphed_updates(capture=wrong_metrics)
    with pytest.warns(RuntimeWarning, match="CUDA graphs off, graphed and eager FlowRL update differ"):
        for step, b in enumerate(batches(10, seed=7)):
            m1, m2 = plain.update(b, step), faulty.update(b, step)
            assert all(torch.allclose(m1[k], m2[k], rtol=1e-6, atol=1e-6) for k in m1), step
    report = faulty.execution_report()
    assert report["cuda_graphs"].startswith("off: graphed and eager") and "in " in report["cuda_graphs"], report
    assert report["graph_check"]["phases"]["policy"]["max_abs_metric_diff"] == pytest.approx(1.0, rel=1e-3)
