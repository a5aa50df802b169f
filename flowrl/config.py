"""Typed run configuration: defaults < config file < command-line flags < key=value overrides."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclasses.dataclass
class RunConfig:
    algo: str = "flowrl"
    task: str = "dmc:cartpole-balance"
    seed: int = 0
    steps: int = 1_000_000  # environment steps
    start_steps: int = 5000  # uniform random actions (and no updates) before this many steps (official: 5000)
    batch_size: int = 256
    replay_size: int = 1_000_000
    updates_per_step: int = 1
    replay_recent_fraction: float | None = None  # None: the agent's default (FlowRL 0.2, baselines 0.0)
    replay_recent_window: int = 2048
    # How a batch splits into its uniform and recent parts: "official", floor(B * (1 - fraction)) uniform (204 + 52
    # at B=256, the official code's int(B * 0.8)); "round", round(B * fraction) recent (205 + 51), what runs written
    # before this key did (LEGACY_VALUES: they resume with it).
    replay_split: Literal["official", "round"] = "official"
    eval_every: int = 10_000
    eval_episodes: int = 5
    eval_envs: int = 1  # evaluation episodes played at once (1: one after another); see docs/speed.md
    eval_at_start: bool = True  # also evaluate the untrained policy at step 0
    checkpoint_every: int = 50_000  # env steps between periodic checkpoints (0: only on signal/end)
    keep_checkpoints: int = 2
    # Non-finite losses, parameters or actions: "stop" the run with an error naming what diverged (it stays
    # resumable from its last good checkpoint); "rollback" puts the agent back to its last finite state, checked
    # every log_every steps, and trains on (single runs only). docs/run-format.md.
    on_divergence: Literal["stop", "rollback"] = "stop"
    log_every: int = 1000  # env steps between rows of train.csv
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    torch_threads: int = 0  # 0: leave torch's default
    tensorboard: bool = False
    progress: bool = True
    agent: Any = None  # the algorithm's own dataclass config (its hyperparameters), filled by `resolve_config`
    # How the agent computes (precision, CUDA graphs, CPU matmul kernel): its `Execution` dataclass
    # (flowrl/execution.py), filled by `resolve_config`; None for agents without such settings. Not compared on
    # resume: it may change.
    execution: Any = None

    def validate(self) -> None:
        positive = [
            "steps",
            "batch_size",
            "replay_size",
            "updates_per_step",
            "eval_every",
            "eval_episodes",
            "eval_envs",
            "keep_checkpoints",
            "log_every",
            "replay_recent_window",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ["start_steps", "checkpoint_every", "torch_threads"]:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.replay_recent_fraction is not None and not 0 <= self.replay_recent_fraction <= 1:
            raise ValueError(f"replay_recent_fraction must be in [0, 1], got {self.replay_recent_fraction}")
        if self.device != "auto" and not (
            self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"
        ):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


def check_fields(cfg: Any, label: str, checks: dict[str, bool]) -> None:
    """Raise one ValueError naming every field of the dataclass `cfg` whose entry in `checks` is False or whose value
    is not among its `Literal[...]` choices (checked for every such field)."""
    hints = typing.get_type_hints(type(cfg))
    bad = [f"{k}={getattr(cfg, k)!r}" for k, ok in checks.items() if not ok]
    for f in dataclasses.fields(cfg):
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else None
        if choices and getattr(cfg, f.name) not in choices:
            bad.append(f"{f.name}={getattr(cfg, f.name)!r} (choose one of {', '.join(map(str, choices))})")
    if bad:
        raise ValueError(f"invalid {label} value(s): {', '.join(bad)}")


# Settings that may change between an interrupted run and its resumption without changing results.
# on_divergence changes nothing until a run diverges, where "stop" ends it: so a stopped run may resume with
# "rollback". `execution` (every key of it) says how the same training function is computed; a session with another
# precision continues with other rounding (flowrl/execution.py, docs/run-format.md).
RESUME_SAFE_KEYS = {"device", "progress", "tensorboard", "torch_threads", "on_divergence", "execution"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML-parsed value to the dataclass field type `tp`, or raise a clear error."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return _coerce_union(value, tp, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{key}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float):
        return _coerce_number(value, tp, key)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return origin(value)
    return value


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    """`value` as the first member of the union `tp` that accepts it (None for an optional field)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"{key}: cannot interpret {value!r} as {tp}")


