"""An environment that lives in its own process, so several can step in parallel."""

from __future__ import annotations

import atexit
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (registers its exit handler before ours, so ours runs first)
import os
import signal
import weakref
from typing import Any

import numpy as np

from flowrl.envs.base import Env, Step


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one, e.g. a SLURM allocation)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _worker(conn, task: str) -> None:
    # A terminal's Ctrl-C or SLURM's SIGTERM/SIGUSR1 reaches the whole process group: the trainer handles it
    # (checkpoint, then it closes its environments); a worker dying first would break the trainer's next step.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    from flowrl.envs import make_env

    env = make_env(task)
    conn.send((env.spec, env.max_episode_steps, env.has_success))
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(env.reset(arg))
            elif cmd == "step":
                conn.send(env.step(arg))
            elif cmd == "close":
                break
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        env.close()
        conn.close()


_LIVE: weakref.WeakSet[SubprocEnv] = weakref.WeakSet()


@atexit.register
def _kill_live_workers() -> None:
    """Workers ignore SIGTERM, which is how multiprocessing ends daemon processes at exit (it would then wait
    forever): kill any still running when the interpreter exits (atexit runs this before multiprocessing's)."""
    for env in list(_LIVE):
        env.kill()


class SubprocEnv(Env):
    """Proxy for `make_env(task)` running in a child process (started with 'spawn', so it is fork-safe).

    `step_async` + `step_wait` let a caller step several of these at once; `step` does both.
    """

    def __init__(self, task: str, wait: bool = True):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, task), daemon=True)
        self._proc.start()
        _LIVE.add(self)
        child.close()
        self.name = task
        self._waiting = False
        if wait:
            self.wait_ready()

    def wait_ready(self) -> SubprocEnv:
        """Wait for the child to build its environment (`SubprocEnv(task, wait=False)` returns before that)."""
        try:
            self.spec, self.max_episode_steps, self.has_success = self._conn.recv()
        except EOFError:
            self._proc.join(timeout=5)
            raise RuntimeError(
                f"the environment process for {self.name!r} died while starting "
                f"(exit code {self._proc.exitcode}); its error is printed above"
            ) from None
        return self

    def reset(self, seed: int) -> np.ndarray:
        self._conn.send(("reset", seed))
        return self._conn.recv()

    def step_async(self, action: np.ndarray) -> None:
        self._conn.send(("step", action))
        self._waiting = True

    def step_wait(self) -> Step:
        self._waiting = False
        return self._conn.recv()

    def step(self, action: np.ndarray) -> Step:
        self.step_async(action)
        return self.step_wait()

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                if self._waiting:
                    self._conn.recv()
                self._conn.send(("close", None))
            except (BrokenPipeError, EOFError, OSError):
                pass
            self._proc.join(timeout=5)
            self.kill()
        self._conn.close()

    def kill(self) -> None:
        """End the worker at once (it ignores SIGTERM: see _worker)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)


def subproc_envs(task: str, n: int) -> list[SubprocEnv]:
    """n environments of `task`, each in its own process, started together (each start imports the simulator)."""
    envs = [SubprocEnv(task, wait=False) for _ in range(n)]
    try:
        return [env.wait_ready() for env in envs]
    except BaseException:
        for env in envs:
            env.kill()
            env._conn.close()
        raise


def step_all(envs: list[Any], actions: list[np.ndarray]) -> list[Step]:
    """Step every env with its action, in parallel where the envs are SubprocEnvs."""
    for env, a in zip(envs, actions):
        if isinstance(env, SubprocEnv):
            env.step_async(a)
    return [env.step_wait() if isinstance(env, SubprocEnv) else env.step(a) for env, a in zip(envs, actions)]
