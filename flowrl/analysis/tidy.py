"""The tidy table: one row per evaluation of one run (ours or a reference), written as CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flowrl.analysis.normalise import Normalisation
from flowrl.analysis.runs import RunRecord
from flowrl.analysis.tasks import group_of, suite_of

TIDY_COLUMNS = [
    "algo",
    "task",
    "suite",
    "group",
    "seed",
    "step",
    "return",
    "return_std",
    "success",
    "score",
    "episodes",
    "wall_time",
    "finished",
    "reference",
    "source",
]


def runs_to_tidy(records: list[RunRecord]) -> pd.DataFrame:
    """Evaluations of every usable run; `score` is filled in by `add_scores`."""
    frames = []
    for rec in records:
        if rec.problem or rec.evals is None:
            continue
        df = rec.evals.copy()
        df.insert(0, "algo", rec.algo)
        df.insert(1, "task", rec.task)
        df.insert(2, "seed", rec.seed)
        df["finished"] = rec.finished
        df["reference"] = False
        df["source"] = str(rec.path)
        frames.append(df)
    return as_tidy(frames)


def as_tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames into the tidy column layout, deriving suite and group from the task."""
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TIDY_COLUMNS})
    df = pd.concat(frames, ignore_index=True)
    for col in TIDY_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df["suite"] = df["task"].map(suite_of)
    df["group"] = df["task"].map(group_of)
    df["score"] = np.nan
    return df[TIDY_COLUMNS]


def add_scores(tidy: pd.DataFrame, norm: Normalisation) -> pd.DataFrame:
    tidy = tidy.copy()
    if not tidy.empty:
        tidy["score"] = norm.scores(tidy["task"].to_numpy(), tidy["return"].to_numpy())
    return tidy


def combine(ours: pd.DataFrame, references: pd.DataFrame | None) -> pd.DataFrame:
    frames = [f for f in (ours, references) if f is not None and not f.empty]
    if not frames:
        return ours
    df = pd.concat(frames, ignore_index=True)
    df["seed"] = df["seed"].astype(np.int64)
    df["step"] = df["step"].astype(np.int64)
    df["finished"] = df["finished"].astype(bool)
    df["reference"] = df["reference"].astype(bool)
    return df.sort_values(["reference", "algo", "task", "seed", "step"], kind="stable").reset_index(drop=True)


def write_tidy(tidy: pd.DataFrame, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, pq_path = out_dir / "tidy.csv", out_dir / "tidy.parquet"
    tidy.to_csv(csv_path, index=False)
    tidy.to_parquet(pq_path, index=False)
    return [csv_path, pq_path]
