"""The speed benchmark runs from end to end and reports every figure it promises (it asserts no timings)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowrl.cpu_kernels import onednn_linear_available

ROOT = Path(__file__).resolve().parents[1]


def script_cmd(script: str, args: str) -> list[str]:
    """The command running bench/<script> with the space-separated `args`."""
    return [sys.executable, str(ROOT / "bench" / script), *args.split()]


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_speed_reports_every_figure():
    cmd = script_cmd(
        "bench_speed.py",
        "--device cpu --task dmc:cartpole-swingup --algos flowrl --updates 2 --e2e-steps 64 "
        "--batch-size 32 --seeds 2 --rounds 1 --round-updates 1 --eval-episodes 2",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error" not in out, out
    number = r"[0-9]+\.[0-9]+"
    for pattern in [
        r"env steps/s \(random actions, one process\): [0-9]+",
        rf"flowrl +{number} +{number} +[0-9]+",  # updates/s, end-to-end steps/s, peak MiB
        rf"official-style FlowRL +{number}",
        rf"official-style, bf16 +{number} updates/s",
        rf"flowrl, amp=bf16 +{number} updates/s +{number}x official-style, {number}x official-style, bf16",
        rf"flowrl, cpu_matmul=aten +{number} updates/s +{number}x official-style",
        rf"matmul work per update: flowrl {number} GFLOP",
        rf"flowrl x2 seeds batched: {number} updates/s",
        rf"flowrl evaluation of 2 episodes: {number} s one after another, {number} s all at once",
        rf"flowrl x2 seeds end to end \(env processes\): {number} steps/s",
    ]:
        assert re.search(pattern, out), (pattern, out)
    assert re.search(rf"flowrl {number} GFLOP, official-style {number} GFLOP", out) and " 0.00 GFLOP" not in out, out
    if onednn_linear_available():
        assert re.search(r"float32 oneDNN [0-9]+ GFLOP/s", out) and "float32 oneDNN GEMMs" in out, out


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_speed_at_given_shapes_needs_no_simulator(tmp_path):
    """--shapes times the updates without building an environment (e.g. on a GPU machine without dm_control):
    a dm_control that cannot be imported changes nothing."""
    import os

    (tmp_path / "dm_control").mkdir()
    (tmp_path / "dm_control" / "__init__.py").write_text("raise ImportError('no simulator on this machine')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = script_cmd(
        "bench_speed.py",
        "--device cpu --shapes 5x1 --algos flowrl --updates 2 --batch-size 32 --seeds 2 --rounds 1 --round-updates 1",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error" not in proc.stdout and "# task shapes:5x1" in proc.stdout, proc.stdout
    assert re.search(r"flowrl, amp=bf16 +[0-9.]+ updates/s", proc.stdout) and "seeds batched" in proc.stdout
    assert "env steps/s" not in proc.stdout and "evaluation of" not in proc.stdout


@pytest.mark.subprocess
def test_bench_speed_hidden_size_grid():
    """--hidden prints FlowRL against the official-style update at each size (one process), with a ratio per cell;
    --profile then breaks each contender's update down into parts that sum to its wall time."""
    cmd = script_cmd(
        "bench_speed.py",
        "--device cpu --shapes 5x1 --hidden 8 16 --batch-size 16 --rounds 1 --round-updates 1 --profile 2",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "error" not in out and "hidden-size grid: batch 16, float32" in out, out
    header = next(line for line in out.splitlines() if line.strip().startswith("hidden "))
    names = ["official-style", "flowrl"] + (
        ["flowrl, cpu_matmul=aten", "flowrl, cpu_matmul=onednn"] if onednn_linear_available() else []
    )
    assert re.findall(r"official-style|flowrl(?:, cpu_matmul=\w+)?", header) == names, header
    cell = r" +[0-9]+\.[0-9] \([0-9]+\.[0-9]{2}x\)"
    for h in (8, 16):
        assert re.search(rf"^ +{h}" + r" +[0-9]+\.[0-9] \(1\.00x\)" + cell * (len(names) - 1) + "$", out, re.M), out
    assert re.search(r"fastest FlowRL setting per size: 8: flowrl.* [0-9.]+x, 16: flowrl", out), out

    assert "profile (torch.profiler, 2 updates each" in out, out
    rows = re.findall(r"^ +(8|16)  (official-style|flowrl) +((?:[0-9]+\.[0-9]{2} *){6})$", out, re.M)
    assert sorted((h, n) for h, n, _ in rows) == [
        ("16", "flowrl"),
        ("16", "official-style"),
        ("8", "flowrl"),
        ("8", "official-style"),
    ], out
    for _, _, cells in rows:
        wall, matmul, *rest = map(float, cells.split())
        assert matmul > 0 and abs(wall - matmul - sum(rest)) <= 0.05, cells  # the parts sum to the wall time
    assert re.search(r"^ +16  flowrl: ratio [0-9.]+x profiled; with nothing but its matmuls it would be", out, re.M)

    bad = subprocess.run(cmd[:6] + ["--hidden", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "--hidden [0]: hidden sizes are positive integers" in bad.stderr
    bad = subprocess.run(cmd[:4] + ["--profile", "5"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "--profile breaks the --hidden grid down: give --hidden too" in bad.stderr


def test_profile_parts_attributes_time_to_matmuls_optimiser_and_other_ops():
    """A workload of known make-up, profiled for real: big products, an Adam step, element-wise work."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_speed import PROFILE_PARTS, profile_parts

    w = torch.nn.Parameter(torch.randn(384, 384))
    opt = torch.optim.Adam([w], foreach=False)
    x = torch.randn(384, 384)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(3):
            y = x
            for _ in range(8):
                y = y @ w  # 8 GEMMs of 384^3 multiply-adds
            loss = torch.tanh(y).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        wall = time.perf_counter() - t
    parts = profile_parts(prof.events(), wall, 3)
    assert set(parts) == {"wall", *PROFILE_PARTS}
    assert parts["wall"] == pytest.approx(wall * 1e3 / 3)
    assert sum(parts[p] for p in PROFILE_PARTS) == pytest.approx(parts["wall"], rel=1e-6)
    # forward and backward GEMMs dominate the element-wise work; the single-tensor Adam's aten ops count as
    # optimiser (they run under Optimizer.step), not as other ops
    assert parts["matmul"] > parts["other ops"] > 0 and parts["optimiser"] > 0 and parts["compiled"] == 0


@pytest.mark.subprocess
def test_bench_speed_head_to_head_only():
    """--head-to-head-only prints the one-process comparison and no other figure (scripts/gpu-check.sh uses it)."""
    cmd = script_cmd(
        "bench_speed.py",
        "--device cpu --shapes 5x1 --algos flowrl --head-to-head-only --batch-size 16 --rounds 1 --round-updates 1",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "error" not in out and re.search(r"^  flowrl +[0-9.]+ updates/s +[0-9.]+x official-style", out, re.M), out
    for other in ("updates/s  e2e", "agent ", "matmul work", "seeds batched", "separate process"):
        assert other not in out, (other, out)


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_plain_contenders_compute_the_same_updates(algo):
    """bench/plain_baselines.py's SAC and TD3 differ from ours in speed settings only: from the same seed and batches
    they give the same losses and parameters (up to the rounding of a different Adam implementation)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from plain_baselines import PLAIN

    from flowrl.agents.base import Batch, EnvSpec
    from flowrl.agents.registry import get_agent_class

    spec = EnvSpec(4, 2, -np.ones(2, np.float32), 2 * np.ones(2, np.float32))
    cls = get_agent_class(algo)
    cfg = cls.Config(hidden_dim=16)
    torch.manual_seed(0)
    ours = cls(spec, cfg)
    torch.manual_seed(0)
    plain = PLAIN[algo](spec, cfg)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        b = Batch(
            torch.randn(8, 4, generator=g),
            torch.rand(8, 2, generator=g) * 3 - 1,
            torch.randn(8, 1, generator=g),
            torch.randn(8, 4, generator=g),
            torch.ones(8, 1),
        )
        torch.manual_seed(100 + step)  # both draw their noise from the global generator, in the same order
        m1 = ours.update(b, step)
        torch.manual_seed(100 + step)
        m2 = plain.update(b, step)
        assert set(m1) == set(m2), step
        for k in m1:
            assert abs(float(m1[k]) - m2[k]) < 1e-5 * (1 + abs(m2[k])), (step, k)
    for (name, p), q in zip(ours.state_dict().items(), plain.state_dict().values()):
        if isinstance(p, dict) and "state" not in p:  # networks (optimiser states differ in layout)
            assert all(torch.allclose(p[k], q[k], atol=1e-6) for k in p), name


@pytest.mark.subprocess
def test_bench_speed_sac_td3_against_plain_versions():
    cmd = script_cmd(
        "bench_speed.py",
        "--device cpu --shapes 5x1 --algos sac td3 --updates 2 --batch-size 16 --rounds 1 --round-updates 1",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error" not in proc.stdout, proc.stdout
    for algo in ("sac", "td3"):
        assert re.search(
            rf"^{algo} against its plain eager version .*: [0-9.]+ vs [0-9.]+ updates/s, [0-9.]+x$", proc.stdout, re.M
        ), proc.stdout
