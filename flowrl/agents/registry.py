"""Agents by name: the built-in table below, plus the `flowrl.agents` entry-point group.

Adding an agent to this repository is one file plus one line in BUILTIN_AGENTS. An agent that
lives in another installed package registers through its own pyproject.toml:

    [project.entry-points."flowrl.agents"]
    mymethod = "my_package.agent:MyAgent"
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata

from flowrl.agents.base import Agent

ENTRY_POINT_GROUP = "flowrl.agents"

# name -> "module:Class". Imported lazily so a broken optional agent never breaks the others.
BUILTIN_AGENTS: dict[str, str] = {
    "flowrl": "flowrl.agents.flowrl:FlowRL",
    "sac": "baselines.sac:SAC",
    "td3": "baselines.td3:TD3",
    "qvpo": "baselines.qvpo:QVPO",
}

_runtime: dict[str, type[Agent]] = {}


def register_agent(name: str, cls: type[Agent] | None = None):
    """Register an agent class at runtime (usable as a decorator). Names are case-sensitive."""

    def _do(c: type[Agent]) -> type[Agent]:
        if not (isinstance(c, type) and issubclass(c, Agent)):
            raise TypeError(f"{c!r} is not a subclass of flowrl.agents.base.Agent")
        _runtime[name] = c
        return c

    return _do(cls) if cls is not None else _do


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_agents() -> list[str]:
    """All registered names: runtime registrations, built-ins and installed entry points."""
    return sorted(set(_runtime) | set(BUILTIN_AGENTS) | set(_entry_points()))


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_agent_class(name: str) -> type[Agent]:
    """The agent class for `name`; an unknown name raises ValueError listing close valid names."""
    if name in _runtime:
        return _runtime[name]
    if name in BUILTIN_AGENTS:
        cls = _load(BUILTIN_AGENTS[name])
    else:
        eps = _entry_points()
        if name not in eps:
            names = available_agents()
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown algorithm {name!r}.{hint} Available: {', '.join(names)}. "
                f"Register new agents in flowrl/agents/registry.py or via the {ENTRY_POINT_GROUP!r} entry-point group."
            )
        cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"Agent {name!r} resolves to {cls!r}, which is not a flowrl.agents.base.Agent subclass")
    return cls


def make_agent(cfg, spec, device, **kwargs) -> Agent:
    """The agent `cfg` (a RunConfig) names, from its hyperparameters `cfg.agent` and, for an agent with execution
    settings (a class attribute `Execution`, e.g. FlowRL's: flowrl/execution.py), `cfg.execution`."""
    cls = get_agent_class(cfg.algo)
    if getattr(cls, "Execution", None) is not None:
        kwargs["execution"] = cfg.execution
    return cls(spec, cfg.agent, device, **kwargs)
