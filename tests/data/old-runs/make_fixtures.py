"""Writes the run directories beside this file with the code of commit 66c83f1 (the last before the training loop
became flowrl/train.py with session.py, members.py and evaluation.py), for tests/test_old_run_dirs.py:

    git archive 66c83f1 | tar -x -C /tmp/old66
    MUJOCO_GL=disable PYTHONPATH=/tmp/old66 python tests/data/old-runs/make_fixtures.py

Each case holds `args.json` (the flowrl-train arguments but --out), `interrupted/` (the run stopped by SIGTERM at
step 250 of 400, so checkpointed at 251, mid-episode) and `expected/` (eval.csv and train.csv of the same command
run without interruption by the same code).
"""
import json
import shutil
import signal
from pathlib import Path

import flowrl.train
from flowrl.cli import main

HERE = Path(__file__).resolve().parent
COMMON = ["--task", "dmc:cartpole-balance", "--steps", "400", "--no-progress", "start_steps=150", "batch_size=32",
          "eval_every=100", "eval_episodes=1", "log_every=50", "agent.hidden_dim=16", "torch_threads=1",
          "checkpoint_every=0"]
CASES = {"flowrl": ["--algo", "flowrl", "--seed", "3"], "sac": ["--algo", "sac", "--seed", "3"],
         "flowrl-packed": ["--algo", "flowrl", "--seeds", "1", "2"]}


def out(case: str, root: Path) -> str:
    return str(root / "seed{seed}") if "--seeds" in CASES[case] else str(root)


for case, args in CASES.items():
    root = HERE / case
    shutil.rmtree(root, ignore_errors=True)
    argv = [*args, *COMMON]
    begin_step = flowrl.train.Runner.begin_step
    fired = []

    def stop_at_250(runner):
        if runner.step == 250 and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGTERM)
        return begin_step(runner)

    flowrl.train.Runner.begin_step = stop_at_250
    assert main([*argv, "--out", out(case, root / "interrupted")]) == 128 + signal.SIGTERM
    flowrl.train.Runner.begin_step = begin_step
    assert main([*argv, "--out", out(case, root / "expected")]) == 0
    for p in sorted((root / "expected").rglob("*"), reverse=True):
        if p.is_dir():
            if not any(p.iterdir()):
                p.rmdir()
        elif p.name not in ("eval.csv", "train.csv"):
            p.unlink()
    for p in (root / "interrupted").rglob(".flowrl.lock"):
        p.unlink()
    (root / "args.json").write_text(json.dumps(argv) + "\n")
