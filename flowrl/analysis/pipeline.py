"""The whole analysis: run directories in, tidy table, tables, figures and summary out.

Entry points for scripts and the Snakemake workflow:
  analyse(runs=..., out=..., **options)  -> AnalysisResult   (everything, like the CLI)
  gather(runs=..., out=..., expect=None) -> (tidy, missing)   (tidy table and missing-run report only)
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flowrl.analysis import curves as curves_mod
from flowrl.analysis import figures, stats, tables
from flowrl.analysis.expected import (
    ExpectedStudy,
    infer_expected,
    load_expected,
    missing_report,
    print_missing,
    run_status,
    target_steps,
)
from flowrl.analysis.normalise import Normalisation, load_normalisation
from flowrl.analysis.palette import algo_order, build_palette
from flowrl.analysis.references import load_references
from flowrl.analysis.report import caveats, study_facts, write_summary
from flowrl.analysis.runs import AnalysisError, RunRecord, load_runs
from flowrl.analysis.scores import ScoreSet, build_score_set, final_scores
from flowrl.analysis.tasks import GROUPS
from flowrl.analysis.tidy import add_scores, as_tidy, combine, runs_to_tidy, write_tidy
from flowrl.analysis.timing import load_timing, timing_from_runs

MARKER = "analysis.json"  # written into every output directory this pipeline owns
ALL_TASKS = "all tasks"


@dataclasses.dataclass
class AnalysisConfig:
    runs: list[Path]
    out: Path
    reps: int = stats.DEFAULT_REPS  # bootstrap replications
    seed: int = 0  # seeds every bootstrap
    expect: Path | None = None
    references: list[Path] = dataclasses.field(default_factory=list)
    poi_algo: str = "flowrl"
    normalisation: Path | None = None
    timing: Path | None = None
    grid_step: int | None = None  # None: the coarsest evaluation interval
    confidence: float = 0.95
    max_curve_points: int = 50  # grid points of IQM-vs-steps curves
    figures: bool = True

    def __post_init__(self):
        self.runs = [Path(p) for p in ([self.runs] if isinstance(self.runs, (str, Path)) else self.runs)]
        self.out = Path(self.out)
        self.references = [Path(p) for p in self.references]
        for name in ("expect", "normalisation", "timing"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if self.reps < 10:
            raise AnalysisError(
                f"--reps must be at least 10 (got {self.reps}); {stats.DEFAULT_REPS} or more for reported CIs"
            )
        if not 0 < self.confidence < 1:
            raise AnalysisError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.grid_step is not None and self.grid_step <= 0:
            raise AnalysisError(f"--grid-step must be positive, got {self.grid_step}")


@dataclasses.dataclass
class AnalysisResult:
    out: Path
    tidy: pd.DataFrame
    missing: pd.DataFrame
    final: pd.DataFrame
    aggregates: pd.DataFrame
    poi: pd.DataFrame
    score_sets: dict[str, ScoreSet]
    notes: list[str]
    files: list[Path]


# ------------------------------------------------------------------------------------------ helpers
def prepare_out(out: Path) -> None:
    """Refuse to write into a non-empty directory this pipeline did not create; clear our old outputs."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not marker.exists():
        raise AnalysisError(
            f"--out {out} is not empty and was not written by flowrl.analysis (no {MARKER}); "
            "refusing to overwrite its files. Choose a new or empty directory."
        )
    if marker.exists():
        try:
            previous = json.loads(marker.read_text()).get("outputs", [])
        except (json.JSONDecodeError, OSError):
            previous = []
        for rel in previous:
            p = (out / rel).resolve()
            if p.is_file() and out.resolve() in p.parents:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def ablation_families(algos: list[str]) -> dict[str, list[str]]:
    """{'flowrl': ['flowrl', 'flowrl-no-w2', 'flowrl-steps5']}: an algorithm and names '<it>-<suffix>'."""
    families = {}
    for base in algos:
        variants = [a for a in algos if a.startswith(base + "-")]
        if variants:
            families[base] = [base] + sorted(variants)
    # a variant of a variant belongs to the outermost family only
    nested = {v for members in families.values() for v in members[1:]}
    return {b: m for b, m in families.items() if b not in nested}


