"""`flowrl-status` / `python -m flowrl.status`: where a study stands, one line per run.

    flowrl-status config/default.yaml              # the study's runs; those not started yet show as queued
    flowrl-status runs/default                     # every run directory under a folder
    flowrl-status config/paper.yaml --watch 60     # redraw every 60 s (Ctrl-C stops)

It reads only run directories (docs/run-format.md) and the workflow's job logs, so a local study and a SLURM
one look the same; where `squeue` exists it adds the state of each run's SLURM job. A run's state:

  finished     DONE exists.
  running      a live process holds the run's lock (<run>/.flowrl.lock, taken by every flowrl-train) or, for runs
               without one, its job's lock (runs/<study>/jobs/.../seeds-<s>.lock, taken by workflow jobs). Where
               the file system has no flock: the lock names this host and a live pid, or the run's session is
               open and its logs were written within --stale seconds.
  failed       not running, and the last session recorded an error, or the job log's last attempt (after its
               last '===' header) or train.log ends in one; the log's path and the error line are printed.
  interrupted  not running, not failed, and the run has started (a checkpoints/ckpt-<step>.pt to resume from, or
               none: it restarts from step 0).
  queued       no run directory yet (or an empty one).
  corrupt      config.yaml, manifest.json, eval.csv, train.csv or DONE cannot be parsed: the board says which and
               carries on.

Time used is the sum of the runs' sessions (manifest.json start/end times); per study job the union of its runs'
sessions times the job's GPUs (or CPUs on CPU studies). Remaining time: each unfinished run's remaining steps over
its recent steps/s (train.csv env_steps_per_s), else its algorithm's measured rate (flowrl-plan's source).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import fcntl
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flowrl.study import StudyFileError, batched_supported, load_study_file

RUN_LOCK = ".flowrl.lock"  # flowrl.train.LOCK_NAME (not imported: importing train pulls in torch)
RUN_FILES = ("config.yaml", "manifest.json", "eval.csv", "train.csv", "DONE")
CKPT = re.compile(r"^ckpt-(\d+)\.pt$")  # not *.pt.sha256 sidecars nor *.pt.corrupt renames
ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)(: |$)|\berror: | ERROR ")
STATES = ("finished", "running", "interrupted", "failed", "queued", "corrupt")


class Corrupt(ValueError):
    """A run file that cannot be parsed."""


@dataclasses.dataclass
class Run:
    algo: str | None
    task: str | None
    seed: int | None
    path: Path
    target: int | None = None
    job: str | None = None  # the study job it belongs to (runs of one job share its devices)
    job_log: Path | None = None
    job_lock: Path | None = None
    slurm_comment: str | None = None  # what snakemake's SLURM executor puts in the job's --comment
    devices: int = 1  # per job: GPUs, or CPUs on a CPU study
    slug: str | None = None  # the task's directory name, shown when config.yaml cannot say the task
    state: str = "queued"
    note: str = ""
    step: int | None = None
    last_eval: tuple[int, float] | None = None
    sps: float | None = None
    seconds: float = 0.0
    intervals: list = dataclasses.field(default_factory=list)
    slurm_job: str | None = None
    slurm: str = ""
    error_log: Path | None = None
    error: str | None = None


# ------------------------------------------------------------------------------------------- which runs
def study_runs(study, directory: Path) -> list[Run]:
    """The runs `study` expects, with their job's log, lock and SLURM comment (as the Snakefile names them)."""
    runs = []
    for job in study.jobs(batched_supported):
        base = directory / "runs" / study.name
        name = f"{job.algo}/{job.slug}/seeds-{job.seeds_label}"
        gpu = job.resources.get("gpu", 0)
        for task in job.tasks:
            for seed in job.seeds:
                runs.append(
                    Run(
                        job.algo,
                        task,
                        seed,
                        directory / study.run_dir(job.algo, task, seed),
                        job.steps,
                        job=name,
                        job_log=base / "logs" / f"{name}.log",
                        job_lock=base / "jobs" / f"{name}.lock",
                        slurm_comment=f"rule_{job.rule}_wildcards_{job.algo}_{job.slug}_{job.seeds_label}",
                        devices=gpu or job.resources.get("cpus_per_task", 1),
                    )
                )
    return runs


def _is_run_dir(path: Path) -> bool:
    return any((path / f).exists() for f in RUN_FILES)


