"""A run directory in one process: opened new, resumed or found finished; locked while it trains; then closed.

A `RunSession` owns what the directory holds apart from training itself (docs/run-format.md): config.yaml, the
manifest and this session's entry in it, train.log, the lock, the checkpoint it resumes from, DONE and
final_agent.pt. Nothing a user produced is deleted or overwritten: a finished run given --force is moved aside, and
a directory that holds no run is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from flowrl.checkpoint import checkpoint_paths, load_latest_checkpoint, remove_checkpoint
from flowrl.config import RunConfig, config_diff, config_to_dict, resume_config, with_current_defaults
from flowrl.cpu_kernels import cpu_vendor, onednn_linear_available
from flowrl.provenance import manifest, now

log = logging.getLogger("flowrl")
LOCK_NAME = ".flowrl.lock"  # held (flock) by the process training into a run directory
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class RunError(Exception):
    """A problem with the run's inputs or directory, reported to the user without a traceback."""


class DivergenceError(RunError):
    """Training produced NaN or inf (a loss, a parameter or an action); the run stops resumable."""


@dataclass
class RunResult:
    status: str  # "finished", "already_finished", "interrupted"
    out: Path
    step: int
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.status == "interrupted" and self.signal else 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def prepare_run_dir(out: Path, cfg: RunConfig, force: bool) -> str:
    """Check the output directory; returns 'new', 'resume' or 'done'. Never deletes anything."""
    if out.exists() and not out.is_dir():
        raise RunError(f"output path {out} exists and is not a directory; choose another --out")
    if (out / "DONE").exists() and force:
        backup = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(backup)
        log.warning("--force: moved the finished run to %s and starting over", backup)
    if (out / "DONE").exists():
        return "done"
    saved_path = out / "config.yaml"
    if saved_path.exists():
        saved = yaml.safe_load(saved_path.read_text())
        diff = config_diff(with_current_defaults(saved), config_to_dict(resume_config(saved, cfg)))
        if diff:
            raise RunError(
                f"{out} holds a run with a different configuration; refusing to resume it with this one:\n"
                + "\n".join(diff)
                + "\nUse the saved settings to resume, or a new --out for a new run."
            )
        return "resume"
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunError(
            f"{out} is not empty and holds no run (no config.yaml); refusing to write into it. "
            "Choose a new or empty --out."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(
            f"cannot write to output directory {out}: {exc.strerror or exc}. Choose a writable --out."
        ) from exc
    return "new"


def write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON atomically (a temporary file renamed over `path`)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def flock_exclusive(handle, seconds: float = 2.0) -> None:
    """An exclusive flock, retried for a moment: readers such as flowrl-status take a brief shared lock to see
    whether a run is live, and a trainer starting in that instant must not take it for another trainer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RunLock:
    """An exclusive flock on <run>/.flowrl.lock while a process trains into the run, so that a second trainer is
    refused instead of interleaving its logs and checkpoints with the first one's. The kernel drops the lock with
    its process (SIGKILL too), so a stale file never blocks; the file stays and names its last holder."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.handle = open(self.path, "a+")
        try:
            flock_exclusive(self.handle)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "a process that has not said who it is"
            self.handle.close()
            raise RunError(
                f"another trainer is training into {out} (lock {self.path}: {holder}); refusing to start a "
                "second one. Wait for it to finish, or stop it (SIGTERM checkpoints it) and run this "
                "command again to resume."
            ) from None
        except OSError as exc:  # a file system without flock (e.g. some network mounts)
            log.warning("cannot lock %s (%s); not guarding against a second trainer on this run", self.path, exc)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "start_time": now(),
                    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                }
            )
            + "\n"
        )
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing the descriptor releases the flock


class StopFlag:
    """Records the first handled signal; the training loop checks it between steps."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        for s in HANDLED_SIGNALS:
            try:
                self.previous[s] = signal.signal(s, self.handle)
            except ValueError:  # not in the main thread: the caller handles interruption
                pass
        return self

    def handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            log.warning("received signal %d: checkpointing and stopping", signum)

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)


class Clock:
    """A run's training time in seconds over all its sessions: `before` (the sessions before this one, from the
    checkpoint) plus the time since this session's training started (`start`)."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.start()

    def start(self) -> None:
        self.started = time.time()

    def seconds(self) -> float:
        return self.before + time.time() - self.started


