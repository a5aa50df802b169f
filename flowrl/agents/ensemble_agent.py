"""What every agent built from ensemble networks (flowrl/ensemble.py) shares, written once so that an algorithm's
file holds only the algorithm.

An `EnsembleAgent` holds `n` members (seeds) in every network: tensors carry a leading member dimension (n, B, ...).
It implements the member API (`BatchedAgent`: `act_members`, `update_members`) and gets here:

- the single-run API (`act`, `update`, `seed_evaluation`) as the member API for n = 1;
- per-member random streams: `generators` (training draws, seeded from torch's global RNG when they are made, so a
  run is a function of its seed) and `eval_generators` (seeded by the training loop before each evaluation);
- `state_dict`/`load_state_dict` from the names of its networks, optimisers and counters, and `stack`/`unstack`
  between single runs' states and one batched agent (member i's state is its single run's state);
- the update replayed as CUDA graphs where `Execution` asks for them, each checked against the eager update first
  (flowrl/cuda_graphs.py), and what was decided (`execution_report`).

A subclass names its networks in `networks` (the Polyak-averaged copies among them in `targets`, which get no
optimiser and no gradients), builds them in `__init__` and then calls `self.finish_init(lr)`; it implements
`act_members`, `update_members` (drawing its random numbers, then `self.run_update(phase, batch, noise)`) and
`update_step(phase, batch, noise)`, the update as pure device work.
"""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import torch
from torch import nn

from flowrl import cpu_kernels
from flowrl.agents.base import Agent, Batch, BatchedAgent, EnvSpec, stack_states, unstack_state
from flowrl.cuda_graphs import GraphedStep, graph_ready_adam, keep_optimizer_settings, tolerance, training_state
from flowrl.ensemble import member_generators, set_cpu_matmul
from flowrl.execution import Execution, decide_compile

PER_MEMBER = ("generators", "eval_generators")  # state entries holding one item per member
# Compiled variants of one loss function per process: one per agent and phase layout (its networks are guarded), for
# every agent of the process (the bench holds several).
# torch's default of 8 would make later ones run eager without an error.
COMPILE_RECOMPILE_LIMIT = 64


