"""Train the agents on dmc:cartpole-swingup and dmc:cheetah-run and print their final returns beside
published reference values at the same step count. Not a test: a sanity check of the baselines at
scale, meant for a GPU node (the defaults take hours per run on a CPU).

    python bench/baselines_reference.py --steps 100000 --seeds 0 1 2 --out runs/bench-ref
    python bench/baselines_reference.py --algos sac td3 --steps 20000 agent.hidden_dim=64   # a quick look

Runs go to <out>/<algo>/<task>/seed<seed> through the normal runner, so an interrupted bench resumes
and a finished run is reused (its DONE marker) rather than retrained.

Reference values (mean +- std over the 3 published seeds, episode return, environment steps):
  SAC: TD-MPC2's state-based SAC baseline curves, github nicklashansen/tdmpc2, results/sac/<task>.csv
       (Hansen et al., "TD-MPC2", ICLR 2024), read at 100k, 200k, 500k and 1M steps.
  TD3: no paper publishes state-based TD3 on these two tasks (checked: TD-MPC2's, SimbaV2's and MR.Q's result
       files, DrQ-v2 (pixels only)). The closest is a public reproduction, not a paper: github
       LQNew/Continuous_Control_Benchmark (commit 205ceb7), DMControlSuite-3M/SpinningUp/TD3/TD3-<task>/*/progress.txt,
       OpenAI SpinningUp TD3 (256x256, batch 100, lr 1e-3, no action repeat), AverageTestEpRet over its 8 seeds at
       TotalEnvInteracts 99999 / 199999 / 499999 / 999999. Its settings differ from sfujim/TD3's (batch 256, lr 3e-4),
       and two of its eight cheetah-run seeds never leave ~0: read it as a sanity range.
  QVPO, FlowRL: the FlowRL and QVPO papers do not include these tasks, so none is shown.
A reference is printed only where the budget equals one of the tabulated step counts; comparisons at
other budgets would need interpolation along a learning curve, which we do not pretend to have.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

REFERENCE = {  # (algo, task) -> {steps: (mean, std)}; source in the module docstring
    ("sac", "dmc:cartpole-swingup"): {
        100_000: (835.0, 9.5),
        200_000: (842.0, 3.4),
        500_000: (834.6, 23.1),
        1_000_000: (838.7, 13.3),
    },
    ("sac", "dmc:cheetah-run"): {
        100_000: (310.1, 65.3),
        200_000: (573.7, 0.2),
        500_000: (594.5, 173.0),
        1_000_000: (730.1, 3.2),
    },
    ("td3", "dmc:cartpole-swingup"): {
        100_000: (782.6, 99.4),
        200_000: (856.1, 18.6),
        500_000: (853.6, 15.9),
        1_000_000: (831.8, 50.1),
    },
    ("td3", "dmc:cheetah-run"): {
        100_000: (190.9, 157.8),
        200_000: (370.4, 266.7),
        500_000: (541.6, 352.3),
        1_000_000: (596.2, 387.6),
    },
}
REFERENCE_SOURCES = {
    "sac": "TD-MPC2 results/sac (3 seeds)",
    "td3": "LQNew/Continuous_Control_Benchmark SpinningUp TD3 (8 seeds; a reproduction, not a paper)",
}


def final_return(run_dir: Path) -> float | None:
    path = run_dir / "eval.csv"
    if not path.exists():
        return None
    rows = list(csv.DictReader(open(path)))
    return float(rows[-1]["return_mean"]) if rows else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Baselines vs published reference returns on two DMC tasks.")
    p.add_argument("--algos", nargs="+", default=["sac", "td3", "qvpo", "flowrl"])
    p.add_argument("--tasks", nargs="+", default=["dmc:cartpole-swingup", "dmc:cheetah-run"])
    p.add_argument("--steps", type=int, default=100_000, help="environment steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="runs/bench-baselines-reference")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="passed to every run, e.g. agent.hidden_dim=64")
    args = p.parse_args(argv)

    from flowrl.cli import main as train_cli

    rows = []
    for algo in args.algos:
        for task in args.tasks:
            finals = []
            for seed in args.seeds:
                run_dir = Path(args.out) / algo / task.replace(":", "_") / f"seed{seed}"
                rc = train_cli(
                    [
                        "--algo",
                        algo,
                        "--task",
                        task,
                        "--seed",
                        str(seed),
                        "--steps",
                        str(args.steps),
                        "--out",
                        str(run_dir),
                        "--device",
                        args.device,
                        "--no-progress",
                        *args.overrides,
                    ]
                )
                if rc != 0:
                    print(
                        f"{algo} {task} seed {seed}: flowrl-train exited {rc}; see {run_dir}/train.log", file=sys.stderr
                    )
                    return rc
                finals.append(final_return(run_dir))
            finals = [f for f in finals if f is not None]
            ref = REFERENCE.get((algo, task), {}).get(args.steps)
            rows.append((algo, task, finals, ref))

    print(
        f"\nfinal evaluation return after {args.steps} environment steps ({len(args.seeds)} seed(s))"
        + (f", overrides: {' '.join(args.overrides)}" if args.overrides else ", default (paper) settings")
    )
    print(f"{'algo':<8} {'task':<22} {'ours (mean +- std)':>20} {'reference':>16}  source")
    for algo, task, finals, ref in rows:
        mean = statistics.mean(finals) if finals else float("nan")
        spread = (
            f"+- {statistics.stdev(finals):<6.1f}" if len(finals) > 1 else f"{'(1 seed)':<9}"
        )  # no std from one seed
        ref_text = f"{ref[0]:.1f} +- {ref[1]:.1f}" if ref else "-"
        source = (
            REFERENCE_SOURCES[algo]
            if ref
            else ("none at this step count" if (algo, task) in REFERENCE else "none found")
        )
        print(f"{algo:<8} {task:<22} {mean:>11.1f} {spread} {ref_text:>16}  {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
