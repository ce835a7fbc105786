"""Rule generate_shard: one (arm, class, adjective, shard) of synthetic images + metadata.csv."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.diffusion.generate import generate_shard  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.stages import RuntimeSettings, SamplingSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
log.info("arm %s: prompt %r, %d images", wc.arm, params.prompt, params.size)
metadata = generate_shard(
    params.base_model,
    snakemake.input.lora,
    snakemake.output[0],
    wc.cls,
    wc.adjective,
    int(wc.shard),
    params.prompt,
    shard_size=params.size,
    seed=params.seed,
    sampling=SamplingSettings.from_params(params.sampling),
    runtime=RuntimeSettings.from_params(params.runtime),
    negative_prompt=params.negative,
    arm=wc.arm,
    provenance={"versions": library_versions()},
)
log.info("wrote %d images", len(metadata))
