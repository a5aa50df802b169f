"""The Snakemake study workflow: lint, dry runs of every preset, config validation, and a local end-to-end study."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    REPO,
    TINY_OVERRIDES,
    env,
    eval_steps,
    job_counts,
    load_script,
    sessions,
    snakemake,
    train_job_args,
    write_study,
)

from flowrl import study as flowrl_study

PRESETS = ["default", "paper", "ablations"]


def preset(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


# ------------------------------------------------------------------------------------------ static checks
@pytest.mark.subprocess
def test_lint_is_clean(tmp_path):
    proc = snakemake(["--lint"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Lints for" not in proc.stdout


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.subprocess
def test_preset_dry_run_plans_every_run(tmp_path, name):
    cfg = preset(name)
    proc = snakemake(["-n", "--configfile", str(REPO / "config" / f"{name}.yaml")], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    counts = job_counts(proc.stdout)
    seeds = cfg["seeds"] if isinstance(cfg["seeds"], int) else len(cfg["seeds"])
    packs = math.ceil(seeds / cfg.get("seeds_per_job", 1))
    hb = [t for t in cfg["tasks"] if t.startswith("hb:")]
    assert counts.get("train", 0) == len(cfg["algos"]) * (len(cfg["tasks"]) - len(hb)) * packs
    assert counts.get("train_hb", 0) == len(cfg["algos"]) * len(hb) * packs
    assert counts["aggregate"] == 1
    assert not (tmp_path / "runs").exists(), "a dry run must not create run directories"


def test_presets_follow_the_protocols():
    default, paper, ablations = (preset(n) for n in PRESETS)
    assert len(default["tasks"]) >= 2 and all(t.startswith("dmc:") for t in default["tasks"])
    assert default["seeds"] >= 3 and len(default["algos"]) >= 2
    assert set(paper["algos"]) == {"flowrl", "sac", "td3", "qvpo"} and paper["seeds"] == 5
    assert paper["steps"] == 1_000_000 and paper["eval_every"] == 10_000 and paper["eval_episodes"] == 5
    assert len([t for t in paper["tasks"] if t.startswith("dmc:")]) == 9
    assert len([t for t in paper["tasks"] if t.startswith("hb:")]) == 6
    overrides = {v: d["overrides"] for v, d in ablations["variants"].items()}
    assert {"agent.constraint": False} in overrides.values()
    assert {o.get("agent.flow_steps") for o in overrides.values()} >= {5, 10}
    for cfg in (default, paper, ablations):  # every preset passes the full validation
        flowrl_study.load_study(cfg)


@pytest.mark.subprocess
def test_command_line_overrides_select_runs(tmp_path):
    proc = snakemake(
        [
            "-n",
            "-p",
            "--config",
            "algos=[sac]",
            "tasks=[dmc:cartpole-balance]",
            "seeds=[3,4]",
            "overrides={agent.hidden_dim: 32}",
        ],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert job_counts(proc.stdout)["train"] == 2
    assert "runs/default/jobs/sac/dmc_cartpole-balance/seeds-3.done" in proc.stdout
    assert "--seeds 3 " in proc.stdout and "--seeds 4 " in proc.stdout
    assert "agent.hidden_dim=32" in proc.stdout


@pytest.mark.subprocess
def test_seeds_per_job_packs_seeds(tmp_path):
    proc = snakemake(
        ["-n", "-p", "--config", "seeds_per_job=2", "seeds=3", "tasks=[dmc:cartpole-balance]"], tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert job_counts(proc.stdout)["train"] == 3 * 2  # 3 algorithms x (seeds 0-1, seed 2)
    assert "seeds-0-1.done" in proc.stdout and "seeds-2.done" in proc.stdout
    from flowrl.multiseed import supports_members

    for algo in preset("default")["algos"]:
        line = next(ln for ln in proc.stdout.splitlines() if f"--algo {algo} " in ln and "--seeds 0 1" in ln)
        assert ("--mode batched" in line) == supports_members(algo)
        assert "--mode sequential" in line or "--mode batched" in line  # CPU jobs never run seeds in parallel


def test_profiles_agree(monkeypatch):
    """profiles/default is loaded on top of --profile slurm, so it must not contradict it (or pick an executor)."""
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(REPO)  # `--profile slurm` from the repository root, as the README runs it
    _, found = get_profile_dir("slurm")
    assert found.resolve() == (REPO / "profiles" / "slurm" / "profile.yaml").resolve()
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    local = yaml.safe_load((REPO / "profiles" / "default" / "profile.yaml").read_text())
    assert slurm["executor"] == "slurm" and "executor" not in local
    assert slurm["retries"] >= 1 and slurm["slurm-requeue"] is True  # how stopped jobs get to resume
    for key in set(slurm) & set(local):
        assert slurm[key] == local[key], key
    assert local["rerun-triggers"] == ["mtime", "input"] and local["rerun-incomplete"] is True


@pytest.mark.subprocess
def test_humanoidbench_jobs_get_their_own_software(tmp_path):
    """hb: tasks run in rule train_hb (conda env workflow/envs/humanoidbench.yaml with
    --software-deployment-method conda); without conda, software.hb_activate prefixes only their commands."""
    proc = snakemake(
        [
            "-n",
            "-p",
            "--configfile",
            str(REPO / "config" / "ablations.yaml"),
            "--config",
            "software={hb_activate: '. /opt/flowrl-hb/bin/activate'}",
        ],
        tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    commands = [ln for ln in proc.stdout.splitlines() if "train_job.py" in ln]
    hb = [c for c in commands if "--task hb:" in c]
    assert hb and all(c.startswith("Shell command: . /opt/flowrl-hb/bin/activate; ") for c in hb)
    assert all("/opt/flowrl-hb" not in c for c in commands if c not in hb)
    rules = (REPO / "workflow" / "rules" / "train.smk").read_text()
    assert '"../envs/humanoidbench.yaml"' in rules
    env_spec = yaml.safe_load((REPO / "workflow" / "envs" / "humanoidbench.yaml").read_text())
    root_spec = yaml.safe_load((REPO / "environment-humanoidbench.yml").read_text())
    assert env_spec["dependencies"] == root_spec["dependencies"], "keep workflow/envs/ in step with the root env file"


BAD_SETTINGS = [
    ({"stepz": 5}, "'stepz' was unexpected"),
    ({"algos": ["flowrl", "sacc"]}, "unknown algorithm 'sacc'. Did you mean 'sac'?"),
    ({"tasks": ["dmc:cartpole-balanse"]}, "Did you mean 'dmc:cartpole-balance'"),
    ({"tasks": ["hb:h1hand-wlk-v0"]}, "Unknown HumanoidBench task"),
    ({"steps": 0}, "'steps': 0 is less than the minimum of 1"),
    ({"steps": {"dmc:cartpole-balance": 100}}, "no budget for task(s) ['dmc:cartpole-swingup']"),
    ({"eval_every": -5}, "'eval_every': -5 is less than the minimum of 1"),
    ({"resources": {"gpus": 1}}, "'gpus' was unexpected"),
    ({"overrides": {"agent.hiden_dim": 3}}, "unknown agent key 'hiden_dim'. Did you mean 'hidden_dim'?"),
    ({"overrides": {"agent.hidden_dim": "abc"}}, "agent.hidden_dim: expected an integer, got 'abc'"),
    ({"overrides": {"seed": 3}}, "['seed'] are set by the study itself"),
    ({"seeds_per_job": 2, "pack_mode": "batched"}, "cannot train several seeds as one batched model"),
]


@pytest.mark.parametrize("settings,message", BAD_SETTINGS, ids=[str(s) for s, _ in BAD_SETTINGS])
def test_bad_study_is_rejected_with_a_clear_message(settings, message):
    cfg = {**preset("default"), **settings}
    with pytest.raises(flowrl_study.StudyError) as err:
        flowrl_study.load_study(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "args,message",
    [(["algos=[flowrl,sacc]"], "unknown algorithm 'sacc'"), (["steps=0"], "'steps': 0 is less than the minimum of 1")],
)
@pytest.mark.subprocess
def test_bad_study_fails_before_anything_runs(tmp_path, args, message):
    proc = snakemake(["--cores", "1", "--config", *args], tmp_path, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_variant_errors_name_the_variant():
    cfg = dict(preset("default"), algos=["flowrl-x"], variants={"flowrl-x": {"algo": "flowr"}})
    with pytest.raises(flowrl_study.StudyError, match="variant 'flowrl-x': unknown algorithm 'flowr'"):
        flowrl_study.load_study(cfg)
    cfg["variants"] = {"sac": {"algo": "flowrl"}}
    cfg["algos"] = ["sac"]
    with pytest.raises(flowrl_study.StudyError, match="shadows the registered algorithm"):
        flowrl_study.load_study(cfg)


def test_study_jobs_resources_and_overrides():
    cfg = dict(
        preset("paper"),
        seeds_per_job=5,
        variants={"flowrl-s5": {"algo": "flowrl", "overrides": {"agent.flow_steps": 5}}},
    )
    cfg["algos"] = ["flowrl-s5", "sac"]
    study = flowrl_study.load_study(cfg, semantic=False)
    jobs = {(j.algo, j.tasks[0]): j for j in study.jobs(batched_ok=lambda algo: algo == "flowrl")}
    flow = jobs[("flowrl-s5", "hb:h1hand-maze-v0")]
    assert flow.base_algo == "flowrl" and flow.pack_mode == "batched" and flow.seeds == [0, 1, 2, 3, 4]
    assert flow.overrides["agent.flow_steps"] == 5 and flow.overrides["eval_every"] == 10_000
    assert flow.resources["mem_mb"] == 5 * cfg["suite_resources"]["hb"]["mem_mb"]  # one replay buffer per seed
    assert flow.resources["gpu"] == 1
    sac = jobs[("sac", "dmc:dog-run")]
    assert sac.pack_mode == "parallel" and sac.resources["cpus_per_task"] == 5 * cfg["resources"]["cpus_per_task"]
    assert "agent.flow_steps" not in sac.overrides
    assert study.run_dir("flowrl-s5", "hb:h1hand-maze-v0", 3) == "runs/paper/flowrl-s5/hb_h1hand-maze-v0/seed3"


def test_suite_overrides_apply_to_one_suite_and_one_algorithm():
    """e.g. the official code's expectile 0.8 for HumanoidBench, for FlowRL only; checked like other overrides."""
    cfg = dict(preset("paper"), suite_overrides={"hb": {"flowrl": {"agent.quantile": 0.8}}})
    study = flowrl_study.load_study(cfg)  # semantic checks: the key resolves for flowrl on an hb: task
    jobs = {(j.algo, j.tasks[0]): j for j in study.jobs()}
    assert jobs[("flowrl", "hb:h1hand-maze-v0")].overrides["agent.quantile"] == 0.8
    assert "agent.quantile" not in jobs[("flowrl", "dmc:dog-run")].overrides
    assert "agent.quantile" not in jobs[("sac", "hb:h1hand-maze-v0")].overrides
    assert jobs[("flowrl", "hb:h1hand-maze-v0")].overrides["device"] == "cuda"  # the study's overrides still hold
    assert "agent.quantile" not in flowrl_study.load_study(preset("paper")).jobs()[0].overrides  # preset keeps 0.9

    for bad, message in [
        ({"hb": {"sac": {"agent.quantile": 0.8}}}, "unknown agent key 'quantile'"),
        ({"hb": {"flowrl-x": {"agent.quantile": 0.8}}}, "['flowrl-x'] not in algos"),
        ({"gym": {"flowrl": {"agent.quantile": 0.8}}}, "the study has no gym: task"),
        ({"hb": {"flowrl": {"steps": 10}}}, "suite_overrides.hb.flowrl: ['steps'] are set by"),
        ({"mujoco": {"flowrl": {}}}, "suite_overrides"),
    ]:
        with pytest.raises(flowrl_study.StudyError, match=message.replace("[", r"\[").replace("]", r"\]")):
            flowrl_study.load_study(dict(preset("paper"), suite_overrides=bad))


