"""Published per-task learning curves from other projects, imported as reference-only rows.

Accepted formats (detected from the CSV header):
  TD-MPC2  (github nicklashansen/tdmpc2, results/<method>/<task>.csv): columns step,reward,seed
           (Meta-World files have `success` instead of `reward`). The method is the parent folder name.
  SimBa    (github SonyResearch/simba, results/<method>.csv): columns exp_name,env_name,seed,metric,env_step,value
           (a leading unnamed index column is allowed); metric avg_return -> return, avg_success -> success,
           other metrics are ignored. The method is exp_name.
Task names are mapped to ours with `tasks.map_external_task`. Steps are taken as environment steps,
as both projects report them. Reference rows are never part of our statistics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flowrl.analysis.runs import AnalysisError
from flowrl.analysis.tasks import map_external_task

TDMPC2_COLUMNS = {"step", "seed"}
SIMBA_COLUMNS = {"exp_name", "env_name", "seed", "metric", "env_step", "value"}
SIMBA_METRICS = {"avg_return": "return", "avg_success": "success"}


def detect_format(columns) -> str | None:
    cols = {c.strip() for c in columns}
    if SIMBA_COLUMNS <= cols:
        return "simba"
    if TDMPC2_COLUMNS <= cols and ({"reward", "success"} & cols):
        return "tdmpc2"
    return None


def _read_tdmpc2(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "external_task": path.stem, "algo": path.parent.name,
        "seed": pd.to_numeric(df["seed"], errors="raise").astype(np.int64),
        "step": pd.to_numeric(df["step"], errors="raise").astype(np.int64),
        "return": pd.to_numeric(df["reward"], errors="coerce") if "reward" in df else np.nan,
        "success": pd.to_numeric(df["success"], errors="coerce") if "success" in df else np.nan,
    })
    return out


def _read_simba(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["metric"].isin(SIMBA_METRICS)]
    if df.empty:
        return pd.DataFrame()
    keys = ["exp_name", "env_name", "seed", "env_step"]
    wide = df.pivot_table(index=keys, columns="metric", values="value", aggfunc="last").reset_index()
    return pd.DataFrame({
        "external_task": wide["env_name"].astype(str), "algo": wide["exp_name"].astype(str),
        "seed": pd.to_numeric(wide["seed"]).astype(np.int64),
        "step": pd.to_numeric(wide["env_step"]).round().astype(np.int64),
        "return": wide["avg_return"] if "avg_return" in wide else np.nan,
        "success": wide["avg_success"] if "avg_success" in wide else np.nan,
    })


def read_reference_file(path: Path) -> tuple[pd.DataFrame, str]:
    df = pd.read_csv(path)
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    fmt = detect_format(df.columns)
    if fmt is None:
        raise AnalysisError(f"reference file {path}: unrecognised columns {list(df.columns)}; expected TD-MPC2 "
                            "(step,reward,seed) or SimBa (exp_name,env_name,seed,metric,env_step,value)")
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
    frames, notes, unmapped, off_study = [], [], set(), 0
    for f in files:
        rows, fmt = read_reference_file(f)
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
        notes.append(f"{len(listed)} reference task(s) with no DMC/Gym/HumanoidBench equivalent skipped: "
                     + ", ".join(listed[:12]) + (" ..." if len(listed) > 12 else ""))
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
    notes.insert(0, f"read {len(files)} reference file(s): " + "; ".join(
        f"{r.algo} ({r.tasks} task(s), {r.seeds} seed(s))" for r in summary.itertuples()))
    return ref, notes
