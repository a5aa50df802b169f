#!/usr/bin/env bash
# Create .venv from the pinned versions if it is missing or the pins changed; install flowrl into it.
# Usage: bash scripts/setup.sh   (then: . .venv/bin/activate)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements/lock-cpu.txt
STAMP=.venv/.lock-sha256
want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
"$PY" - <<'PYEOF'
import sys
if sys.version_info[:2] < (3, 10):
    sys.exit(f"flowrl needs Python >= 3.10 (3.11 tested); found {sys.version.split()[0]}. Set PYTHON=/path/to/python3.11")
PYEOF
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in the lock: on a CPU machine pip takes the CPU wheel.
.venv/bin/python -m pip install -q -r "$LOCK"
.venv/bin/python -m pip install -q --no-deps -e .
echo "$want" > "$STAMP"
echo "setup: .venv ready ($(.venv/bin/python --version))"
