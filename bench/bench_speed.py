"""Speed of every agent, N seeds in one process, and FlowRL against the official implementation's update path.

Prints a table (it asserts nothing). For FlowRL and each baseline at its default (paper) size:
updates/s on a replay batch, end-to-end training steps/s on a real task, and peak memory; for FlowRL
also N seeds as one batched model against one seed, and an official-style update (bench/official_style.py:
same networks, losses and published settings, its list-of-tuples replay) timed in the same run. The ratio
ours/official comes from a head-to-head in one process, alternating rounds of updates, so that drift in a
shared machine's speed hits both sides alike; then the matmul floor: the update's matrix-multiply FLOPs over
this device's GEMM rate, the most updates/s any implementation of the update can reach in that precision.

    python bench/bench_speed.py                       # CPU (and GPU when present), dmc:dog-run shapes
    python bench/bench_speed.py --device cuda --seeds 8 --amp auto
    python3 bench/bench_speed.py --device cuda --shapes 223x38 --seeds 8   # dog-run's shapes, no simulator needed
Each measurement runs in a fresh process so its peak memory is its own.
    python bench/bench_speed.py --device cpu --algos flowrl --skip-e2e --rounds 12   # just the comparison
    python bench/bench_speed.py --device cpu --shapes 17x6 --hidden 64 128 256 512   # ours/official per hidden size
    python bench/bench_speed.py --device cpu --shapes 17x6 --hidden 64 512 --profile 20   # and where the time goes
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # official_style.py beside this file


def _flowrl(spec, settings, device, **kwargs):
    """FlowRL from one flat mapping of hyperparameters and execution settings, e.g. {"hidden_dim": 64, "amp": "off"}."""
    import dataclasses

    from flowrl.agents.flowrl import FlowRL
    from flowrl.config import build_dataclass

    execution_keys = {f.name for f in dataclasses.fields(FlowRL.Execution)}
    cfg = build_dataclass(FlowRL.Config, {k: v for k, v in settings.items() if k not in execution_keys}, "agent")
    execution = build_dataclass(
        FlowRL.Execution, {k: v for k, v in settings.items() if k in execution_keys}, "execution"
    )
    return FlowRL(spec, cfg, device, execution=execution, **kwargs)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _warmup(device) -> int:
    # CUDA: enough eager updates for FlowRL's graphs (graph_warmup per phase, then capture) and for the
    # official code's compiled functions (inductor records its CUDA graphs on their first calls).
    return 16 if device.type == "cuda" else 3


def _timed(fn, n, device, warmup=3):
    for i in range(warmup):
        fn(i)
    _sync(device)
    t = time.perf_counter()
    for i in range(n):
        fn(warmup + i)
    _sync(device)
    return n / (time.perf_counter() - t)


def _spec(task):
    """The task's shapes; 'shapes:OBSxACT' (from --shapes) makes them up without building a simulator."""
    if task.startswith("shapes:"):
        import numpy as np

        from flowrl.agents.base import EnvSpec

        obs, act = (int(x) for x in task.partition(":")[2].split("x"))
        return EnvSpec(obs, act, -np.ones(act, np.float32), np.ones(act, np.float32))
    from flowrl.envs import make_env

    env = make_env(task)
    spec = env.spec
    env.close()
    return spec


def measure_updates(algo, task, device_name, n_updates, batch_size, n_seeds=1, amp="auto", overrides=None):
    """updates/s of `algo` (default size unless `overrides`; FlowRL: `n_seeds` seeds as one batched model)."""
    import torch

    from flowrl.agents.registry import get_agent_class
    from flowrl.config import build_dataclass

    device = torch.device(device_name)
    spec = _spec(task)
    cls = get_agent_class(algo)
    torch.manual_seed(0)
    if algo == "flowrl":
        agent = _flowrl(spec, {"amp": amp, **(overrides or {})}, device, n_seeds=n_seeds)
    else:
        agent = cls(
            spec,
            build_dataclass(cls.Config, overrides or {}, "agent"),
            device,
            **({"n_seeds": n_seeds} if n_seeds > 1 else {}),
        )
    buffers = [
        _filled_buffer(spec, device, getattr(cls, "replay_recent_fraction", 0.0), seed=i) for i in range(n_seeds)
    ]
    if n_seeds > 1:
        from flowrl.agents.base import Batch

        def step(i):
            agent.update_members(Batch(*(torch.stack(x) for x in zip(*[b.sample(batch_size) for b in buffers]))), i)
    else:

        def step(i):
            agent.update(buffers[0].sample(batch_size), i)

    ups = _timed(step, n_updates, device, _warmup(device))
    return {"updates_per_s": ups, "peak_mib": _peak_mib(device)}


