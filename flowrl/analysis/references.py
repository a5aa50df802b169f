"""Published per-task learning curves from other projects, imported as reference-only rows.

Accepted formats (detected from the CSV header):
  TD-MPC2  (github nicklashansen/tdmpc2, results/<method>/<task>.csv): columns step,reward,seed
           (Meta-World files have `success` instead of `reward`). The method is the parent folder name.
  SimBa    (github SonyResearch/simba, results/<method>.csv): columns exp_name,env_name,seed,metric,env_step,value
           (a leading unnamed index column is allowed); metric avg_return -> return, avg_success -> success,
           other metrics are ignored. The method is exp_name.
Task names are mapped to ours with `tasks.map_external_task`. Reference rows are never part of our statistics.

Steps. This project and the official FlowRL code count environment steps at action repeat 1: one step is one
simulator step (dm_control: 1000 per episode), and one agent decision each. Both projects train with action
repeat 2 (each decision applied for two simulator steps), and both publish their curves in simulator steps:
  TD-MPC2: tdmpc2/envs/dmcontrol.py (DMControlWrapper.step applies each action twice) and
           tdmpc2/trainer/online_trainer.py (OnlineTrainer._step counts decisions); the files in results/ have that
           count multiplied by the action repeat before they were written (the author, github
           nicklashansen/tdmpc2 issue #45), so their `step` is simulator steps. A TD-MPC2 run's own
           logs/<task>/<seed>/<exp>/eval.csv (step, episode_reward) still counts decisions; it is not read here.
  SimBa:   run.py logs `env_step = interaction_step * action_repeat * num_train_envs` ("using env steps simplifies
           the comparison"), action_repeat 2 in configs/env/dmc_hard.yaml, dmc_em.yaml and hb_locomotion.yaml;
           results/*.csv hold that env_step.
`STEP_UNITS` records this per format and `to_env_steps` converts a file's steps to environment steps at action
repeat 1 (for both formats the factor is 1); figures label their axis with that unit (`STEP_AXIS`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from flowrl.analysis.runs import AnalysisError
from flowrl.analysis.tasks import map_external_task

TDMPC2_COLUMNS = {"step", "seed"}
SIMBA_COLUMNS = {"exp_name", "env_name", "seed", "metric", "env_step", "value"}
SIMBA_METRICS = {"avg_return": "return", "avg_success": "success"}
STEP_AXIS = "Environment steps (action repeat 1)"  # the unit of every curve's x axis, ours and references alike


@dataclasses.dataclass(frozen=True)
class StepUnit:
    """What a reference format's step column counts, and how many environment steps (action repeat 1) one is."""

    counts: str
    env_steps_per_unit: float
    defined_in: str


STEP_UNITS = {
    "tdmpc2": StepUnit(
        "simulator steps (agent decisions x action repeat 2, multiplied before publishing)",
        1.0,
        "nicklashansen/tdmpc2: tdmpc2/envs/dmcontrol.py, tdmpc2/trainer/online_trainer.py, issue #45",
    ),
    "simba": StepUnit(
        "simulator steps (env_step = interaction steps x action repeat 2 x training envs)",
        1.0,
        "SonyResearch/simba: run.py, configs/env/*.yaml (action_repeat)",
    ),
}


def to_env_steps(steps, fmt: str) -> np.ndarray:
    """A reference file's step column (format `fmt`) in environment steps at action repeat 1, as integers."""
    unit = STEP_UNITS[fmt]
    return np.round(
        pd.to_numeric(pd.Series(steps), errors="raise").to_numpy(np.float64) * unit.env_steps_per_unit
    ).astype(np.int64)


def detect_format(columns) -> str | None:
    cols = {c.strip() for c in columns}
    if SIMBA_COLUMNS <= cols:
        return "simba"
    if TDMPC2_COLUMNS <= cols and ({"reward", "success"} & cols):
        return "tdmpc2"
    return None


def _read_tdmpc2(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "external_task": path.stem,
            "algo": path.parent.name,
            "seed": pd.to_numeric(df["seed"], errors="raise").astype(np.int64),
            "step": to_env_steps(df["step"], "tdmpc2"),
            "return": pd.to_numeric(df["reward"], errors="coerce") if "reward" in df else np.nan,
            "success": pd.to_numeric(df["success"], errors="coerce") if "success" in df else np.nan,
        }
    )
    return out