def test_task_packs_put_same_shape_tasks_of_batched_algorithms_into_one_job():
    dogs = ["dmc:dog-run", "dmc:dog-trot", "dmc:dog-stand", "dmc:dog-walk"]
    cfg = dict(preset("paper"), task_packs=[dogs])
    study = flowrl_study.load_study(cfg, semantic=False)
    jobs = study.jobs(batched_ok=lambda algo: algo == "flowrl")
    flow = [j for j in jobs if j.algo == "flowrl" and "dmc:dog-run" in j.tasks]
    assert len(flow) == 5 and all(j.tasks == dogs and j.pack_mode == "batched" for j in flow)  # seeds_per_job 1
    assert flow[0].slug == "dmc_dog-run+dmc_dog-trot+dmc_dog-stand+dmc_dog-walk"
    assert flow[0].resources["mem_mb"] == 4 * cfg["resources"]["mem_mb"]  # a replay buffer per run
    cfg["resources"] = dict(cfg["resources"], packed_run_mem_mb=3000)  # each further run adds 3 GB, not mem_mb
    packed = flowrl_study.load_study(cfg, semantic=False).jobs(batched_ok=lambda algo: algo == "flowrl")
    dog = next(j for j in packed if j.algo == "flowrl" and "dmc:dog-run" in j.tasks)
    assert dog.resources["mem_mb"] == cfg["resources"]["mem_mb"] + 3 * 3000 and "packed_run_mem_mb" not in dog.resources
    single = next(j for j in packed if j.algo == "sac" and "dmc:dog-run" in j.tasks)
    assert single.resources["mem_mb"] == cfg["resources"]["mem_mb"]
    assert len([j for j in jobs if j.algo == "flowrl"]) == 5 * (15 - 4 + 1)
    sac = [j for j in jobs if j.algo == "sac" and "dmc:dog-run" in j.tasks]
    assert len(sac) == 5 and all(j.tasks == ["dmc:dog-run"] for j in sac)  # SAC cannot batch: one task a job
    planned = {(j.algo, t, s) for j in jobs for t in j.tasks for s in j.seeds}
    assert len(planned) == 4 * 15 * 5  # every run exactly once