def measure_official(task, device_name, n_updates, batch_size, compile_=None):
    import torch
    from official_style import OfficialStyleFlowRL, filled_replay

    device = torch.device(device_name)
    spec = _spec(task)
    torch.manual_seed(0)
    agent = OfficialStyleFlowRL(spec.obs_dim, spec.act_dim, device, compile_=compile_)
    memory = filled_replay(spec.obs_dim, spec.act_dim, 5_000)
    ups = _timed(lambda i: agent.update(memory, batch_size, i), n_updates, device, _warmup(device))
    return {"updates_per_s": ups, "peak_mib": _peak_mib(device)}


def _filled_buffer(spec, device, recent_fraction, n=5_000, seed=0):
    import numpy as np

    from flowrl.replay import ReplayBuffer

    rng = np.random.default_rng(seed)
    rb = ReplayBuffer(spec.obs_dim, spec.act_dim, 20_000, device, recent_fraction=recent_fraction)
    for _ in range(n):
        rb.add(
            rng.standard_normal(spec.obs_dim),
            rng.uniform(spec.act_low, spec.act_high),
            float(rng.standard_normal()),
            rng.standard_normal(spec.obs_dim),
            False,
        )
    return rb


def measure_head_to_head(
    task, device_name, rounds, per_round, batch_size, variants, official_variants=None, compile_official=None
):
    """FlowRL (default config plus `variants`: name -> agent overrides) and the official-style update (as its code
    runs on this device, plus `official_variants`: name -> OfficialStyleFlowRL keyword arguments) in ONE process,
    timed in alternating rounds of `per_round` updates. On a shared machine whose speed drifts by 10-25% between
    runs, the per-round ratio to the official-style update is the robust number: both sides see the same drift.
    Returns median updates/s per contender and, per contender, the median of its per-round ratios to each
    official-style contender."""
    import statistics

    import torch
    from official_style import OfficialStyleFlowRL, filled_replay

    from flowrl.agents.flowrl import FlowRL

    device = torch.device(device_name)
    spec = _spec(task)
    steps = {}
    memory = filled_replay(spec.obs_dim, spec.act_dim, 5_000)
    for name, kwargs in {"official-style": {}, **(official_variants or {})}.items():
        torch.manual_seed(0)
        official = OfficialStyleFlowRL(spec.obs_dim, spec.act_dim, device, **{"compile_": compile_official, **kwargs})
        steps[name] = lambda i, official=official: official.update(memory, batch_size, i)
    buffer = _filled_buffer(spec, device, FlowRL.replay_recent_fraction)
    for name, over in {"flowrl": {}, **variants}.items():
        torch.manual_seed(0)
        agent = _flowrl(spec, over, device)
        steps[name] = lambda i, agent=agent: agent.update(buffer.sample(batch_size), i)
    rates = _alternating_rounds(steps, rounds, per_round, device)
    officials = [k for k in rates if k.startswith("official-style")]
    return {
        "ups": {k: statistics.median(v) for k, v in rates.items()},
        "ratio": {
            k: {o: statistics.median(a / b for a, b in zip(v, rates[o])) for o in officials} for k, v in rates.items()
        },
    }


def _alternating_rounds(steps, rounds, per_round, device):
    """Warm every contender up, then `rounds` rounds in which each runs `per_round` of its steps in turn:
    per contender, the list of its per-round rates (steps/s)."""
    calls = dict.fromkeys(steps, 0)

    def run(name, n):
        for _ in range(n):
            steps[name](calls[name])
            calls[name] += 1
        _sync(device)

    for name in steps:
        run(name, _warmup(device))
    rates = {name: [] for name in steps}
    for _ in range(rounds):
        for name in steps:
            t = time.perf_counter()
            run(name, per_round)
            rates[name].append(per_round / (time.perf_counter() - t))
    return rates


def measure_plain_head_to_head(algo, task, device_name, rounds, per_round, batch_size):
    """The project's `algo` (SAC or TD3, default size) against the same agent updated without the project's speed
    settings (bench/plain_baselines.py), in ONE process, alternating rounds: median updates/s of each and the median
    per-round ratio ours/plain."""
    import statistics

    import torch
    from plain_baselines import PLAIN

    from flowrl.agents.registry import get_agent_class
    from flowrl.config import build_dataclass

    device = torch.device(device_name)
    spec = _spec(task)
    cls = get_agent_class(algo)
    buffer = _filled_buffer(spec, device, getattr(cls, "replay_recent_fraction", 0.0))
    steps = {}
    for name, make in ((algo, cls), (f"{algo}, plain eager", PLAIN[algo])):
        torch.manual_seed(0)
        agent = make(spec, build_dataclass(cls.Config, {}, "agent"), device)
        steps[name] = lambda i, agent=agent: agent.update(buffer.sample(batch_size), i)
    rates = _alternating_rounds(steps, rounds, per_round, device)
    ours, plain = rates
    return {
        "ups": {k: statistics.median(v) for k, v in rates.items()},
        "ratio": statistics.median(a / b for a, b in zip(rates[ours], rates[plain])),
    }


