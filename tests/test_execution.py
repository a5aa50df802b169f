"""Execution settings (flowrl/execution.py) live apart from the hyperparameters: they may differ on resume, configs
saved with them among the hyperparameters (agent.amp, ...) are read in the new layout, and old spellings on the
command line are refused with the new name. Resuming a run with other settings: tests/test_runner.py."""

import dataclasses
import re

import numpy as np
import pytest
import torch

from flowrl.agents.base import EnvSpec
from flowrl.agents.flowrl import FlowRL
from flowrl.agents.registry import make_agent
from flowrl.config import (
    config_diff,
    config_to_dict,
    resolve_config,
    resume_config,
    with_current_defaults,
    with_execution_section,
)
from flowrl.cpu_kernels import onednn_linear_available
from flowrl.execution import COMPILE_AUTO_MIN_UPDATES, Execution, decide_compile, planned_updates

MOVED = ("amp", "act_precision", "cuda_graphs", "graph_warmup", "cpu_matmul")


def old_layout(cfg_dict: dict) -> dict:
    """A config as written before the execution: section: its settings among the agent's hyperparameters."""
    old = {k: v for k, v in cfg_dict.items() if k != "execution"}
    old["agent"] = {**cfg_dict["agent"], **cfg_dict["execution"]}
    return old


def test_execution_settings_are_not_hyperparameters():
    cfg = resolve_config({"algo": "flowrl", "execution": {"amp": "bf16", "cuda_graphs": False}})
    assert not any(hasattr(cfg.agent, k) for k in MOVED)
    assert (cfg.execution.amp, cfg.execution.cuda_graphs) == ("bf16", False)
    saved = config_to_dict(cfg)
    assert set(saved["execution"]) == {*MOVED, "compile_update"}  # compile_update came after the move
    # Another execution setting is no difference on resume; another hyperparameter is.
    other = config_to_dict(resolve_config({"algo": "flowrl", "execution": {"cpu_matmul": "aten"}}))
    assert config_diff(with_current_defaults(saved), other) == []
    changed = config_to_dict(resolve_config({"algo": "flowrl", "agent": {"lam": 0.5}}))
    assert config_diff(with_current_defaults(saved), changed) == ["  agent.lam: saved 0.1 -> now 0.5"]


def test_a_config_saved_with_execution_settings_among_the_hyperparameters_reads_in_the_new_layout():
    current = config_to_dict(resolve_config({"algo": "flowrl", "execution": {"amp": "bf16", "graph_warmup": 5}}))
    old = old_layout(current)
    assert "amp" in old["agent"] and "execution" not in old
    assert with_execution_section(old) == current
    assert with_current_defaults(old) == current
    assert config_diff(with_current_defaults(old), current) == []
    # What was saved is left as it was (a copy is translated); the new layout and other agents pass unchanged.
    assert "amp" in old["agent"]
    assert with_execution_section(current) is current
    sac = config_to_dict(resolve_config({"algo": "sac"}))
    assert sac["execution"] is None and with_execution_section(sac) is sac


def test_old_layout_without_act_precision_resumes_with_its_legacy_value():
    """A run from before act_precision existed acted under autocast ("amp"); the same command resumes it so, and a
    command that sets act_precision itself (an execution setting) resumes with that."""
    old = old_layout(config_to_dict(resolve_config({"algo": "flowrl"})))
    del old["agent"]["act_precision"]
    assert with_current_defaults(old)["execution"]["act_precision"] == "amp"
    cfg = resolve_config({"algo": "flowrl"})
    assert resume_config(old, cfg).execution.act_precision == "amp"
    chosen = resolve_config({"algo": "flowrl", "execution": {"act_precision": "float32"}})
    assert resume_config(old, chosen).execution.act_precision == "float32"
    kept = old_layout(config_to_dict(resolve_config({"algo": "flowrl"})))  # a saved act_precision is no legacy
    assert resume_config(kept, cfg) is cfg


