"""`python -m flowrl.analysis`: statistics, tables, figures and a summary from a study's run directories."""

from __future__ import annotations

import argparse
import sys
import time

from flowrl.analysis.normalise import NormalisationError
from flowrl.analysis.runs import AnalysisError
from flowrl.analysis.stats import DEFAULT_REPS

EPILOG = """examples:
  python -m flowrl.analysis --runs runs/ --out results/main
  python -m flowrl.analysis --runs runs/ --out results/main --expect study.yaml --reps 5000 \\
      --references ~/tdmpc2/results ~/simba/results --timing timing.csv
Every output is described in docs/results.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flowrl.analysis",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="DIR",
        help="directories searched recursively for run directories (those holding config.yaml)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty, or a previous output)")
    p.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"bootstrap replications (default {DEFAULT_REPS})")
    p.add_argument("--seed", type=int, default=0, help="seed of every bootstrap (default 0)")
    p.add_argument("--expect", metavar="FILE", help="YAML/JSON with algos, tasks, seeds, steps of the intended study")
    p.add_argument(
        "--references",
        nargs="+",
        default=[],
        metavar="PATH",
        help="TD-MPC2 / SimBa result CSVs or folders of them (reference curves only)",
    )
    p.add_argument("--poi-algo", default="flowrl", help="algorithm whose probability of improvement is plotted")
    p.add_argument("--normalisation", metavar="FILE", help="YAML overriding per-suite/per-task normalisation")
    p.add_argument("--timing", metavar="FILE", help="CSV algo,task,train_hours,inference_ms for Fig. 1")
    p.add_argument("--grid-step", type=int, help="step grid for curves (default: coarsest evaluation interval)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of intervals (default 0.95)")
    p.add_argument("--no-figures", action="store_true", help="tables and summary only")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from flowrl.analysis.pipeline import AnalysisConfig, run_analysis

    t0 = time.time()
    try:
        cfg = AnalysisConfig(
            runs=args.runs,
            out=args.out,
            reps=args.reps,
            seed=args.seed,
            expect=args.expect,
            references=args.references,
            poi_algo=args.poi_algo,
            normalisation=args.normalisation,
            timing=args.timing,
            grid_step=args.grid_step,
            confidence=args.confidence,
            figures=not args.no_figures,
        )
        result = run_analysis(cfg)
    except (AnalysisError, NormalisationError) as exc:
        print(f"flowrl.analysis: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"flowrl.analysis: wrote {len(result.files)} files to {result.out} in {time.time() - t0:.1f}s "
        f"(see {result.out / 'summary.md'})",
        file=sys.stderr,
    )
    return 0
