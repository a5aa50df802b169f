"""The CUDA-graph self-check (flowrl/cuda_graphs.py) on CPUs: before a graph is used, one graphed and one eager
update from the same state are compared; a graph that differs beyond the tolerance, or fails to capture or
replay, is dropped with a warning and recorded. Faults are injected through `FlowRL.graphed_updates(capture=...)`,
the same code path a CUDA capture takes; `eager_capture` stands in for a correct graph."""

import csv
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch

from flowrl.agents.base import Batch, EnvSpec
from flowrl.agents.flowrl import FlowRL, FlowRLConfig
from flowrl.cuda_graphs import BF16_RTOL, FLOAT32_RTOL, compare_steps, eager_capture
from flowrl.execution import Execution

SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=np.array([-2.0, 0.0]), act_high=np.array([1.0, 3.0]))
STEPS = 12  # 3 eager warm-ups per phase, then each phase's capture + check (steps 6 and 7), then replays


def make_agent(seed=0, **execution):
    torch.manual_seed(seed)
    return FlowRL(SPEC, FlowRLConfig(hidden_dim=16), execution=Execution(**execution))


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(8, 3, generator=g),
        torch.rand(8, 2, generator=g) * 3 - 2 + torch.tensor([0.0, 2.0]),
        torch.randn(8, 1, generator=g),
        torch.randn(8, 3, generator=g),
        torch.ones(8, 1),
    )


def counting(capture, counter):
    """`capture` whose replays are counted in counter["replays"]."""

    def wrapped(run):
        replay, output = capture(run)

        def counted():
            counter["replays"] = counter.get("replays", 0) + 1
            replay()

        return counted, output

    return wrapped


def assert_same_run(plain, graphed, start=0, steps=STEPS):
    """Every update of `graphed` gives exactly the metrics of `plain` (the trusted eager agent), and both end in the
    same parameters, optimiser state and random streams."""
    for step in range(start, start + steps):
        b = batch(100 + step)
        m1, m2 = plain.update(b, step), graphed.update(b, step)
        assert set(m1) == set(m2) and all(torch.equal(m1[k], m2[k]) for k in m1), step
    s1, s2 = plain.state_dict(), graphed.state_dict()
    for net in ("policy", "critic", "critic_target", "buffer_critic", "buffer_critic_target", "value"):
        assert all(torch.equal(s1[net][k], s2[net][k]) for k in s1[net]), net
    for opt in ("policy_opt", "critic_opt", "buffer_critic_opt", "value_opt"):
        for i, st in s1[opt]["state"].items():
            assert all(torch.equal(v, s2[opt]["state"][i][k]) for k, v in st.items()), opt
    assert all(torch.equal(g1.get_state(), g2.get_state()) for g1, g2 in zip(plain.generators, graphed.generators))


def test_a_correct_graph_passes_its_check_and_the_run_is_the_eager_run():
    counter = {}
    plain, graphed = make_agent(5), make_agent(5)
    graphed._graphs = graphed.graphed_updates(capture=counting(eager_capture, counter))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a passing check warns about nothing
        assert_same_run(plain, graphed)
    report = graphed.execution_report()
    assert report["cuda_graphs"] == "on"
    assert report["graph_check"]["rtol"] == FLOAT32_RTOL
    for phase in ("policy", "critics"):
        check = report["graph_check"]["phases"][phase]
        assert check["passed"] and check["checks"] == 1
        assert check["max_rel_state_diff"] == check["max_abs_metric_diff"] == 0.0
    assert counter["replays"] == STEPS - 6  # each update from the checks on replayed its graph once
    json.dumps(report, allow_nan=False)  # plain data for the manifest

    # A state load drops the graphs; the next capture is checked again.
    buf = io.BytesIO()
    torch.save(plain.state_dict(), buf)
    buf.seek(0)
    graphed.load_state_dict(torch.load(buf, weights_only=False))
    assert_same_run(plain, graphed, start=STEPS)
    assert all(c["checks"] == 2 and c["passed"] for c in graphed.execution_report()["graph_check"]["phases"].values())


def test_bf16_autocast_gets_the_bf16_tolerance():
    assert make_agent(amp="bf16").graphed_updates().report()["graph_check"]["rtol"] == BF16_RTOL
    assert FLOAT32_RTOL < BF16_RTOL < 0.5  # below what a doubled update (0.5) or a skipped one (1) scores


