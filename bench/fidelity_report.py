"""Learning curves of this repository's FlowRL against the official code's: tables, statistics, figure.

    python bench/fidelity_report.py --runs RUNS --out results/fidelity [--margin 100]

RUNS holds one folder per task, each with `ours/seed<k>/` (flowrl-train run directories) and
`official/seed<k>/` (bench/official_run.py run directories); both write the same eval.csv columns. Only
finished runs (a DONE marker) are used; unfinished ones are listed and left out. Writes into --out:

  <task>.csv     every evaluation of every run: task, implementation, seed, step, return_mean, wall_time
  summary.csv    per task: seeds, final returns of each side (mean, sd, per seed), the TOST result, the
                 per-step envelope count (at the steps both sides evaluated), and the wall time per run (ours:
                 training time; official: from the runner's start, imports included)
  summary.md     the same as a Markdown table, with the statistical statement (pasted into docs/fidelity.md)
  curves.png     per task: each run thin, the mean of each side thick, the official min-max envelope shaded
  report.json    the margin, the runs left out, and which code trained each run (commits, file digests)

A task already reported in --out (a row of its summary.csv with its <task>.csv) with no finished run under RUNS
is kept: its evaluations are read back from <task>.csv, its provenance from the old report.json, and it is
summarised again with the new ones, so adding a task never drops one whose run directories are gone. A task under
RUNS replaces its old rows. To drop a task, delete its <task>.csv.

Statistics (few seeds): two one-sided Welch t-tests (TOST) on the final return, H0: |mu_ours - mu_official| >=
margin, at alpha 0.05, i.e. equivalence is concluded when the 90% interval of the difference lies inside
(-margin, margin); margin 100 by default, a tenth of the DMC return range [0, 1000]. Per-step envelope: at how
many of the evaluation steps the mean of our runs lies within [min, max] of the official runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flowrl.analysis.plotting import STEP_FORMATTER, new_figure, styled  # noqa: E402
from flowrl.analysis.references import STEP_AXIS  # noqa: E402
from flowrl.analysis.stats import tost_welch  # noqa: E402

SIDES = ("ours", "official")
CURVE_COLUMNS = ["task", "implementation", "seed", "step", "return_mean", "episodes", "wall_time"]
COLOURS = {"ours": "#1f77b4", "official": "#d62728"}
LABELS = {"ours": "this repository", "official": "official code (bytedance/FlowRL)"}


def provenance(run: Path, side: str) -> dict:
    """Which code trained `run`: ours from its manifest.json (git commit at its first session, torch), the
    official from official_run.py's official-run.json (the official commit and the sha256 of its files)."""
    name = "manifest.json" if side == "ours" else "official-run.json"
    try:
        meta = json.loads((run / name).read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{name}: {exc}"}
    if side == "ours":
        return {"git": meta.get("git"), "torch": meta.get("versions", {}).get("torch"), "host": meta.get("host")}
    return {k: meta.get(k) for k in ("official_commit", "official_files_sha256", "torch", "float32_matmul_precision")}


def load_runs(runs: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every finished run's evaluations under runs/<task>/<side>/seed<k>/eval.csv, and the unfinished ones."""
    if not runs.is_dir():
        raise SystemExit(f"error: --runs {runs}: no such directory (train the runs first, see docs/fidelity.md)")
    frames, skipped = [], []
    for eval_csv in sorted(runs.glob("*/*/seed*/eval.csv")):
        run = eval_csv.parent
        side, task = run.parent.name, run.parent.parent.name
        if side not in SIDES:
            continue
        if not (run / "DONE").is_file():
            skipped.append(f"{run} (no DONE: unfinished)")
            continue
        match = re.fullmatch(r"seed(0|[1-9][0-9]*)", run.name)
        if not match:
            skipped.append(f"{run} (not named seed<k>)")
            continue
        df = pd.read_csv(eval_csv)
        if df.empty or not np.isfinite(df["return_mean"]).all():
            raise SystemExit(f"error: {eval_csv}: no evaluations, or a return that is NaN/inf; look at that run")
        df.insert(0, "seed", int(match.group(1)))
        df.insert(0, "implementation", side)
        df.insert(0, "task", task)
        frames.append(df[CURVE_COLUMNS].copy())
        frames[-1].attrs["provenance"] = {"run": f"{task}/{side}/{run.name}", **provenance(run, side)}
    if not frames:
        return pd.DataFrame(columns=CURVE_COLUMNS), skipped
    sources = [f.attrs["provenance"] for f in frames]
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"provenance": sources}
    return out, skipped


def _left_out_task(entry: str) -> str | None:
    """The task of a left-out entry, '<runs>/<task>/<side>/seed<k> (why)'."""
    parts = Path(entry.split(" (", 1)[0]).parts
    return parts[-3] if len(parts) >= 3 else None


def previous_tasks(out: Path, fresh: set[str]) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The tasks an earlier report in `out` holds and `fresh` (the tasks under --runs) does not: their evaluations
    (from <task>.csv), their runs' provenance and left-out runs (from report.json)."""
    summary = out / "summary.csv"
    if not summary.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS), [], []
    old = [t for t in pd.read_csv(summary)["task"].astype(str) if t not in fresh]
    frames = []
    for task in old:
        path = out / f"{task}.csv"
        if not path.is_file():
            continue  # deleted by the user: the task is dropped
        df = pd.read_csv(path, float_precision="round_trip")  # the values as written, to the last digit
        missing = [c for c in CURVE_COLUMNS if c not in df.columns]
        if missing or set(df["task"].astype(str)) != {task}:
            raise SystemExit(
                f"error: {path}: not a curve table of task {task} written by this report (missing {missing} or "
                "other tasks' rows); restore it from git or delete it to drop the task"
            )
        frames.append(df[CURVE_COLUMNS])
    kept = sorted({str(t) for f in frames for t in f["task"]})
    meta = {}
    if kept:
        try:
            meta = json.loads((out / "report.json").read_text())
        except FileNotFoundError:
            print(f"warning: {out}/report.json is missing: the kept tasks {kept} are reported without provenance")
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"error: {out}/report.json: {exc}; it holds the provenance of the kept tasks {kept}: restore it from "
                "git, or delete it to report them without provenance"
            ) from None
    sources = [r for r in meta.get("runs", []) if str(r.get("run", "")).split("/")[0] in kept]
    left_out = [e for e in meta.get("left_out", []) if _left_out_task(e) in kept]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)
    return df, sources, left_out


