"""summary.md: the study (budget, seeds, tasks, algorithms, evaluation, hardware), caveats of its statistics,
what is missing, how many runs each number uses, the main tables."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from flowrl.analysis.plotting import format_duration
from flowrl.analysis.tables import PER_TASK_CELL, to_markdown

MAX_LISTED = 60
SMALL_N = 4  # at or below this many runs per task, percentile-bootstrap intervals are about the seeds' range


def _ids(values) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (runs of consecutive integers joined)."""
    values = sorted(set(int(v) for v in values))
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def study_facts(records, expected, targets: dict[str, int], algos: list[str]) -> dict[str, str]:
    """What a reader needs to judge the numbers: budget, seeds, tasks, algorithms, evaluation, hardware, time."""
    usable = [r for r in records if r.algo is not None and r.problem is None]
    source = "inferred from the runs found" if expected.inferred else "from the expect file"
    tasks = sorted(expected.tasks) if not expected.inferred else sorted({r.task for r in usable})
    per_algo: dict[str, set] = {}
    for a, _, seed in expected.expected_runs():
        per_algo.setdefault(a, set()).add(seed)
    by_seeds: dict[tuple, list[str]] = {}  # algorithms grouped by the seeds they are expected on
    for a in [a for a in algos if a in per_algo] + sorted(set(per_algo) - set(algos)):
        by_seeds.setdefault(tuple(sorted(per_algo[a])), []).append(a)
    if len(by_seeds) <= 1:
        seeds = next(iter(by_seeds), tuple(expected.seeds))
        seed_text = f"{_ids(seeds)} ({_count(len(seeds), 'seed')} per algorithm and task, {source})"
    else:
        seed_text = (
            "; ".join(f"{_ids(s)} ({_count(len(s), 'seed')}) for {', '.join(a)}" for s, a in by_seeds.items())
            + f" ({source})"
        )
    facts = {
        "algorithms": f"{', '.join(algos)} ({len(algos)})",
        "tasks": f"{', '.join(tasks)} ({len(tasks)})",
        "seeds": seed_text,
    }
    budgets = sorted({targets[t] for t in tasks if t in targets})
    expected_runs = [(a, t, s) for a, t, s in expected.expected_runs() if t in targets]
    total = sum(targets[t] for _, t, _ in expected_runs)
    if len(budgets) == 1:
        budget = f"{budgets[0]:,} environment steps per run"
    else:
        budget = "per task: " + "; ".join(f"{t} {targets[t]:,}" for t in tasks if t in targets) + " environment steps"
    facts["budget"] = f"{budget}; {total:,} environment steps over the {len(expected_runs)} expected runs"
    protocol = Counter()
    for r in usable:
        episodes = r.eval_episodes
        if episodes is None and r.evals is not None and r.evals["episodes"].notna().any():
            episodes = int(r.evals["episodes"].median())
        every = r.eval_every or (int(np.median(np.diff(r.evals["step"]))) if len(r.evals) > 1 else None)
        protocol[
            (f"{episodes} episodes" if episodes else "? episodes")
            + " every "
            + (f"{every:,} environment steps" if every else "? steps")
        ] += 1
    facts["evaluation"] = (
        "; ".join(f"{p} ({_count(n, 'run')})" if len(protocol) > 1 else p for p, n in protocol.most_common())
        + "; a run's final score is its mean evaluation return at the target step, "
        "normalised (see Normalisation)"
    )
    hardware = Counter(r.hardware or "not recorded (no readable manifest.json)" for r in usable)
    facts["hardware"] = (
        "; ".join(f"{h}: {_count(n, 'run')}" for h, n in hardware.most_common()) + " (from each run's manifest.json)"
    )
    times = []
    for algo in algos:
        secs = [
            float(r.evals["wall_time"].iloc[-1])
            for r in usable
            if r.algo == algo and r.finished and np.isfinite(r.evals["wall_time"].iloc[-1])
        ]
        if secs:
            spread = f"{format_duration(min(secs))} to {format_duration(max(secs))}, " if min(secs) < max(secs) else ""
            times.append(f"{algo} {format_duration(float(np.median(secs)))} ({spread}{_count(len(secs), 'run')})")
    if times:
        facts["training wall time per finished run"] = "median (min to max): " + "; ".join(times)
    return facts


