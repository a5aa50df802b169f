"""flowrl-plan: jobs, env steps and device-hours of a study from the measured throughput table (its use on a study's
own runs' train.csv is tested in test_status.py, on real runs)."""

from __future__ import annotations

import re

import pytest
from workflow_helpers import REPO, run_python, snakemake, write_study

from flowrl.plan import load_table, local_cpu_maker, make_plan, plan_text, run_rates, table_rate
from flowrl.study import load_study_file


def test_plan_of_a_tiny_study_from_the_table(tmp_path):
    study = load_study_file(
        write_study(
            tmp_path / "s.yaml",
            study="tiny",
            algos=["flowrl", "sac"],
            tasks=["dmc:cartpole-balance", "dmc:cartpole-swingup"],
            seeds=3,
            steps=10000,
            overrides={"agent.hidden_dim": 64, "batch_size": 128, "start_steps": 1000},
            resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 1000, "runtime": 10},
        )
    )
    table = load_table()
    plans = make_plan(study, tmp_path / "runs" / "tiny", table)
    # Of the entries measured at this configuration (several machines), one on this machine's CPU maker is used where
    # there is one, the newest on ties, and named.
    maker = local_cpu_maker()
    exact = sorted(
        (e for e in table if e["hidden_dim"] == 64 and e["batch_size"] == 128),
        key=lambda e: (maker is None or maker in e["hardware"], str(e["measured"])),
    )
    rate = {e["algo"]: e["steps_per_s"] for e in exact}
    for algo in ("flowrl", "sac"):
        p = plans[algo]
        assert (p.jobs, p.runs, p.steps) == (6, 6, 60000) and p.rate.exact and not p.rate.note
        assert p.run_seconds == pytest.approx(6 * 10000 / rate[algo])
        assert p.device_seconds == pytest.approx(p.run_seconds)  # one CPU per job
    text = plan_text(study, tmp_path, cores=2)
    assert "12 training jobs, 12 runs, 120,000 env steps" in text
    newest = exact[-1]
    assert f"measured {newest['measured']} on {newest['hardware']}" in text
    wall = 60 * float(re.search(r"--cores 2 \(2 jobs at a time\): ~([0-9.]+) min", text).group(1))
    assert wall == pytest.approx((plans["flowrl"].run_seconds + plans["sac"].run_seconds) / 2, rel=0.02)


def test_plan_outside_the_measured_configuration_says_so(tmp_path):
    study = load_study_file(REPO / "config" / "paper.yaml")
    text = plan_text(study, tmp_path)
    assert "300 training jobs, 300 runs, 300,000,000 env steps" in text
    assert "the study trains on cuda, where the table has no measurement" in text
    assert "14 of its 15 tasks are estimated at the rate measured on dmc:dog-run" in text
    assert "GPU-hours" in text and "2-core AMD EPYC" in text
    rate = table_rate(load_table(), "flowrl", 256, 256, "cpu", variant=False)
    assert rate.steps_per_s == 12.5 and not rate.exact and "hidden 256, batch 256 is not measured" in rate.note


def test_cpu_rates_come_from_this_cpu_makers_entry_among_equally_near_ones(monkeypatch):
    from flowrl import cpu_kernels

    def entry(rate, measured, hardware, hidden=64):
        return {"algo": "sac", "device": "cpu", "hidden_dim": hidden, "batch_size": 128, "steps_per_s": rate,
                "measured": measured, "hardware": hardware}  # fmt: skip

    table = [entry(100.0, "2026-12-03", "2-core AMD EPYC"), entry(200.0, "2026-11-25", "2-core Intel Xeon")]
    for vendor, rate in [("GenuineIntel", 200.0), ("AuthenticAMD", 100.0), ("unknown", 100.0)]:  # unknown: newest
        monkeypatch.setattr(cpu_kernels, "cpu_vendor", lambda v=vendor: v)
        assert table_rate(table, "sac", 64, 128, "cpu", variant=False).steps_per_s == rate, vendor
    monkeypatch.setattr(cpu_kernels, "cpu_vendor", lambda: "GenuineIntel")
    assert table_rate(table, "sac", 64, 128, "cuda", variant=False).steps_per_s == 100.0  # GPU studies: no CPU match
    nearer = [entry(100.0, "2026-12-03", "2-core AMD EPYC", hidden=256), entry(200.0, "2026-12-03", "Intel Xeon")]
    assert table_rate(nearer, "sac", 256, 128, "cpu", variant=False).steps_per_s == 100.0  # the size comes first


def test_run_rates_split_warmup_and_learning_windows():
    rows_ = [
        {"step": 100.0, "updates": 0.0, "env_steps_per_s": 1000.0},
        {"step": 200.0, "updates": 0.0, "env_steps_per_s": 500.0},
        {"step": 300.0, "updates": 100.0, "env_steps_per_s": 50.0},
        {"step": 400.0, "updates": 200.0, "env_steps_per_s": 25.0},
    ]
    learn_t, learn_n, warm_t, warm_n = run_rates(rows_)
    assert (learn_n, warm_n) == (200, 200)
    assert learn_t == pytest.approx(100 / 50 + 100 / 25) and warm_t == pytest.approx(0.1 + 0.2)


@pytest.mark.subprocess
def test_default_study_estimate_from_the_command_line(tmp_path):

    proc = run_python(
        ["-m", "flowrl.plan", str(REPO / "config" / "default.yaml"), "--cores", "2"], tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stdout
    assert "18 training jobs, 18 runs, 180,000 env steps" in proc.stdout
    assert re.search(r"local wall time with --cores 2 \(2 jobs at a time\): ~[0-9.]+ min", proc.stdout)
    bad = run_python(["-m", "flowrl.plan", str(tmp_path / "missing.yaml")], tmp_path, timeout=120)
    assert bad.returncode == 2 and "flowrl-plan: error: cannot read study file" in bad.stdout


@pytest.mark.subprocess
def test_snakemake_plan_true_prints_the_plan_and_runs_nothing(tmp_path):
    proc = snakemake(["--cores", "2", "--config", "plan=true", "algos=[sac]", "seeds=2"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "plan for study default (snakemake --config plan=true; nothing runs): 4 training jobs" in proc.stdout
    assert "--cores 2 (2 jobs at a time)" in proc.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
