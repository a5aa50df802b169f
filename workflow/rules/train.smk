# Training: one job per (algorithm, task, seed pack). The output is the workflow's job marker, never a run
# directory, so Snakemake never deletes a run (or its checkpoints); train_job.py writes the marker only when
# every run of the job holds its DONE marker. HumanoidBench tasks get their own rule (the same but for its
# wildcard_constraints and conda env) for their own software.

TRAIN_CMD = (
    "{params.activate}"
    "export MUJOCO_GL=${{MUJOCO_GL:-disable}} PYTHONPATH={params.repo}${{PYTHONPATH:+:$PYTHONPATH}}; "
    "python {params.script} {params.args} >> {log} 2>&1"
)


rule train:
    output:
        f"{RUNS}/jobs/{{algo}}/{{task}}/seeds-{{seeds}}.done",
    log:
        f"{RUNS}/logs/{{algo}}/{{task}}/seeds-{{seeds}}.log",
    wildcard_constraints:
        algo=ALGO_PATTERN,
        task=MAIN_TASK_PATTERN,
    conda:
        "../envs/flowrl.yaml"
    threads: res_threads
    resources:
        **TRAIN_RESOURCES,
    params:
        args=train_params,
        activate=lambda wc: activation(job_of(wc)),
        repo=REPO,
        script=SCRIPTS / "train_job.py",
    shell:
        TRAIN_CMD


use rule train as train_hb with:
    wildcard_constraints:
        algo=ALGO_PATTERN,
        task=HB_TASK_PATTERN,
    conda:
        "../envs/humanoidbench.yaml"


rule runs:
    """Every training run of the study, without aggregating (e.g. on a cluster, aggregate elsewhere)."""
    input:
        all_markers(),
