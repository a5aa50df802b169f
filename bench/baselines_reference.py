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
  TD3, QVPO, FlowRL: no published DMC state-based curves for these two tasks were found (DrQ-v2 reports
       pixel-based results only; the FlowRL and QVPO papers do not include these tasks), so none is shown.
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
    ("sac", "dmc:cartpole-swingup"): {100_000: (835.0, 9.5), 200_000: (842.0, 3.4), 500_000: (834.6, 23.1),
                                      1_000_000: (838.7, 13.3)},
    ("sac", "dmc:cheetah-run"): {100_000: (310.1, 65.3), 200_000: (573.7, 0.2), 500_000: (594.5, 173.0),
                                 1_000_000: (730.1, 3.2)},
}
REFERENCE_SOURCE = "TD-MPC2 results/sac (3 seeds)"


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
                rc = train_cli(["--algo", algo, "--task", task, "--seed", str(seed), "--steps", str(args.steps),
                                "--out", str(run_dir), "--device", args.device, "--no-progress", *args.overrides])
                if rc != 0:
                    print(f"{algo} {task} seed {seed}: flowrl-train exited {rc}; see {run_dir}/train.log", file=sys.stderr)
                    return rc
                finals.append(final_return(run_dir))
            finals = [f for f in finals if f is not None]
            ref = REFERENCE.get((algo, task), {}).get(args.steps)
            rows.append((algo, task, finals, ref))

    print(f"\nfinal evaluation return after {args.steps} environment steps ({len(args.seeds)} seed(s))")
    print(f"{'algo':<8} {'task':<22} {'ours (mean +- std)':>20} {'reference':>16}  source")
    for algo, task, finals, ref in rows:
        mean = statistics.mean(finals) if finals else float("nan")
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        ref_text = f"{ref[0]:.1f} +- {ref[1]:.1f}" if ref else "-"
        source = REFERENCE_SOURCE if ref else ("none at this step count" if (algo, task) in REFERENCE else "none found")
        print(f"{algo:<8} {task:<22} {mean:>11.1f} +- {std:<6.1f} {ref_text:>16}  {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