@pytest.mark.parametrize(
    "packs,message",
    [
        ([["dmc:cartpole-balance", "dmc:walker-run"]], "not in tasks"),
        (
            [["dmc:cartpole-balance", "dmc:cartpole-swingup"], ["dmc:cartpole-swingup", "dmc:point_mass-easy"]],
            "already in task_packs[0]",
        ),
        ([["dmc:cartpole-balance", "dmc:point_mass-easy"]], "same observation and action shapes"),
    ],
)
def test_bad_task_packs_are_rejected(packs, message):
    cfg = dict(
        preset("default"),
        tasks=["dmc:cartpole-balance", "dmc:cartpole-swingup", "dmc:point_mass-easy"],
        task_packs=packs,
    )
    with pytest.raises(flowrl_study.StudyError, match=message.replace("[", r"\[")):
        flowrl_study.load_study(cfg)


@pytest.mark.slow
@pytest.mark.subprocess
def test_task_pack_study_trains_each_run_into_its_own_directory(tmp_path):
    tasks = ["dmc:cartpole-balance", "dmc:cartpole-swingup"]
    study = write_study(
        tmp_path / "study.yaml",
        study="pack",
        algos=["flowrl"],
        tasks=tasks,
        task_packs=[tasks],
        seeds=1,
        steps=400,
        eval_every=200,
        eval_episodes=1,
        overrides=TINY_OVERRIDES,
        resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 1000, "runtime": 10},
    )
    snakemake(["runs", "--cores", "1", "--configfile", str(study)], tmp_path, check=True)
    runs = tmp_path / "runs" / "pack"
    log = (runs / "logs" / "flowrl" / "dmc_cartpole-balance+dmc_cartpole-swingup" / "seeds-0.log").read_text()
    assert "--tasks dmc:cartpole-balance dmc:cartpole-swingup --seeds 0" in log
    for task in tasks:
        run = runs / "flowrl" / task.replace(":", "_") / "seed0"
        assert (run / "DONE").is_file() and eval_steps(run) == [0, 200, 400]
        assert yaml.safe_load((run / "config.yaml").read_text())["task"] == task
    assert (runs / "jobs" / "flowrl" / "dmc_cartpole-balance+dmc_cartpole-swingup" / "seeds-0.done").is_file()