def measure_hidden_grid(
    task, device_name, hiddens, rounds, per_round, batch_size, compile_official=None, compile_update=False
):
    """FlowRL against the official-style update at each hidden size in `hiddens`, float32 (amp off on both), in
    ONE process: every round runs `per_round` updates of every contender of every size in turn. On CPUs with
    oneDNN FlowRL also runs with each `cpu_matmul` backend forced, so the grid shows which kernel wins where (the
    rule `cpu_matmul=auto` follows). Returns {hidden: {contender: median updates/s}} and, per size and contender,
    the median of its per-round ratios to that size's official-style update. `compile_update` adds FlowRL with
    `execution.compile_update` (torch.compile of its losses; their compilation falls in the warm-up)."""
    import statistics

    import torch
    from official_style import OfficialStyleFlowRL, filled_replay

    from flowrl.agents.flowrl import FlowRL
    from flowrl.cpu_kernels import onednn_linear_available

    device = torch.device(device_name)
    spec = _spec(task)
    memory = filled_replay(spec.obs_dim, spec.act_dim, 5_000)
    buffer = _filled_buffer(spec, device, FlowRL.replay_recent_fraction)
    variants = {"flowrl": {}}
    if device.type == "cpu" and onednn_linear_available():
        variants.update(
            {"flowrl, cpu_matmul=aten": {"cpu_matmul": "aten"}, "flowrl, cpu_matmul=onednn": {"cpu_matmul": "onednn"}}
        )
    if compile_update:
        variants["flowrl, compile_update"] = {"compile_update": True, "cuda_graphs": False}
    steps = {}
    for h in hiddens:
        torch.manual_seed(0)
        official = OfficialStyleFlowRL(
            spec.obs_dim, spec.act_dim, device, hidden=h, compile_=compile_official, amp=False
        )
        steps[(h, "official-style")] = lambda i, official=official: official.update(memory, batch_size, i)
        for name, over in variants.items():
            torch.manual_seed(0)
            agent = _flowrl(spec, {"hidden_dim": h, "amp": "off", **over}, device)
            steps[(h, name)] = lambda i, agent=agent: agent.update(buffer.sample(batch_size), i)
    rates = _alternating_rounds(steps, rounds, per_round, device)
    return {
        "ups": {h: {name: statistics.median(rates[(h, name)]) for hh, name in steps if hh == h} for h in hiddens},
        "ratio": {
            h: {
                name: statistics.median(a / b for a, b in zip(rates[(h, name)], rates[(h, "official-style")]))
                for hh, name in steps
                if hh == h
            }
            for h in hiddens
        },
    }


def print_hidden_grid(grid, rounds, per_round, batch_size):
    from flowrl.execution import COMPILE_AUTO_MIN_UPDATES

    hiddens = list(grid["ups"])
    names = list(grid["ups"][hiddens[0]])
    print(
        f"\nhidden-size grid: batch {batch_size}, float32, one process, {rounds} alternating rounds of {per_round} "
        "updates; updates/s (median) and, in brackets, the median per-round ratio to the official-style update of "
        "the same size:"
    )
    cells = {h: {n: f"{grid['ups'][h][n]:.1f} ({grid['ratio'][h][n]:.2f}x)" for n in names} for h in hiddens}
    widths = {n: max(len(n), *(len(cells[h][n]) for h in hiddens)) + 3 for n in names}
    print(f"  {'hidden':>6}" + "".join(f"{n:>{widths[n]}}" for n in names))
    for h in hiddens:
        print(f"  {h:>6}" + "".join(f"{cells[h][n]:>{widths[n]}}" for n in names))
    best = {h: max((n for n in names if n != "official-style"), key=lambda n: grid["ratio"][h][n]) for h in hiddens}
    print(
        "  fastest FlowRL setting per size: "
        + ", ".join(f"{h}: {best[h]} {grid['ratio'][h][best[h]]:.2f}x" for h in hiddens)
    )
    print(
        "  'flowrl' is the eager update; a flowrl-train run on a CPU compiles it by default from "
        f"{COMPILE_AUTO_MIN_UPDATES} planned updates on (execution.compile_update=auto): 'flowrl, compile_update'"
    )


