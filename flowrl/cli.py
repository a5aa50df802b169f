"""`flowrl-train` / `python -m flowrl`: train one run from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from flowrl.config import load_config_file, merge, nest, parse_override, resolve_config

EPILOG = """\
settings are applied in order: defaults < --config file < flags < key=value overrides.
examples:
  flowrl-train --algo flowrl --task dmc:cheetah-run --seed 0 --steps 1000000 --out runs/cheetah/flowrl/0
  flowrl-train --task dmc:cartpole-balance --steps 20000 --out runs/cp eval_every=5000 agent.hidden_dim=64
  flowrl-train --tasks dmc:dog-run dmc:dog-walk --seeds 0 1 --out 'runs/dog/flowrl/{task}/seed{seed}'
Interrupt with Ctrl-C or SIGTERM: a checkpoint is written and the same command resumes.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowrl-train",
        description="Train one agent on one task into one run directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--algo", help="algorithm name (see --list-algos)")
    p.add_argument("--task", help="task name, e.g. dmc:dog-run, gym:Humanoid-v5, hb:h1hand-walk-v0")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="environment steps to train for")
    p.add_argument(
        "--out",
        help="run directory (created; resumed if it holds an unfinished run); with --seeds it "
        "must contain {seed}, with --tasks {task} (the task's directory-safe name), "
        "e.g. runs/cp/flowrl/seed{seed}",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train these seeds in one process as one batched model (FlowRL); each seed writes its own run directory",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        help="instead of --task: train these tasks (same observation and action "
        "shapes, e.g. the dmc:dog-* tasks) in one process as one batched model, "
        "each task x seed into its own run directory",
    )
    p.add_argument(
        "--env-processes", action="store_true", help="with --seeds/--tasks: step each run's env in its own process"
    )
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable; later files win)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--force", action="store_true", help="retrain a finished run (the old directory is kept, renamed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--list-algos", action="store_true", help="list available algorithms and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval_every=5000 agent.hidden_dim=64")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from flowrl.checkpoint import CheckpointError
    from flowrl.train import RunError, train

    try:
        if args.list_algos:
            from flowrl.agents.registry import available_agents

            print("\n".join(available_agents()))
            return 0
        if args.tasks and args.task:
            raise RunError("give --task or --tasks, not both")
        files = [load_config_file(f) for f in args.config]
        task = args.tasks[0] if args.tasks else args.task
        flags = {
            k: v
            for k, v in {
                "algo": args.algo,
                "task": task,
                "seed": args.seed,
                "steps": args.steps,
                "device": args.device,
            }.items()
            if v is not None
        }
        if args.no_progress:
            flags["progress"] = False
        overrides = nest(dict(parse_override(o) for o in args.overrides))
        cfg = resolve_config(merge(*[nest(f) for f in files], flags, overrides))
        if args.print_config:
            import yaml

            from flowrl.config import config_to_dict

            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            return 0
        if not args.out:
            raise RunError("--out is required: the run directory to write (e.g. runs/cartpole/flowrl/seed0)")
        if args.seeds or args.tasks:
            from flowrl.envs import task_slug
            from flowrl.multiseed import train_members

            tasks, seeds = args.tasks or [cfg.task], args.seeds or [cfg.seed]
            for flag, key, values in (("--seeds", "{seed}", seeds), ("--tasks", "{task}", tasks)):
                if len(values) > 1 and key not in args.out:
                    raise RunError(
                        f"with several {flag}, --out must contain {key} (e.g. runs/study/flowrl/{{task}}/seed{{seed}})"
                    )
            members = [(t, s) for t in tasks for s in seeds]
            try:
                outs = [args.out.format(task=task_slug(t), seed=s) for t, s in members]
            except (KeyError, IndexError, ValueError) as exc:
                raise RunError(
                    f"--out {args.out!r}: only {{task}} and {{seed}} may appear in braces ({exc!r})"
                ) from None
            results = train_members(cfg, members, outs, force=args.force, env_processes=args.env_processes)
            return max(_report(r) for r in results)
        result = train(cfg, args.out, force=args.force)
    except (RunError, CheckpointError, ValueError, FileNotFoundError, TypeError) as exc:
        print(f"flowrl-train: error: {exc}", file=sys.stderr)
        return 2
    return _report(result)


def _report(result) -> int:
    if result.status == "interrupted":
        print(
            f"flowrl-train: interrupted at step {result.step}; checkpoint written. Run the same command to resume.",
            file=sys.stderr,
        )
    elif result.status == "already_finished":
        print(f"flowrl-train: {result.out} already finished; nothing to do (--force retrains).", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