def test_run_directory_names_match_flowrl():
    """The workflow's run directories (the study's and train_job.py's) are named as flowrl-train names them."""
    from flowrl.envs import task_slug

    train_job = load_script("train_job")
    tasks = ["dmc:cartpole-balance", "gym:Humanoid-v5", "hb:h1hand-walk-v0", "gym:ns/Env-v1"]
    study = flowrl_study.load_study(dict(preset("default"), tasks=tasks), semantic=False)
    args = train_job.parse_args(
        [
            "--algo",
            "sac",
            "--task",
            *tasks,
            "--seeds",
            "0",
            "--steps",
            "1",
            "--run-dir",
            "runs/x/sac/{task}/seed{seed}",
            "--mode",
            "batched",
            "--marker",
            "m.done",
        ]
    )
    for task in tasks:
        assert flowrl_study.task_slug(task) == task_slug(task)
        assert study.run_dir("sac", task, 0) == f"runs/default/sac/{task_slug(task)}/seed0"
        assert train_job.run_dir(args, task, 0) == f"runs/x/sac/{task_slug(task)}/seed0"


def test_defaults_come_from_the_schema_as_snakemake_fills_them():
    """A key a study leaves out takes the schema's `default:` (flowrl.study fills them the way snakemake's
    validate(config, schema, set_default=True) does), and loading never writes them into the caller's config."""
    from snakemake.utils import validate

    minimal = {k: preset("default")[k] for k in ("study", "algos", "tasks", "seeds", "steps")}
    partial = dict(minimal, resources={"gpu": 1}, software={"activate": "module load cuda"}, analysis={"reps": 9})
    for cfg in (minimal, partial, *(preset(n) for n in PRESETS)):
        before = copy.deepcopy(cfg)
        ours = flowrl_study.load_study(cfg, semantic=False).config
        assert cfg == before
        theirs = copy.deepcopy(cfg)
        validate(theirs, str(REPO / "workflow" / "schemas" / "study.schema.yaml"), set_default=True)
        assert ours == theirs
    filled = flowrl_study.load_study(partial, semantic=False).config
    assert filled["resources"]["gpu"] == 1 and filled["resources"]["mem_mb"] > 0  # set keys kept, the others filled
    assert filled["software"]["activate"] == "module load cuda" and filled["software"]["hb_activate"] == ""
    assert filled["analysis"]["reps"] == 9
    assert "reps" not in flowrl_study.load_study(minimal, semantic=False).config["analysis"]  # the analysis's own
    paper = flowrl_study.load_study(preset("paper"), semantic=False).config  # suite_resources: changes, no defaults
    assert filled["suite_resources"] == {} and paper["suite_resources"] == preset("paper")["suite_resources"]


