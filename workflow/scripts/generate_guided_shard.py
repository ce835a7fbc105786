"""Rule generate_guided_shard: one (arm, class, adjective, shard) of guided images + metadata.csv."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.data.arms import arm_training_rows  # noqa: E402
from meddap.diffusion.generate import generate_guided_shard  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.stages import RuntimeSettings, SamplingSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
training = arm_training_rows(pd.read_csv(snakemake.input.manifest), wc.arm)
candidates = list(training.loc[training["class"] == wc.cls, "path"])
log.info(
    "arm %s: prompt %r, %d images from %d training originals, strength %s",
    wc.arm,
    params.prompt,
    params.size,
    len(candidates),
    params.strength,
)
metadata = generate_guided_shard(
    params.base_model,
    snakemake.input.lora,
    snakemake.output[0],
    wc.cls,
    wc.adjective,
    int(wc.shard),
    params.prompt,
    shard_size=params.size,
    first_index=params.first_index,
    candidates=candidates,
    strength=list(params.strength),
    seed=params.seed,
    sampling=SamplingSettings.from_params(params.sampling),
    arm=wc.arm,
    runtime=RuntimeSettings.from_params(params.runtime),
    negative_prompt=params.negative,
    provenance={"versions": library_versions()},
)
log.info("wrote %d images", len(metadata))
