"""`flowrl-plan` / `python -m flowrl.plan`: what a study will cost, before it is submitted.

    flowrl-plan config/paper.yaml                    # jobs, env steps, estimated device-hours per algorithm
    flowrl-plan config/default.yaml --cores 2        # and the wall time of a local run on 2 cores
    flowrl-plan config/mine.yaml --runs runs/pilot   # rates measured by another study's runs
    snakemake --config plan=true                     # the same from the workflow; nothing runs

A run of S steps with W warm-up steps (start_steps, no updates) is estimated to take W / warm-up rate + (S - W) /
learning rate seconds. The rates (environment steps per second of one run) come, per algorithm, from the first
source that has them:

  1. the study's own runs (runs/<study>/, or --runs): train.csv windows, env_steps_per_s over each window's steps,
     pooled over the algorithm's finished runs (all its runs with train.csv if none finished). Evaluation and
     checkpoint time fall inside those windows, so they are included at that study's settings;
  2. a measured throughput table (bench/throughput.yaml, or --throughput), the entry for the algorithm closest to
     the run's configuration (device, then hidden size, then batch size; then, for CPU studies, one measured on
     this machine's CPU maker, then the newest). Its warm-up steps count at the learning
     rate (an overestimate of a few seconds per run).

An entry measured at another configuration is used as is, and the plan says so: the cost of an update does not
scale with network size in a way one formula captures on every machine (small networks are overhead-bound).
A job's time is the sum of its runs' (packed seeds are assumed no faster than one after another, except in
`parallel` mode: its runs side by side); device-hours are job hours times the job's GPUs, or CPUs on CPU jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import yaml

from flowrl.study import StudyFileError, batched_supported, load_study_file

TABLE = Path(__file__).resolve().parents[1] / "bench" / "throughput.yaml"


@dataclasses.dataclass
class Rate:
    steps_per_s: float  # learning phase
    warmup_steps_per_s: float | None  # None: counted at the learning rate
    source: str
    exact: bool = True  # measured at the study's configuration
    note: str = ""


# ------------------------------------------------------------------------------------------- measured runs
def run_rates(train_rows: list[dict]) -> tuple[float, float, float, float]:
    """(learning seconds, learning steps, warm-up seconds, warm-up steps) of one run's train.csv rows: each row
    covers the steps since the previous one in steps / env_steps_per_s seconds; rows whose window ran updates are
    learning, the others warm-up."""
    learn_t = learn_n = warm_t = warm_n = 0.0
    prev_step = prev_updates = 0.0
    for row in sorted(train_rows, key=lambda r: r["step"]):
        steps, updates, sps = (
            row["step"] - prev_step,
            (row.get("updates") or 0) - prev_updates,
            row.get("env_steps_per_s"),
        )
        if steps > 0 and sps:
            if updates > 0:
                learn_t, learn_n = learn_t + steps / sps, learn_n + steps
            else:
                warm_t, warm_n = warm_t + steps / sps, warm_n + steps
        prev_step, prev_updates = row["step"], row.get("updates") or 0
    return learn_t, learn_n, warm_t, warm_n


def rates_from_runs(runs_root: Path) -> dict[str, Rate]:
    """Per algorithm (directory name: variants included), the rates of its runs under runs_root/<algo>/<task>/seed*/."""
    import json

    from flowrl.status import Corrupt, _csv

    pooled: dict[str, dict] = {}
    for train_csv in sorted(runs_root.glob("*/*/seed*/train.csv")):
        run = train_csv.parent
        try:
            rows = _csv(train_csv, ("step", "updates", "env_steps_per_s"))
        except (Corrupt, OSError):
            continue
        learn_t, learn_n, warm_t, warm_n = run_rates(rows)
        if not learn_n:
            continue
        finished = (run / "DONE").exists()
        entry = pooled.setdefault(run.parent.parent.name, {True: [], False: []})
        try:
            info = json.loads((run / "manifest.json").read_text())
            where = (
                f"{info.get('host', '?')}, {info.get('device', '?')}, {info.get('cpu_count', '?')} CPUs, "
                f"{str(info.get('start_time', '?'))[:10]}"
            )
        except (OSError, ValueError, AttributeError):
            where = "?"
        entry[finished].append((learn_t, learn_n, warm_t, warm_n, where))
    rates = {}
    for algo, by_done in pooled.items():
        used = by_done[True] or by_done[False]
        learn = sum(u[1] for u in used) / sum(u[0] for u in used)
        warm_n, warm_t = sum(u[3] for u in used), sum(u[2] for u in used)
        hosts = sorted({u[4] for u in used})
        kind = "finished" if by_done[True] else "unfinished"
        rates[algo] = Rate(
            learn,
            warm_n / warm_t if warm_t else None,
            f"{len(used)} {kind} runs' train.csv in {runs_root} (measured on {'; '.join(hosts)}; evaluation included)",
        )
    return rates


# ------------------------------------------------------------------------------------------- the table
def load_table(path: Path = TABLE) -> list[dict]:
    try:
        entries = yaml.safe_load(Path(path).read_text())["entries"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise StudyFileError(
            f"throughput table {path} cannot be read ({exc}); see bench/throughput.yaml for the format"
        ) from None
    need = {"algo", "hidden_dim", "batch_size", "device", "steps_per_s", "measured", "hardware"}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or need - set(entry):
            raise StudyFileError(f"throughput table {path}: entry {i} needs {sorted(need)}")
    return entries


def local_cpu_maker() -> str | None:
    """ "Intel" or "AMD" for this machine's CPU (the word the table's hardware strings use), else None."""
    from flowrl.cpu_kernels import cpu_vendor

    return {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(cpu_vendor())


def table_rate(
    entries: list[dict],
    algo: str,
    hidden: int | None,
    batch: int,
    device: str,
    variant: bool,
    where: str = "bench/throughput.yaml",
    tasks: tuple[str, ...] = (),
) -> Rate | None:
    """The entry for `algo` nearest the configuration: same device kind first, then hidden size, then batch size
    (log-ratio distances); among equally near entries of a CPU study one measured on this machine's CPU maker (their
    rates differ by up to ~2x), then the most recent."""
    kind = "cuda" if device.startswith("cuda") else device
    maker = local_cpu_maker() if kind == "cpu" else None
    found = [e for e in entries if e["algo"] == algo]
    if not found:
        return None

    def distance(e):
        return (
            e["device"] != kind,
            abs(math.log2(e["hidden_dim"] / hidden)) if hidden else 0,
            abs(math.log2(e["batch_size"] / batch)),
            maker is not None and maker not in str(e["hardware"]),
            -int(str(e["measured"]).replace("-", "")),
        )

    best = min(found, key=distance)
    exact = best["device"] == kind and best["hidden_dim"] == hidden and best["batch_size"] == batch and not variant
    task = ", ".join(best["task"]) if isinstance(best.get("task"), list) else best.get("task", "?")
    measured = (
        f"{where}: {algo} on {task}, hidden {best['hidden_dim']}, batch {best['batch_size']}, "
        f"{best['device']}, {'with' if best.get('includes_evaluation') else 'without'} evaluation; measured "
        f"{best['measured']} on {best['hardware']}"
    )
    notes = []
    if best["device"] != kind:
        notes.append(f"the study trains on {device}, where the table has no measurement")
    if (best["hidden_dim"], best["batch_size"]) != (hidden, batch):
        notes.append(f"the study's hidden {hidden}, batch {batch} is not measured")
    if variant:
        notes.append("the variant's own settings are not measured")
    measured_tasks = best.get("task") if isinstance(best.get("task"), list) else [best.get("task")]
    others = [t for t in tasks if t not in measured_tasks]
    if others:
        notes.append(
            f"{len(others)} of its {len(tasks)} tasks are estimated at the rate measured on "
            f"{', '.join(map(str, measured_tasks))}"
        )
    note = "; ".join(notes) + ": the estimate assumes the measured configuration" if notes else ""
    return Rate(float(best["steps_per_s"]), None, measured, exact, note)


# ------------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class AlgoPlan:
    algo: str
    jobs: int = 0
    runs: int = 0
    steps: int = 0
    run_seconds: float = 0.0
    device_seconds: float = 0.0
    rate: Rate | None = None
    job_seconds: list = dataclasses.field(default_factory=list)
    resources: list = dataclasses.field(default_factory=list)
    settings: dict = dataclasses.field(default_factory=dict)


def run_settings(study, algo: str) -> dict:
    """start_steps, batch size, hidden size and device of `algo`'s runs (the run config resolved like the workflow
    resolves it)."""
    from flowrl.config import nest, resolve_config

    job = next(j for j in study.jobs() if j.algo == algo)
    try:
        cfg = resolve_config(
            nest({"algo": job.base_algo, "task": job.tasks[0], "seed": 0, "steps": job.steps, **job.overrides})
        )
    except (ValueError, TypeError) as exc:
        raise StudyFileError(f"study '{study.name}', {algo}: {exc}") from None
    return {
        "start_steps": cfg.start_steps,
        "batch_size": cfg.batch_size,
        "device": cfg.device,
        "hidden_dim": getattr(cfg.agent, "hidden_dim", None),
    }


def make_plan(
    study, runs_root: Path, table: list[dict], table_name: str = "bench/throughput.yaml"
) -> dict[str, AlgoPlan]:
    measured = rates_from_runs(runs_root) if runs_root.is_dir() else {}
    plans: dict[str, AlgoPlan] = {}
    for job in study.jobs(batched_supported):
        p = plans.get(job.algo)
        if p is None:
            s = run_settings(study, job.algo)
            if s["device"] == "auto":  # as the runner resolves it on the job's machine
                s["device"] = "cuda" if job.resources.get("gpu", 0) else "cpu"
            rate = measured.get(job.algo) or table_rate(
                table,
                job.base_algo,
                s["hidden_dim"],
                s["batch_size"],
                s["device"],
                job.algo in study.variants,
                table_name,
                tuple(study.tasks),
            )
            p = plans[job.algo] = AlgoPlan(job.algo, rate=rate, settings=s)
        n = len(job.tasks) * len(job.seeds)
        p.jobs, p.runs, p.steps = p.jobs + 1, p.runs + n, p.steps + n * job.steps
        if p.rate is None:
            continue
        warm = min(p.settings["start_steps"], job.steps)
        one = warm / (p.rate.warmup_steps_per_s or p.rate.steps_per_s) + (job.steps - warm) / p.rate.steps_per_s
        seconds = one if job.pack_mode == "parallel" else one * n
        p.run_seconds += one * n
        p.job_seconds.append(seconds)
        p.device_seconds += seconds * (job.resources.get("gpu", 0) or job.resources.get("cpus_per_task", 1))
        p.resources.append(job.resources)
    return plans


def local_wall_seconds(plans: dict[str, AlgoPlan], cores: int, cpus_per_job: int) -> float:
    """Makespan of the jobs on `cores` CPUs, each job taking `cpus_per_job` of them, started in study order
    whenever one finishes (as snakemake --cores schedules jobs of equal priority)."""
    slots = [0.0] * max(1, cores // max(1, cpus_per_job))
    for p in plans.values():
        for seconds in p.job_seconds:
            i = slots.index(min(slots))
            slots[i] += seconds
    return max(slots)


def hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.0f}" if h >= 100 else f"{h:.2f}" if h < 10 else f"{h:.1f}"


def plan_text(
    study,
    directory: Path = Path("."),
    runs: Path | None = None,
    cores: int | None = None,
    throughput: Path | None = None,
    label: str = "",
) -> str:
    runs_root = runs or directory / "runs" / study.name
    table_path = throughput or TABLE
    table_name = str(throughput) if throughput else "bench/throughput.yaml"
    plans = make_plan(study, runs_root, load_table(table_path), table_name)
    gpu = study.config["resources"].get("gpu", 0)
    unit = "GPU-hours" if gpu else "CPU-hours"
    lines = [
        f"plan for study {study.name}{f' ({label})' if label else ''}: {sum(p.jobs for p in plans.values())} "
        f"training jobs, {sum(p.runs for p in plans.values())} runs, "
        f"{sum(p.steps for p in plans.values()):,} env steps ({len(study.algos)} algorithms x "
        f"{len(study.tasks)} tasks x {len(study.seeds)} seeds)",
        "",
    ]
    header = ["algo", "jobs", "runs", "env steps", "steps/s", "hours/run", "run-hours", unit, "rate"]
    rows, sources = [], []
    for p in plans.values():
        if p.rate is None:
            rows.append([p.algo, str(p.jobs), str(p.runs), f"{p.steps:,}", "?", "?", "?", "?", "none"])
            continue
        if p.rate.source not in sources:
            sources.append(p.rate.source)
        ref = f"[{sources.index(p.rate.source) + 1}]" + ("" if p.rate.exact else " *")
        rows.append(
            [
                p.algo,
                str(p.jobs),
                str(p.runs),
                f"{p.steps:,}",
                f"{p.rate.steps_per_s:.3g}",
                hours(p.run_seconds / p.runs),
                hours(p.run_seconds),
                hours(p.device_seconds),
                ref,
            ]
        )
    known = [p for p in plans.values() if p.rate is not None]
    rows.append(
        [
            "total",
            str(sum(p.jobs for p in plans.values())),
            str(sum(p.runs for p in plans.values())),
            f"{sum(p.steps for p in plans.values()):,}",
            "",
            "",
            hours(sum(p.run_seconds for p in known)),
            hours(sum(p.device_seconds for p in known)),
            "" if len(known) == len(plans) else "(known rates only)",
        ]
    )
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        lines.append(
            "  ".join(c.rjust(w) if 0 < i < 8 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        )
    lines.append("")
    lines += [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    notes: dict[str, list[str]] = {}
    for p in known:
        if p.rate.note:
            notes.setdefault(p.rate.note, []).append(p.algo)
    lines += [f"* {', '.join(algos)}: {note}" for note, algos in notes.items()]
    for p in plans.values():
        if p.rate is None:
            lines.append(
                f"{p.algo}: no measured rate (no runs in {runs_root}, no {p.algo} entry in {table_name}); "
                f"train a few of its runs and plan again with --runs, or add an entry"
            )
    if not gpu and known:
        cores = cores or os.cpu_count() or 1
        per_job = max(r.get("cpus_per_task", 1) for p in known for r in p.resources)
        wall = local_wall_seconds({p.algo: p for p in known}, cores, per_job)
        lines.append(
            f"local wall time with --cores {cores} ({max(1, cores // per_job)} jobs at a time): "
            f"~{wall / 60:.1f} min, plus Snakemake's start-up, each job's process start and the aggregation"
        )
    elif gpu:
        lines.append(f"device-hours: job hours x {gpu} GPU(s) per job at the measured hardware's speed (see the rates)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowrl-plan",
        description="What a study will cost: jobs, env steps and "
        "estimated device-hours per algorithm, from measured throughput.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="a study file (config/*.yaml)")
    p.add_argument(
        "-d",
        "--directory",
        default=".",
        help="the workflow's working directory, where runs/<study>/ is (snakemake -d; default: here)",
    )
    p.add_argument("--runs", help="take measured rates from the runs in this folder (default: runs/<study>/)")
    p.add_argument("--throughput", help="a throughput table in bench/throughput.yaml's format (default: that file)")
    p.add_argument("--cores", type=int, help="CPU studies: the wall time on this many cores (default: this machine's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        study = load_study_file(args.study)
        print(
            plan_text(
                study,
                Path(args.directory),
                Path(args.runs) if args.runs else None,
                args.cores,
                Path(args.throughput) if args.throughput else None,
                label=args.study,
            )
        )
    except StudyFileError as exc:
        print(f"flowrl-plan: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