def caveats(final_stats: pd.DataFrame, aggregates: pd.DataFrame, records, confidence: float) -> list[str]:
    """Limits of this study's statistics a reviewer would raise, stated with this study's numbers."""
    out = []
    level, tail = f"{confidence:.0%}", (1 - confidence) / 2
    # the percentile interval of a mean of n values reaches the minimum when a resample repeating the lowest
    # value n times (probability n^-n) is more likely than the lower tail: n = 1, 2, 3 at 95%
    range_n = max(n for n in range(1, 10) if n**-n > tail)
    if not final_stats.empty:
        ns = final_stats["n_runs"].astype(int)
        if ns.min() <= SMALL_N:
            small = sorted(set(ns[ns <= SMALL_N]))
            tq = ", ".join(f"t = {scipy.stats.t.ppf(1 - tail, n - 1):.2f} for n = {n}" for n in small if n >= 2)
            out.append(
                f"Per-task means rest on {' or '.join(map(str, small))} seed{'s' if max(small) > 1 else ''} each. "
                f"With n <= {range_n} "
                f"seeds a {level} percentile-bootstrap interval of a mean is the range [min, max] of the seeds "
                f"(up to bootstrap noise: a resample repeats the lowest seed n times with probability n^-n "
                f">= {range_n**-range_n:.3g}, above the {tail:.3g} tail), and with n = {range_n + 1} it is "
                "barely narrower: it shows where the seeds fell, not how far the mean could be off. The "
                "per-task tables and Fig. 7 therefore show the Student-t interval mean ± t s/sqrt(n)"
                + (f" ({tq})" if tq else "")
                + ", which widens as n falls but assumes roughly normal "
                "seed-to-seed variation, which so few seeds cannot check. The percentile-bootstrap bounds stay "
                "in per_task_final.csv (return_ci_low/high) and curves_per_task.csv (ci_low/high)."
            )
        if ns.min() == 1:
            out.append("Some per-task means come from a single run: no spread and no interval exist for them.")
    if not aggregates.empty:
        by_set = aggregates.groupby("set", sort=False).agg(k=("runs_per_task", "min"), tasks=("n_tasks", "max"))
        k_small = by_set[by_set["k"] <= SMALL_N]
        if not k_small.empty:
            out.append(
                f"Aggregate intervals come from the stratified bootstrap over the runs of each task (tasks "
                f"held fixed), here with as few as {int(k_small['k'].min())} run(s) per task "
                f"({', '.join(k_small.index)}): like the per-task percentile interval they are too narrow with "
                "so few runs, and they say nothing about tasks outside the study."
            )
        for name, row in by_set.iterrows():
            t = int(row["tasks"])
            if t <= 2:
                out.append(
                    f"{name}: median and mean are equal by construction, not by coincidence: both are taken "
                    f"over the {_count(t, 'per-task mean score')}, and the "
                    + ("median of two numbers is their mean." if t == 2 else "median of one number is itself.")
                    + " IQM differs because it pools every run x task score."
                )
    hardware = {r.hardware for r in records if r.algo is not None and r.problem is None}
    if len(hardware - {None}) > 1:
        out.append(
            f"Runs trained on {len(hardware - {None})} different hardware set-ups (see Study): wall times "
            "compare hardware as much as algorithms."
        )
    return out


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.rstrip()}\n\n"


def write_summary(
    path: Path,
    *,
    study: dict,
    caveats: list[str],
    inputs: dict,
    run_counts: dict,
    missing: pd.DataFrame,
    normalisation: list[dict],
    aggregate_md: pd.DataFrame | None,
    per_task_md: pd.DataFrame | None,
    poi_md: pd.DataFrame | None,
    notes: list[str],
    files: list[Path],
    out: Path,
) -> Path:
    parts = [
        "# Results summary\n\n",
        "Generated by `python -m flowrl.analysis`; statistics and every output are explained in docs/results.md.\n\n",
    ]
    parts.append(_section("Study", "\n".join(f"- **{k}**: {v}" for k, v in study.items())))
    parts.append(_section("Caveats", "\n".join(f"- {c}" for c in caveats) if caveats else "None found."))
    parts.append(_section("Inputs", "\n".join(f"- **{k}**: {v}" for k, v in inputs.items())))
    parts.append(_section("Runs", "\n".join(f"- {k}: {v}" for k, v in run_counts.items())))
    if missing.empty:
        body = "Every expected run is present and reached its target step."
    else:
        counts = ", ".join(f"{n} {s}" for s, n in missing["status"].value_counts().sort_index().items())
        shown = missing.head(MAX_LISTED).fillna("")
        body = (
            f"**{len(missing)} run(s) missing or incomplete** ({counts}); full list in `missing_runs.csv`. "
            "Unfinished and short runs appear in learning curves up to their last evaluation but not in "
            "final scores.\n\n" + to_markdown(shown.astype(str))
        )
        if len(missing) > MAX_LISTED:
            body += f"\n... and {len(missing) - MAX_LISTED} more (see missing_runs.csv)\n"
    parts.append(_section("Missing or unfinished runs", body))
    if aggregate_md is not None and not aggregate_md.empty:
        parts.append(
            _section(
                "Aggregate normalised scores (final step, 95% stratified-bootstrap CIs)", to_markdown(aggregate_md)
            )
        )
    else:
        parts.append(_section("Aggregate normalised scores", "Not computed: no normalised task with finished runs."))
    if poi_md is not None and not poi_md.empty:
        parts.append(_section("Probability of improvement P(row > column)", to_markdown(poi_md)))
    if per_task_md is not None and not per_task_md.empty:
        parts.append(_section(f"Final return per task: {PER_TASK_CELL}", to_markdown(per_task_md)))
    parts.append(
        _section(
            "Normalisation", to_markdown(pd.DataFrame(normalisation).astype(str)) if normalisation else "No tasks."
        )
    )
    parts.append(_section("Notes", "\n".join(f"- {n}" for n in notes) if notes else "None."))
    parts.append(_section("Files", "\n".join(f"- `{p.relative_to(out)}`" for p in files)))
    path.write_text("".join(parts))
    return path