def summarise(df: pd.DataFrame, margin: float) -> list[dict]:
    rows = []
    for task, tdf in df.groupby("task", sort=True):
        ends = tdf.groupby(["implementation", "seed"])["step"].max()
        if ends.nunique() > 1:
            raise SystemExit(
                f"error: {task}: the runs end at different steps ("
                + ", ".join(f"{side} seed{seed}: {step}" for (side, seed), step in ends.items())
                + "); compare runs of one budget (move the others out of --runs)"
            )
        final_step = int(ends.iloc[0])
        final = tdf[tdf["step"] == final_step]
        per_side = {s: final[final["implementation"] == s].sort_values("seed")["return_mean"].to_numpy() for s in SIDES}
        if any(len(v) < 2 for v in per_side.values()):
            raise SystemExit(
                f"error: {task}: the final step {final_step} needs >= 2 finished runs of each side, "
                f"got ours {len(per_side['ours'])}, official {len(per_side['official'])}"
            )
        eq = tost_welch(per_side["ours"], per_side["official"], margin)
        # the envelope at the steps both sides evaluated (ours may also evaluate at step 0; the official never does)
        curves = tdf.pivot_table(index="step", columns=["implementation", "seed"], values="return_mean").dropna()
        ours_mean = curves["ours"].mean(axis=1)
        inside = (ours_mean >= curves["official"].min(axis=1)) & (ours_mean <= curves["official"].max(axis=1))
        wall = tdf[tdf["step"] == final_step].groupby("implementation")["wall_time"].mean()
        row = {"task": task, "final_step": final_step}
        for s in SIDES:
            row[f"{s}_seeds"] = len(per_side[s])
            row[f"{s}_final_mean"] = round(float(per_side[s].mean()), 1)
            row[f"{s}_final_sd"] = round(float(per_side[s].std(ddof=1)), 1)
            row[f"{s}_final_per_seed"] = " ".join(f"{v:.1f}" for v in per_side[s])
            row[f"{s}_wall_time_s"] = round(float(wall.get(s, np.nan)), 0)
        row.update(
            difference=round(eq.difference, 1),
            ci90_low=round(eq.low, 1),
            ci90_high=round(eq.high, 1),
            margin=margin,
            tost_p=round(eq.p, 4),
            equivalent=eq.equivalent,
            steps_inside_envelope=int(inside.sum()),
            steps=len(inside),
        )
        rows.append(row)
    return rows