def compile_fn(fn):
    """`fn` under torch.compile (inductor), with room for the variants above; past the limit torch raises instead of
    silently running eager, so a run that says it compiles does."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILE_RECOMPILE_LIMIT)
    dynamo_config.fail_on_recompile_limit_hit = True
    return torch.compile(fn)


def _root_cause(exc: BaseException) -> str:
    """'Type: first line' of the error under the wrappers (dynamo wraps a backend's error in BackendCompilerFailed)."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None and inner is not exc:
        exc = inner
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


class EnsembleAgent(Agent, BatchedAgent):
    networks: ClassVar[tuple[str, ...]]  # attribute names of the networks, each of n members
    targets: ClassVar[tuple[str, ...]] = ()  # those among them that only follow others (no optimiser, no gradients)
    counters: ClassVar[tuple[str, ...]] = ()  # plain attributes saved with the state
    update_name: ClassVar[str] = "update"  # in messages, e.g. "FlowRL update"
    Execution = Execution

    def __init__(
        self,
        spec: EnvSpec,
        config,
        device: torch.device | str = "cpu",
        n_seeds: int = 1,
        execution: Execution | None = None,
    ):
        super().__init__(spec, config, device)
        self.n, self.execution = n_seeds, execution or Execution()
        self._graphs: GraphedStep | None = None
        self._compiled: dict = {}  # loss methods under torch.compile (execution.compile_update), made at first use
        # The run's planned updates (flowrl.execution.planned_updates), set by the training loop: what
        # compile_update=auto decides by; None (agents built elsewhere) leaves auto eager
        self.planned_updates: int | None = None
        self._compile_decision: tuple[bool, str | None] | None = None  # made at the first compiled() call
        self._compile_checked: set[str] = set()  # loss methods whose first compiled call succeeded (auto)

    def finish_init(self, lr: float) -> None:
        """After the networks are built: move them to the device, pick the CPU matmul kernel, make one Adam per
        trained network (`<name>_opt`), the member random streams, and the CUDA graphs where they are used."""
        nets = self._networks()
        for net in nets.values():
            net.to(self.device)
        self.cpu_matmul = set_cpu_matmul(nn.ModuleList(nets.values()), self.execution.cpu_matmul)
        for name in self.targets:
            nets[name].requires_grad_(False)
        self._capturable = self.execution.graphed(self.device)
        for name in self._trained():
            setattr(self, f"{name}_opt", graph_ready_adam(nets[name].parameters(), lr, self._capturable))
        self.generators = member_generators(self.n, self.device)
        self.eval_generators = [torch.Generator(device=self.device) for _ in range(self.n)]
        self._graphs = self.graphed_updates() if self._capturable else None

    # ------------------------------------------------------------------------------------ single-run API
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        self._single_only("act")
        return self.act_members(obs.unsqueeze(0), deterministic)[0]

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        self._single_only("update")
        metrics = self.update_members(Batch(*(x.unsqueeze(0) for x in batch)), step)
        return {k: v[0] for k, v in metrics.items()}

    def seed_evaluation(self, seed: int) -> None:
        self.seed_evaluation_members([seed] * self.n)

    def seed_evaluation_members(self, seeds: list[int]) -> None:
        """Seed member i's evaluation stream with seeds[i] (as a single run of that seed seeds its own)."""
        for g, seed in zip(self.eval_generators, seeds, strict=True):
            g.manual_seed(seed)

    def _single_only(self, what: str) -> None:
        if self.n != 1:
            raise RuntimeError(
                f"{what}() takes one seed's tensors; this agent holds {self.n} seeds: use {what}_members()"
            )

    # ------------------------------------------------------------------------------------ the update
    def update_step(self, phase: str, batch: Batch, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One update of kind `phase` given its random draws `noise`: device work only (capturable)."""
        raise NotImplementedError

    def run_update(self, phase: str, batch: Batch, noise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`update_step`, replayed as this phase's CUDA graph where graphs are on."""
        if self._graphs is not None:
            return self._graphs(phase, batch, noise)
        return self.update_step(phase, batch, noise)

    def compiled(self, name: str):
        """The method `name` (a loss computation of `update_step`), under torch.compile where execution.compile_update
        is on and the update is not replayed as CUDA graphs; else the method itself. An agent's `update_step` calls
        its loss methods through this (FlowRL: critic_losses, policy_loss); what it calls directly runs eager. The
        forward passes and losses compile (with their backward, which autograd then runs as compiled code);
        `backward()` calls and optimiser steps stay eager between them: compiling the whole update measured slower,
        as each of those breaks its graph (docs/speed.md, "execution.compile_update"). load_state_dict copies into
        the same tensors, so the compiled code stays valid across rollbacks and resumes.

        compile_update=auto decides at the first call (`decide_compile`: on CPUs, for runs of enough planned
        updates), and where a method's first compiled call fails (no working compiler, an inductor error) it warns
        and runs eager from then on, recording why; compile_update=true lets such errors through."""
        if self._graphs is not None or not self._compiles():
            return getattr(self, name)
        if name not in self._compiled:
            self._compiled[name] = compile_fn(getattr(self, name))
        if self.execution.compile_update is True or name in self._compile_checked:
            return self._compiled[name]
        return functools.partial(self._first_compiled_call, name)

    def _compiles(self) -> bool:
        if self._compile_decision is None:
            self._compile_decision = decide_compile(self.execution.compile_update, self.device, self.planned_updates)
        return self._compile_decision[0]

    def _first_compiled_call(self, name: str, *args):
        """The first call of a loss method compiled under compile_update=auto: eager instead if compiling fails. The
        loss methods only read state (no optimiser step, no random draw inside), so the eager call after a failed
        compiled one computes what the compiled one would have."""
        # AOTAutograd compiles a backward at its first backward() by default, outside this guard: have it compile
        # both here, so that a failure of either falls back
        from torch._functorch import config as functorch_config

        try:
            with functorch_config.patch(force_non_lazy_backward_lowering=True):
                out = self._compiled[name](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure; the eager call below raises real bugs
            reason = _root_cause(exc)
            warnings.warn(
                f"{self.update_name}: compile_update=auto could not compile {name} ({reason}); continuing eager "
                "(set execution.compile_update=false to skip the attempt)",
                RuntimeWarning,
                stacklevel=2,
            )
            self._compile_decision = (False, f"off (auto): compiling {name} failed, so the update runs eager: {reason}")
            self._compiled.clear()
            return getattr(self, name)(*args)
        self._compile_checked.add(name)
        return out

    def graphed_updates(self, capture=None) -> GraphedStep:
        """The update as CUDA graphs, one per phase, each checked against the eager update before use
        (flowrl/cuda_graphs.py). Tests pass `capture` (flowrl.cuda_graphs.eager_capture, or a faulty one) to run
        this path on CPUs: `agent._graphs = agent.graphed_updates(capture)`."""
        return GraphedStep(
            self.update_step,
            lambda: training_state(self._networks(), self._optimizers()),
            self.device,
            self.execution.graph_warmup,
            tolerance(self.execution.bf16(self.device)),
            capture,
            name=self.update_name,
        )

    def execution_report(self) -> dict:
        """How the updates ran (the run's manifest records it): the graphs' report, or why there are none."""
        if self._graphs is not None:
            report = self._graphs.report()
            if self.execution.compile_update is True:
                report["compile_update"] = "off: the update is replayed as CUDA graphs (eager where a graph fell back)"
            return report
        why = "execution.cuda_graphs=false" if not self.execution.cuda_graphs else f"not on CUDA (device {self.device})"
        report = {"cuda_graphs": f"off: {why}"}
        # decided at the first update that calls compiled(); before it, what it will decide (not cached: an agent
        # that never calls compiled(), or a session that ends before its first update, decides nothing)
        decision = self._compile_decision or decide_compile(
            self.execution.compile_update, self.device, self.planned_updates
        )
        if decision[1] is not None:
            report["compile_update"] = decision[1]
        if self.device.type == "cpu":
            report["cpu_matmul"] = self.cpu_matmul_report()
        return report

    def cpu_matmul_report(self) -> str:
        """The float32 CPU matmul the layers use (`set_cpu_matmul`), and for 'auto' the GEMM timing it went by."""
        if self.execution.cpu_matmul != "auto":
            return f"{self.cpu_matmul} (set)"
        if not cpu_kernels.onednn_linear_available():
            return "aten (auto: no oneDNN linear kernel)"
        lead = f"oneDNN's GEMM measured {cpu_kernels.onednn_gemm_speedup():.2f}x the default one"
        if self.cpu_matmul == "auto":
            min_work = cpu_kernels.ONEDNN_MIN_WORK.bit_length() - 1
            return f"auto: oneDNN for calls of >= 2^{min_work} multiply-adds per member ({lead} here)"
        return f"aten (auto: {lead}, below {cpu_kernels.ONEDNN_MIN_SPEEDUP}x)"

    # ------------------------------------------------------------------------------------ state
    def _trained(self) -> list[str]:
        return [name for name in self.networks if name not in self.targets]

    def _networks(self) -> dict[str, nn.Module]:
        return {k: getattr(self, k) for k in self.networks}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {f"{k}_opt": getattr(self, f"{k}_opt") for k in self._trained()}

    def state_dict(self) -> dict:
        state = {k: v.state_dict() for k, v in {**self._networks(), **self._optimizers()}.items()}
        state["counters"] = {k: getattr(self, k) for k in self.counters}
        state["generators"] = [g.get_state() for g in self.generators]
        state["eval_generators"] = [g.get_state() for g in self.eval_generators]
        return state

    def load_state_dict(self, state: dict) -> None:
        if len(state["generators"]) != self.n:
            raise ValueError(f"state holds {len(state['generators'])} seeds, this agent {self.n}")
        for k, v in {**self._networks(), **self._optimizers()}.items():
            v.load_state_dict(state[k])
        keep_optimizer_settings(self._optimizers().values(), self._capturable)  # not the file's fused/capturable
        if self._graphs is not None:
            self._graphs.reset()  # optimiser state tensors were replaced: the captured graphs point at the old ones
        for k in self.counters:
            setattr(self, k, state["counters"][k])
        for g, s in zip(self.generators + self.eval_generators, state["generators"] + state["eval_generators"]):
            g.set_state(s.cpu())

    @classmethod
    def stack(cls, states: list[dict], spec: EnvSpec, config, device="cpu", execution=None) -> EnsembleAgent:
        """One agent of len(states) members from single runs' state_dicts (members in that order). Counters are
        the first run's: runs trained in lockstep agree on them."""
        agent = cls(spec, config, device, n_seeds=len(states), execution=execution)
        agent.load_state_dict(stack_states(states, PER_MEMBER))
        return agent

    def unstack(self, i: int) -> dict:
        """Member i's state: a single run's state_dict (loadable into an agent of n_seeds=1)."""
        return unstack_state(self.state_dict(), i, self.n, PER_MEMBER)