# Where an update's time goes, from torch.profiler's self times (each event's time minus its children's), walked
# down the event tree. "matmul": the GEMM ops (aten's and oneDNN's); "optimiser": everything under an optimiser's
# step or zero_grad (Python included) and the foreach kernels (our Polyak averaging: a loop of aten ops in the
# official-style update, so there under "other ops"); "other ops": every other aten op (element-wise work,
# reductions, copies, concatenations, the replay's host-to-tensor copies); "compiled": the self time of
# torch.compile's regions (inductor's fused C++ kernels run inside them, with their Python wrappers); "Python and
# framework": the rest of the wall time (the interpreter, autograd's engine, dispatch, the profiler's own cost).
PROFILE_PARTS = ("matmul", "optimiser", "other ops", "compiled", "Python and framework")
_MATMUL_OP = re.compile(r"^aten::(mm|addmm|bmm|baddbmm|addbmm|_addmm_activation)$|mkldnn")
_OPTIMISER_SCOPE = re.compile(r"^Optimizer\.")
_FOREACH_OP = re.compile(r"^aten::_foreach_")
_COMPILED_REGION = re.compile(r"Compiled|Inductor|Torch-Compiled")


def profile_parts(events, wall_s: float, n: int) -> dict[str, float]:
    """Milliseconds per update in each of PROFILE_PARTS, from a profile's `events` (prof.events(): FunctionEvents
    with their children) over `n` updates that took `wall_s` seconds; the parts sum to the wall time ("wall")."""
    parts = dict.fromkeys(PROFILE_PARTS, 0.0)

    def walk(event, in_optimiser):
        in_optimiser = in_optimiser or bool(_OPTIMISER_SCOPE.match(event.name))
        self_ms = event.self_cpu_time_total / 1e3 / n
        if in_optimiser or _FOREACH_OP.match(event.name):
            parts["optimiser"] += self_ms
        elif _MATMUL_OP.search(event.name):
            parts["matmul"] += self_ms
        elif event.name.startswith("aten::"):
            parts["other ops"] += self_ms
        elif _COMPILED_REGION.search(event.name):
            parts["compiled"] += self_ms
        for child in event.cpu_children:
            walk(child, in_optimiser)

    for event in events:
        if event.cpu_parent is None:
            walk(event, False)
    wall_ms = wall_s * 1e3 / n
    parts["Python and framework"] = max(0.0, wall_ms - sum(parts.values()))
    return {"wall": wall_ms, **parts}


def measure_profile(task, device_name, hiddens, batch_size, n_updates, compile_update=False):
    """torch.profiler's breakdown (profile_parts) of `n_updates` updates (both phases alike) of the official-style
    update and of FlowRL (its default execution, plus `compile_update` when asked) at each hidden size, float32, in
    ONE process, after a warm-up (and compilation) outside the profile. CPU only: the profiler's CPU self times are
    what it measures. Returns {hidden: {contender: parts}}."""
    import torch
    from official_style import OfficialStyleFlowRL, filled_replay
    from torch.profiler import ProfilerActivity, profile

    from flowrl.agents.flowrl import FlowRL

    device = torch.device(device_name)
    if device.type != "cpu":
        raise ValueError("--profile breaks down CPU time: use --device cpu")
    spec = _spec(task)
    memory = filled_replay(spec.obs_dim, spec.act_dim, 5_000)
    buffer = _filled_buffer(spec, device, FlowRL.replay_recent_fraction)
    variants = {"flowrl": {}, **({"flowrl, compile_update": {"compile_update": True}} if compile_update else {})}
    out = {}
    for h in hiddens:
        steps = {}
        torch.manual_seed(0)
        official = OfficialStyleFlowRL(spec.obs_dim, spec.act_dim, device, hidden=h, compile_=False, amp=False)
        steps["official-style"] = lambda i, official=official: official.update(memory, batch_size, i)
        for name, over in variants.items():
            torch.manual_seed(0)
            agent = _flowrl(spec, {"hidden_dim": h, "amp": "off", **over}, device)
            steps[name] = lambda i, agent=agent: agent.update(buffer.sample(batch_size), i)
        out[h] = {}
        for name, step in steps.items():
            for i in range(4):  # both phases twice: lazy optimiser state, and compilation under compile_update
                step(i)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t = time.perf_counter()
                for i in range(n_updates):
                    step(4 + i)
                wall = time.perf_counter() - t
            out[h][name] = profile_parts(prof.events(), wall, n_updates)
    return out


