"""Checkpoint files verified by content: write to a temporary name, fsync, rename; fall back past bad ones.

Every `ckpt-<step>.pt` has a sidecar `ckpt-<step>.pt.sha256` (the format of `sha256sum`, so
`sha256sum -c ckpt-*.sha256` checks them by hand) holding the sha256 of the checkpoint's bytes. The digest is
computed while the bytes are written and the sidecar is renamed into place *before* the checkpoint, so every
checkpoint written by this module is only ever visible together with its digest. A checkpoint is used only when

- its bytes match its digest (torch's zip reader does not verify its own CRCs: a flipped byte in the middle of
  tensor data loads without complaint and silently trains on garbage),
- it unpickles to a flowrl checkpoint, and
- every floating-point tensor and array in it is finite (no checkpoint is ever written from a diverged state, so
  a non-finite value means the file is not what was written).

Otherwise it is reported, renamed `*.corrupt` (never deleted) and the previous checkpoint is tried. Checkpoints
written before digests existed load without one (the log says so).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("flowrl")
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
DIGEST_SUFFIX = ".sha256"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (the message names the file system and the checkpoint that is kept)."""


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """A binary file that hashes what is written to it (so the digest costs no second read of a large file)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _write_failure(directory: Path, final: Path, exc: BaseException) -> CheckpointError:
    """A message naming the file system, its free space and the checkpoint that is still intact."""
    try:
        usage = shutil.disk_usage(directory)
        space = f"{usage.free / 2**20:.0f} MiB free of {usage.total / 2**20:.0f} MiB"
    except OSError:
        space = "free space unknown"
    kept = [p for p in checkpoint_paths(directory) if p != final]
    previous = f"the previous checkpoint {kept[0]} is intact" if kept else "there is no earlier checkpoint"
    return CheckpointError(
        f"could not write checkpoint {final.name} into {directory} (file system mounted at {mount_point(directory)}, "
        f"{space}): {type(exc).__name__}: {exc}. Nothing was replaced: {previous}. Free space (or fix the file "
        "system) and run the same command again to resume."
    )


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as ckpt-<step>.pt with its digest, atomically, and keep only the newest `keep` checkpoints.
    A failed write (e.g. a full disk) removes its partial files and raises CheckpointError; older checkpoints are
    untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"ckpt-{step:010d}.pt"
    tmp = directory / f".ckpt-{step:010d}.pt.tmp"
    tmp_digest = directory / f".ckpt-{step:010d}.pt{DIGEST_SUFFIX}.tmp"
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp_digest, "w") as f:
            f.write(f"{writer.sha.hexdigest()}  {final.name}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_digest, digest_path(final))  # the digest first: a visible checkpoint always has its digest
        os.replace(tmp, final)
        _fsync_dir(directory)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError ("file write failed")
        for p in (tmp, tmp_digest):
            p.unlink(missing_ok=True)
        raise _write_failure(directory, final, exc) from exc
    for old in checkpoint_paths(directory)[keep:]:
        remove_checkpoint(old)
    return final


def remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def non_finite(tree: Any, where: str = "") -> str | None:
    """The path of the first floating-point tensor or array in `tree` that holds NaN or inf, else None."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and tree.numel() and not bool(torch.isfinite(tree).all()):
            return where or "<tensor>"
    elif isinstance(tree, np.ndarray):
        if np.issubdtype(tree.dtype, np.floating) and tree.size and not np.isfinite(tree).all():
            return where or "<array>"
    elif isinstance(tree, dict):
        for k, v in tree.items():
            if (found := non_finite(v, f"{where}.{k}" if where else str(k))) is not None:
                return found
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            if (found := non_finite(v, f"{where}[{i}]")) is not None:
                return found
    return None


def verify_checkpoint(path: Path, logger: logging.Logger = log) -> None:
    """Raise ValueError when the file does not match its digest. A checkpoint without one (written before
    digests existed) passes, with a note in the log."""
    sidecar = digest_path(path)
    if not sidecar.exists():
        logger.info(
            "checkpoint %s has no digest (written before digests existed); checking its contents only", path.name
        )
        return
    try:
        expected = sidecar.read_text().split()[0]
    except (OSError, IndexError) as exc:
        raise ValueError(f"its digest file {sidecar.name} is unreadable") from exc
    actual = file_digest(path)
    if actual != expected:
        raise ValueError(
            f"its content does not match its digest (sha256 {actual[:12]}... != {expected[:12]}... "
            f"in {sidecar.name}): the file changed after it was written"
        )


def load_latest_checkpoint(
    directory: Path, map_location: str | torch.device = "cpu", logger: logging.Logger = log
) -> tuple[dict | None, Path | None]:
    """The newest checkpoint that is intact (see the module docstring). Bad ones are reported and renamed
    *.corrupt together with their digests (never deleted). Partial files of a write that was killed (.ckpt-*.tmp)
    and digests whose checkpoint was never renamed into place are removed: only the trainer holding the run's lock
    writes here, so nobody else is writing them."""
    if directory.is_dir():
        for p in directory.iterdir():
            if (p.name.startswith(".ckpt-") and p.name.endswith(".tmp")) or (
                _NAME.match(p.name.removesuffix(DIGEST_SUFFIX))
                and p.name.endswith(DIGEST_SUFFIX)
                and not p.with_name(p.name.removesuffix(DIGEST_SUFFIX)).exists()
            ):
                logger.info("removing %s (left by an interrupted checkpoint write)", p.name)
                p.unlink()
    for path in checkpoint_paths(directory):
        try:
            verify_checkpoint(path, logger)
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a flowrl checkpoint")
            if (bad_value := non_finite(state)) is not None:
                raise ValueError(f"{bad_value} holds NaN or inf")
            return state, path
        except Exception as exc:  # noqa: BLE001 - any failure to read means this file is unusable
            bad = path.with_name(path.name + ".corrupt")
            logger.warning(
                "checkpoint %s is unreadable or corrupt (%s: %s); renamed to %s, trying the previous one",
                path,
                type(exc).__name__,
                exc,
                bad.name,
            )
            os.replace(path, bad)
            if digest_path(path).exists():
                os.replace(digest_path(path), digest_path(bad))
    return None, None
