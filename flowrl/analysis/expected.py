"""The study a user expected, and the report of runs that are missing, unfinished or unusable.

Expect file (YAML or JSON):
  algos: [flowrl, sac, td3]
  tasks: [dmc:cheetah-run, hb:h1hand-walk-v0]
  seeds: [0, 1, 2, 3, 4]        # or a count: 5  (seeds 0..4)
  steps: 1000000                # or per task: {dmc:cheetah-run: 1000000, hb:h1hand-walk-v0: 2000000}
Without one, the expected set is inferred: each algorithm is expected on every seed it used anywhere,
and on every task any main algorithm used (an ablation variant '<algo>-<suffix>': on the tasks it
was run on); each task's target step is the largest configured `steps` among its runs. An expect
file is the reliable way to catch runs that never started.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from flowrl.analysis.runs import AnalysisError, RunRecord
from flowrl.analysis.tasks import suite_of

REPORT_COLUMNS = ["algo", "task", "seed", "status", "last_step", "target_steps", "run_dir", "detail"]


@dataclasses.dataclass
class ExpectedStudy:
    algos: list[str]
    tasks: list[str]
    seeds: list[int]
    steps: int | dict[str, int]
    inferred: bool = False  # built from the runs found, not from a file
    combos: list[tuple[str, str, int]] | None = None  # explicit (algo, task, seed) set when inferred

    def expected_runs(self) -> list[tuple[str, str, int]]:
        if self.combos is not None:
            return self.combos
        return [(a, t, s) for a in self.algos for t in self.tasks for s in self.seeds]

    def target_for(self, task: str) -> int:
        return int(self.steps[task] if isinstance(self.steps, dict) else self.steps)

    @staticmethod
    def from_mapping(data: dict, where: str = "expect") -> ExpectedStudy:
        if not isinstance(data, dict):
            raise AnalysisError(f"{where}: expected a mapping with keys algos, tasks, seeds, steps")
        missing = [k for k in ("algos", "tasks", "seeds", "steps") if k not in data]
        unknown = set(data) - {"algos", "tasks", "seeds", "steps"}
        if missing or unknown:
            raise AnalysisError(
                f"{where}: needs keys algos, tasks, seeds, steps"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {sorted(unknown)}" if unknown else "")
            )
        seeds = data["seeds"]
        seeds = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
        tasks = [str(t) for t in data["tasks"]]
        for t in tasks:
            try:
                suite_of(t)
            except ValueError as exc:
                raise AnalysisError(f"{where}: {exc}") from None
        steps = data["steps"]
        if isinstance(steps, dict):
            absent = [t for t in tasks if t not in steps]
            if absent:
                raise AnalysisError(f"{where}: steps has no entry for task(s) {absent}")
            steps = {str(k): int(v) for k, v in steps.items()}
        else:
            steps = int(steps)
        return ExpectedStudy([str(a) for a in data["algos"]], tasks, seeds, steps)


def load_expected(path: str | Path) -> ExpectedStudy:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"expect file {path} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise AnalysisError(
            f"expect file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    return ExpectedStudy.from_mapping(data, str(path))


def infer_expected(records: list[RunRecord]) -> ExpectedStudy:
    usable = [r for r in records if r.algo is not None]
    steps: dict[str, int] = {}
    for r in usable:
        steps[r.task] = max(steps.get(r.task, 0), r.steps)
    algos = sorted({r.algo for r in usable})
    variants = {a for a in algos if any(a.startswith(b + "-") for b in algos)}
    main_tasks = sorted({r.task for r in usable if r.algo not in variants})
    combos = []
    for algo in algos:
        seeds = sorted({r.seed for r in usable if r.algo == algo})
        tasks = sorted({r.task for r in usable if r.algo == algo}) if algo in variants else main_tasks
        combos += [(algo, t, s) for t in tasks for s in seeds]
    return ExpectedStudy(algos, sorted(steps), sorted({r.seed for r in usable}), steps, inferred=True, combos=combos)


def target_steps(expected: ExpectedStudy, records: list[RunRecord]) -> dict[str, int]:
    """Target step per task: from the expect file, else the largest configured budget among its runs."""
    targets = {}
    for r in records:
        if r.algo is not None:
            targets[r.task] = max(targets.get(r.task, 0), r.steps)
    for task in expected.tasks:
        targets[task] = expected.target_for(task)
    return targets


def run_status(rec: RunRecord, target: int) -> tuple[str, str]:
    """(status, detail) for one run against its task's target step; status 'complete' when usable."""
    if rec.problem:
        return "unusable", rec.problem
    last = rec.last_step
    if last >= target:
        return "complete", ""
    if rec.finished:
        return "short", f"finished at {last} steps (configured steps={rec.steps}) but the target is {target}"
    return "unfinished", f"no DONE marker; last evaluation at step {last} of {target}"


def missing_report(records: list[RunRecord], expected: ExpectedStudy, targets: dict[str, int]) -> pd.DataFrame:
    """One row per expected-but-absent run and per run that is unfinished, short or unusable."""
    rows = []
    by_key = {r.key: r for r in records if r.algo is not None}
    for algo, task, seed in expected.expected_runs():
        if (algo, task, seed) not in by_key:
            rows.append(
                {
                    "algo": algo,
                    "task": task,
                    "seed": seed,
                    "status": "missing",
                    "last_step": None,
                    "target_steps": targets.get(task),
                    "run_dir": "",
                    "detail": "no run directory"
                    + (" (expected set inferred from the runs found)" if expected.inferred else ""),
                }
            )
    for rec in records:
        if rec.algo is None:
            rows.append(
                {
                    "algo": None,
                    "task": None,
                    "seed": None,
                    "status": "unusable",
                    "last_step": None,
                    "target_steps": None,
                    "run_dir": str(rec.path),
                    "detail": rec.problem,
                }
            )
            continue
        status, detail = run_status(rec, targets[rec.task])
        if status != "complete":
            rows.append(
                {
                    "algo": rec.algo,
                    "task": rec.task,
                    "seed": rec.seed,
                    "status": status,
                    "last_step": rec.last_step,
                    "target_steps": targets[rec.task],
                    "run_dir": str(rec.path),
                    "detail": detail,
                }
            )
    df = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    if not df.empty:
        df = df.sort_values(["status", "algo", "task", "seed"], na_position="first", kind="stable")
    return df.reset_index(drop=True)


def print_missing(report: pd.DataFrame, stream=None) -> None:
    stream = stream or sys.stderr
    if report.empty:
        print("flowrl.analysis: every expected run is present and complete.", file=stream)
        return
    counts = report["status"].value_counts().to_dict()
    print(
        f"flowrl.analysis: WARNING {len(report)} run(s) missing or incomplete: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        file=stream,
    )
    for row in report.itertuples():
        where = f" [{row.run_dir}]" if row.run_dir else ""
        got = f" reached step {int(row.last_step)}" if pd.notna(row.last_step) else ""
        print(
            f"  {row.status:<10} algo={row.algo} task={row.task} seed={row.seed}{got}{where}: {row.detail}", file=stream
        )