def print_profile(profiles, n_updates):
    print(
        f"\nprofile (torch.profiler, {n_updates} updates each, float32, one process; milliseconds per update, "
        "profiled, so slower than unprofiled; the parts sum to the wall time):"
    )
    header = f"  {'hidden':>6}  {'contender':24}{'wall':>8}" + "".join(
        f"{p:>{max(9, len(p) + 2)}}" for p in PROFILE_PARTS
    )
    print(header)
    for h, rows in profiles.items():
        for name, parts in rows.items():
            print(
                f"  {h:>6}  {name:24}{parts['wall']:>8.2f}"
                + "".join(f"{parts[p]:>{max(9, len(p) + 2)}.2f}" for p in PROFILE_PARTS)
            )
        off = rows["official-style"]
        for name, parts in rows.items():
            if name == "official-style":
                continue
            # The same products on the same BLAS cost about the same on both sides, so the ratio can exceed
            # official / ours only by what is cut from ours' other parts: this is the ratio were all of them gone.
            print(
                f"  {h:>6}  {name}: ratio {off['wall'] / parts['wall']:.2f}x profiled; with nothing but its matmuls "
                f"it would be {off['wall'] / max(parts['matmul'], 1e-9):.2f}x"
            )


def measure_matmul_floor(task, device_name, batch_size):
    """Matrix-multiply FLOPs of one FlowRL update and one official-style update (mean over the two phases), and
    this device's GEMM rate at the update's main shape, in float32 and bfloat16. FLOPs / rate is the time the
    matmuls alone take: no implementation of the update in that precision is faster than that."""
    import torch
    from official_style import OfficialStyleFlowRL, filled_replay
    from torch.utils.flop_counter import FlopCounterMode

    from flowrl.agents.flowrl import FlowRL
    from flowrl.cpu_kernels import onednn_linear_available
    from flowrl.ensemble import EnsembleLinear

    device = torch.device(device_name)
    spec = _spec(task)
    torch.manual_seed(0)
    # FlopCounterMode sees aten's matmuls only, not oneDNN's: count with the same function on aten's.
    ours = _flowrl(spec, {"amp": "off", "cuda_graphs": False, "cpu_matmul": "aten"}, device)
    buffer = _filled_buffer(spec, device, FlowRL.replay_recent_fraction)
    official = OfficialStyleFlowRL(spec.obs_dim, spec.act_dim, device, compile_=False)
    memory = filled_replay(spec.obs_dim, spec.act_dim, 5_000)
    flops = {}
    for name, step in [
        ("flowrl", lambda i: ours.update(buffer.sample(batch_size), i)),
        ("official-style", lambda i: official.update(memory, batch_size, i)),
    ]:
        counter = FlopCounterMode(display=False)
        with counter:
            step(0)  # policy phase
            step(1)
        flops[name] = counter.get_total_flops() / 2
    h = ours.config.hidden_dim
    rates = {}
    kinds = [("float32", torch.float32, "aten"), ("bfloat16", torch.bfloat16, "aten")]
    if device.type == "cpu" and onednn_linear_available():
        kinds.insert(1, ("float32 oneDNN", torch.float32, "onednn"))  # what FlowRL's cpu_matmul=auto uses
    for label, dtype, backend in kinds:
        a = torch.randn(2, batch_size, h, device=device, dtype=dtype)
        layer = EnsembleLinear(2, h, h).to(device, dtype)
        layer.cpu_matmul = backend
        n = 50 if device.type == "cpu" else 2000
        run = (
            (lambda la=layer, x=a: la.forward_members(x.unbind(0)))
            if backend == "onednn"
            else (lambda la=layer, x=a: la(x))
        )
        with torch.no_grad():
            for _ in range(5):
                run()
            _sync(device)
            t = time.perf_counter()
            for _ in range(n):
                run()
        _sync(device)
        rates[label] = n * 2 * a.shape[0] * batch_size * h * h / (time.perf_counter() - t)
    return {"flops": flops, "rates": rates}


def measure_end_to_end(algo, task, device_name, n_steps, batch_size, overrides=None, n_seeds=1):
    """Training steps/s once learning runs (act + update + env step), from train.csv's last window.
    n_seeds > 1: that many seeds in lockstep as one batched model, environments in their own processes;
    the rate is each seed's (all seeds advance together)."""
    import logging

    import torch

    from flowrl.config import resolve_config
    from flowrl.multiseed import train_seeds
    from flowrl.train import train

    logging.getLogger("flowrl").setLevel(logging.WARNING)
    start = max(2 * batch_size, n_steps)
    cfg = resolve_config(
        {
            "algo": algo,
            "task": task,
            "steps": start + n_steps,
            "start_steps": start,
            "batch_size": batch_size,
            "eval_every": 10**9,
            "eval_at_start": False,
            "eval_episodes": 1,
            "log_every": n_steps,
            "checkpoint_every": 0,
            "progress": False,
            "device": device_name,
            "agent": overrides or {},
        }
    )
    with tempfile.TemporaryDirectory() as d:
        if n_seeds > 1:
            train_seeds(cfg, list(range(n_seeds)), [f"{d}/seed{s}" for s in range(n_seeds)], env_processes=True)
            rows = list(csv.DictReader(open(f"{d}/seed0/train.csv")))
        else:
            train(cfg, f"{d}/run")
            rows = list(csv.DictReader(open(f"{d}/run/train.csv")))
    return {"steps_per_s": float(rows[-1]["env_steps_per_s"]), "peak_mib": _peak_mib(torch.device(device_name))}