def folder_runs(root: Path) -> list[Run]:
    """Every run directory under `root` (a study's runs/<study>/ or any folder); --force backups are skipped."""
    if _is_run_dir(root):
        return [_named_run(root, root.parent)]
    found = []
    for here, dirs, _files in os.walk(root):
        here = Path(here)
        if here != root and _is_run_dir(here):
            found.append(_named_run(here, root))
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if ".replaced-" not in d and not (here == root and d in ("logs", "jobs")))
    return found


def _named_run(path: Path, root: Path) -> Run:
    """Names from the workflow's layout <algo>/<task_slug>/seed<seed> (config.yaml fills in what is missing)."""
    parts = path.relative_to(root).parts
    run = Run(None, None, None, path)
    if len(parts) >= 3 and (m := re.fullmatch(r"seed(\d+)", parts[-1])):
        run.algo, run.slug, run.seed = parts[-3], parts[-2], int(m.group(1))
        run.job_log = _job_file(root / "logs" / run.algo, parts[-2], run.seed, ".log")
        run.job_lock = _job_file(root / "jobs" / run.algo, parts[-2], run.seed, ".lock")
        run.job = str(run.job_log.relative_to(root / "logs").with_suffix("")) if run.job_log else None
    return run


def _job_file(folder: Path, slug: str, seed: int, suffix: str) -> Path | None:
    """The newest workflow job file for (slug, seed): <slug or pack a+b>/seeds-<s1-s2...><suffix>."""
    if not folder.is_dir():
        return None
    hits = [
        p
        for d in folder.iterdir()
        if slug in d.name.split("+")
        for p in d.glob(f"seeds-*{suffix}")
        if str(seed) in p.name[len("seeds-") : -len(suffix)].split("-")
    ]
    return max(hits, key=lambda p: p.stat().st_mtime, default=None)


# ------------------------------------------------------------------------------------------- reading files
def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise Corrupt(f"{path.name} (not text: {exc.reason})") from None


def _json(path: Path):
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise Corrupt(f"{path.name} (not JSON: {exc.msg}, line {exc.lineno})") from None


def _csv(path: Path, numeric: tuple[str, ...]) -> list[dict]:
    """Rows of a run's CSV log with `numeric` columns as floats (None where empty). A last line without its
    newline is a row being appended right now and is left out."""
    text = _text(path)
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    if text and "step" not in (reader.fieldnames or []):
        raise Corrupt(f"{path.name} (no 'step' column in its header)")
    rows = list(reader)
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            parsed = {k: (float(row[k]) if row.get(k) not in (None, "") else None) for k in numeric if k in row}
        except ValueError:
            raise Corrupt(f"{path.name} (line {i}: not a number in {', '.join(numeric)})") from None
        if parsed.get("step") is None:
            raise Corrupt(f"{path.name} (line {i}: no step)")
        out.append(parsed)
    return out


def _time(text) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------- liveness
def lock_held(path: Path | None) -> bool | None:
    """Whether a live process holds an flock on `path`: a non-blocking shared lock is refused exactly while an
    exclusive one is held (on network file systems too, where they map to POSIX locks). None: no such file, or
    no flock on its file system."""
    if path is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def holder_alive(path: Path) -> bool | None:
    """For file systems without flock: the lock file names this host and a pid that is alive (None: another host
    or no readable holder). flowrl-train writes JSON {pid, host, ...}; workflow jobs 'host=... pid=...'."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = dict(re.findall(r"(\w+)=(\S+)", text))
    if not isinstance(info, dict) or info.get("host") not in (socket.gethostname(), os.uname().nodename):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (KeyError, ValueError, TypeError):
        return None
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def newest_write(path: Path) -> float | None:
    times = [p.stat().st_mtime for p in (path / n for n in ("train.csv", "train.log", "eval.csv")) if p.exists()]
    return max(times, default=None)


def liveness(run: Run, session_open: bool, stale: float, now: float) -> tuple[bool, str]:
    """(running, why): the run's lock decides where it can be asked (flock, else its holder on this host); for a
    run without one (written before the lock existed), its job's lock, else logs written within `stale` seconds."""
    run_lock = run.path / RUN_LOCK
    held = lock_held(run_lock)
    if held is not None:
        return held, ""
    alive = holder_alive(run_lock)
    if alive is not None:
        return alive, "its lock's holder is alive (no flock here)" if alive else ""
    if not session_open:
        return False, ""
    job = lock_held(run.job_lock)
    if job is None and run.job_lock is not None:
        job = holder_alive(run.job_lock)
    if job is not None:
        return job, "its job holds the job lock" if job else ""
    written = newest_write(run.path)
    if written is not None and now - written < stale:
        return True, f"no lock to ask; logs written {now - written:.0f} s ago"
    return False, ""


