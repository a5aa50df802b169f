"""Training and inference time for Fig. 1: a user-supplied CSV, or training time from the runs.

Timing CSV columns: algo, task, train_hours, inference_ms (either time column may be empty).
Without it, train_hours comes from each finished run's eval.csv `wall_time` at its final evaluation
(seconds of training summed over resumes; hardware in manifest.json), and inference time is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flowrl.analysis.runs import AnalysisError

TIMING_COLUMNS = ["algo", "task", "train_hours", "inference_ms", "source"]


def load_timing(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"timing file {path} does not exist")
    df = pd.read_csv(path)
    if not {"algo", "task"} <= set(df.columns) or not ({"train_hours", "inference_ms"} & set(df.columns)):
        raise AnalysisError(
            f"timing file {path}: needs columns algo, task and train_hours and/or inference_ms (has {list(df.columns)})"
        )
    for col in ("train_hours", "inference_ms"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df["source"] = str(path)
    return df[TIMING_COLUMNS]


def timing_from_runs(tidy: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    counted = final[final["counted"]]
    rows = []
    for r in counted.itertuples():
        run = tidy[
            (tidy["algo"] == r.algo)
            & (tidy["task"] == r.task)
            & (tidy["seed"] == r.seed)
            & (tidy["step"] == r.final_step)
            & ~tidy["reference"]
        ]
        if not run.empty and np.isfinite(run["wall_time"].iloc[0]):
            rows.append(
                {
                    "algo": r.algo,
                    "task": r.task,
                    "train_hours": run["wall_time"].iloc[0] / 3600.0,
                    "inference_ms": np.nan,
                    "source": "eval.csv wall_time",
                }
            )
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)