def measure_evaluation(algo, task, device_name, episodes, eval_envs):
    """Seconds for one evaluation (`episodes` episodes of the untrained policy at its default size), played
    `eval_envs` at a time (in their own processes when this process may use more than `eval_envs` CPUs, else in
    this process, as a run does; starting them is not timed)."""
    import logging

    from flowrl.agents.base import OneMember
    from flowrl.agents.registry import get_agent_class
    from flowrl.config import resolve_config
    from flowrl.evaluation import eval_envs_for, evaluate
    from flowrl.session import resolve_device

    logging.getLogger("flowrl").setLevel(logging.WARNING)
    cfg = resolve_config(
        {
            "algo": algo,
            "task": task,
            "eval_episodes": episodes,
            "eval_envs": eval_envs,
            "progress": False,
            "device": device_name,
        }
    )
    device = resolve_device(cfg.device)
    envs = eval_envs_for(task, min(eval_envs, episodes))
    try:
        agent = OneMember(get_agent_class(algo)(envs[0].spec, cfg.agent, device))
        t = time.perf_counter()
        evaluate(agent, [envs], [cfg.seed], 0, episodes, device)
        return {"seconds": time.perf_counter() - t}
    finally:
        for env in envs:
            env.close()


def measure_env(task, n_steps):
    import numpy as np

    from flowrl.envs import make_env

    env = make_env(task)
    rng = np.random.default_rng(0)
    env.reset(0)
    t = time.perf_counter()
    for _ in range(n_steps):
        s = env.step(rng.uniform(env.spec.act_low, env.spec.act_high).astype(np.float32))
        if s.terminated or s.truncated:
            env.reset(1)
    return {"env_steps_per_s": n_steps / (time.perf_counter() - t)}