# ------------------------------------------------------------------------------------------- errors
def last_error(log: Path | None, after: str | None = None) -> str | None:
    """The last error line of `log` (of its part after the last line starting with `after`), if that part
    ends in an error: a traceback's exception line, 'error:' or an ERROR log record."""
    if log is None or not log.is_file():
        return None
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    if after is not None:
        starts = [i for i, line in enumerate(lines) if line.startswith(after)]
        lines = lines[starts[-1] :] if starts else lines
    errors = [line.strip() for line in lines if ERROR_LINE.search(line)]
    if not errors and any(line.startswith("Traceback") for line in lines):
        errors = [next(line for line in reversed(lines) if line.strip()).strip()]
    return errors[-1] if errors else None


# ------------------------------------------------------------------------------------------- one run
def inspect(run: Run, stale: float = 300, now: float | None = None) -> Run:
    """Fill in `run`'s state and figures from its files."""
    now = time.time() if now is None else now
    path = run.path
    try:
        _read(run, path, stale, now)
    except Corrupt as exc:  # note: '<file> (<what is wrong>)'
        run.state, run.note = "corrupt", str(exc)
    except OSError as exc:
        run.state, run.note = "corrupt", f"{Path(exc.filename or path).name} (unreadable: {exc.strerror or exc})"
    return run


def _read(run: Run, path: Path, stale: float, now: float) -> None:
    started = path.is_dir() and _is_run_dir(path)
    cfg = yaml_dict(path / "config.yaml") if (path / "config.yaml").exists() else {}
    run.algo = run.algo or cfg.get("algo")
    run.task = run.task or cfg.get("task")
    run.seed = run.seed if run.seed is not None else cfg.get("seed")
    run.target = run.target or (int(cfg["steps"]) if str(cfg.get("steps", "")).isdigit() else None)
    manifest = _json(path / "manifest.json") if (path / "manifest.json").exists() else None
    if manifest is not None and not isinstance(manifest, dict):
        raise Corrupt("manifest.json (not a JSON object)")
    evals = _csv(path / "eval.csv", ("step", "return_mean", "wall_time")) if (path / "eval.csv").exists() else []
    train = _csv(path / "train.csv", ("step", "updates", "env_steps_per_s")) if (path / "train.csv").exists() else []
    done = _json(path / "DONE") if (path / "DONE").exists() else None
    if done is not None and not isinstance(done, dict):
        raise Corrupt("DONE (not a JSON object)")
    ckpts = (
        sorted(int(m.group(1)) for p in (path / "checkpoints").glob("ckpt-*") if (m := CKPT.match(p.name)))
        if (path / "checkpoints").is_dir()
        else []
    )

    steps = [int(r["step"]) for r in evals + train] + ckpts[-1:]
    run.step = int(done.get("steps", max(steps, default=0))) if done else max(steps, default=0 if started else None)
    if evals and evals[-1].get("return_mean") is not None:
        run.last_eval = (int(evals[-1]["step"]), evals[-1]["return_mean"])
    run.sps = recent_rate(train)
    sessions = (manifest or {}).get("sessions") or []
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise Corrupt("manifest.json (sessions is not a list of objects)")
    session_open = bool(sessions) and "end_time" not in sessions[-1]
    run.slurm_job = (str(sessions[-1].get("slurm_job_id") or "") or None) if sessions else None

    live, why = (False, "") if done else liveness(run, session_open, stale, now)
    run.intervals = session_intervals(sessions, open_end=now if live else (newest_write(path) or now))
    run.seconds = sum(max(0.0, b - a) for a, b in run.intervals)
    if not run.intervals and evals and evals[-1].get("wall_time") is not None:
        run.seconds = evals[-1]["wall_time"]  # no usable manifest: training seconds from the last evaluation

    if done:
        run.state = "finished"
        return
    if live:
        run.state, run.note = "running", why
        return
    failure = failure_of(run, sessions, started)
    if failure:
        run.state = "failed"
        run.error_log, run.error = failure
        return
    if not started:
        run.state = "queued"
        job_live = lock_held(run.job_lock)
        run.note = "its job is running" if job_live else ""
        return
    run.state = "interrupted"
    run.note = f"checkpoint at step {ckpts[-1]}" if ckpts else "no checkpoint: restarts from step 0"
    if session_open:
        run.note += "; its trainer ended without closing the session (killed?)"


