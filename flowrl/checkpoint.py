"""Atomic checkpoint files: write to a temporary name, fsync, rename; fall back past corrupt ones."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("flowrl")
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as ckpt-<step>.pt atomically and keep only the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"ckpt-{step:010d}.pt"
    tmp = directory / f".ckpt-{step:010d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    for old in checkpoint_paths(directory)[keep:]:
        old.unlink()
    return final


def load_latest_checkpoint(directory: Path, map_location: str | torch.device = "cpu",
                           logger: logging.Logger = log) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads. Corrupt ones are reported and renamed *.corrupt (never deleted)."""
    for path in checkpoint_paths(directory):
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a flowrl checkpoint")
            return state, path
        except Exception as exc:  # noqa: BLE001 - any failure to read means this file is unusable
            bad = path.with_name(path.name + ".corrupt")
            logger.warning("checkpoint %s is unreadable (%s: %s); renamed to %s, trying the previous one",
                        path, type(exc).__name__, exc, bad.name)
            os.replace(path, bad)
    return None, None
