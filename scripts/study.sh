#!/usr/bin/env bash
# Set up .venv from the pins (scripts/setup.sh) and run a study end to end with Snakemake.
# Without arguments: the default study (config/default.yaml) on all cores -> runs/default/, results/default/.
# Arguments go to snakemake, e.g.
#   bash scripts/study.sh --cores 2
#   bash scripts/study.sh --configfile config/paper.yaml -n          # what the paper study would run
#   bash scripts/study.sh figures                                    # tables and figures from the runs there are
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # workflow jobs run `python` from PATH: the venv's
export MUJOCO_GL=${MUJOCO_GL:-disable}
exec .venv/bin/snakemake "$@"