def session_intervals(sessions: list[dict], open_end: float) -> list[tuple[float, float]]:
    """(start, end) of each session; a last session still open ends at `open_end` (now, or its last write)."""
    out = []
    for i, s in enumerate(sessions):
        start, end = _time(s.get("start_time")), _time(s.get("end_time"))
        if end is None and i == len(sessions) - 1:
            end = open_end
        if start is not None and end is not None:
            out.append((start, end))
    return out


def failure_of(run: Run, sessions: list[dict], started: bool) -> tuple[Path, str] | None:
    """(log, error line) when the run's last attempt ended in an error: its job log's last attempt (if written
    during or after the run's last session), the error its last session recorded, or train.log's last record."""
    log = run.job_log
    since = _time(sessions[-1].get("start_time")) if sessions else None
    if log is not None and log.is_file() and (since is None or log.stat().st_mtime >= since - 1):
        error = last_error(log, after="===")
        if error:
            return log, error
    if sessions and sessions[-1].get("error"):
        return run.path / "train.log", str(sessions[-1]["error"])
    train_log = run.path / "train.log"
    if started and train_log.is_file():
        lines = [ln.strip() for ln in train_log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines and " ERROR " in lines[-1]:
            return train_log, lines[-1]
    return None


def yaml_dict(path: Path) -> dict:
    try:
        data = yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise Corrupt(f"config.yaml (not YAML{f', line {mark.line + 1}' if mark else ''})") from None
    if not isinstance(data, dict):
        raise Corrupt("config.yaml (not a mapping of settings)")
    return data


def recent_rate(train: list[dict], rows: int = 3) -> float | None:
    """Mean env_steps_per_s of the last `rows` train.csv rows in which updates ran (warm-up rows, which run no
    updates and are much faster, only when there are no others)."""
    learning = [r for r in train if (r.get("updates") or 0) > 0 and r.get("env_steps_per_s")]
    picked = (learning or [r for r in train if r.get("env_steps_per_s")])[-rows:]
    return sum(r["env_steps_per_s"] for r in picked) / len(picked) if picked else None


# ------------------------------------------------------------------------------------------- SLURM
def squeue_jobs() -> dict[str, str] | None:
    """{job id: state, comment: 'STATE id'} from squeue, or None where there is no squeue (or it fails)."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-o", "%i|%T|%k"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    jobs = {}
    for line in out.splitlines():
        job_id, _, rest = line.partition("|")
        state, _, comment = rest.partition("|")
        jobs[job_id.strip()] = state
        if comment.strip():
            jobs[comment.strip()] = f"{state} {job_id.strip()}"
    return jobs


def add_slurm(runs: list[Run], jobs: dict[str, str]) -> None:
    for run in runs:
        if run.slurm_comment in jobs:
            run.slurm = jobs[run.slurm_comment]
        elif run.slurm_job in jobs and run.state != "finished":
            run.slurm = f"{jobs[run.slurm_job]} {run.slurm_job}"


# ------------------------------------------------------------------------------------------- totals
def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total, end = total + b - a, b
        elif b > end:
            total, end = total + b - end, b
    return total


def device_hours(runs: list[Run]) -> float:
    """Per job, the union of its runs' sessions times its devices (runs of a packed job share them)."""
    jobs: dict[str, list[Run]] = {}
    for run in runs:
        jobs.setdefault(run.job or str(run.path), []).append(run)
    total = 0.0
    for members in jobs.values():
        intervals = [iv for r in members for iv in r.intervals]
        seconds = union_seconds(intervals) if intervals else max(r.seconds for r in members)
        total += seconds * members[0].devices
    return total / 3600


def fallback_rates(runs: list[Run]) -> dict[str, float]:
    """Per algorithm, the mean recent steps/s of its runs that have one."""
    rates: dict[str, list[float]] = {}
    for run in runs:
        if run.sps:
            rates.setdefault(run.algo, []).append(run.sps)
    return {algo: sum(v) / len(v) for algo, v in rates.items()}


def remaining_seconds(run: Run, rates: dict[str, float]) -> float | None:
    if run.state == "finished" or run.target is None:
        return 0.0
    rate = run.sps or rates.get(run.algo)
    return max(0, run.target - (run.step or 0)) / rate if rate else None


# ------------------------------------------------------------------------------------------- printing
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def board(runs: list[Run], title: str, unit: str, table_rates=None) -> str:
    rates = {**(table_rates or {}), **fallback_rates(runs)}
    slurm = any(r.slurm for r in runs)
    header = ["algo", "task", "seed", "state", "step/target", "last eval", "steps/s", "ETA"] + (
        ["slurm"] if slurm else []
    )
    rows = []
    for r in runs:
        eta = remaining_seconds(r, rates) if r.state not in ("finished", "corrupt") else None
        state = f"corrupt: {r.note.split(' (', 1)[0]}" if r.state == "corrupt" else r.state
        rows.append(
            [
                str(r.algo or "?"),
                str(r.task or r.slug or "?"),
                str("?" if r.seed is None else r.seed),
                state,
                f"{'-' if r.step is None else r.step}/{r.target or '?'}",
                f"{r.last_eval[1]:.1f} @{r.last_eval[0]}" if r.last_eval else "-",
                f"{r.sps:.0f}" if r.sps else "-",
                duration(eta) if r.state not in ("finished", "corrupt") else "-",
            ]
            + ([r.slurm or "-"] if slurm else [])
        )
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    lines = [title, fmt(header)]
    for r, cells in zip(runs, rows):
        lines.append(fmt(cells))
        if r.state == "failed":
            lines.append(f"    log: {r.error_log}")
            lines.append(f"    error: {r.error}")
        elif r.state == "corrupt":
            lines.append(f"    ({r.note.split(' (', 1)[-1].rstrip(')')}; in {r.path})")
        elif r.note:
            lines.append(f"    ({r.note})")
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    left = [remaining_seconds(r, rates) for r in runs if r.state != "finished"]
    unknown = sum(x is None for x in left)
    remaining = sum(x for x in left if x is not None) / 3600
    lines.append(
        f"{len(runs)} runs: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f" | {counts['finished']}/{len(runs)} done | {device_hours(runs):.2f} {unit} used"
        + f" | ~{remaining:.2f} run-hours remaining"
        + (f" (+{unknown} runs without a measured rate)" if unknown else "")
    )
    return "\n".join(lines)


def source(target: Path, directory: Path):
    """(list the runs, title, unit of time used, per-algorithm steps/s for runs without their own) of a study
    file or a runs folder."""
    if target.is_file():
        study = load_study_file(target)
        gpu = study.config["resources"].get("gpu", 0)
        try:
            from flowrl.plan import load_table, make_plan

            plans = make_plan(study, directory / "runs" / study.name, load_table())
            rates = {a: p.rate.steps_per_s for a, p in plans.items() if p.rate}
        except (StudyFileError, ImportError):  # the board works without estimates
            rates = {}
        return (
            lambda: study_runs(study, directory),
            f"study {study.name} ({target}; runs in {directory / 'runs' / study.name})",
            "GPU-hours" if gpu else "CPU-hours",
            rates,
        )
    if target.is_dir():
        return lambda: folder_runs(target), f"runs in {target}", "run-hours", {}
    raise StudyFileError(f"{target}: no such study file or runs folder (give e.g. config/default.yaml or runs/default)")


def collect(list_runs, stale: float, use_squeue: bool) -> list[Run]:
    runs = list_runs()
    now = time.time()
    for run in runs:
        inspect(run, stale, now)
    jobs = squeue_jobs() if use_squeue else None
    if jobs:
        add_slurm(runs, jobs)
    return runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowrl-status",
        description="Where a study stands: one line per run.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target", metavar="STUDY_OR_RUNS", help="a study file (config/*.yaml) or a folder of run directories"
    )
    p.add_argument(
        "-d",
        "--directory",
        default=".",
        help="with a study file: the workflow's working directory, "
        "where runs/<study>/ is (snakemake -d; default: here)",
    )
    p.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until Ctrl-C")
    p.add_argument(
        "--stale",
        type=float,
        default=300,
        metavar="SECONDS",
        help="without flock: a run whose session is open counts as running if its logs were written "
        "within this many seconds (default 300)",
    )
    p.add_argument("--no-squeue", action="store_true", help="do not ask squeue for SLURM job states")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        print("flowrl-status: error: --watch needs a positive number of seconds", file=sys.stderr)
        return 2
    try:
        list_runs, title, unit, rates = source(Path(args.target), Path(args.directory))
        while True:
            text = board(collect(list_runs, args.stale, not args.no_squeue), title, unit, rates)
            if args.watch is None:
                print(text)
                return 0
            clear = "\033[H\033[2J" if sys.stdout.isatty() else ""
            print(
                f"{clear}{time.strftime('%Y-%m-%d %H:%M:%S')} (every {args.watch:g} s; Ctrl-C stops)\n{text}",
                flush=True,
            )
            time.sleep(args.watch)
    except StudyFileError as exc:
        print(f"flowrl-status: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