def _read_simba(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["metric"].isin(SIMBA_METRICS)]
    if df.empty:
        return pd.DataFrame()
    keys = ["exp_name", "env_name", "seed", "env_step"]
    wide = df.pivot_table(index=keys, columns="metric", values="value", aggfunc="last").reset_index()
    return pd.DataFrame(
        {
            "external_task": wide["env_name"].astype(str),
            "algo": wide["exp_name"].astype(str),
            "seed": pd.to_numeric(wide["seed"]).astype(np.int64),
            "step": to_env_steps(wide["env_step"], "simba"),
            "return": wide["avg_return"] if "avg_return" in wide else np.nan,
            "success": wide["avg_success"] if "avg_success" in wide else np.nan,
        }
    )


def read_reference_file(path: Path) -> tuple[pd.DataFrame, str]:
    df = pd.read_csv(path)
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    fmt = detect_format(df.columns)
    if fmt is None:
        hint = (
            " (a TD-MPC2 run's own eval.csv counts agent decisions, not simulator steps: use the published "
            "results/ files)"
            if {"step", "episode_reward"} <= {str(c) for c in df.columns}
            else ""
        )
        raise AnalysisError(
            f"reference file {path}: unrecognised columns {list(df.columns)}; expected TD-MPC2 "
            f"(step,reward,seed) or SimBa (exp_name,env_name,seed,metric,env_step,value){hint}"
        )
    rows = _read_tdmpc2(path, df) if fmt == "tdmpc2" else _read_simba(df)
    if not rows.empty:
        rows["source"] = f"{fmt}:{path}"
    return rows, fmt


def load_references(paths: list[Path], study_tasks: set[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Reference rows (tidy columns, reference=True) and notes on what was read and what was skipped.

    `paths` are files or folders (searched recursively for *.csv). With `study_tasks`, only rows for
    those tasks are kept (the rest are counted in the notes).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.csv"))
        elif p.is_file():
            files.append(p)
        else:
            raise AnalysisError(f"reference path {p} does not exist")
    frames, notes, unmapped, off_study, formats = [], [], set(), 0, set()
    for f in files:
        rows, fmt = read_reference_file(f)
        formats.add(fmt)
        if rows.empty:
            notes.append(f"{f}: {fmt} format, no avg_return/avg_success rows")
            continue
        names = {n: map_external_task(n) for n in rows["external_task"].unique()}
        rows["task"] = rows["external_task"].map(names)
        bad = rows["task"].isna()
        unmapped |= set(rows.loc[bad, "external_task"])
        rows = rows[~bad]
        if study_tasks is not None:
            keep = rows["task"].isin(study_tasks)
            off_study += int((~keep).sum())
            rows = rows[keep]
        frames.append(rows.drop(columns="external_task"))
    if unmapped:
        listed = sorted(unmapped)
        notes.append(
            f"{len(listed)} reference task(s) with no DMC/Gym/HumanoidBench equivalent skipped: "
            + ", ".join(listed[:12])
            + (" ..." if len(listed) > 12 else "")
        )
    if off_study:
        notes.append(f"{off_study} reference rows for tasks outside this study were skipped")
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame(), notes + [f"read {len(files)} reference file(s); none matched a study task"]
    ref = pd.concat(frames, ignore_index=True)
    ref["return_std"] = np.nan
    ref["episodes"] = np.nan
    ref["wall_time"] = np.nan
    ref["finished"] = True
    ref["reference"] = True
    summary = ref.groupby("algo").agg(tasks=("task", "nunique"), seeds=("seed", "nunique")).reset_index()
    notes.insert(
        0,
        f"read {len(files)} reference file(s): "
        + "; ".join(f"{r.algo} ({r.tasks} task(s), {r.seeds} seed(s))" for r in summary.itertuples()),
    )
    notes[1:1] = [
        f"{fmt} steps count {STEP_UNITS[fmt].counts}: x{STEP_UNITS[fmt].env_steps_per_unit:g} to environment "
        f"steps at action repeat 1 ({STEP_UNITS[fmt].defined_in})"
        for fmt in sorted(formats)
    ]
    return ref, notes
