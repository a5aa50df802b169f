# flowrl-bench study workflow: algorithms x tasks x seeds -> runs/<study>/, then results/<study>/.
#
#   snakemake --cores 2                                        # the default study (config/default.yaml), locally
#   snakemake --cores 2 --configfile config/paper.yaml -n      # what the paper study would run
#   snakemake --cores 32 --profile slurm --configfile config/paper.yaml   # on SLURM (fill in profiles/slurm/)
#   snakemake figures                                          # tables and figures from the runs there are
#   snakemake --report report.html                             # HTML report of the study's tables and figures
#   snakemake --configfile config/paper.yaml --config plan=true   # jobs, env steps, device-hours; runs nothing
#
# See docs/workflow.md.


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        [] if PLAN else rules.aggregate.output,