def perturbing_capture(agent, counter):
    """A graph whose replay also nudges the policy's first weight (as a graph writing a wrong tensor would)."""
    first = next(agent.policy.parameters())

    def capture(run):
        replay, output = eager_capture(run)

        def bad_replay():
            counter["replays"] = counter.get("replays", 0) + 1
            replay()
            with torch.no_grad():
                first.add_(1e-2)

        return bad_replay, output

    return capture


def test_a_graph_that_changes_a_parameter_is_dropped_and_recorded():
    counter = {}
    plain, graphed = make_agent(6), make_agent(6)
    graphed._graphs = graphed.graphed_updates(capture=perturbing_capture(graphed, counter))
    differ = r"CUDA graphs off, graphed and eager FlowRL update differ by .* in policy\."
    with pytest.warns(RuntimeWarning, match=differ):
        assert_same_run(plain, graphed)  # the check step continues from the eager update: nothing of the graph stays
    assert counter["replays"] == 1  # the check's replay only; every later update ran eagerly
    report = graphed.execution_report()
    assert report["cuda_graphs"].startswith("off: graphed and eager FlowRL update differ by")
    check = report["graph_check"]["phases"]["policy"]  # the first phase to be captured (step 6)
    assert not check["passed"] and check["worst_state"].startswith("policy.")
    assert check["max_rel_state_diff"] > FLOAT32_RTOL and check["max_abs_state_diff"] == pytest.approx(1e-2, rel=1e-3)
    assert "critics" not in report["graph_check"]["phases"]  # never captured once graphs were off
    json.dumps(report, allow_nan=False)


def metric_offset_capture(offset):
    """A graph whose first metric comes back `offset` too large."""

    def capture(run):
        replay, output = eager_capture(run)

        def wrong_output():
            flat = output().clone()
            flat[0] += offset
            return flat

        return replay, wrong_output

    return capture


@pytest.mark.parametrize("offset,passes", [(1e-5, True), (1e-1, False)])
def test_metric_differences_are_held_to_the_tolerance(offset, passes):
    plain, graphed = make_agent(7), make_agent(7)
    graphed._graphs = graphed.graphed_updates(capture=metric_offset_capture(offset))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(8):  # up to both checks
            b = batch(300 + step)
            plain.update(b, step)
            graphed.update(b, step)
    assert any("CUDA graphs off" in str(w.message) for w in caught) != passes
    report = graphed.execution_report()
    check = report["graph_check"]["phases"]["policy"]
    assert check["passed"] == passes and check["max_rel_state_diff"] == 0.0
    assert check["max_abs_metric_diff"] == pytest.approx(offset, rel=0.1)
    assert check["worst_metric"] == "critic_loss"  # the first metric the update returns
    if passes:
        assert report["cuda_graphs"] == "on"
    else:
        assert report["cuda_graphs"].startswith("off: graphed and eager") and "in critic_loss" in report["cuda_graphs"]


def test_capture_and_replay_errors_fall_back_through_the_same_path():
    def broken_capture(run):
        raise RuntimeError("operation not permitted when stream is capturing")

    def failing_replay_capture(run):
        replay, output = eager_capture(run)

        def replay_then_fail():
            replay()  # the state is half-updated when the error comes: the check must restore it
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        return replay_then_fail, output

    for capture, reason in [
        (broken_capture, "capture failed (operation not permitted"),
        (failing_replay_capture, "replay failed (CUDA error: an illegal memory access"),
    ]:
        plain, graphed = make_agent(8), make_agent(8)
        graphed._graphs = graphed.graphed_updates(capture=capture)
        with pytest.warns(RuntimeWarning, match="CUDA graphs off"):
            assert_same_run(plain, graphed)
        assert graphed.execution_report()["cuda_graphs"].startswith(f"off: {reason}")


def cpu_report(report: dict) -> dict:
    """`report` without its cpu_matmul entry (what cpu_matmul=auto chose: machine-dependent), checked for form."""
    report = dict(report)
    assert report.pop("cpu_matmul").startswith(("aten (auto:", "auto: oneDNN")), report
    return report


