"""Final scores per run and the rectangular (runs x tasks) score matrices rliable needs.

Final score of a run: its last evaluation at or before the task's target step; the run counts only
if it was evaluated at (or past) the target step, i.e. it finished the budget the study asked for.

Rectangular matrices (rliable needs the same number of runs on every task of one algorithm):
  1. the task set is the normalised tasks on which every included algorithm has >= 1 counted run;
     an algorithm covering fewer than half of the tasks the best-covered algorithm covers is left
     out of that aggregate (reported), so one partial variant does not shrink everyone's task set;
  2. per algorithm, k = the smallest number of counted runs over those tasks; on each task the k
     runs with the lowest seed ids are used, the others are reported as not used.
Different algorithms may have different k (rliable's bootstraps handle that).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd


def final_scores(tidy: pd.DataFrame, targets: dict[str, int]) -> pd.DataFrame:
    """One row per run: algo, task, seed, target_step, final_step, return, score, counted."""
    rows = []
    for (algo, task, seed), df in tidy.groupby(["algo", "task", "seed"], sort=True):
        target = targets[task]
        df = df.sort_values("step")
        upto = df[df["step"] <= target]
        last = df.iloc[-1]
        pick = upto.iloc[-1] if not upto.empty else None
        rows.append(
            {
                "algo": algo,
                "task": task,
                "group": last["group"],
                "seed": int(seed),
                "target_step": int(target),
                "final_step": int(pick["step"]) if pick is not None else None,
                "return": float(pick["return"]) if pick is not None else np.nan,
                "score": float(pick["score"]) if pick is not None else np.nan,
                "counted": bool(int(last["step"]) >= target),
            }
        )
    return pd.DataFrame(
        rows, columns=["algo", "task", "group", "seed", "target_step", "final_step", "return", "score", "counted"]
    )


@dataclasses.dataclass
class ScoreSet:
    name: str  # e.g. "all tasks", "DMC hard", "ablation: flowrl"
    tasks: list[str]
    matrices: dict[str, np.ndarray]  # algo -> (k runs x tasks) normalised scores
    seeds: dict[str, dict[str, list[int]]]  # algo -> task -> seeds used
    notes: list[str]

    @property
    def algos(self) -> list[str]:
        return list(self.matrices)

    def n_runs(self, algo: str) -> int:
        return int(self.matrices[algo].shape[0] * self.matrices[algo].shape[1])


def build_score_set(
    final: pd.DataFrame, algos: list[str], tasks: list[str], name: str, value: str = "score"
) -> ScoreSet | None:
    """Rectangular score matrices for `algos` over (a subset of) `tasks`; None when nothing is left."""
    notes: list[str] = []
    counted = final[
        final["counted"] & final["algo"].isin(algos) & final["task"].isin(tasks) & np.isfinite(final[value])
    ]
    coverage = {a: set(counted.loc[counted["algo"] == a, "task"]) for a in algos}
    best = max((len(c) for c in coverage.values()), default=0)
    if best == 0:
        return None
    included = []
    for algo in algos:
        if len(coverage[algo]) == 0:
            notes.append(f"{algo}: left out (no finished run on these tasks)")
        elif len(coverage[algo]) * 2 < best:
            notes.append(f"{algo}: left out (finished runs on only {len(coverage[algo])} of {best} tasks)")
        else:
            included.append(algo)
    common = sorted(set.intersection(*(coverage[a] for a in included)))
    dropped_tasks = sorted(set.union(*(coverage[a] for a in included)) - set(common))
    if dropped_tasks:
        notes.append(
            f"tasks left out because not every included algorithm finished a run on them: {', '.join(dropped_tasks)}"
        )
    if not common:
        return None
    matrices, seeds = {}, {}
    for algo in included:
        per_task = {t: counted[(counted["algo"] == algo) & (counted["task"] == t)].sort_values("seed") for t in common}
        k = min(len(df) for df in per_task.values())
        unused = {t: df["seed"].tolist()[k:] for t, df in per_task.items() if len(df) > k}
        if unused:
            notes.append(
                f"{algo}: {k} run(s) per task used (rliable needs equal counts); not used: "
                + "; ".join(f"{t} seeds {s}" for t, s in unused.items())
            )
        matrices[algo] = np.stack([per_task[t][value].to_numpy()[:k] for t in common], axis=1)
        seeds[algo] = {t: per_task[t]["seed"].tolist()[:k] for t in common}
    return ScoreSet(name, common, matrices, seeds, notes)
