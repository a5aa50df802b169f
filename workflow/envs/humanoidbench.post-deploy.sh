#!/usr/bin/env bash
# Run by Snakemake inside the new conda env (--software-deployment-method conda), from the repository root:
# install HumanoidBench at the commit flowrl/envs/hb_tasks.py was derived from (see that file's notes).
set -euo pipefail
req=requirements/humanoidbench-package.txt
if [ ! -f "$req" ]; then
  echo "humanoidbench.post-deploy.sh: $req not found; run snakemake from the repository root" >&2
  exit 1
fi
pip install --no-deps --src "$CONDA_PREFIX/src" -r "$req"
