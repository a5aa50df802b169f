#!/usr/bin/env bash
# Create .venv-hb: the HumanoidBench software stack (mujoco 3.1.6, dm_control 1.0.20, gymnasium 0.29.1,
# numpy<2, jax) with humanoid_bench from its git repository at the pinned commit, and flowrl on top.
# See docs/environments.md. Needs network access to PyPI and GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-hb/bin/python ] || "$PY" -m venv .venv-hb
.venv-hb/bin/python -m pip install -q --upgrade pip
.venv-hb/bin/python -m pip install -q -r requirements/humanoidbench.txt
.venv-hb/bin/python -m pip install -q --no-deps -r requirements/humanoidbench-package.txt  # clones into .venv-hb/src
.venv-hb/bin/python -m pip install -q --no-deps -e .
MUJOCO_GL=${MUJOCO_GL:-egl} .venv-hb/bin/python -c "from flowrl.envs import make_env; e = make_env('hb:h1hand-walk-v0'); print('HumanoidBench ready: obs', e.spec.obs_dim, 'act', e.spec.act_dim)"