def run_logger(out: Path) -> logging.Logger:
    """A logger for one run: its own train.log, and the console through the 'flowrl' logger."""
    logger = logging.getLogger(f"flowrl.run.{out.resolve()}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


class RunSession:
    """One run directory in this process: opened new or resumed (or found finished), then closed.

    After opening: `cfg` is the config the run resumes with, `checkpoint` the newest intact checkpoint (None: the
    run starts at step 0), `step` its step, `record` this session's entry in the manifest, `clock` the run's
    training time."""

    def __init__(self, cfg: RunConfig, out: str | Path, force: bool = False):
        from flowrl.envs import validate_task

        self.cfg, self.out = cfg, Path(out)
        cfg.validate()
        validate_task(cfg.task)
        state = prepare_run_dir(self.out, cfg, force)
        self.lock = None
        if state != "done":
            self.lock = RunLock(self.out)
            try:  # again under the lock: another trainer may have finished (or begun) it meanwhile
                state = prepare_run_dir(self.out, cfg, force=False)
            except BaseException:
                self.lock.release()
                raise
            if state == "done":
                self.lock.release()
        self.finished_before = state == "done"
        if self.finished_before:
            log.warning("%s is already finished (DONE exists); not re-running. Use --force to retrain.", self.out)
            return
        self.log = run_logger(self.out)
        try:
            self.open(state)
        except BaseException:
            self.release()
            raise

    def open(self, state: str) -> None:
        out = self.out
        if state == "resume":  # settings added since the run was written keep the behaviour it was trained with
            self.cfg = resume_config(yaml.safe_load((out / "config.yaml").read_text()), self.cfg)
        self.manifest_path = out / "manifest.json"
        self.info = (
            json.loads(self.manifest_path.read_text())
            if self.manifest_path.exists()
            else manifest(resolve_device(self.cfg.device))
        )
        if state == "new":
            (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        self.checkpoint = None
        if state == "resume":
            self.checkpoint, path = load_latest_checkpoint(out / "checkpoints", map_location="cpu", logger=self.log)
            if self.checkpoint is not None:
                self.log.info("resumed from %s at step %d", path.name, self.checkpoint["step"])
            else:  # its log rows are dropped when it starts (Member.load_state_dict)
                self.log.info("no usable checkpoint in %s: starting from step 0", out)
        self.step = self.checkpoint["step"] if self.checkpoint is not None else 0
        self.record = {
            "start_time": now(),
            "resumed_from_step": self.step if self.checkpoint is not None else None,
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "onednn_linear": onednn_linear_available(),  # what FlowRL's cpu_matmul=auto may use here
            "cpu_vendor": cpu_vendor(),  # which kernel cpu_matmul=auto chose, and why: this record's execution
            "execution_settings": config_to_dict(self.cfg)["execution"],
        }  # this session's: may change
        self.info.setdefault("sessions", []).append(self.record)
        write_json(self.manifest_path, self.info)
        self.clock = Clock()

    def restart_clock(self) -> None:
        """Count this session's wall time from now (it waited while other runs of its process trained)."""
        self.record["start_time"] = now()
        self.clock.start()

    def already_finished(self) -> RunResult:
        done = json.loads((self.out / "DONE").read_text() or "{}")
        return RunResult("already_finished", self.out, int(done.get("steps", self.cfg.steps)))

    def interrupted(self, step: int, signum: int, execution: dict | None = None) -> RunResult:
        """Record that a signal stopped this session at `step` (its checkpoint, if it trained, is written)."""
        self.record.update(end_time=now(), end_step=step, stopped_by_signal=signum)
        if execution:
            self.record["execution"] = execution
        write_json(self.manifest_path, self.info)
        return RunResult("interrupted", self.out, step, signum)

    def finished(
        self, step: int, agent_state: dict, final_eval: dict | None, execution: dict | None = None
    ) -> RunResult:
        """The run is complete: keep the final agent and write DONE; the resume checkpoints (with the replay) are
        no longer needed."""
        out = self.out
        self.record.update(end_time=now(), end_step=step)
        if execution:
            self.record["execution"] = execution
        self.info["end_time"] = now()
        write_json(self.manifest_path, self.info)
        torch.save(agent_state, out / "final_agent.pt")
        for p in checkpoint_paths(out / "checkpoints"):
            remove_checkpoint(p)
        write_json(
            out / "DONE",
            {
                "steps": step,
                "end_time": self.info["end_time"],
                "final_return": (final_eval or {}).get("return_mean"),
                "wall_time": self.clock.seconds(),
            },
        )
        return RunResult("finished", out, step)

    def fail(self, exc: BaseException, step: int) -> None:
        """Record an error that ended this session at `step` (in train.log and the manifest); the run stays
        resumable."""
        self.log.error("%s", exc)
        if getattr(self, "record", None) is not None:
            self.record.update(end_time=now(), end_step=step, error=f"{type(exc).__name__}: {exc}")
            try:
                write_json(self.manifest_path, self.info)
            except OSError:  # e.g. the full disk that caused the error
                pass

    def release(self) -> None:
        """Close the run's log handlers and its lock (also after an error)."""
        for h in list(self.log.handlers):
            self.log.removeHandler(h)
            h.close()
        if self.lock is not None:
            self.lock.release()
