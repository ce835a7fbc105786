# meddap: enlarge small labelled medical-image datasets with Stable Diffusion (LoRA per class)
# and measure, fold by fold, whether the synthetic images help classifiers.
#
#   snakemake --cores all                            # the embedded default (phantom + small SD)
#   snakemake --cores all --configfile study.yaml    # a study: `meddap init --data DIR` writes study.yaml
#
# config/config.yaml (the embedded default, found beside this Snakefile whatever the working
# directory) is loaded only when no --configfile is given: a study's config is then the whole config
# (keys left out take the schema's defaults), so nothing of the phantom and the small model's
# pretraining is inherited. As a `module` of another Snakefile, the config is the one given in the
# module statement (Snakemake skips this directive there).
from pathlib import Path

if not workflow.overwrite_configfiles:
    # A YAML mistake in it: the file, line and column (Snakemake's own message names neither).
    # Only where Snakemake reads it: a local file, not in a module (which skips this directive).
    try:
        from meddap.config.loading import ConfigError, read_config_file
    except ImportError:
        pass  # common.smk says what to install
    else:
        default_config = Path(f"{workflow.basedir}/config/config.yaml")
        if default_config.is_file() and not workflow.modifier.skip_configfile:
            try:
                read_config_file(default_config)
            except ConfigError as error:
                raise WorkflowError(str(error)) from None

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/phantom.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/diffusion.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/filter.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        checked(report_outputs()),


# The run's warm servers (meddap.runtime.warm: the imports its local jobs share) stop with it.
onsuccess:
    stop_warm_servers()


onerror:
    stop_warm_servers()
