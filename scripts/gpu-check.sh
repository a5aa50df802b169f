#!/usr/bin/env bash
# The GPU checks in one go (under 8 minutes on one GPU), written to one report file:
#   1. the CUDA tests (CUDA-graph update against eager, its self-check on a real capture, checkpoints, seeds);
#   2. the speed bench at dog-run shapes (223x38, no simulator needed): every agent's update rate, FlowRL against
#      the eager official-style update head to head, 1 seed and 8 seeds batched, the matmul floor;
#   3. FlowRL head to head against the official-style update compiled as its code does (torch.compile max-autotune;
#      it compiles once, in this section's own time limit);
#   4. a short real training run with CUDA graphs on and one with them off (dmc:cartpole-swingup, paper size), with
#      each run's manifest record of how its updates ran; skipped when dm_control cannot be imported.
# Usage, from anywhere:   scripts/gpu-check.sh [REPORT.md]
#   default report: gpu-check-report-<date>-<time>.md in the current directory; an existing file is never replaced.
#   PYTHON (default python3) is the interpreter; each section's time limit in seconds can be changed with
#   GPU_CHECK_TESTS_S (90), GPU_CHECK_BENCH_S (120), GPU_CHECK_COMPILED_S (150), GPU_CHECK_TRAIN_S (45, per run).
# Exit status: 0 when every section passed, 1 when one failed or ran out of time (the report says which),
# 2 when there is nothing to check (no CUDA device, bad arguments).
set -u -o pipefail

PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPORT=${1:-gpu-check-report-$(date +%Y%m%d-%H%M%S).md}
if [ $# -gt 1 ]; then
    echo "gpu-check: one argument at most (the report file), got $#: $*" >&2
    exit 2
fi
if [ -e "$REPORT" ]; then
    echo "gpu-check: $REPORT already exists; not replacing it (give another path, or move it away)" >&2
    exit 2
fi

# No CUDA: stop before writing anything (a report of skipped checks would read like a passed one).
if ! cuda_line=$("$PY" -c '
import os, sys
try:
    import torch
except Exception as exc:
    sys.exit(f"PyTorch cannot be imported with {sys.executable} ({exc}); set PYTHON to an interpreter that has it")
if not torch.cuda.is_available():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    sys.exit(f"no CUDA device visible to PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}, "
             f"CUDA_VISIBLE_DEVICES={visible!r}): run scripts/gpu-check.sh on a machine with an NVIDIA GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
' 2>&1); then
    echo "gpu-check: FAILED: $cuda_line" >&2
    exit 2
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=${MUJOCO_GL:-disable}  # nothing is rendered
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: > "$REPORT" || { echo "gpu-check: cannot write $REPORT" >&2; exit 2; }
failed=()
t_start=$(date +%s)

note() { printf '%s\n' "$@" >> "$REPORT"; }

# section TITLE LIMIT_S CMD...: run CMD (in the repository root) under a time limit, its output into the report.
section() {
    local title=$1 limit=$2 rc t0
    shift 2
    echo "gpu-check: $title (limit ${limit} s)" >&2
    note "" "## $title" "" '```' "\$ $*"
    t0=$(date +%s)
    (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") > "$WORK/out" 2>&1
    rc=$?
    cat "$WORK/out" >> "$REPORT"
    note '```' ""
    if [ $rc -eq 0 ] && grep -q ' error: ' "$WORK/out"; then  # the bench prints a figure it could not get, goes on
        note "**reported errors** (lines with 'error:' above) after $(( $(date +%s) - t0 )) s"
        failed+=("$title (errors in its output)")
    elif [ $rc -eq 0 ]; then
        note "passed in $(( $(date +%s) - t0 )) s"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        note "**ran out of time** (${limit} s): the output above is what it printed until then"
        failed+=("$title (out of time)")
    else
        note "**failed** (exit status $rc) after $(( $(date +%s) - t0 )) s"
        failed+=("$title (exit $rc)")
    fi
    return 0
}

note "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)" "" \
     "- $cuda_line" \
     "- git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')" \
     "- host: $(hostname), $(nproc) CPUs"
note "" '```'
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$REPORT" 2>&1
else
    note "(no nvidia-smi)"
fi
note '```'

section "CUDA tests" "${GPU_CHECK_TESTS_S:-90}" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_graph_check.py

section "Bench at dog-run shapes: every agent, head to head against the eager official-style update, 1 and 8 seeds" \
    "${GPU_CHECK_BENCH_S:-120}" \
    "$PY" bench/bench_speed.py --device cuda --shapes 223x38 --seeds 8 --algos flowrl sac td3 \
    --official-compile off --rounds 8

section "Head to head against the compiled official-style update (torch.compile max-autotune), dog-run shapes" \
    "${GPU_CHECK_COMPILED_S:-150}" \
    "$PY" bench/bench_speed.py --device cuda --shapes 223x38 --algos flowrl --head-to-head-only --rounds 8 \
    --official-timeout "$(( ${GPU_CHECK_COMPILED_S:-150} - 10 ))"

# execution_record RUN_DIR GRAPHS: the manifest's record of how the run's updates ran and its last training row;
# fails when a run asked for CUDA graphs did not end with them on (their check against eager dropped them).
execution_record() {
    "$PY" - "$1" "$2" <<'EOF'
import csv, json, sys
from pathlib import Path
run, graphs = Path(sys.argv[1]), sys.argv[2] == "true"
execution = json.loads((run / "manifest.json").read_text())["sessions"][-1].get("execution") or {}
print("manifest execution record:", json.dumps(execution, indent=2))
last = list(csv.DictReader(open(run / "train.csv")))[-1]
print(f"last train.csv row: step {last['step']}, updates {last['updates']}, env_steps_per_s {last['env_steps_per_s']}")
status = execution.get("cuda_graphs", "not recorded")
if graphs and status != "on":
    sys.exit(f"asked for CUDA graphs, ran with cuda_graphs: {status}")
EOF
}

if (cd "$ROOT" && "$PY" -c "from flowrl.envs import make_env; make_env('dmc:cartpole-swingup').close()") >/dev/null 2>&1; then
    for graphs in true false; do
        run="$WORK/cartpole-graphs-$graphs"
        section "Training, dmc:cartpole-swingup, paper size, 2000 steps (1000 updates), execution.cuda_graphs=$graphs" \
            "${GPU_CHECK_TRAIN_S:-45}" \
            "$PY" -m flowrl --algo flowrl --task dmc:cartpole-swingup --seed 0 --steps 2000 --device cuda \
            --no-progress --out "$run" start_steps=1000 eval_every=2000 eval_at_start=false eval_episodes=1 \
            log_every=500 checkpoint_every=0 "execution.cuda_graphs=$graphs"
        if [ -f "$run/manifest.json" ] && [ -f "$run/train.csv" ]; then
            note "How this run's updates ran (manifest.json, last session) and its speed:" "" '```'
            execution_record "$run" "$graphs" >> "$REPORT" 2>&1 || failed+=("execution record, execution.cuda_graphs=$graphs")
            note '```'
        fi
    done
else
    note "" "## Training" "" "skipped: dm_control cannot be imported here (the bench sections above use --shapes instead)"
fi

note "" "## Summary" "" "total $(( $(date +%s) - t_start )) s"
if [ ${#failed[@]} -eq 0 ]; then
    note "every section passed"
    echo "gpu-check: every section passed; report: $REPORT" >&2
    exit 0
fi
note "failed:" "${failed[@]/#/- }"
echo "gpu-check: FAILED: $(IFS=';'; echo "${failed[*]}"); report: $REPORT" >&2
exit 1
