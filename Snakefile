# meddap: enlarge small labelled medical-image datasets with Stable Diffusion (LoRA per class)
# and measure, fold by fold, whether the synthetic images help classifiers.
#
#   snakemake --cores all                          # the embedded default (phantom + small SD)
#   snakemake --cores all --configfile my.yaml     # your dataset and SD v1.x checkpoint


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/phantom.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