def _coerce_number(value: Any, tp: type, key: str) -> int | float:
    """`value` as an int (integral numbers only) or a float; never a bool."""
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; it is a number to a user
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key_error(key: str, valid: list[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {where} key {key!r}.{hint} Valid keys: {', '.join(sorted(valid))}")


def build_dataclass(cls, values: dict[str, Any], where: str):
    types = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types:
            raise _unknown_key_error(key, list(types), where)
        kwargs[key] = _coerce(value, types[key], f"{where}.{key}" if where != "run" else key)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """'agent.hidden_dim=64' -> ('agent.hidden_dim', 64); values are parsed as YAML scalars."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. agent.hidden_dim=64)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ValueError(f"override {text!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


SECTIONS = ("agent", "execution")  # the nested mappings of a run config: hyperparameters, execution settings


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'agent.lr': 1, 'execution.amp': 'bf16'} -> {'agent': {'lr': 1}, 'execution': {'amp': 'bf16'}}; later
    keys win."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            if head not in SECTIONS:
                raise ValueError(f"override {key!r}: only 'agent.' and 'execution.' keys may be nested")
            out.setdefault(head, {})
            if not isinstance(out[head], dict):
                raise ValueError(f"'{head}' must be a mapping of {head} settings")
            out[head][rest] = value
        else:
            if key in SECTIONS and isinstance(value, dict):
                out.setdefault(key, {}).update(value)
            else:
                out[key] = value
    return out


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise ValueError(f"'{key}' must be a mapping of {key} settings")
                out.setdefault(key, {}).update(value)
            else:
                out[key] = value
    return out


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)  # as written on a command line


def resolve_config(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig (with the agent's dataclass config and execution settings) from merged
    settings."""
    from flowrl.agents.registry import get_agent_class

    values = dict(values)
    agent_values = values.pop("agent", None) or {}
    execution_values = values.pop("execution", None) or {}
    cfg = build_dataclass(RunConfig, values, "run")
    agent_cls = get_agent_class(cfg.algo)
    execution_cls = getattr(agent_cls, "Execution", None)
    moved = [k for k in agent_values if k in _fields(execution_cls) and k not in _fields(agent_cls.Config)]
    if moved:
        fixes = [
            f"agent.{k} is an execution setting now: write execution.{k}={_scalar(agent_values[k])}" for k in moved
        ]
        raise ValueError("; ".join(fixes) + " (execution settings may differ on resume: docs/run-format.md)")
    cfg.agent = build_dataclass(agent_cls.Config, agent_values, "agent")
    if execution_cls is not None:
        cfg.execution = build_dataclass(execution_cls, execution_values, "execution")
    elif execution_values:
        raise ValueError(
            f"execution.{next(iter(execution_values))}: {cfg.algo} has no execution settings "
            "(they are FlowRL's: flowrl/execution.py)"
        )
    if cfg.replay_recent_fraction is None:
        cfg.replay_recent_fraction = float(getattr(agent_cls, "replay_recent_fraction", 0.0))
    cfg.validate()
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["agent"] = dataclasses.asdict(cfg.agent) if dataclasses.is_dataclass(cfg.agent) else cfg.agent
    d["execution"] = dataclasses.asdict(cfg.execution) if dataclasses.is_dataclass(cfg.execution) else cfg.execution
    return d


def with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run config as this code reads it: keys added since it was written take their defaults (a key is
    only ever added with a default that keeps the earlier behaviour, so the run resumes as it was), or, for the
    keys whose default changed the behaviour, their LEGACY_VALUES. A config this code cannot read is returned as
    it is (its differences are then reported key by key)."""
    try:
        return config_to_dict(resolve_config(with_legacy_values(saved)))
    except (ValueError, TypeError, KeyError):
        return saved


# Keys added with a default that is not what runs written before them did (the default is the official code's
# behaviour). A saved config that lacks such a key was trained with the value here, so it is read with it and its
# run resumes as it was, while new runs get the default. "agent.<key>" and "execution.<key>" apply where the run's
# agent has the key.
LEGACY_VALUES: dict[str, Any] = {
    "replay_split": "round",  # runs took round(B * fraction) recent indices (205 + 51 at B=256)
    "execution.act_precision": "amp",  # FlowRL acted and evaluated under its update autocast (bf16 on CUDA)
    "execution.compile_update": False,  # updates ran eager (the default was false until "auto")
}
# LEGACY_VALUES keys whose legacy value was also their saved default until the default changed: a run saved with that
# value resumes with it where the command holds the new default, as one saved without the key does, so the same
# command resumes it as it trained (a compiled update rounds differently from the eager one). Another value given
# explicitly applies, except the new default itself, which a command cannot tell apart from no value
# (compile_update=true compiles such a run).
SAVED_LEGACY_DEFAULTS = {"execution.compile_update"}


def _section_defaults(algo: Any, section: str) -> dict[str, Any]:
    """The field defaults of a section of `algo`'s config: 'agent' (its Config) or 'execution' (its Execution)."""
    from flowrl.agents.registry import get_agent_class

    try:
        cls = get_agent_class(algo)
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    cls = cls.Config if section == "agent" else getattr(cls, "Execution", None)
    return {f.name: f.default for f in dataclasses.fields(cls)} if cls is not None else {}


def with_execution_section(saved: Any) -> Any:
    """`saved` with the execution settings that configs written before the `execution:` section kept among the
    hyperparameters (agent.amp, agent.act_precision, agent.cuda_graphs, agent.graph_warmup, agent.cpu_matmul)
    moved into it (a copy; anything else is returned as it is)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("agent"), dict):
        return saved
    algo = saved.get("algo", RunConfig.algo)
    execution_keys, agent_keys = _section_defaults(algo, "execution"), _section_defaults(algo, "agent")
    moved = {k: v for k, v in saved["agent"].items() if k in execution_keys and k not in agent_keys}
    if not moved:
        return saved
    execution = saved.get("execution") if isinstance(saved.get("execution"), dict) else {}
    return {
        **saved,
        "agent": {k: v for k, v in saved["agent"].items() if k not in moved},
        "execution": {**moved, **execution},
    }


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` in the current layout (`with_execution_section`) with the LEGACY_VALUES of the keys it lacks (a copy;
    anything but a mapping is returned as it is)."""
    if not isinstance(saved, dict):
        return saved
    out = dict(with_execution_section(saved))
    algo = out.get("algo", RunConfig.algo)
    for key, value in LEGACY_VALUES.items():
        head, _, rest = key.partition(".")
        if not rest:
            out.setdefault(key, value)
        elif (
            rest in _section_defaults(algo, head)
            and isinstance(out.get(head) or {}, dict)
            and rest not in (out.get(head) or {})
        ):
            out[head] = {**(out.get(head) or {}), rest: value}
    return out


def resume_config(saved: Any, cfg: RunConfig) -> RunConfig:
    """The config that resumes the run saved as `saved`: `cfg`, except that a LEGACY_VALUES key the saved config
    lacks takes its legacy value where `cfg` holds the key's default (so the same command resumes an old run with
    the behaviour it was trained with; a run given another value explicitly is refused by the usual diff, or for
    an execution setting, resumes with it)."""
    if not isinstance(saved, dict):
        return cfg
    saved = with_execution_section(saved)
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    changes: dict[str, Any] = {}
    section_changes: dict[str, dict[str, Any]] = {"agent": {}, "execution": {}}
    for key, value in LEGACY_VALUES.items():
        head, _, rest = key.partition(".")
        if not rest:
            if key not in saved and getattr(cfg, key) == run_defaults[key]:
                changes[key] = value
            continue
        section, defaults = getattr(cfg, head), _section_defaults(cfg.algo, head)
        saved_section = saved.get(head) or {}
        old_default = key in SAVED_LEGACY_DEFAULTS and rest in saved_section and saved_section[rest] is value
        if (
            rest in defaults
            and dataclasses.is_dataclass(section)
            and (rest not in saved_section or old_default)
            and getattr(section, rest) == defaults[rest]
        ):
            section_changes[head][rest] = value
    for head, values in section_changes.items():
        if values:
            changes[head] = dataclasses.replace(getattr(cfg, head), **values)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def config_diff(saved: dict[str, Any], new: dict[str, Any], ignore=RESUME_SAFE_KEYS) -> list[str]:
    """Human-readable differences between two config dicts (nested agent keys as agent.x; the execution section is
    resume-safe, in `ignore`)."""

    def flat(d):
        out = {}
        for k, v in d.items():
            if k == "agent" and isinstance(v, dict):
                out.update({f"agent.{ak}": av for ak, av in v.items()})
            elif k not in ignore:
                out[k] = v
        return out

    a, b = flat(saved), flat(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, list) or isinstance(vb, list):
            va, vb = (
                list(va) if isinstance(va, (list, tuple)) else va,
                list(vb) if isinstance(vb, (list, tuple)) else vb,
            )
        if va != vb:
            lines.append(f"  {key}: saved {va!r} -> now {vb!r}")
    return lines
