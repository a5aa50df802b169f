"""Find and read training run directories (docs/run-format.md) anywhere under one or more roots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

EVAL_COLUMNS = ("step", "return_mean", "return_std", "success_mean", "episodes", "wall_time")
BACKUP_MARKER = ".replaced-"  # flowrl-train --force renames the old finished run to <name>.replaced-<time>


class AnalysisError(Exception):
    """Bad input to the analysis, reported to the user with what to do about it."""


@dataclasses.dataclass
class RunRecord:
    path: Path
    algo: str | None = None
    task: str | None = None
    seed: int | None = None
    steps: int | None = None  # configured budget
    eval_every: int | None = None
    eval_episodes: int | None = None  # configured episodes per evaluation
    hardware: str | None = None  # from manifest.json (hardware_of); None without a readable manifest
    finished: bool = False  # DONE marker present
    evals: pd.DataFrame | None = None  # step, return, return_std, success, episodes, wall_time
    problem: str | None = None  # why this run cannot be used (None: usable)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.algo, self.task, self.seed

    @property
    def last_step(self) -> int | None:
        if self.evals is None or self.evals.empty:
            return None
        return int(self.evals["step"].iloc[-1])


def find_run_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """Run directories (those holding config.yaml) under root, and --force backups that were skipped."""
    root = Path(root)
    if not root.is_dir():
        raise AnalysisError(
            f"runs directory {root} does not exist or is not a directory; pass --runs DIR "
            "with the study's run directories under it"
        )
    runs, backups = [], []
    for cfg in sorted(root.rglob("config.yaml")):
        run_dir = cfg.parent
        if any(BACKUP_MARKER in part for part in run_dir.relative_to(root).parts):
            backups.append(run_dir)
        else:
            runs.append(run_dir)
    return runs, backups


def _read_evals(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in ("step", "return_mean") if c not in df.columns]
    if missing:
        raise ValueError(f"eval.csv lacks column(s) {missing} (has {list(df.columns)})")
    out = pd.DataFrame(
        {
            "step": pd.to_numeric(df["step"], errors="raise").astype(np.int64),
            "return": pd.to_numeric(df["return_mean"], errors="coerce"),
            "return_std": pd.to_numeric(df.get("return_std", np.nan), errors="coerce"),
            "success": pd.to_numeric(df.get("success_mean", np.nan), errors="coerce"),
            "episodes": pd.to_numeric(df.get("episodes", np.nan), errors="coerce"),
            "wall_time": pd.to_numeric(df.get("wall_time", np.nan), errors="coerce"),
        }
    )
    # A resumed run may have re-evaluated a step; keep the last row written for each step.
    out = out.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    return out


def read_run(run_dir: Path) -> RunRecord:
    rec = RunRecord(path=Path(run_dir))
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        rec.problem = f"config.yaml unreadable: {exc}"
        return rec
    if not isinstance(cfg, dict):
        rec.problem = "config.yaml is not a mapping"
        return rec
    missing = [k for k in ("algo", "task", "seed", "steps") if k not in cfg]
    if missing:
        rec.problem = f"config.yaml lacks {missing}"
        return rec
    rec.algo, rec.task = str(cfg["algo"]), str(cfg["task"])
    try:
        rec.seed, rec.steps = int(cfg["seed"]), int(cfg["steps"])
        rec.eval_every = int(cfg["eval_every"]) if cfg.get("eval_every") else None
        rec.eval_episodes = int(cfg["eval_episodes"]) if cfg.get("eval_episodes") else None
    except (TypeError, ValueError):
        rec.problem = f"config.yaml: seed/steps/eval_every are not integers ({cfg.get('seed')!r}, {cfg.get('steps')!r})"
        return rec
    rec.finished = (run_dir / "DONE").exists()
    rec.hardware = read_hardware(run_dir / "manifest.json")
    eval_path = run_dir / "eval.csv"
    if not eval_path.exists():
        rec.problem = "no eval.csv yet (the run has not evaluated once)"
        return rec
    try:
        rec.evals = _read_evals(eval_path)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        rec.problem = f"eval.csv unreadable: {exc}"
        return rec
    if rec.evals.empty:
        rec.problem = "eval.csv has no rows yet"
    return rec


def hardware_of(manifest: dict) -> str | None:
    """'cuda: NVIDIA H200 (host gpu01)' or 'cpu: 16 CPUs, 1 torch thread (host node3)' from a run's manifest.

    Hosts are those of every training session (a resumed run may have moved), in order of first use."""
    device = manifest.get("device")
    if not device:
        return None
    device = str(device).split(":")[0]
    if device == "cuda" and manifest.get("gpu"):
        what = f"cuda: {manifest['gpu']}"
    else:
        parts = [
            f"{manifest['cpu_count']} CPUs" if manifest.get("cpu_count") else None,
            (
                f"{manifest['torch_threads']} torch thread{'s' if manifest['torch_threads'] != 1 else ''}"
                if manifest.get("torch_threads")
                else None
            ),
        ]
        what = f"{device}: " + ", ".join(p for p in parts if p) if any(parts) else device
    sessions = manifest.get("sessions") if isinstance(manifest.get("sessions"), list) else []
    hosts = list(
        dict.fromkeys(
            [h for h in [manifest.get("host")] + [s.get("host") for s in sessions if isinstance(s, dict)] if h]
        )
    )
    return what + (f" (host{'s' if len(hosts) > 1 else ''} {', '.join(map(str, hosts))})" if hosts else "")


def read_hardware(path: Path) -> str | None:
    """hardware_of the manifest at `path`; None when it is missing or unreadable (the run is still usable)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return hardware_of(manifest) if isinstance(manifest, dict) else None


def load_runs(roots: list[Path]) -> tuple[list[RunRecord], list[Path]]:
    """Every run under the roots (usable or not) and skipped --force backups. Duplicate runs are an error."""
    records, backups = [], []
    for root in roots:
        dirs, skipped = find_run_dirs(Path(root))
        backups += skipped
        records += [read_run(d) for d in dirs]
    seen: dict[tuple, Path] = {}
    clashes = []
    for rec in records:
        if rec.algo is None:
            continue
        if rec.key in seen:
            clashes.append(f"  algo={rec.algo} task={rec.task} seed={rec.seed}: {seen[rec.key]} and {rec.path}")
        seen[rec.key] = rec.path
    if clashes:
        raise AnalysisError(
            "more than one run directory for the same algorithm/task/seed:\n"
            + "\n".join(clashes)
            + "\nMove the copies you do not want out of the --runs directory (or point --runs "
            "at a narrower directory)."
        )
    return records, backups