def test_a_study_with_an_unknown_suite_is_refused_even_unchecked():
    """flowrl-status and flowrl-plan skip the semantic checks, but run directory names need a known suite."""
    with pytest.raises(flowrl_study.StudyError, match="Unknown task suite 'dmx'.*Did you mean 'dmc:cartpole-balance'"):
        flowrl_study.load_study(dict(preset("default"), tasks=["dmx:cartpole-balance"]), semantic=False)
    with pytest.raises(flowrl_study.StudyError, match="(?s)unknown algorithm 'sacc'.*Unknown task suite 'dmx'"):
        flowrl_study.load_study(dict(preset("default"), tasks=["dmx:cartpole-balance"], algos=["sacc"]))


def test_command_line_strings_are_typed_like_flowrl_train_parses_them():
    raw = {
        "seeds": ["0", "1"],
        "steps": "500",
        "overrides": {"agent.hidden_dim": "32", "device": "cpu", "agent.constraint": "false"},
        "tasks": ["dmc:x-y"],
    }
    out = flowrl_study.normalize(raw)
    assert out == {
        "seeds": [0, 1],
        "steps": 500,
        "overrides": {"agent.hidden_dim": 32, "device": "cpu", "agent.constraint": False},
        "tasks": ["dmc:x-y"],
    }
    args = flowrl_study.override_args(
        {
            "agent.hidden_dim": 64,
            "agent.constraint": False,
            "device": "cuda:0",
            "replay_recent_fraction": None,
            "lr": 0.0003,
        }
    )
    assert args == [
        "agent.hidden_dim=64",
        "agent.constraint=false",
        "device=cuda:0",
        "replay_recent_fraction=null",
        "lr=0.0003",
    ]


