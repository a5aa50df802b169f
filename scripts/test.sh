#!/usr/bin/env bash
# Set up the environment, lint (ruff, snakefmt) and run the test suite (what CI runs via .ci/run).
# A real single-node SLURM is started for the SLURM tests when we are root and apt works; otherwise they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # workflow jobs run `python` from PATH: the venv's
if [ -f scripts/slurm-local.sh ] && [ "${FLOWRL_SKIP_SLURM:-0}" != 1 ]; then
  bash scripts/slurm-local.sh start || echo "test.sh: could not start a local SLURM; SLURM tests will skip"
fi
export MUJOCO_GL=${MUJOCO_GL:-disable}
set +e
# Lint first (seconds), then the tests whatever lint said, so one run reports both.
lint=0
.venv/bin/ruff check . || lint=1
.venv/bin/ruff format --check . || lint=1
.venv/bin/snakefmt --check Snakefile workflow/ || lint=1
[ "$lint" = 0 ] || echo "test.sh: lint failed (fix: .venv/bin/ruff check --fix . && .venv/bin/ruff format . && .venv/bin/snakefmt Snakefile workflow/)"
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: no tests were collected"; exit 1; fi
[ "$rc" = 0 ] || exit "$rc"
exit "$lint"
