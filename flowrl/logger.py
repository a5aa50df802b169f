"""CSV metric files that survive resumption, and optional TensorBoard."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return v


class CSVLog:
    """Append rows keyed by 'step'. New columns rewrite the file with the union header."""

    def __init__(self, path: Path, columns: list[str] | None = None):
        self.path = path
        self.columns: list[str] = list(columns or [])
        if path.exists() and path.stat().st_size > 0:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
            for c in header:
                if c not in self.columns:
                    self.columns.append(c)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in self.columns})
        tmp.replace(self.path)

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after `step` (work lost since the checkpoint being resumed). Returns rows dropped."""
        rows = self.read()
        kept = [r for r in rows if int(float(r["step"])) <= step]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def write(self, row: dict[str, Any]) -> None:
        row = {k: _fmt(v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = self.read()
            self.columns.extend(new)
            self._rewrite(old_rows)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            if fresh:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in self.columns})


class TensorBoard:
    def __init__(self, logdir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError("tensorboard=true needs the tensorboard package: pip install tensorboard") from exc
        self.writer = SummaryWriter(str(logdir))

    def write(self, prefix: str, row: dict[str, Any], step: int) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