# ------------------------------------------------------------------------------------- end to end, locally
@pytest.mark.slow
@pytest.mark.subprocess
def test_small_study_end_to_end_then_nothing_is_retrained(tmp_path):
    study = write_study(
        tmp_path / "study.yaml",
        study="e2e",
        algos=["sac", "flowrl-h8"],
        tasks=["dmc:cartpole-balance", "dmc:point_mass-easy"],
        seeds=2,
        steps=600,
        eval_every=300,
        eval_episodes=1,
        overrides=TINY_OVERRIDES,
        variants={"flowrl-h8": {"algo": "flowrl", "overrides": {"agent.hidden_dim": 8}}},
        resources={"gpu": 0, "cpus_per_task": 1, "mem_mb": 1000, "runtime": 10},
        analysis={"reps": 50, "seed": 0},
    )
    proc = snakemake(["--cores", "2", "--configfile", str(study)], tmp_path, check=True)
    runs = tmp_path / "runs" / "e2e"
    for algo in ("sac", "flowrl-h8"):
        for slug in ("dmc_cartpole-balance", "dmc_point_mass-easy"):
            for seed in (0, 1):
                run = runs / algo / slug / f"seed{seed}"
                assert (run / "DONE").is_file() and eval_steps(run) == [0, 300, 600]
                assert (runs / "jobs" / algo / slug / f"seeds-{seed}.done").is_file()
                assert "=== done" in (runs / "logs" / algo / slug / f"seeds-{seed}.log").read_text()
    variant_cfg = yaml.safe_load((runs / "flowrl-h8" / "dmc_cartpole-balance" / "seed0" / "config.yaml").read_text())
    assert variant_cfg["algo"] == "flowrl" and variant_cfg["agent"]["hidden_dim"] == 8

    results = tmp_path / "results" / "e2e"
    tidy = pd.read_csv(results / "tidy.csv")
    ours = tidy[tidy["algo"].isin(["sac", "flowrl-h8"])]
    assert set(ours["algo"]) == {"sac", "flowrl-h8"}  # the variant is reported under its own name
    assert ours.groupby(["algo", "task"])["seed"].nunique().eq(2).all()
    assert (results / "summary.md").stat().st_size > 0
    assert list((results / "figures").glob("*.png")) and list((results / "tables").glob("*.csv"))

    # Nothing left to do; a lost job marker re-runs its job (target `runs`: every training job), which finds
    # the run finished and does not retrain it.
    again = snakemake(["--cores", "2", "--configfile", str(study)], tmp_path, check=True)
    assert "Nothing to be done" in again.stdout
    run = runs / "sac" / "dmc_cartpole-balance" / "seed0"
    eval_before = (run / "eval.csv").read_bytes()
    (runs / "jobs" / "sac" / "dmc_cartpole-balance" / "seeds-0.done").unlink()
    rerun = snakemake(["runs", "--cores", "2", "--configfile", str(study)], tmp_path, check=True)
    assert "already finished" in (runs / "logs" / "sac" / "dmc_cartpole-balance" / "seeds-0.log").read_text()
    assert job_counts(rerun.stdout).get("train") == 1
    assert (runs / "jobs" / "sac" / "dmc_cartpole-balance" / "seeds-0.done").is_file()
    assert len(sessions(run)) == 1 and (run / "eval.csv").read_bytes() == eval_before

    # The HTML report holds the study's figures and tables.
    snakemake(["--report", "report.html", "--configfile", str(study)], tmp_path, check=True)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "performance_profile" in html or any(p.stem in html for p in (results / "figures").glob("*.png"))

    # `figures` regenerates the tables and figures from the runs there are.
    (results / "summary.md").unlink()
    snakemake(["figures", "--cores", "1", "--configfile", str(study)], tmp_path, check=True)
    assert (results / "summary.md").is_file()
    assert proc.returncode == 0