def test_reports_without_graphs():
    unknown = "off (auto): the run's length is unknown here (set compile_update=true to compile)"
    assert cpu_report(make_agent().execution_report()) == {
        "cuda_graphs": "off: not on CUDA (device cpu)",
        "compile_update": unknown,
    }
    off = make_agent(cuda_graphs=False).execution_report()
    assert cpu_report(off) == {"cuda_graphs": "off: execution.cuda_graphs=false", "compile_update": unknown}
    pending = make_agent().graphed_updates().report()
    assert pending["cuda_graphs"].startswith("pending:") and pending["graph_check"]["phases"] == {}


def test_compare_steps_scores_known_faults():
    before = {"w": torch.zeros(4)}
    update = torch.tensor([1e-3, -2e-3, 3e-3, 0.0])
    same = compare_steps(before, {"w": update.clone()}, {"w": update.clone()}, {}, {})
    assert same["max_rel_state_diff"] == 0.0 and same["worst_state"] is None
    skipped = compare_steps(before, {"w": torch.zeros(4)}, {"w": update}, {}, {})
    assert skipped["max_rel_state_diff"] == pytest.approx(1.0) and skipped["worst_state"] == "w"
    doubled = compare_steps(before, {"w": 2 * update}, {"w": update}, {}, {})
    assert doubled["max_rel_state_diff"] == pytest.approx(0.5)
    nan = compare_steps(
        before,
        {"w": torch.full((4,), math.nan)},
        {"w": update},
        {"m": torch.ones(2)},
        {"m": torch.tensor([1.0, math.nan])},
    )
    assert nan["max_rel_state_diff"] == math.inf and nan["max_rel_metric_diff"] == math.inf
    both_nan = compare_steps(before, {"w": torch.full((4,), math.nan)}, {"w": torch.full((4,), math.nan)}, {}, {})
    assert both_nan["max_rel_state_diff"] == 0.0  # a diverged step diverges the same way in both: no graph fault
    missing = compare_steps(before, {"w": update}, {"w": update}, {"a": torch.ones(1)}, {"b": torch.ones(1)})
    assert missing["max_rel_metric_diff"] == math.inf and "not in both" in missing["worst_metric"]


class _FaultyGraphFlowRL(FlowRL):
    """FlowRL whose graphs (run on a CPU through the stand-in) write a wrong parameter: what a run records."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._graphs = self.graphed_updates(capture=perturbing_capture(self, {}))


def test_a_run_records_the_fallback_in_its_manifest_and_trains_as_eager(tmp_path):
    pytest.importorskip("dm_control")  # e.g. on a GPU machine with only PyTorch (scripts/gpu-check.sh runs this file)
    from flowrl.agents.registry import register_agent
    from flowrl.cli import main as cli_main

    register_agent("flowrl-faulty-graphs-test", _FaultyGraphFlowRL)
    tiny = (
        "--task dmc:cartpole-balance --seed 3 --no-progress --steps 260 start_steps=150 batch_size=16 "
        "eval_every=1000 eval_at_start=false eval_episodes=1 log_every=50 agent.hidden_dim=16 "
        "torch_threads=1"
    ).split()
    with pytest.warns(RuntimeWarning, match="CUDA graphs off"):
        assert cli_main(["--algo", "flowrl-faulty-graphs-test", "--out", str(tmp_path / "faulty"), *tiny]) == 0
    assert cli_main(["--algo", "flowrl", "--out", str(tmp_path / "plain"), *tiny]) == 0
    faulty = json.loads((tmp_path / "faulty" / "manifest.json").read_text())["sessions"][-1]["execution"]
    assert faulty["cuda_graphs"].startswith("off: graphed and eager FlowRL update differ by")
    assert faulty["graph_check"]["phases"]["policy"]["max_abs_state_diff"] == pytest.approx(1e-2, rel=1e-3)
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())["sessions"][-1]["execution"]
    assert cpu_report(plain) == {  # compile_update=auto decided by the run's 260 - 150 planned updates
        "cuda_graphs": "off: not on CUDA (device cpu)",
        "compile_update": "off (auto): 110 updates planned, fewer than 20000, so compiling would not pay",
    }

    def rows(run):
        with open(tmp_path / run / "train.csv") as f:
            return [{k: v for k, v in r.items() if "per_s" not in k and "time" not in k} for r in csv.DictReader(f)]

    assert rows("faulty") == rows("plain") and len(rows("plain")) >= 2  # the fallback changed no number
