"""Throughput of FlowRL: updates/s, env steps/s and end-to-end training steps/s.

Prints numbers (it asserts nothing). Runs the paper configuration (hidden 512, batch 256) and a small
one (hidden 64, batch 64), on the CPU and, when present, on a GPU.

    python bench/bench_throughput.py [--task dmc:dog-run] [--updates 30] [--env-steps 2000] [--e2e-steps 300]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time

import numpy as np
import torch

from flowrl.agents.base import Batch
from flowrl.agents.flowrl import FlowRL, FlowRLConfig
from flowrl.config import resolve_config
from flowrl.envs import make_env
from flowrl.train import train

CONFIGS = {"paper": {"hidden_dim": 512, "batch_size": 256}, "small": {"hidden_dim": 64, "batch_size": 64}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def updates_per_s(spec, device, hidden, batch_size, n):
    torch.manual_seed(0)
    agent = FlowRL(spec, FlowRLConfig(hidden_dim=hidden), device)
    g = torch.Generator(device="cpu").manual_seed(0)
    b = Batch(*(t.to(device) for t in (
        torch.randn(batch_size, spec.obs_dim, generator=g), torch.rand(batch_size, spec.act_dim, generator=g) * 2 - 1,
        torch.randn(batch_size, 1, generator=g), torch.randn(batch_size, spec.obs_dim, generator=g), torch.ones(batch_size, 1))))
    for i in range(3):
        agent.update(b, i)
    sync(device)
    t = time.perf_counter()
    for i in range(n):
        agent.update(b, i)
    sync(device)
    return n / (time.perf_counter() - t)


def env_steps_per_s(task, n):
    env = make_env(task)
    rng = np.random.default_rng(0)
    env.reset(0)
    t = time.perf_counter()
    for _ in range(n):
        s = env.step(rng.uniform(env.spec.act_low, env.spec.act_high).astype(np.float32))
        if s.terminated or s.truncated:
            env.reset(1)
    return n / (time.perf_counter() - t)


def end_to_end_per_s(task, device, hidden, batch_size, n):
    """Training steps/s once learning has started (acting + one update + env step), read from train.csv."""
    start = max(2 * batch_size, n)
    cfg = resolve_config({"algo": "flowrl", "task": task, "steps": start + n, "start_steps": start, "batch_size": batch_size,
                          "eval_every": 10**9, "eval_at_start": False, "eval_episodes": 1, "log_every": n,
                          "checkpoint_every": 0, "progress": False, "device": str(device), "agent": {"hidden_dim": hidden}})
    with tempfile.TemporaryDirectory() as d:
        train(cfg, f"{d}/run")
        rows = list(csv.DictReader(open(f"{d}/run/train.csv")))
    return float(rows[-1]["env_steps_per_s"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="dmc:dog-run")
    p.add_argument("--updates", type=int, default=30)
    p.add_argument("--env-steps", type=int, default=2000)
    p.add_argument("--e2e-steps", type=int, default=256)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = p.parse_args()

    import logging

    logging.getLogger("flowrl").setLevel(logging.WARNING)
    spec = make_env(args.task).spec
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"task {args.task}: obs {spec.obs_dim}, act {spec.act_dim}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", GPU {torch.cuda.get_device_name()}" if len(devices) > 1 else ""))
    print(f"env steps/s (random actions): {env_steps_per_s(args.task, args.env_steps):.0f}")
    print(f"{'config':8} {'device':6} {'hidden':>6} {'batch':>5} {'updates/s':>10} {'end-to-end steps/s':>19}")
    for name in args.configs:
        c = CONFIGS[name]
        for dev in devices:
            ups = updates_per_s(spec, dev, c["hidden_dim"], c["batch_size"], args.updates)
            e2e = end_to_end_per_s(args.task, dev, c["hidden_dim"], c["batch_size"], args.e2e_steps)
            print(f"{name:8} {dev.type:6} {c['hidden_dim']:>6} {c['batch_size']:>5} {ups:>10.1f} {e2e:>19.1f}")


if __name__ == "__main__":
    main()