@pytest.mark.parametrize(
    "values, message",
    [
        ({"agent": {"amp": "bf16"}}, "agent.amp is an execution setting now: write execution.amp=bf16"),
        ({"agent": {"cuda_graphs": False}}, "write execution.cuda_graphs=false"),
        ({"execution": {"ampp": "bf16"}}, "unknown execution key 'ampp'. Did you mean 'amp'"),
        ({"execution": {"amp": "fp8"}}, "execution.amp: 'fp8' is not one of"),
        ({"execution": {"graph_warmup": 0}}, "graph_warmup=0: at least 1"),
        ({"algo": "sac", "execution": {"amp": "bf16"}}, "execution.amp: sac has no execution settings"),
    ],
)
def test_bad_execution_settings_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config({"algo": "flowrl", **values})


def test_agents_are_built_with_the_runs_execution_settings():
    spec = EnvSpec(3, 2, np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    cfg = resolve_config({"algo": "flowrl", "agent": {"hidden_dim": 8}, "execution": {"cpu_matmul": "aten"}})
    torch.manual_seed(0)
    agent = make_agent(cfg, spec, "cpu")
    assert agent.execution == cfg.execution and agent.cpu_matmul == "aten"
    stacked = FlowRL.stack(
        [agent.state_dict()] * 2, spec, cfg.agent, execution=dataclasses.replace(cfg.execution, act_precision="amp")
    )
    assert stacked.execution.act_precision == "amp"
    sac = make_agent(resolve_config({"algo": "sac", "agent": {"hidden_dim": 8}}), spec, "cpu")
    assert not hasattr(sac, "execution")
    assert FlowRL(spec, cfg.agent).execution == Execution()  # the defaults where none is given


@pytest.mark.slow  # compiles both phases (about half a minute on two cores)
def test_a_compiled_update_is_the_eager_update_to_rounding():
    """execution.compile_update runs the update's losses through torch.compile (inductor): both phases, from one state
    and with the same batches and draws, leave the same parameters, optimiser moments and metrics to float32
    rounding."""
    import torch._dynamo

    from tests.conftest import SPEC, make_batch

    agents = []
    for compiled in (False, True):
        torch.manual_seed(0)
        cfg = FlowRL.Config(hidden_dim=16)
        agents.append(FlowRL(SPEC, cfg, "cpu", execution=Execution(compile_update=compiled, cpu_matmul="aten")))
    eager, compiled = agents
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    for step in range(4):  # critics-only and policy phases, twice (the first policy phase meets empty Adam state)
        batch = make_batch(32, seed=step)
        m_eager, m_comp = eager.update(batch, step), compiled.update(batch, step)
        for k in m_eager:
            np.testing.assert_allclose(m_comp[k].cpu().numpy(), m_eager[k].cpu().numpy(), rtol=1e-4, atol=1e-6)
    assert set(compiled._compiled) == {"critic_losses", "policy_loss"} and eager._compiled == {}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the update's pieces ran compiled
    s_eager, s_comp = eager.state_dict(), compiled.state_dict()
    for net in FlowRL.networks:  # targets included: the policy phases made their soft updates
        for name, p_e in s_eager[net].items():
            np.testing.assert_allclose(s_comp[net][name].numpy(), p_e.numpy(), rtol=1e-4, atol=1e-6, err_msg=net + name)
    for opt in ("critic_opt", "buffer_critic_opt", "value_opt", "policy_opt"):
        for i, st in s_eager[opt]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                want, got = st[key].numpy(), s_comp[opt]["state"][i][key].numpy()
                scale = float(np.abs(want).max())  # rounding is relative to the tensor's largest entry
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{opt} {i} {key}")
    assert compiled.execution_report()["compile_update"].startswith("on")
    compiled.load_state_dict(eager.state_dict())  # a rollback or resume: copied into the same tensors
    assert set(compiled._compiled) == {"critic_losses", "policy_loss"}  # so the compiled losses stay valid
    np.testing.assert_allclose(
        compiled.update(make_batch(32, seed=9), 4)["critic_loss"].numpy(),
        eager.update(make_batch(32, seed=9), 4)["critic_loss"].numpy(),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="compile_update='yes': expected true, false or auto"):
        Execution(compile_update="yes")


@pytest.mark.slow  # compiles the critics phase (about a quarter of a minute on two cores)
@pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear kernel")
def test_a_compiled_update_on_onednn_compiles_its_products_as_aten():
    """cpu_matmul='onednn' (what 'auto' takes for large calls where oneDNN's GEMM measures well ahead) with
    compile_update: inductor cannot lower the private oneDNN op inside a traced update, so the traced update
    multiplies with aten while eager calls (acting) keep oneDNN; the result is the eager oneDNN update to rounding."""
    import torch._dynamo

    from tests.conftest import SPEC, make_batch

    agents = []
    for compiled in (False, True):
        torch.manual_seed(0)
        execution = Execution(compile_update=compiled, cpu_matmul="onednn")
        agents.append(FlowRL(SPEC, FlowRL.Config(hidden_dim=16), "cpu", execution=execution))
    eager, compiled = agents
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    batch = make_batch(32, seed=0)
    m_eager, m_comp = eager.update(batch, 1), compiled.update(batch, 1)  # a critics-only phase
    assert set(compiled._compiled) == {"critic_losses"}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it ran compiled, not eager
    for k in m_eager:
        np.testing.assert_allclose(m_comp[k].numpy(), m_eager[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    for name, p_e in eager.state_dict()["critic"].items():
        np.testing.assert_allclose(compiled.state_dict()["critic"][name].numpy(), p_e.numpy(), rtol=1e-4, atol=1e-6)
    x = torch.zeros(1, 4, SPEC.obs_dim + SPEC.act_dim + 1)  # a policy input, as acting makes it
    assert compiled.policy.net[0].uses_onednn(x), "eager calls outside the compiled update keep oneDNN"


def test_compile_auto_decides_by_device_length_and_compiler(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Execution().compile_update == "auto"
    assert decide_compile(False, cpu, 10**6) == (False, None)
    assert decide_compile(True, cpu, 10)[0] and decide_compile(True, cuda, None)[0]  # true compiles wherever it runs
    assert decide_compile("auto", cpu, None) == (
        False,
        "off (auto): the run's length is unknown here (set compile_update=true to compile)",
    )
    short = decide_compile("auto", cpu, COMPILE_AUTO_MIN_UPDATES - 1)
    assert not short[0] and f"{COMPILE_AUTO_MIN_UPDATES - 1} updates planned, fewer than" in short[1]
    assert not decide_compile("auto", cuda, 10**6)[0]  # GPUs replay CUDA graphs instead
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setenv("PATH", "")
    assert decide_compile("auto", cpu, 10**6) == (
        False,
        "off (auto): no C++ compiler for inductor's CPU backend (install g++ or set CXX)",
    )
    monkeypatch.undo()
    on, line = decide_compile("auto", cpu, COMPILE_AUTO_MIN_UPDATES)
    assert on and line.startswith(f"on (auto): {COMPILE_AUTO_MIN_UPDATES} updates planned on a CPU")
    # a run's length: its updates after the random warm-up, the same in every session of it
    assert planned_updates(steps=100_000, start_steps=5000, updates_per_step=2) == 190_000
    assert planned_updates(steps=100, start_steps=5000, updates_per_step=1) == 0
    for bad in (1, 0, "yes", None):
        with pytest.raises(ValueError, match="expected true, false or auto"):
            Execution(compile_update=bad)


def _broken_compile(fn):
    def compiled(*args):
        raise RuntimeError("InductorError: C++ compile error (a stand-in for a broken toolchain)\nmore detail")

    return compiled


def _backward_breaking_compile(fn):
    """torch.compile whose forward compiles and whose backward compiler fails (AOTAutograd compiles a backward at
    its first backward() unless told otherwise)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def forward_compiler(gm, example_inputs):
        return make_boxed_func(gm.forward)

    def backward_compiler(gm, example_inputs):
        raise RuntimeError("backward compile failed (a stand-in)")

    return torch.compile(fn, backend=aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler))


@pytest.mark.parametrize(
    "compiler, why",
    [
        (_broken_compile, "RuntimeError: InductorError: C++ compile error (a stand-in for a broken toolchain)"),
        (_backward_breaking_compile, "RuntimeError: backward compile failed (a stand-in)"),
    ],
    ids=["forward", "backward"],
)
def test_compile_auto_falls_back_to_eager_when_compiling_fails(monkeypatch, compiler, why):
    """Where compiling fails (the forward or the backward), compile_update=auto warns, records why and trains exactly
    as the eager update does; compile_update=true lets the error through."""
    import torch._dynamo

    from flowrl.agents import ensemble_agent
    from tests.conftest import SPEC, make_batch

    torch._dynamo.reset()
    monkeypatch.setattr(ensemble_agent, "compile_fn", compiler)
    agents = []
    for setting in ("auto", False, True):
        torch.manual_seed(0)
        agent = FlowRL(SPEC, FlowRL.Config(hidden_dim=16), "cpu", execution=Execution(compile_update=setting))
        agent.planned_updates = 10 * COMPILE_AUTO_MIN_UPDATES
        agents.append(agent)
    auto, eager, strict = agents
    with pytest.warns(RuntimeWarning, match="compile_update=auto could not compile critic_losses .*continuing eager"):
        got = [auto.update(make_batch(32, seed=s), s) for s in range(3)]
    want = [eager.update(make_batch(32, seed=s), s) for s in range(3)]
    for g, w in zip(got, want):
        assert {k: v.tolist() for k, v in g.items()} == {k: v.tolist() for k, v in w.items()}  # bit for bit
    for name, t in auto.state_dict()["critic"].items():
        assert torch.equal(t, eager.state_dict()["critic"][name]), name
    assert auto.execution_report()["compile_update"] == (
        f"off (auto): compiling critic_losses failed, so the update runs eager: {why}"
    )
    assert "compile_update" not in eager.execution_report()  # false: nothing to record
    assert strict.execution_report()["compile_update"].startswith("on: torch.compile")  # said before any update
    with pytest.raises(Exception, match="a stand-in"):
        strict.update(make_batch(32, seed=0), 0)


@pytest.mark.slow  # compiles both phases of a tiny FlowRL (about half a minute on two cores)
def test_compile_auto_compiles_a_long_run_and_not_a_short_one():
    import torch._dynamo

    from tests.conftest import SPEC, make_batch

    torch._dynamo.reset()
    agents = {}
    for planned in (None, COMPILE_AUTO_MIN_UPDATES - 1, COMPILE_AUTO_MIN_UPDATES):
        torch.manual_seed(0)
        agent = FlowRL(SPEC, FlowRL.Config(hidden_dim=16), "cpu", execution=Execution(cpu_matmul="aten"))
        agent.planned_updates = planned
        for step in range(2):
            agent.update(make_batch(32, seed=step), step)
        agents[planned] = agent
    assert agents[None]._compiled == {} and agents[COMPILE_AUTO_MIN_UPDATES - 1]._compiled == {}
    long = agents[COMPILE_AUTO_MIN_UPDATES]
    assert set(long._compiled) == {"critic_losses", "policy_loss"}
    assert long.execution_report()["compile_update"].startswith("on (auto)")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the update's pieces ran compiled


def test_a_run_saved_with_the_old_compile_default_resumes_eager():
    """compile_update's default was false until 'auto': a run saved with false (or before the key) resumes with
    false under the same command (the compiled update rounds differently), while a value given explicitly applies."""
    new = resolve_config({"algo": "flowrl"})
    assert new.execution.compile_update == "auto"
    saved = config_to_dict(resolve_config({"algo": "flowrl", "execution": {"compile_update": False}}))
    assert resume_config(saved, new).execution.compile_update is False
    before_key = {**saved, "execution": {k: v for k, v in saved["execution"].items() if k != "compile_update"}}
    assert resume_config(before_key, new).execution.compile_update is False
    explicit = resolve_config({"algo": "flowrl", "execution": {"compile_update": True}})
    assert resume_config(saved, explicit).execution.compile_update is True
    auto_saved = config_to_dict(new)
    assert resume_config(auto_saved, new).execution.compile_update == "auto"