@pytest.mark.subprocess
def test_a_second_job_for_the_same_runs_refuses_to_start(tmp_path):
    """E.g. Snakemake restarted while the first job still trains on SLURM: two trainers must never share a run."""
    import fcntl
    import subprocess

    marker = tmp_path / "jobs" / "seeds-0.done"
    marker.parent.mkdir(parents=True)
    with open(marker.with_suffix(".lock"), "w") as held:
        held.write("host=elsewhere pid=1 slurm_job=4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = subprocess.run(
            [
                *train_job_args("sac", "dmc:cartpole-balance", 0, 100),
                "--run-dir",
                str(tmp_path / "run{seed}"),
                "--marker",
                str(marker),
            ],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 75
    assert "another job is training these runs (host=elsewhere pid=1 slurm_job=4242)" in proc.stdout
    assert not (tmp_path / "run0").exists() and not marker.exists()


def test_batched_jobs_step_environments_in_processes_only_with_a_cpu_per_seed():
    from flowrl.subproc_env import available_cpus

    train_job = load_script("train_job")
    args = train_job.parse_args(
        (
            "--algo flowrl --task dmc:cartpole-balance --seeds 0 1 --steps 100 --run-dir runs/x/seed{seed} "
            "--mode batched --marker m.done"
        ).split()
    )
    both = [("dmc:cartpole-balance", 0), ("dmc:cartpole-balance", 1)]
    assert "--env-processes" in train_job.train_command(args, both, cpus=3)
    assert "--env-processes" not in train_job.train_command(args, both, cpus=2)
    assert "--env-processes" not in train_job.train_command(args, both[:1], cpus=3)  # single runs never
    # without `cpus`, the CPUs this process may run on decide
    assert ("--env-processes" in train_job.train_command(args, both)) == (available_cpus() > 2)


def test_task_pack_jobs_train_every_task_and_seed_in_one_process():
    train_job = load_script("train_job")
    args = train_job.parse_args(
        (
            "--algo flowrl --task dmc:dog-run dmc:dog-walk --seeds 0 1 --steps 100 --run-dir "
            "runs/x/flowrl/{task}/seed{seed} --mode batched --marker m.done -- agent.hidden_dim=8"
        ).split()
    )
    runs = [(t, s) for t in args.task for s in args.seeds]
    cmd = train_job.train_command(args, runs)
    assert cmd[cmd.index("--tasks") + 1 : cmd.index("--seeds")] == ["dmc:dog-run", "dmc:dog-walk"]
    assert cmd[cmd.index("--out") + 1] == "runs/x/flowrl/{task}/seed{seed}" and cmd[-1] == "agent.hidden_dim=8"
    assert train_job.run_dir(args, "dmc:dog-walk", 1) == "runs/x/flowrl/dmc_dog-walk/seed1"
    single = train_job.train_command(args, [("dmc:dog-walk", 1)])
    assert single[single.index("--out") + 1] == "runs/x/flowrl/dmc_dog-walk/seed1"
