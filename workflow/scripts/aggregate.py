"""Aggregate one study: write its expect file, then run the results pipeline on exactly the study's runs.

    python workflow/scripts/aggregate.py --study-json '{"expected": ..., "runs": ..., "analysis": ...}' \
        --runs runs/default --out results/default --work .snakemake/flowrl-aggregate/default

The expect file goes to <work>/expect.yaml. The analysis reads runs from a view, <work>/runs-view/<algo>/<task>/
seed<seed>/, holding symlinks to the study's run directories (only those the study lists, so stray runs under
runs/<study> are not mixed in).
A variant's run (e.g. `flowrl-steps5`, trained as algorithm `flowrl`) gets a copy of its config.yaml whose
`algo` is the variant name, so the analysis reports it under that name.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

VIEW_MARKER = ".flowrl-runs-view"


def build_view(runs: dict, view: Path) -> int:
    """Symlink every existing run of the study into `view`; returns the number of runs linked."""
    if view.exists():
        if not (view / VIEW_MARKER).is_file():
            raise SystemExit(f"aggregate.py: {view} exists but was not made by this script; move it away")
        shutil.rmtree(view)  # only symlinks and copied config files: the runs themselves are untouched
    view.mkdir(parents=True)
    (view / VIEW_MARKER).write_text("symlinks to the study's run directories; rebuilt by every aggregation\n")
    linked = 0
    for algo, tasks in runs.items():
        for seeds in tasks.values():
            for seed, run_dir in seeds.items():
                src = Path(run_dir).resolve()
                if not (src / "config.yaml").is_file():
                    continue
                dst = view / algo / Path(run_dir).parent.name / f"seed{seed}"
                dst.mkdir(parents=True)
                for item in src.iterdir():
                    if item.name in ("config.yaml", "checkpoints"):
                        continue
                    os.symlink(item, dst / item.name)
                cfg = yaml.safe_load((src / "config.yaml").read_text())
                if isinstance(cfg, dict) and cfg.get("algo") != algo:
                    cfg["algo"] = algo  # a variant: report it under its own name
                    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
                else:
                    os.symlink(src / "config.yaml", dst / "config.yaml")
                linked += 1
    return linked


def main(argv=None, run=subprocess.call) -> int:
    """`run` starts the analysis command and returns its exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study-json", required=True)
    p.add_argument("--runs", required=True, help="runs/<study>")
    p.add_argument("--out", required=True, help="results/<study>")
    p.add_argument("--work", required=True, help="scratch directory for the expect file and the run view")
    args = p.parse_args(argv)
    study = json.loads(args.study_json)
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    view = work / "runs-view"
    expect = work / "expect.yaml"
    expect.write_text(
        "# written by the workflow: the runs this study expects (flowrl.analysis --expect)\n"
        + yaml.safe_dump(study["expected"], sort_keys=False)
    )
    linked = build_view(study["runs"], view)
    print(f"aggregate.py: {linked} run(s) of {args.runs} linked into {view}", flush=True)
    if linked == 0:
        print(f"aggregate.py: no runs under {args.runs} yet; train some first (snakemake runs)", file=sys.stderr)
        return 1
    analysis = study["analysis"]
    reps = ["--reps", str(analysis["reps"])] if "reps" in analysis else []  # else the analysis's one default
    cmd = [
        sys.executable,
        "-m",
        "flowrl.analysis",
        "--runs",
        str(view),
        "--out",
        str(out),
        *reps,
        "--seed",
        str(analysis["seed"]),
        "--expect",
        str(expect),
        *analysis.get("extra_args", []),
    ]
    print("+ " + " ".join(cmd), flush=True)
    return run(cmd)


if __name__ == "__main__":
    sys.exit(main())