def _child(conn, fn, args):
    try:
        conn.send(fn(*args))
    except Exception as exc:  # noqa: BLE001 - report, keep benchmarking the rest
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def isolated(fn, *args, timeout=None):
    """Run fn(*args) in a fresh process (own peak memory); returns its dict of numbers."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child, fn, args))
    p.start()
    if not parent.poll(timeout):
        p.kill()
        p.join()
        return {"error": f"no result within {timeout} s"}
    out = parent.recv()
    p.join()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="dmc:dog-run")
    ap.add_argument(
        "--shapes",
        metavar="OBSxACT",
        help="time the updates at these shapes (e.g. 223x38, dog-run's) "
        "without a simulator: no env, end-to-end or evaluation figures (e.g. on a GPU machine "
        "without dm_control)",
    )
    ap.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when present")
    ap.add_argument("--algos", nargs="+", default=["flowrl", "sac", "td3", "qvpo"])
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--e2e-steps", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=4, help="N for the N-seeds-in-one-process measurement")
    ap.add_argument("--amp", default="auto", help="FlowRL autocast setting: auto (bf16 on CUDA), off, bf16")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument(
        "--eval-episodes",
        type=int,
        default=5,
        help="episodes of the evaluation timed one after another and all at once (eval_envs); 0 skips it",
    )
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds of the head-to-head comparison")
    ap.add_argument("--round-updates", type=int, default=5, help="updates per contender per round")
    ap.add_argument(
        "--official-compile",
        choices=["auto", "off"],
        default="auto",
        help="auto: the official-style update compiled as its code does (torch.compile max-autotune on "
        "CUDA; minutes of compilation), plus an eager one on CUDA; off: eager only (a quick first look)",
    )
    ap.add_argument(
        "--head-to-head-only",
        action="store_true",
        help="only the one-process head to head of FlowRL "
        "and the official-style update (e.g. against the compiled official-style update, which compiles "
        "once here instead of once per figure)",
    )
    ap.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        metavar="H",
        help="instead of the figures above: FlowRL against "
        "the official-style update at these hidden sizes (e.g. 64 128 256 512), float32, one process, "
        "alternating --rounds of --round-updates updates, as a grid with ratios",
    )
    ap.add_argument(
        "--compile-update",
        action="store_true",
        help="with --hidden: also FlowRL with execution.compile_update (torch.compile of its losses)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        metavar="N",
        default=0,
        help="with --hidden on a CPU: also torch.profiler's breakdown of N updates of each contender per size "
        "(matmul, optimiser, other ops, compiled regions, Python and framework), to see what bounds a ratio",
    )
    ap.add_argument(
        "--official-timeout",
        type=float,
        default=900,
        help="seconds for the official-style measurement (its torch.compile max-autotune takes minutes on a GPU)",
    )
    args = ap.parse_args()
    if args.head_to_head_only and "flowrl" not in args.algos:
        ap.error("--head-to-head-only compares FlowRL with the official-style update: keep flowrl in --algos")
    if args.profile and not args.hidden:
        ap.error("--profile breaks the --hidden grid down: give --hidden too, e.g. --hidden 64 256 --profile 20")
    if args.profile < 0:
        ap.error(f"--profile {args.profile}: give a number of updates to profile, e.g. --profile 20")
    if args.hidden and min(args.hidden) < 1:
        ap.error(f"--hidden {args.hidden}: hidden sizes are positive integers, e.g. --hidden 64 128 256 512")
    simulator = not args.shapes and not args.hidden
    if args.shapes:
        if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", args.shapes):
            ap.error(f"--shapes {args.shapes!r}: give OBSxACT, e.g. 223x38")
        args.task, args.skip_e2e, args.eval_episodes = f"shapes:{args.shapes}", True, 0

    import torch

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(
        f"# task {args.task}, batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    if simulator:
        env = isolated(measure_env, args.task, 3000)
        print(
            f"env steps/s (random actions, one process): {env['env_steps_per_s']:.0f}"
            if "error" not in env
            else f"env steps/s: error: {env['error']} (--shapes OBSxACT times the updates without a simulator)"
        )
    for dev in devices:
        print(f"\n## device {dev}")
        if args.hidden:
            compiled = None if args.official_compile == "auto" else False
            grid = isolated(
                measure_hidden_grid,
                args.task,
                dev,
                args.hidden,
                args.rounds,
                args.round_updates,
                args.batch_size,
                compiled,
                args.compile_update,
                # compiling both phases at each size takes minutes on a CPU
                timeout=args.official_timeout + (600 * len(args.hidden) if args.compile_update else 0),
            )
            if "error" in grid:
                print(f"hidden-size grid: error: {grid['error']}")
            else:
                print_hidden_grid(grid, args.rounds, args.round_updates, args.batch_size)
            if args.profile:
                profiles = isolated(
                    measure_profile,
                    args.task,
                    dev,
                    args.hidden,
                    args.batch_size,
                    args.profile,
                    args.compile_update,
                    timeout=args.official_timeout + (600 * len(args.hidden) if args.compile_update else 0),
                )
                if "error" in profiles:
                    print(f"profile: error: {profiles['error']}")
                else:
                    print_profile(profiles, args.profile)
            continue
        if not args.head_to_head_only:
            print(f"{'agent':22} {'updates/s':>10} {'e2e steps/s':>12} {'peak MiB':>9}")
        flow_ups = flow_e2e = None  # FlowRL's own figures, for the ratios below (None when it failed)
        for algo in [] if args.head_to_head_only else args.algos:
            u = isolated(measure_updates, algo, args.task, dev, args.updates, args.batch_size, 1, args.amp)
            e = (
                {}
                if args.skip_e2e
                else isolated(measure_end_to_end, algo, args.task, dev, args.e2e_steps, args.batch_size)
            )
            if "error" in u or "error" in e:
                print(f"{algo:22} error: {u.get('error') or e.get('error')}")
                continue
            print(
                f"{algo:22} {u['updates_per_s']:>10.1f} {e.get('steps_per_s', float('nan')):>12.1f} "
                f"{max(u['peak_mib'], e.get('peak_mib', 0)):>9.0f}"
            )
            if algo == "flowrl":
                flow_ups, flow_e2e = u["updates_per_s"], e.get("steps_per_s")
        for algo in [a for a in args.algos if a in ("sac", "td3") and not args.head_to_head_only]:
            plain = isolated(
                measure_plain_head_to_head, algo, args.task, dev, args.rounds, args.round_updates, args.batch_size
            )
            if "error" in plain:
                print(f"{algo} against its plain eager version: error: {plain['error']}")
                continue
            (ours, ups), (_, plain_ups) = plain["ups"].items()
            print(
                f"{algo} against its plain eager version (bench/plain_baselines.py; one process, {args.rounds} "
                f"alternating rounds of {args.round_updates}): {ups:.1f} vs {plain_ups:.1f} updates/s, "
                f"{plain['ratio']:.2f}x"
            )
        if "flowrl" in args.algos:
            compiled = None if args.official_compile == "auto" else False
            label = "official-style FlowRL" if compiled is None or dev == "cpu" else "official-style, eager"
            official = [(label, compiled)] + (
                [("official-style, eager", False)] if dev == "cuda" and compiled is None else []
            )
            for name, compile_ in [] if args.head_to_head_only else official:
                off = isolated(
                    measure_official,
                    args.task,
                    dev,
                    args.updates,
                    args.batch_size,
                    compile_,
                    timeout=args.official_timeout,
                )
                if "error" in off:
                    print(f"{name:22} error: {off['error']}")
                    continue
                ratio = (
                    f"   (separate process: ours/official {flow_ups / off['updates_per_s']:.2f}x)" if flow_ups else ""
                )
                print(f"{name:22} {off['updates_per_s']:>10.1f} {'':>12} {off['peak_mib']:>9.0f}{ratio}")
            variants = {"flowrl, no CUDA graphs": {"cuda_graphs": False}} if dev == "cuda" else {}
            official_variants = {}
            if dev == "cuda" and compiled is None:
                official_variants["official-style, eager"] = {"compile_": False}
            if dev == "cpu":  # bf16 is the official code's training precision; it autocasts on CUDA only
                variants["flowrl, cpu_matmul=aten"] = {"cpu_matmul": "aten"}  # without oneDNN's float32 GEMM
                variants["flowrl, amp=bf16"] = {"amp": "bf16"}
                official_variants["official-style, bf16"] = {"amp": True}  # the like-for-like contender
            h2h = isolated(
                measure_head_to_head,
                args.task,
                dev,
                args.rounds,
                args.round_updates,
                args.batch_size,
                variants,
                official_variants,
                compiled,
                timeout=args.official_timeout,
            )
            if "error" in h2h:
                print(f"head to head: error: {h2h['error']}")
            else:
                print(
                    f"\nhead to head, one process, {args.rounds} alternating rounds of {args.round_updates} updates "
                    "(medians; the ratio is the median of the per-round ratios):"
                )
                for name, ups in h2h["ups"].items():
                    ratios = ", ".join(f"{r:.2f}x {o}" for o, r in h2h["ratio"][name].items())
                    print(f"  {name:24} {ups:>8.1f} updates/s   {ratios}")
            if args.head_to_head_only:
                continue
            floor = isolated(measure_matmul_floor, args.task, dev, args.batch_size)
            if "error" in floor:
                print(f"matmul floor: error: {floor['error']}")
            else:
                rates, flops = floor["rates"], floor["flops"]
                print(
                    f"matmul work per update: flowrl {flops['flowrl'] / 1e9:.2f} GFLOP, official-style "
                    f"{flops['official-style'] / 1e9:.2f} GFLOP; this device's GEMM rate at the main shape: "
                    + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in rates.items())
                )
                for dtype, rate in rates.items():
                    ceiling = rate / flops["flowrl"]
                    line = (
                        f"  {dtype + ' GEMMs':20}: the matmuls alone cap any implementation at {ceiling:.1f} updates/s"
                    )
                    if "error" not in h2h:
                        line += f" = {ceiling / h2h['ups']['official-style']:.2f}x the official-style rate above"
                    print(line)
            multi = isolated(
                measure_updates,
                "flowrl",
                args.task,
                dev,
                max(3, args.updates // 2),
                args.batch_size,
                args.seeds,
                args.amp,
            )
            if "error" in multi or not flow_ups:
                print(
                    f"flowrl x{args.seeds} seeds batched: error: {multi.get('error', 'no one-seed figure to compare')}"
                )
            else:
                ratio = flow_ups / multi["updates_per_s"]
                print(
                    f"flowrl x{args.seeds} seeds batched: {multi['updates_per_s']:.1f} updates/s of all seeds "
                    "together, "
                    f"wall time per update {ratio:.2f}x one seed's ({args.seeds / ratio:.2f}x the seed-throughput), "
                    f"peak {multi['peak_mib']:.0f} MiB"
                )
            if args.eval_episodes:
                ev = {
                    k: isolated(measure_evaluation, "flowrl", args.task, dev, args.eval_episodes, k)
                    for k in (1, args.eval_episodes)
                }
                if any("error" in v for v in ev.values()):
                    print(f"evaluation: error: {[v['error'] for v in ev.values() if 'error' in v][0]}")
                else:
                    serial, together = ev[1]["seconds"], ev[args.eval_episodes]["seconds"]
                    print(
                        f"flowrl evaluation of {args.eval_episodes} episodes: {serial:.1f} s one after another, "
                        f"{together:.1f} s all at once (eval_envs={args.eval_episodes}; {serial / together:.2f}x)"
                    )
            if not args.skip_e2e and flow_e2e:
                e_multi = isolated(
                    measure_end_to_end, "flowrl", args.task, dev, args.e2e_steps, args.batch_size, None, args.seeds
                )
                if "error" in e_multi:
                    print(f"flowrl x{args.seeds} seeds end to end: error: {e_multi['error']}")
                else:
                    print(
                        f"flowrl x{args.seeds} seeds end to end (env processes): {e_multi['steps_per_s']:.1f} steps/s "
                        f"per seed, wall time per step {flow_e2e / e_multi['steps_per_s']:.2f}x one seed's"
                    )


if __name__ == "__main__":
    main()
