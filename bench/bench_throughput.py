"""FlowRL throughput in the paper configuration and a small one: updates/s, env steps/s, end-to-end steps/s.

Prints numbers (asserts nothing), on the CPU and, when present, a GPU. bench_speed.py compares agents.

    python bench/bench_throughput.py [--task dmc:dog-run]
"""

from __future__ import annotations

import argparse

from bench_speed import isolated, measure_end_to_end, measure_env, measure_updates

CONFIGS = {"paper": ({"hidden_dim": 512}, 256), "small": ({"hidden_dim": 64}, 64)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="dmc:dog-run")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--e2e-steps", type=int, default=256)
    args = ap.parse_args()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"# task {args.task}; env steps/s (random actions): "
        f"{isolated(measure_env, args.task, 3000)['env_steps_per_s']:.0f}"
    )
    print(f"{'config':8} {'device':6} {'hidden':>6} {'batch':>5} {'updates/s':>10} {'end-to-end steps/s':>19}")
    for name, (agent, batch) in CONFIGS.items():
        for dev in devices:
            u = isolated(measure_updates, "flowrl", args.task, dev, args.updates, batch, 1, "auto", agent)
            e = isolated(measure_end_to_end, "flowrl", args.task, dev, args.e2e_steps, batch, agent)
            print(
                f"{name:8} {dev:6} {agent['hidden_dim']:>6} {batch:>5} {u['updates_per_s']:>10.1f} "
                f"{e['steps_per_s']:>19.1f}"
            )


if __name__ == "__main__":
    main()
