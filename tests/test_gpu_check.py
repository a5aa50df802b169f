"""scripts/gpu-check.sh without a GPU: it fails clearly and writes nothing; with a stand-in interpreter (which
claims a GPU and only echoes the commands) its sections, failure accounting and report run in a second."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

pytestmark = pytest.mark.subprocess


def run_script(tmp_path, *args, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, **env},
    )


def test_without_cuda_it_fails_clearly_and_writes_no_report(tmp_path):
    proc = run_script(tmp_path, "report.md", PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2, proc.stderr
    assert "gpu-check: FAILED: no CUDA device visible to PyTorch" in proc.stderr
    assert "run scripts/gpu-check.sh on a machine with an NVIDIA GPU" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no report that could be mistaken for a passed check

    proc = run_script(tmp_path, PYTHON=str(tmp_path / "no-such-python"))
    assert proc.returncode == 2 and "gpu-check: FAILED" in proc.stderr and list(tmp_path.iterdir()) == []


FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then case "$2" in *cuda.is_available*) echo "torch 0, CUDA 0, Stand-in GPU"; exit 0;; esac; fi
echo "ran: $*"
case "$*" in *pytest*) exit 3;; esac
case "$*" in *head-to-head-only*) echo "head to head: error: no result within 140 s";; esac
exit 0
"""


def test_sections_and_failures_are_reported(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    report = tmp_path / "report.md"
    proc = run_script(tmp_path, str(report), PYTHON=str(fake))
    assert proc.returncode == 1, proc.stderr
    text = report.read_text()
    assert "- torch 0, CUDA 0, Stand-in GPU" in text
    titles = re.findall(r"^## (.*)$", text, re.M)
    assert [t.split(",")[0].split(":")[0] for t in titles] == [
        "CUDA tests",
        "Bench at dog-run shapes",
        "Head to head against the compiled official-style update (torch.compile max-autotune)",
        "Training",
        "Training",
        "Summary",
    ], titles
    assert "ran: bench/bench_speed.py --device cuda --shapes 223x38 --seeds 8" in text
    assert "execution.cuda_graphs=true" in text and "execution.cuda_graphs=false" in text
    assert "**failed** (exit status 3)" in text and "**reported errors**" in text
    summary = text.split("## Summary")[1]
    assert "- CUDA tests (exit 3)" in summary and "(errors in its output)" in summary and "Bench at" not in summary
    assert "gpu-check: FAILED: CUDA tests (exit 3);" in proc.stderr

    # An existing report is never replaced.
    again = run_script(tmp_path, str(report), PYTHON=str(fake))
    assert again.returncode == 2 and "already exists" in again.stderr and report.read_text() == text
