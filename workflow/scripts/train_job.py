"""Run one workflow training job: one algorithm on one task (or a pack of tasks with the same shapes) for one or
more seeds, then write the job marker.

    python workflow/scripts/train_job.py --algo flowrl --task dmc:cartpole-balance --seeds 0 1 2 --steps 20000 \
        --run-dir 'runs/default/flowrl/dmc_cartpole-balance/seed{seed}' --mode batched \
        --marker runs/default/jobs/flowrl/dmc_cartpole-balance/seeds-0-1-2.done -- agent.hidden_dim=64

Each (task, seed) trains into its own run directory with `python -m flowrl` (flowrl-train); a finished run
(DONE) is skipped by the runner, an unfinished one resumes from its newest checkpoint. Several --task values
(a task pack) need a --run-dir with {task} (the task's directory-safe name) and the batched mode. Modes:
single / batched (one process, --seeds/--tasks; with --env-processes when the job has more CPUs than runs) /
parallel (one process per run) / sequential. SIGTERM, SIGINT and SIGUSR1 are passed on to the training processes,
which checkpoint and stop; this script then exits non-zero without writing the marker, so Snakemake reruns the job
later (and the runs resume).

The marker (the Snakemake output) is written only when every seed's run directory holds DONE. It is the
workflow's own file: Snakemake may delete it (failed job, --forcerun) without touching any run.

While it trains, the job holds an exclusive lock (<marker without .done>.lock, next to the marker), so a
second job for the same runs (e.g. Snakemake restarted while the first still runs on SLURM) stops at once
instead of training into the same directories.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flowrl.subproc_env import available_cpus
from flowrl.tasknames import task_slug
from flowrl.train import flock_exclusive

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", required=True)
    p.add_argument("--task", nargs="+", required=True, help="one task, or several with the same shapes")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument(
        "--run-dir", required=True, help="run directory pattern containing {seed} (and {task} with several tasks)"
    )
    p.add_argument("--mode", choices=["single", "batched", "parallel", "sequential"], default="single")
    p.add_argument("--marker", required=True)
    p.add_argument("overrides", nargs="*", help="key=value settings for flowrl-train")
    return p.parse_args(argv)


def run_dir(args, task: str, seed: int) -> str:
    return args.run_dir.format(task=task_slug(task), seed=seed)


def train_command(args, runs: list[tuple[str, int]], cpus: int | None = None) -> list[str]:
    """flowrl-train for these (task, seed) runs: one run, or all of them as one batched model. `cpus`: the CPUs
    the job may use (default: those this process may run on)."""
    cmd = [sys.executable, "-m", "flowrl", "--algo", args.algo, "--steps", str(args.steps), "--no-progress"]
    if len(runs) == 1:
        ((task, seed),) = runs
        cmd += ["--task", task, "--seed", str(seed), "--out", run_dir(args, task, seed)]
    else:
        tasks = list(dict.fromkeys(t for t, _ in runs))
        seeds = list(dict.fromkeys(s for _, s in runs))
        if len(tasks) * len(seeds) != len(runs):
            raise ValueError("a batched job trains every task with every seed")
        cmd += ["--task", tasks[0]] if len(tasks) == 1 else ["--tasks", *tasks]
        cmd += ["--seeds", *map(str, seeds), "--out", args.run_dir]
        if (available_cpus() if cpus is None else cpus) > len(runs):  # a CPU per run's environment, one for the model
            cmd.append("--env-processes")  # same results (tests/test_multiseed.py), environments stepped in parallel
    return cmd + list(args.overrides)


class Children:
    """Training processes; signals received here are forwarded to them."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.signum: int | None = None
        for sig in FORWARDED:
            signal.signal(sig, self._forward)

    def _forward(self, signum, _frame):
        self.signum = signum
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signum)

    def start(self, cmd: list[str]) -> subprocess.Popen:
        print("+ " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd)
        self.procs.append(proc)
        return proc

    def wait_all(self) -> int:
        codes = [p.wait() for p in self.procs]
        return max(codes, default=0)


def take_lock(path: Path):
    """An exclusive flock on `path` (kept open until exit), or exit 75 naming the job that holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        flock_exclusive(handle)  # retried for a moment: flowrl-status probes locks with a brief shared one
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        print(
            f"train_job.py: another job is training these runs ({holder}); not starting a second one. "
            "Wait for it to finish (or cancel it), then run the workflow again.",
            flush=True,
        )
        raise SystemExit(75) from None
    except OSError as exc:  # a file system without locks (e.g. Lustre mounted without -o flock)
        print(f"train_job.py: warning: cannot lock {path} ({exc}); not guarding against a second job", flush=True)
    handle.seek(0)
    handle.truncate()
    handle.write(f"host={os.uname().nodename} pid={os.getpid()} slurm_job={os.environ.get('SLURM_JOB_ID', '-')}\n")
    handle.flush()
    return handle


def main(argv=None) -> int:
    args = parse_args(argv)
    if "{seed}" not in args.run_dir or (len(args.task) > 1 and "{task}" not in args.run_dir):
        raise SystemExit("train_job.py: --run-dir must contain {seed}, and {task} when the job has several tasks")
    if len(args.task) > 1 and args.mode != "batched":
        raise SystemExit("train_job.py: several tasks in one job need --mode batched")
    runs = [(t, s) for t in args.task for s in args.seeds]
    lock = take_lock(Path(args.marker).with_suffix(".lock"))  # noqa: F841  (held until the process exits)
    print(
        f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} host={os.uname().nodename} "
        f"slurm_job={os.environ.get('SLURM_JOB_ID', '-')} algo={args.algo} task={' '.join(args.task)} "
        f"seeds={args.seeds} mode={args.mode}",
        flush=True,
    )
    children = Children()
    if args.mode in ("single", "batched"):
        children.start(train_command(args, runs))
        rc = children.wait_all()
    elif args.mode == "parallel":
        for run in runs:
            children.start(train_command(args, [run]))
        rc = children.wait_all()
    else:  # sequential
        rc = 0
        for run in runs:
            if children.signum is not None:
                break
            children.start(train_command(args, [run]))
            rc = max(rc, children.procs[-1].wait())
    if children.signum is not None:
        print(f"train_job.py: stopped by signal {children.signum}; rerun the workflow to resume", flush=True)
        return rc or 128 + children.signum
    dirs = {f"{t}/{s}" if len(args.task) > 1 else str(s): run_dir(args, t, s) for t, s in runs}
    missing = [k for k, d in dirs.items() if not (Path(d) / "DONE").is_file()]
    if rc != 0 or missing:
        print(f"train_job.py: exit status {rc}; runs without DONE: {missing}", flush=True)
        return rc or 1
    marker = Path(args.marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps(
            {
                "algo": args.algo,
                "task": " ".join(args.task),
                "runs": dirs,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"=== done: {', '.join(dirs.values())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
