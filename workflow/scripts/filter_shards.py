"""Rule filter_shards: results/filter/<stream>/<arm>.csv, the judge's verdict on each image."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.classify.judge import filter_arm  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402
from meddap.settings.stages import FilterSettings  # noqa: E402

settings = FilterSettings.from_params(snakemake.params.filter)
verdicts = filter_arm(
    list(snakemake.input.shards),
    snakemake.input.judge,
    pd.read_csv(snakemake.input.manifest),
    snakemake.wildcards.arm,
    settings,
    device=snakemake.params.device,
)
write_csv(snakemake.output[0], verdicts)
log.info(
    "%s, arm %s: kept or dropped per class:\n%s",
    snakemake.wildcards.stream,
    snakemake.wildcards.arm,
    verdicts.assign(reason=verdicts["reason"].replace("", "kept")).groupby(["class", "reason"]).size().to_string(),
)