@styled
def figure(df: pd.DataFrame, rows: list[dict], path: Path) -> None:
    tasks = [r["task"] for r in rows]
    fig, axes = new_figure(5.5 * len(tasks), 4.0, ncols=len(tasks))
    for ax, row in zip(axes[0], rows):
        tdf = df[df["task"] == row["task"]]
        curves = tdf.pivot_table(index="step", columns=["implementation", "seed"], values="return_mean")
        steps = curves.index.to_numpy()
        ax.fill_between(
            steps,
            curves["official"].min(axis=1),
            curves["official"].max(axis=1),
            color=COLOURS["official"],
            alpha=0.15,
            lw=0,
            label="official: min-max over seeds",
        )
        for s in SIDES:
            for seed in curves[s].columns:
                ax.plot(steps, curves[s][seed], color=COLOURS[s], lw=0.6, alpha=0.45)
            ax.plot(
                steps,
                curves[s].mean(axis=1),
                color=COLOURS[s],
                lw=2,
                label=f"{LABELS[s]}: mean of {curves[s].shape[1]} seeds",
            )
        verdict = "equivalent" if row["equivalent"] else "not shown equivalent"
        ax.set_title(
            f"dmc:{row['task']}, final step: ours - official {row['difference']:+.0f}\n"
            f"90% CI [{row['ci90_low']:.0f}, {row['ci90_high']:.0f}], margin {row['margin']:g}: {verdict}"
        )
        ax.set_xlabel(STEP_AXIS)
        ax.set_ylabel(f"evaluation return (mean of {int(tdf['episodes'].max())} episodes)")
        ax.xaxis.set_major_formatter(STEP_FORMATTER)
    axes[0][0].legend(loc="lower right", fontsize=7)
    fig.savefig(path)


def markdown(rows: list[dict], skipped: list[str]) -> str:
    head = (
        "| task | steps | seeds (ours / official) | final return, ours | final return, official | "
        "difference (90% CI) | TOST p (margin) | equivalent | ours' mean inside the official envelope | "
        "wall time per run, ours / official |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| dmc:{r['task']} | {r['final_step']} | {r['ours_seeds']} / {r['official_seeds']} | "
            f"{r['ours_final_mean']} +- {r['ours_final_sd']} ({r['ours_final_per_seed']}) | "
            f"{r['official_final_mean']} +- {r['official_final_sd']} ({r['official_final_per_seed']}) | "
            f"{r['difference']:+} ({r['ci90_low']}, {r['ci90_high']}) | {r['tost_p']} ({r['margin']:g}) | "
            f"{'yes' if r['equivalent'] else 'not shown'} | {r['steps_inside_envelope']} of {r['steps']} steps | "
            f"{r['ours_wall_time_s']:.0f} s / {r['official_wall_time_s']:.0f} s |"
        )
    if skipped:
        lines += ["", "Left out (unfinished): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--margin", type=float, default=100.0, help="equivalence margin in return units (default 100)")
    args = p.parse_args(argv)
    if not args.margin > 0:
        p.error(f"--margin {args.margin}: must be > 0 (return units; 100 is a tenth of DMC's return range)")
    fresh, skipped = load_runs(args.runs)
    kept, kept_sources, kept_left_out = previous_tasks(args.out, set(fresh["task"]))
    if fresh.empty and kept.empty:
        raise SystemExit(
            f"error: no finished run under {args.runs}/<task>/(ours|official)/seed<k>/ (each needs DONE), and no "
            f"earlier report in {args.out} to keep"
        )
    for task in sorted(set(kept["task"])):
        print(
            f"kept from {args.out}: {task} (no finished run of it under {args.runs}; "
            f"delete {args.out}/{task}.csv to drop it)"
        )
    df = pd.concat([f for f in (fresh, kept) if not f.empty], ignore_index=True)
    df.attrs = {"provenance": fresh.attrs.get("provenance", []) + kept_sources}
    skipped = list(dict.fromkeys(skipped + kept_left_out))
    rows = summarise(df, args.margin)
    args.out.mkdir(parents=True, exist_ok=True)
    for task, tdf in df.groupby("task"):
        tdf.sort_values(["implementation", "seed", "step"]).to_csv(args.out / f"{task}.csv", index=False)
    pd.DataFrame(rows).to_csv(args.out / "summary.csv", index=False)
    (args.out / "summary.md").write_text(markdown(rows, skipped))
    figure(df, rows, args.out / "curves.png")
    meta = {"margin": args.margin, "alpha": 0.05, "left_out": skipped, "runs": df.attrs["provenance"]}
    (args.out / "report.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(markdown(rows, skipped), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