def per_task_final_stats(final: pd.DataFrame, reps: int, seed: int, confidence: float) -> pd.DataFrame:
    rows = []
    counted = final[final["counted"]]
    for (task, algo), df in counted.groupby(["task", "algo"], sort=True):
        ret, score = df["return"].to_numpy(), df["score"].to_numpy()
        lo, hi = stats.bootstrap_mean_ci(ret[:, None], reps, seed, confidence)
        t_lo, t_hi = stats.t_interval(ret, confidence)
        rows.append(
            {
                "task": task,
                "group": df["group"].iloc[0],
                "algo": algo,
                "n_runs": len(df),
                "seeds": " ".join(map(str, sorted(df["seed"]))),
                "final_step": int(df["target_step"].iloc[0]),
                "return_mean": float(np.mean(ret)),
                "return_std": float(np.std(ret, ddof=1)) if len(ret) > 1 else np.nan,
                "return_ci_low": float(lo[0]),
                "return_ci_high": float(hi[0]),
                "return_t_low": float(t_lo),
                "return_t_high": float(t_hi),
                "score_mean": float(np.mean(score)) if np.isfinite(score).all() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _run_counts(records: list[RunRecord], backups: list[Path], targets: dict[str, int]) -> dict[str, int]:
    statuses = [run_status(r, targets[r.task])[0] if r.algo is not None else "unusable" for r in records]
    return {
        "run directories found": len(records),
        "complete (reached the target step; used for final scores)": statuses.count("complete"),
        "unfinished (no DONE yet; curves only)": statuses.count("unfinished"),
        "short (finished a smaller budget; curves only)": statuses.count("short"),
        "unusable (see missing_runs.csv)": statuses.count("unusable"),
        "--force backups skipped (*.replaced-*)": len(backups),
    }


# ------------------------------------------------------------------------------------------ stages
def gather(runs, out, expect=None, normalisation=None, references=(), quiet: bool = False):
    """Tidy table (tidy.csv/.parquet) and missing-run report (missing_runs.csv) under `out`."""
    cfg = AnalysisConfig(
        runs=runs, out=out, expect=expect, normalisation=normalisation, references=list(references), figures=False
    )
    prepare_out(cfg.out)
    state = _gather(cfg, quiet)
    files = state["files"]
    _write_marker(cfg, files)
    return state["tidy"], state["missing"]


def _gather(cfg: AnalysisConfig, quiet: bool = False) -> dict:
    records, backups = load_runs(cfg.runs)
    norm = load_normalisation(cfg.normalisation)
    expected: ExpectedStudy = load_expected(cfg.expect) if cfg.expect else infer_expected(records)
    targets = target_steps(expected, records)
    missing = missing_report(records, expected, targets)
    if not quiet:
        print_missing(missing)
    files = []
    missing_path = cfg.out / "missing_runs.csv"
    missing.to_csv(missing_path, index=False)
    files.append(missing_path)
    ours = add_scores(runs_to_tidy(records), norm)
    if ours.empty:
        raise AnalysisError(
            f"no usable runs under {', '.join(map(str, cfg.runs))}: a run directory needs "
            "config.yaml and an eval.csv with at least one row (see missing_runs.csv in "
            f"{cfg.out})"
        )
    notes = []
    if backups:
        notes.append(
            f"skipped {len(backups)} --force backup run(s): {', '.join(map(str, backups[:5]))}"
            + (" ..." if len(backups) > 5 else "")
        )
    if expected.inferred:
        notes.append(
            "no --expect file: each algorithm is expected on every seed it used anywhere and on every task "
            "a main algorithm used (variants: their own tasks); each task's target step is the largest "
            "configured `steps` among its runs. Pass --expect to catch runs that never started"
        )
    else:
        extra = sorted(
            {
                f"{r.algo}/{r.task}/{r.seed}"
                for r in records
                if r.algo is not None
                and (r.algo not in expected.algos or r.task not in expected.tasks or r.seed not in expected.seeds)
            }
        )
        if extra:
            notes.append(
                f"{len(extra)} run(s) not in the expect file were analysed too: {', '.join(extra[:10])}"
                + (" ..." if len(extra) > 10 else "")
            )
    refs = pd.DataFrame()
    if cfg.references:
        ref_rows, ref_notes = load_references(cfg.references, set(ours["task"]))
        notes += [f"references: {n}" for n in ref_notes]
        if not ref_rows.empty:
            refs = add_scores(as_tidy([ref_rows]), norm)
    tidy = combine(ours, refs)
    files += write_tidy(tidy, cfg.out)
    return {
        "records": records,
        "backups": backups,
        "norm": norm,
        "expected": expected,
        "targets": targets,
        "missing": missing,
        "ours": ours,
        "tidy": tidy,
        "notes": notes,
        "files": files,
    }


def _score_sets(
    final: pd.DataFrame, algos: list[str], families: dict[str, list[str]], norm: Normalisation, tasks: list[str]
) -> tuple[dict[str, ScoreSet], list[str]]:
    notes = []
    variants = {v for members in families.values() for v in members[1:]}
    main = [a for a in algos if a not in variants]
    norm_tasks = [t for t in tasks if norm.is_normalised(t)]
    unnormalised = sorted(set(tasks) - set(norm_tasks))
    if unnormalised:
        notes.append(
            f"tasks without a normaliser, left out of aggregates (per-task tables/curves still show "
            f"them): {', '.join(unnormalised)}"
        )
    if variants:
        notes.append(
            f"ablation variants kept out of the main comparison and analysed per family: {', '.join(sorted(variants))}"
        )
    sets: dict[str, ScoreSet] = {}
    candidates = [(ALL_TASKS, main, norm_tasks)]
    groups_present = sorted(
        {final.loc[final["task"] == t, "group"].iloc[0] for t in norm_tasks if (final["task"] == t).any()},
        key=GROUPS.index,
    )
    if len(groups_present) > 1:
        for g in groups_present:
            candidates.append((g, main, [t for t in norm_tasks if (final.loc[final["task"] == t, "group"] == g).any()]))
    for base, members in families.items():
        candidates.append((f"ablation: {base}", members, norm_tasks))
    for name, members, set_tasks in candidates:
        s = build_score_set(final, members, set_tasks, name)
        if s is None:
            notes.append(f"{name}: no aggregate (no normalised task with finished runs)")
            continue
        sets[name] = s
        notes += [f"{name}: {n}" for n in s.notes]
    return sets, notes


def run_analysis(cfg: AnalysisConfig) -> AnalysisResult:
    t0 = time.time()
    prepare_out(cfg.out)
    state = _gather(cfg)
    tidy, ours, targets, norm = state["tidy"], state["ours"], state["targets"], state["norm"]
    notes, files = state["notes"], state["files"]
    tables_dir, fig_dir = cfg.out / "tables", cfg.out / "figures"

    final = final_scores(ours, targets)
    algos = algo_order(ours["algo"])
    palette = build_palette(list(algos) + sorted(set(tidy["algo"])))
    families = ablation_families(algos)
    tasks = sorted(ours["task"].unique())
    score_sets, set_notes = _score_sets(final, algos, families, norm, tasks)
    notes += set_notes

    # aggregates per score set
    agg_frames = []
    for name, s in score_sets.items():
        df = stats.aggregate_metrics(s.matrices, cfg.reps, cfg.seed, cfg.confidence)
        df.insert(0, "set", name)
        df["tasks"] = " ".join(s.tasks)
        agg_frames.append(df)
    aggregates = pd.concat(agg_frames, ignore_index=True) if agg_frames else pd.DataFrame()

    # probability of improvement on the main set
    poi = pd.DataFrame()
    main = score_sets.get(ALL_TASKS)
    if main is not None and len(main.algos) > 1:
        pairs = [(x, y) for x in main.algos for y in main.algos if x != y]
        poi = stats.probability_of_improvement(main.matrices, pairs, cfg.reps, cfg.seed, cfg.confidence)
        if cfg.poi_algo not in main.algos:
            notes.append(
                f"--poi-algo {cfg.poi_algo!r} is not in the main aggregate "
                f"(algorithms there: {', '.join(main.algos)}); its PoI figure is skipped"
            )

    # tables
    final_stats = per_task_final_stats(final, cfg.reps, cfg.seed, cfg.confidence)
    per_task_md = agg_md = poi_md = None
    tables_dir.mkdir(parents=True, exist_ok=True)
    final.to_csv(tables_dir / "final_scores_per_run.csv", index=False)
    files.append(tables_dir / "final_scores_per_run.csv")
    if not final_stats.empty:
        per_task_md, per_task_tex = tables.per_task_table(final_stats, [a for a in algos if a in set(final_stats.algo)])
        files += tables.write_table(
            final_stats,
            per_task_md,
            tables_dir / "per_task_final",
            f"Final return per task: {tables.PER_TASK_CELL}",
            per_task_tex,
        )
    if not aggregates.empty:
        agg_md, agg_tex = tables.aggregate_table(aggregates)
        files += tables.write_table(
            aggregates,
            agg_md,
            tables_dir / "aggregate",
            "Aggregate normalised score at the final step with 95% stratified-bootstrap CIs",
            agg_tex,
        )
    if not poi.empty:
        poi_md, poi_tex = tables.poi_table(poi)
        files += tables.write_table(
            poi,
            poi_md,
            tables_dir / "probability_of_improvement",
            "Probability of improvement P(row > column) with 95% CIs",
            poi_tex,
        )

    # curves
    curves = curves_mod.per_task_curves(tidy, "return", cfg.reps, cfg.seed, cfg.confidence, cfg.grid_step)
    curves.to_csv(tables_dir / "curves_per_task.csv", index=False)
    files.append(tables_dir / "curves_per_task.csv")
    efficiency_panels = []
    for name in [ALL_TASKS] + list(GROUPS):
        s = score_sets.get(name)
        if s is None:
            continue
        grid, arrays, cnotes = curves_mod.aggregate_curves(ours, s, targets, cfg.grid_step, cfg.max_curve_points)
        notes += [f"{name}: {n}" for n in cnotes]
        if grid.size:
            points, intervals = stats.sample_efficiency(arrays, cfg.reps, cfg.seed, cfg.confidence)
            efficiency_panels.append((name, grid, points, intervals, {a: s.n_runs(a) for a in s.algos}))
    if efficiency_panels:
        rows = [
            {
                "set": name,
                "algo": a,
                "step": int(step),
                "iqm": float(p[a][i]),
                "ci_low": float(iv[a][0][i]),
                "ci_high": float(iv[a][1][i]),
                "n_runs": used[a],
            }
            for name, grid, p, iv, used in efficiency_panels
            for a in p
            for i, step in enumerate(grid)
        ]
        pd.DataFrame(rows).to_csv(tables_dir / "sample_efficiency.csv", index=False)
        files.append(tables_dir / "sample_efficiency.csv")

    # timing
    if cfg.timing:
        timing = load_timing(cfg.timing)
        notes.append(f"timing from {cfg.timing}")
    else:
        timing = timing_from_runs(ours, final)
        notes.append(
            "training time from eval.csv wall_time of finished runs (no --timing CSV); inference time "
            "needs a --timing CSV (algo,task,train_hours,inference_ms), so that panel is skipped"
        )

    if cfg.figures:
        files += _figures(
            cfg,
            fig_dir,
            tidy,
            curves,
            aggregates,
            poi,
            score_sets,
            families,
            efficiency_panels,
            timing,
            algos,
            palette,
            notes,
        )

    inputs = {
        "runs": ", ".join(map(str, cfg.runs)),
        "expect": cfg.expect or "none (inferred)",
        "references": ", ".join(map(str, cfg.references)) or "none",
        "normalisation": norm.origin,
        "bootstrap": f"{cfg.reps} reps, seed {cfg.seed}, {cfg.confidence:.0%} percentile CIs "
        f"(flowrl.analysis.stats; {rliable_note()})",
        "probability-of-improvement algorithm": cfg.poi_algo,
        "curve grid": f"every {cfg.grid_step} steps" if cfg.grid_step else "coarsest evaluation interval",
        "alignment": "last evaluation at or before each grid step; never past a run's last evaluation",
    }
    facts = study_facts(state["records"], state["expected"], targets, algos)
    warnings_ = caveats(final_stats, aggregates, state["records"], cfg.confidence)
    summary = write_summary(
        cfg.out / "summary.md",
        study=facts,
        caveats=warnings_,
        inputs=inputs,
        run_counts=_run_counts(state["records"], state["backups"], targets),
        missing=state["missing"],
        normalisation=norm.table(tasks),
        aggregate_md=agg_md,
        per_task_md=per_task_md,
        poi_md=poi_md,
        notes=notes,
        files=files,
        out=cfg.out,
    )
    files.append(summary)
    _write_marker(cfg, files, elapsed=time.time() - t0)
    return AnalysisResult(cfg.out, tidy, state["missing"], final, aggregates, poi, score_sets, notes, files)


def _figures(
    cfg, fig_dir, tidy, curves, aggregates, poi, score_sets, families, efficiency_panels, timing, algos, palette, notes
) -> list[Path]:
    files = []
    display = algos + sorted(set(tidy.loc[tidy["reference"], "algo"]) - set(algos))
    main_algos = score_sets[ALL_TASKS].algos if ALL_TASKS in score_sets else algos
    variants = {v for members in families.values() for v in members[1:]}
    main_display = [a for a in display if a not in variants]
    tasks = sorted(tidy.loc[~tidy["reference"], "task"].unique())
    task_groups = {g: [t for t in tasks if tidy.loc[tidy["task"] == t, "group"].iloc[0] == g] for g in GROUPS}
    main_curves = curves[~curves["algo"].isin(variants)]

    if not aggregates.empty:
        set_order = [s for s in [ALL_TASKS] + list(GROUPS) if s in set(aggregates["set"])]
        files += figures.overview_figure(
            aggregates[aggregates["set"].isin(set_order)],
            set_order,
            main_algos,
            palette,
            timing if not timing.empty else None,
            fig_dir / "fig1_overview",
        )
        for name in aggregates["set"].unique():
            files += figures.interval_figure(
                aggregates[aggregates["set"] == name],
                display,
                palette,
                f"Aggregate metrics, {name}",
                fig_dir / f"aggregate_intervals_{slug(name)}",
            )
    else:
        notes.append("figures: no aggregate figures (no normalised task with finished runs)")
    for group, group_tasks in task_groups.items():
        if group_tasks:
            files += figures.task_curves_figure(
                main_curves,
                group_tasks,
                main_display,
                palette,
                f"Learning curves, {group}",
                "std",
                fig_dir / f"fig3_curves_{slug(group)}",
            )
    for base, members in families.items():
        fam_tasks = sorted(curves.loc[curves["algo"].isin(members[1:]), "task"].unique())
        files += figures.task_curves_figure(
            curves[curves["algo"].isin(members) & ~curves["reference"]],
            fam_tasks,
            members,
            palette,
            f"Ablation: variants of {base}",
            "std",
            fig_dir / f"fig4_ablation_{slug(base)}",
        )
    if not families:
        notes.append("figures: no ablation figure (no algorithm named '<algo>-<variant>' next to '<algo>')")
    files += figures.task_curves_figure(
        main_curves, tasks, main_display, palette, "All tasks", "t", fig_dir / "fig7_all_tasks"
    )
    if not poi.empty:
        mine = poi[poi["algo_x"] == cfg.poi_algo]
        if not mine.empty:
            files += figures.poi_figure(
                mine,
                palette,
                f"Probability of improvement of {cfg.poi_algo} (all tasks, 95% CI)",
                fig_dir / f"probability_of_improvement_{slug(cfg.poi_algo)}",
                order=display,
            )
        files += figures.poi_matrix_figure(
            poi, display, "P(X > Y), all tasks", fig_dir / "probability_of_improvement_matrix"
        )
    main = score_sets.get(ALL_TASKS)
    if main is not None:
        all_scores = np.concatenate([m.ravel() for m in main.matrices.values()])
        taus = np.linspace(min(0.0, float(all_scores.min())), max(1.0, float(all_scores.max())), 81)
        profiles, cis = stats.performance_profiles(main.matrices, taus, cfg.reps, cfg.seed, cfg.confidence)
        used = ", ".join(f"{a} {main.n_runs(a)}" for a in main.algos)
        files += figures.profile_figure(
            profiles,
            cis,
            taus,
            display,
            palette,
            f"Performance profile, all tasks (runs: {used})",
            fig_dir / "performance_profile",
        )
    if efficiency_panels:
        files += figures.sample_efficiency_figure(efficiency_panels, display, palette, fig_dir / "sample_efficiency")
    return files


def distribution_version(name: str) -> str | None:
    """Installed version of a distribution from its metadata (rliable has no __version__); None if absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def rliable_note() -> str:
    version = distribution_version("rliable")
    return (
        f"checked against rliable {version} (installed here) by tests/test_stats.py"
        if version
        else "rliable is not installed; the tests check these statistics against hand-computed cases only"
    )


def _write_marker(cfg: AnalysisConfig, files: list[Path], elapsed: float | None = None) -> None:
    import scipy

    info = {
        "tool": "flowrl.analysis",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(elapsed, 2) if elapsed is not None else None,
        "config": {
            k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
            for k, v in dataclasses.asdict(cfg).items()
        },
        "statistics": {
            "implementation": "flowrl.analysis.stats (NumPy/SciPy; rliable's metrics and stratified bootstrap)",
            "bootstrap_reps": cfg.reps,
            "bootstrap_seed": cfg.seed,
            "confidence": cfg.confidence,
            "interval": "percentile",
            "per_task_mean_interval": "Student t (table, Fig. 7); percentile bootstrap in the CSVs",
            "rliable_reference": rliable_note(),
        },
        "versions": {
            "flowrl-bench": distribution_version("flowrl-bench"),
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scipy": scipy.__version__,
            "rliable": distribution_version("rliable"),
        },
        "outputs": sorted(str(p.relative_to(cfg.out)) for p in files),
    }
    (cfg.out / MARKER).write_text(json.dumps(info, indent=2))


def analyse(runs, out, **options) -> AnalysisResult:
    """Everything the CLI does, callable from Python or a Snakemake `run:`/`script:` block."""
    return run_analysis(AnalysisConfig(runs=runs, out=out, **options))
