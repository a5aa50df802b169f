"""The provenance manifest of a run: code version, software, hardware, times."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

PACKAGES = [
    "torch",
    "numpy",
    "mujoco",
    "dm_control",
    "gymnasium",
    "humanoid_bench",
    "flowrl-bench",
    "pandas",
    "rliable",
]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_info(path: Path) -> dict[str, Any]:
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def manifest(device: torch.device) -> dict[str, Any]:
    slurm = {
        k: v
        for k, v in os.environ.items()
        if k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_PARTITION")
    }
    return {
        "git": git_info(Path(__file__).resolve().parent.parent),
        "versions": versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        **device_info(device),
        "command": sys.argv,
        "slurm": slurm,
        "start_time": now(),
        "end_time": None,
        "sessions": [],
    }
