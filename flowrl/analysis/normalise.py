"""Per-suite normalisation of returns to scores, overridable with a YAML file.

Methods:
  divide        score = return / scale                  (DMC default: scale 1000, the maximum return)
  random_target score = (return - random) / (target - random)   (HumanoidBench default, hb_scores.py)
  raw           score = return                          (only sensible when aggregating one task)
  none          no score (NaN): the task is left out of normalised aggregates, with a note

YAML override (every key optional):
  suites:
    gym: {method: divide, scale: 10000}
  tasks:
    "gym:Humanoid-v5": {random: 120.0, target: 6000.0}     # method random_target implied
    "hb:g1-walk-v0": {method: random_target, random: 3.0, target: 700}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import yaml

from flowrl.analysis.hb_scores import HB_SOURCES, hb_constants
from flowrl.analysis.tasks import SUITES, suite_of

METHODS = ("divide", "random_target", "raw", "none")


@dataclasses.dataclass(frozen=True)
class Rule:
    method: str
    scale: float | None = None
    random: float | None = None
    target: float | None = None
    source: str = ""

    def apply(self, returns: np.ndarray) -> np.ndarray:
        returns = np.asarray(returns, dtype=float)
        if self.method == "divide":
            return returns / self.scale
        if self.method == "random_target":
            return (returns - self.random) / (self.target - self.random)
        if self.method == "raw":
            return returns.copy()
        return np.full_like(returns, np.nan)

    def describe(self) -> str:
        if self.method == "divide":
            return f"return / {self.scale:g}"
        if self.method == "random_target":
            return f"(return - {self.random:g}) / ({self.target:g} - {self.random:g})"
        return {"raw": "return (unnormalised)", "none": "not normalised (left out of aggregates)"}[self.method]


DEFAULT_SUITE_RULES: dict[str, Rule] = {
    "dmc": Rule("divide", scale=1000.0, source="DMC returns lie in [0, 1000] (1000 steps, reward in [0, 1])"),
    "hb": Rule("random_target", source=f"target: {HB_SOURCES['target']}; random: {HB_SOURCES['random']}"),
    "gym": Rule("none", source="no standard normaliser for Gym MuJoCo; set one in a normalisation YAML"),
}


class NormalisationError(ValueError):
    pass


def _rule_from_mapping(values: dict, where: str, default_method: str | None) -> Rule:
    if not isinstance(values, dict):
        raise NormalisationError(f"{where}: expected a mapping like {{method: divide, scale: 1000}}, got {values!r}")
    unknown = set(values) - {"method", "scale", "random", "target", "source"}
    if unknown:
        raise NormalisationError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: method, scale, random, target, source"
        )
    method = values.get("method") or ("random_target" if "random" in values or "target" in values else default_method)
    if method not in METHODS:
        raise NormalisationError(f"{where}: method {method!r} is not one of {', '.join(METHODS)}")
    nums = {}
    for key in ("scale", "random", "target"):
        if values.get(key) is not None:
            try:
                nums[key] = float(values[key])
            except (TypeError, ValueError):
                raise NormalisationError(f"{where}: {key} must be a number, got {values[key]!r}") from None
    if method == "divide" and not nums.get("scale"):
        raise NormalisationError(f"{where}: method divide needs a non-zero 'scale'")
    if method == "random_target" and where.startswith("tasks"):
        if "random" not in nums or "target" not in nums or nums["random"] == nums["target"]:
            raise NormalisationError(f"{where}: method random_target needs 'random' and 'target' (different)")
    return Rule(method, source=str(values.get("source", "normalisation file")), **nums)


@dataclasses.dataclass
class Normalisation:
    suites: dict[str, Rule] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SUITE_RULES))
    tasks: dict[str, Rule] = dataclasses.field(default_factory=dict)
    origin: str = "built-in defaults"

    def rule_for(self, task: str) -> Rule:
        if task in self.tasks:
            return self.tasks[task]
        suite = suite_of(task)
        rule = self.suites[suite]
        if rule.method == "random_target" and (rule.random is None or rule.target is None):
            if suite != "hb":
                return Rule("none", source=f"{suite}: random_target needs per-task random/target values")
            random, target = hb_constants(task.split(":", 1)[1])
            if random is None or target is None:
                return Rule(
                    "none",
                    source=f"no published random/target return for {task}; add it under tasks: in a normalisation YAML",
                )
            return Rule("random_target", random=random, target=target, source=rule.source)
        return rule

    def scores(self, tasks, returns) -> np.ndarray:
        """Normalised scores for parallel arrays of task ids and returns."""
        tasks = np.asarray(tasks, dtype=object)
        returns = np.asarray(returns, dtype=float)
        out = np.full(returns.shape, np.nan)
        for task in np.unique(tasks):
            mask = tasks == task
            out[mask] = self.rule_for(task).apply(returns[mask])
        return out

    def is_normalised(self, task: str) -> bool:
        return self.rule_for(task).method in ("divide", "random_target")

    def table(self, tasks) -> list[dict]:
        rows = []
        for task in sorted(set(tasks)):
            rule = self.rule_for(task)
            rows.append({"task": task, "method": rule.method, "formula": rule.describe(), "source": rule.source})
        return rows


def load_normalisation(path: str | Path | None) -> Normalisation:
    norm = Normalisation()
    if path is None:
        return norm
    path = Path(path)
    if not path.is_file():
        raise NormalisationError(f"normalisation file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) - {"suites", "tasks"}:
        raise NormalisationError(
            f"{path}: top-level keys must be 'suites' and/or 'tasks' "
            f"(got {sorted(data) if isinstance(data, dict) else type(data).__name__})"
        )
    for suite, values in (data.get("suites") or {}).items():
        if suite not in SUITES:
            raise NormalisationError(f"{path}: unknown suite {suite!r}; suites are {', '.join(SUITES)}")
        norm.suites[suite] = _rule_from_mapping(values, f"suites.{suite}", None)
    for task, values in (data.get("tasks") or {}).items():
        suite_of(task)  # raises on a task without a suite prefix
        norm.tasks[task] = _rule_from_mapping(values, f"tasks.{task}", None)
    norm.origin = str(path)
    return norm
