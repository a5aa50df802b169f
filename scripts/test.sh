#!/usr/bin/env bash
# Set up the environment and run the test suite (what CI runs via .ci/run).
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
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: no tests were collected"; exit 1; fi
exit "$rc"
