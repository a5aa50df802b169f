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
    agent: Any = None  # the algorithm's own dataclass config, filled by `resolve_config`

    def validate(self) -> None:
        positive = ["steps", "batch_size", "replay_size", "updates_per_step", "eval_every", "eval_episodes",
                    "eval_envs", "keep_checkpoints", "log_every", "replay_recent_window"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ["start_steps", "checkpoint_every", "torch_threads"]:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.replay_recent_fraction is not None and not 0 <= self.replay_recent_fraction <= 1:
            raise ValueError(f"replay_recent_fraction must be in [0, 1], got {self.replay_recent_fraction}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


# Settings that may change between an interrupted run and its resumption without changing results.
# on_divergence changes nothing until a run diverges, where "stop" ends it: so a stopped run may resume with
# "rollback".
RESUME_SAFE_KEYS = {"device", "progress", "tensorboard", "torch_threads", "on_divergence"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML-parsed value to the dataclass field type `tp`, or raise a clear error."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
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
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{key}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; it is a number to a user
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return origin(value)
    return value


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


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'agent.lr': 1} -> {'agent': {'lr': 1}}; later keys win."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            if head != "agent":
                raise ValueError(f"override {key!r}: only 'agent.' keys may be nested")
            out.setdefault("agent", {})
            if not isinstance(out["agent"], dict):
                raise ValueError("'agent' must be a mapping of agent settings")
            out["agent"][rest] = value
        else:
            if key == "agent" and isinstance(value, dict):
                out.setdefault("agent", {}).update(value)
            else:
                out[key] = value
    return out


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "agent":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise ValueError("'agent' must be a mapping of agent settings")
                out.setdefault("agent", {}).update(value)
            else:
                out[key] = value
    return out


def resolve_config(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig (with the agent's dataclass config) from merged settings."""
    from flowrl.agents.registry import get_agent_class

    values = dict(values)
    agent_values = values.pop("agent", None) or {}
    cfg = build_dataclass(RunConfig, values, "run")
    agent_cls = get_agent_class(cfg.algo)
    cfg.agent = build_dataclass(agent_cls.Config, agent_values, "agent")
    if cfg.replay_recent_fraction is None:
        cfg.replay_recent_fraction = float(getattr(agent_cls, "replay_recent_fraction", 0.0))
    cfg.validate()
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["agent"] = dataclasses.asdict(cfg.agent) if dataclasses.is_dataclass(cfg.agent) else cfg.agent
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
# run resumes as it was, while new runs get the default. "agent.<key>" applies where the run's agent has the key.
LEGACY_VALUES: dict[str, Any] = {
    "replay_split": "round",  # runs took round(B * fraction) recent indices (205 + 51 at B=256)
    "agent.act_precision": "amp",  # FlowRL acted and evaluated under its update autocast (bf16 on CUDA)
}


def _agent_defaults(algo: Any) -> dict[str, Any]:
    from flowrl.agents.registry import get_agent_class

    try:
        cls = get_agent_class(algo).Config
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls)}


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` with the LEGACY_VALUES of the keys it lacks (a copy; anything but a mapping is returned as it is)."""
    if not isinstance(saved, dict):
        return saved
    out = dict(saved)
    agent_fields = _agent_defaults(out.get("algo", RunConfig.algo))
    for key, value in LEGACY_VALUES.items():
        head, _, rest = key.partition(".")
        if not rest:
            out.setdefault(key, value)
        elif rest in agent_fields and isinstance(out.get("agent") or {}, dict) and rest not in (out.get("agent") or {}):
            out["agent"] = {**(out.get("agent") or {}), rest: value}
    return out


def resume_config(saved: Any, cfg: RunConfig) -> RunConfig:
    """The config that resumes the run saved as `saved`: `cfg`, except that a LEGACY_VALUES key the saved config
    lacks takes its legacy value where `cfg` holds the key's default (so the same command resumes an old run with
    the behaviour it was trained with; a run given another value explicitly is refused by the usual diff)."""
    if not isinstance(saved, dict):
        return cfg
    run_defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    agent_defaults = _agent_defaults(cfg.algo)
    run_changes: dict[str, Any] = {}
    agent_changes: dict[str, Any] = {}
    for key, value in LEGACY_VALUES.items():
        head, _, rest = key.partition(".")
        if not rest:
            if key not in saved and getattr(cfg, key) == run_defaults[key]:
                run_changes[key] = value
        elif (rest in agent_defaults and dataclasses.is_dataclass(cfg.agent)
              and rest not in (saved.get("agent") or {}) and getattr(cfg.agent, rest) == agent_defaults[rest]):
            agent_changes[rest] = value
    if agent_changes:
        run_changes["agent"] = dataclasses.replace(cfg.agent, **agent_changes)
    return dataclasses.replace(cfg, **run_changes) if run_changes else cfg


def config_diff(saved: dict[str, Any], new: dict[str, Any], ignore=RESUME_SAFE_KEYS) -> list[str]:
    """Human-readable differences between two config dicts (nested agent keys as agent.x)."""

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
            va, vb = list(va) if isinstance(va, (list, tuple)) else va, list(vb) if isinstance(vb, (list, tuple)) else vb
        if va != vb:
            lines.append(f"  {key}: saved {va!r} -> now {vb!r}")
    return lines
