# The study: config loading, validation, and lookups shared by the rules.
import json
import os
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, update_config

# Snakemake puts the Snakefile's directory, the repository root, first on sys.path: this checkout's flowrl.
from flowrl import study as flowrl_study

min_version("9.0")

REPO = Path(workflow.basedir)
SCRIPTS = REPO / "workflow" / "scripts"
DEFAULT_STUDY = REPO / "config" / "default.yaml"


def load_study_config():
    """config/default.yaml unless --configfile is given (never merged with it); --config values on top."""
    if workflow.overwrite_configfiles:
        return dict(config)
    base = yaml.safe_load(DEFAULT_STUDY.read_text())
    update_config(base, dict(config))
    return base


os.environ.setdefault("MUJOCO_GL", "disable")  # checking dmc: task names imports dm_control; nothing renders
# --config plan=true: print the study's compute plan (flowrl-plan) and run nothing. Not a study key.
PLAN = str(config.pop("plan", False)).lower() in ("true", "1", "yes")
_study_config = load_study_config()
config.clear()
config.update(_study_config)
try:
    # Names, tasks and override keys are checked once, in the main process (not again inside every job).
    STUDY = flowrl_study.load_study(config, semantic=workflow.is_main_process)
except flowrl_study.StudyError as exc:
    raise WorkflowError(str(exc)) from None

S = STUDY.name
if PLAN and workflow.is_main_process:
    from flowrl.plan import plan_text

    try:
        cores = workflow.resource_settings.cores  # --cores N
        print(
            plan_text(
                STUDY,
                cores=cores if isinstance(cores, int) else None,
                label="snakemake --config plan=true; nothing runs",
            )
        )
    except ValueError as exc:
        raise WorkflowError(f"plan: {exc}") from None
RUNS = f"runs/{S}"
RESULTS = f"results/{S}"

_batched_cache = {}


def batched_ok(algo):
    if algo not in _batched_cache:
        _batched_cache[algo] = flowrl_study.batched_supported(algo)
    return _batched_cache[algo]


# batched_ok (which imports flowrl) is only asked about jobs with several seeds.
TRAIN_JOBS = {(j.algo, j.slug, j.seeds_label): j for j in STUDY.jobs(batched_ok)}


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True)) or "(?!)"


ALGO_PATTERN = _alternatives(STUDY.algos)
HB_TASK_PATTERN = _alternatives(j.slug for j in TRAIN_JOBS.values() if j.suite == "hb")
MAIN_TASK_PATTERN = _alternatives(j.slug for j in TRAIN_JOBS.values() if j.suite != "hb")


wildcard_constraints:
    seeds=r"\d+(-\d+)*",


def job_of(wildcards):
    key = (wildcards.algo, wildcards.task, wildcards.seeds)
    if key not in TRAIN_JOBS:
        raise WorkflowError(f"no training job {key} in study {S}")
    return TRAIN_JOBS[key]


def job_marker(job):
    return f"{RUNS}/jobs/{job.algo}/{job.slug}/seeds-{job.seeds_label}.done"


def all_markers():
    return [job_marker(j) for j in TRAIN_JOBS.values()]


def uses_conda():
    methods = workflow.deployment_settings.deployment_method or ()
    return any(str(getattr(m, "name", m)).lower() == "conda" for m in methods)


def activation(job):
    """Shell prefix run before training: software.activate, plus software.hb_activate for hb: tasks
    unless the conda env of the rule is used."""
    sw = STUDY.config["software"]
    parts = [sw.get("activate", "")]
    if job.suite == "hb" and not uses_conda():
        parts.append(sw.get("hb_activate", ""))
    text = "; ".join(p.strip() for p in parts if p and p.strip())
    return f"{text}; " if text else ""


def train_params(wildcards):
    job = job_of(wildcards)
    args = [
        "--algo",
        job.base_algo,
        "--task",
        *job.tasks,
        "--seeds",
        *map(str, job.seeds),
        "--steps",
        str(job.steps),
        "--run-dir",
        f"{RUNS}/{job.algo}/{{task}}/seed{{seed}}",
        "--mode",
        job.pack_mode,
        "--marker",
        job_marker(job),
        "--",
        *flowrl_study.override_args(job.overrides),
    ]
    return flowrl_study.shell_quote_all(args)


def _resource(name):
    return lambda wildcards: job_of(wildcards).resources[name]


# Only resources some job sets are declared (an unset slurm_partition stays the profile's/cluster's default).
TRAIN_RESOURCES = {name: _resource(name) for name in sorted({n for j in TRAIN_JOBS.values() for n in j.resources})}


def res_threads(wildcards):
    return job_of(wildcards).resources["cpus_per_task"]


def aggregate_params():
    """The study as aggregate.py needs it: expected runs, run directories, analysis settings."""
    runs = {
        algo: {task: {str(seed): STUDY.run_dir(algo, task, seed) for seed in STUDY.seeds} for task in STUDY.tasks}
        for algo in STUDY.algos
    }
    return json.dumps({"expected": STUDY.expected(), "runs": runs, "analysis": STUDY.config["analysis"]})
