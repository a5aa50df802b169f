# Aggregation: the results pipeline (python -m flowrl.analysis) over the study's runs -> results/<study>/.

AGGREGATE_CMD = (
    "export PYTHONPATH={params.repo}${{PYTHONPATH:+:$PYTHONPATH}}; "
    "python {params.script} --study-json {params.study_json:q} --runs {params.runs} --out {params.out} "
    "--work {params.work} >> {log} 2>&1"
)


localrules:
    aggregate,
    figures,
    runs,


rule aggregate:
    """Tables, figures and summary of a finished study (reruns when runs are added)."""
    input:
        all_markers(),
    output:
        tidy=report(f"{RESULTS}/tidy.csv", category="Data", caption="../report/tidy.rst"),
        summary=report(f"{RESULTS}/summary.md", category="Summary", caption="../report/summary.rst"),
        tables=report(
            directory(f"{RESULTS}/tables"), patterns=["{name}.csv"], category="Tables", caption="../report/tables.rst"
        ),
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            category="Figures",
            caption="../report/figures.rst",
        ),
    log:
        f"{RUNS}/logs/aggregate.log",
    conda:
        "../envs/flowrl.yaml"
    params:
        study_json=aggregate_params(),
        runs=lambda wildcards, input: RUNS,
        out=lambda wildcards, output: Path(output.tidy).parent,
        work=f".snakemake/flowrl-aggregate/{S}",
        repo=REPO,
        script=SCRIPTS / "aggregate.py",
    shell:
        AGGREGATE_CMD


rule figures:
    """Regenerate tables and figures from the runs there are now (finished or not); trains nothing."""
    log:
        f"{RUNS}/logs/figures.log",
    conda:
        "../envs/flowrl.yaml"
    params:
        study_json=aggregate_params(),
        runs=RUNS,
        out=RESULTS,
        work=f".snakemake/flowrl-aggregate/{S}",
        repo=REPO,
        script=SCRIPTS / "aggregate.py",
    shell:
        AGGREGATE_CMD + " && tail -n 3 {log}"
