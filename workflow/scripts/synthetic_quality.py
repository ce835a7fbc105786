"""Rule synthetic_quality: Fréchet distance, precision/recall, fidelity, adjective effects, near copies."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.evidence.quality import quality_report  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402

params = snakemake.params
tables = quality_report(
    model_dirs=list(snakemake.input.models),
    manifest=pd.read_csv(snakemake.input.manifest),
    arms=list(params.arms),
    arm_shards={arm: list(dirs) for arm, dirs in params.arm_shards.items()},
    k=params.k,
)
for name in ("quality", "adjective_effect", "near_copies"):
    write_csv(snakemake.output[name], tables[name])
    log.info("%s:\n%s", name, tables[name].to_string(index=False))
