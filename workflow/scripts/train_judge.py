"""Rule train_judge: the filter's judge of one generative arm (results/judges/<arm>)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.classify.judge import train_judge  # noqa: E402
from meddap.runtime.seeding import judge_seed  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.stages import ClassifierSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
seed = judge_seed(params.seed, params.architecture, wc.arm)
log.info("judge of arm %s: %s, seed %d, %s (the last epoch kept)", wc.arm, params.architecture, seed, params.classifier)
history = train_judge(
    pd.read_csv(snakemake.input.manifest),
    wc.arm,
    snakemake.output[0],
    classes=list(params.classes),
    arch=params.architecture,
    settings=ClassifierSettings.from_params(params.classifier),
    seed=seed,
    device=params.device,
    provenance={"versions": library_versions(), "classifier": params.classifier},
    lineage_inputs={"manifest": snakemake.input.manifest},
)
log.info("history:\n%s", history.to_string(index=False))
