"""Train the official FlowRL code (github bytedance/FlowRL) on a DMC task on the CPU and record its evaluations.

    python bench/official_run.py --official PATH --task dmc:cartpole-swingup --seed 0 --steps 40000 \
        --hidden 256 --eval-every 5000 --eval-episodes 5 --out RUN_DIR

PATH is your own clone of the official repository; nothing of it is copied here. This runs the official
`main.py`'s own `train_loop` (its environment wrapper, replay buffer, agent, evaluation and step accounting),
imported from PATH and adapted from the outside, without editing any file:

  - `wandb` (which main.py logs into when imported) is replaced by a recorder: every
    `wandb.log({'test/reward': r, 'test/avg_success': s}, step=n)` the official evaluation makes becomes a
    row of RUN_DIR/eval.csv, in this repository's eval.csv columns, so both sides are read by the same code;
  - `torch.utils.tensorboard.SummaryWriter` (constructed, never written to) and `torchvision.io` (imported by
    the video recorder, which the loop never enables) are stand-ins when the packages are absent, and
    `gym` is gymnasium's spaces and Env when the old `gym` package is missing (the wrapper builds Boxes; the
    gym id registration in envs/__init__.py becomes a no-op, main.py constructs its environment directly);
  - the agent is the CPU adaptation of `bench/official_equivalence.py` (torch.compile off, Policy_flow's
    hard-coded CUDA device replaced by the CPU, `cuda=False`, so its bf16 autocast is off: float32; main.py's
    `torch.set_float32_matmul_precision("high")` asks for TF32, which CPUs do not have: their products stay IEEE).

Settings: the official defaults (utilis/default_config.py and main.py's arguments), then `--hidden`,
`--eval-every`, `--eval-episodes`, `--seed`, and `num_steps = steps - 1`: the official loop stops after the
episode in which its step counter passes num_steps, so this ends at exactly `--steps` with the evaluation
there. The official loop evaluates every eval_numsteps steps, not at step 0, and leaves the DMC task's RNG
unseeded (docs/paper-vs-code.md); both are kept as they are. It also evaluates on its training environment,
so --eval-every must be a multiple of the 1000-step DMC episode (else the official loop fails; refused here).
The run's working directory is RUN_DIR: the official `./results/...` tree (its config.log and
training_log.txt) goes there too. Checkpoint saving is off.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OFFICIAL_RUN_FILES = (
    "main.py",
    "model/algo.py",
    "model/model.py",
    "model/utils.py",
    "utilis/default_config.py",
    "utilis/config.py",
    "utilis/Replaybuffer.py",
    "envs/dm_control.py",
)
DMC_EPISODE = 1000  # steps in every DMC episode (time limit 1000 at action repeat 1)
EVAL_COLUMNS = ["step", "return_mean", "return_std", "success_mean", "episodes", "wall_time"]


class EvalRecorder:
    """The stand-in for the `wandb` module: `log` calls carrying `test/reward` become eval.csv rows."""

    def __init__(self, path: Path, episodes: int):
        self.path = path
        self.episodes = episodes
        self.start = time.monotonic()
        self.rows: list[dict] = []  # eval.csv is created at the first evaluation: a failed start leaves none

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("wandb")
        mod.login = lambda *a, **k: True
        mod.init = lambda *a, **k: None
        mod.finish = lambda *a, **k: None
        mod.log = self.log
        return mod

    def log(self, data=None, step=None, **_kwargs):
        data = dict(data or {})
        if "test/reward" not in data:
            return
        row = {
            "step": int(step),
            "return_mean": float(data["test/reward"]),
            "return_std": "",  # the official evaluation logs only the mean
            "success_mean": "",  # DMC tasks have no success signal (the official logs 0.0)
            "episodes": self.episodes,
            "wall_time": round(time.monotonic() - self.start, 1),
        }
        self.rows.append(row)
        with self.path.open("a" if len(self.rows) > 1 else "x", newline="") as f:
            writer = csv.DictWriter(f, EVAL_COLUMNS)
            if len(self.rows) == 1:
                writer.writeheader()
            writer.writerow(row)
        print(f"[official] step {row['step']}: return {row['return_mean']:.1f} ({row['wall_time']:.0f} s)", flush=True)


def _stand_ins(recorder: EvalRecorder) -> None:
    """Modules main.py imports that this run does not use, replaced only where they are not installed
    (wandb always: it would ask for a login)."""
    sys.modules["wandb"] = recorder.module()
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        tb = types.ModuleType("torch.utils.tensorboard")
        tb.SummaryWriter = lambda *a, **k: types.SimpleNamespace(add_scalar=lambda *a, **k: None, close=lambda: None)
        sys.modules["torch.utils.tensorboard"] = tb
    if importlib.util.find_spec("torchvision") is None:
        tv = types.ModuleType("torchvision")
        tv_io = types.ModuleType("torchvision.io")
        tv_io.write_video = lambda *a, **k: None
        tv.io = tv_io
        sys.modules["torchvision"], sys.modules["torchvision.io"] = tv, tv_io
    if importlib.util.find_spec("gym") is None:
        import gymnasium

        gym = types.ModuleType("gym")
        gym.__path__ = []  # a package, for `from gym.envs import register`
        gym_envs = types.ModuleType("gym.envs")
        gym_envs.register = lambda *a, **k: None  # envs/__init__.py registers ids; main.py builds the env directly
        gym.envs, gym.spaces, gym.Env = gym_envs, gymnasium.spaces, gymnasium.Env
        sys.modules.update({"gym": gym, "gym.envs": gym_envs, "gym.spaces": gymnasium.spaces})


def load_official_main(path: Path, recorder: EvalRecorder) -> types.ModuleType:
    """Import the official main.py (with its model/, utilis/ and envs/ packages) from `path`, on the CPU."""
    import torch

    from bench.official_equivalence import NotOfficialCheckout, _cpu_policy_factory, _no_compile

    missing = [f for f in OFFICIAL_RUN_FILES if not (path / f).is_file()]
    if missing:
        raise NotOfficialCheckout(
            f"--official {path} is not a checkout of github bytedance/FlowRL: it lacks {', '.join(missing)} "
            "(git clone https://github.com/bytedance/FlowRL)"
        )
    _stand_ins(recorder)
    for name in [m for m in sys.modules if m.split(".")[0] in ("model", "utilis", "envs")]:
        del sys.modules[name]  # another package of the same name must not shadow the official one
    sys.path.insert(0, str(path))
    compile_ = torch.compile
    torch.compile = _no_compile
    try:
        spec = importlib.util.spec_from_file_location("_flowrl_official_main", path / "main.py")
        main = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(main)  # its `if __name__ == "__main__"` block does not run
    finally:
        torch.compile = compile_
    algo = sys.modules["model.algo"]
    algo.compile_model = False
    algo.Policy_flow = _cpu_policy_factory(sys.modules["model.model"].Policy_flow)
    return main


def files_digest(path: Path) -> str:
    """sha256 over the official files this runner depends on: names the code run when the checkout is no git
    repository (official_commit is then None)."""
    h = hashlib.sha256()
    for name in (*OFFICIAL_RUN_FILES,):
        h.update(name.encode() + b"\0" + (path / name).read_bytes())
    return h.hexdigest()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, type=Path, help="your clone of github bytedance/FlowRL")
    p.add_argument("--task", default="dmc:cartpole-swingup", help="dmc:<domain>-<task> (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--start-steps", type=int, default=None, help="default: the official 5000 (for quick checks)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out", required=True, type=Path, help="run directory (must not hold an eval.csv yet)")
    args = p.parse_args(argv)
    for name in ("steps", "eval_every", "eval_episodes", "hidden", "torch_threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive integer")
    domain, _, task = args.task.removeprefix("dmc:").partition("-")
    if not args.task.startswith("dmc:") or not domain or not task:
        p.error(f"--task {args.task!r}: the official main.py trains DMC tasks, given as dmc:<domain>-<task>")
    if args.eval_every % DMC_EPISODE:
        p.error(
            f"--eval-every {args.eval_every} must be a multiple of {DMC_EPISODE}: the official loop evaluates on its "
            "training environment, so an evaluation that falls inside a training episode ends it and the next "
            "training step fails (reward None)"
        )
    if args.steps % args.eval_every:
        p.error(f"--steps {args.steps} must be a multiple of --eval-every {args.eval_every} (the last evaluation)")
    for name in ("eval.csv", "DONE"):
        if (args.out / name).exists():
            p.error(f"{args.out}/{name} exists; this would overwrite a finished or running run. Pick another --out")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    import torch

    torch.set_num_threads(args.torch_threads)
    official = args.official.expanduser().resolve()
    from bench.official_equivalence import NotOfficialCheckout, official_commit

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    recorder = EvalRecorder(out / "eval.csv", args.eval_episodes)
    try:
        main_mod = load_official_main(official, recorder)
    except NotOfficialCheckout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    domain, task = args.task[len("dmc:") :].split("-", 1)
    config = main_mod.default_config.copy()
    # main.py's add_arg defaults (its __main__ block adds them to the config before train_loop)
    config.update(domain=domain, task=task, device=0, algo="flowac", tag="fidelity", seed=args.seed)
    config.update(epsilon=0.0, lamda=0.1)
    config.update(hidden_size=args.hidden, eval_numsteps=args.eval_every, eval_times=args.eval_episodes)
    config.update(num_steps=args.steps - 1, cuda=False, save=False)
    if args.start_steps is not None:
        config.update(start_steps=args.start_steps)
    main_mod.config = config  # main.py's evaluation() reads the module-level config
    meta = {
        "implementation": "official",
        "official_commit": official_commit(official),
        "official_files_sha256": files_digest(official),
        # main.py sets "high" (TF32 on CUDA); CPUs have no TF32, so their float32 products are the same as "highest"
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "task": args.task,
        "seed": args.seed,
        "steps": args.steps,
        "torch": torch.__version__,
        "torch_threads": args.torch_threads,
        "config": {k: v for k, v in config.items() if not k.startswith("_")},
    }
    (out / "official-run.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    cwd = os.getcwd()
    os.chdir(out)  # the official loop writes ./results/...
    try:
        main_mod.train_loop(config, msg=config.tag)
    finally:
        os.chdir(cwd)
    last = recorder.rows[-1]["step"] if recorder.rows else None
    if last != args.steps:
        print(f"error: the official loop ended with its last evaluation at step {last}, not {args.steps}")
        return 1
    (out / "DONE").write_text(json.dumps({"steps": args.steps, "end": time.time()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
