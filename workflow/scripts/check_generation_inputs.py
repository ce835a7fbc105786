"""Rule check_generation_inputs: the LoRA and base model of a shard load (headers only), before
the shard job starts and Snakemake deletes its old images."""

from pathlib import Path

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.provenance.lineage import default_cache  # noqa: E402
from meddap.provenance.preflight import check_generation_inputs, check_recorded_digests  # noqa: E402

params = snakemake.params
checked = check_generation_inputs(params.base_model, snakemake.input.lora, params.base_built_here)
log.info("%d safetensors files complete: %s", len(checked), ", ".join(map(str, checked)))
cache = default_cache()
compared = check_recorded_digests(params.base_model, snakemake.input.lora, params.base_built_here, cache)
cache.save()
log.info("%d files have their recorded sha256; the base model is the LoRA's", compared)
Path(snakemake.output[0]).write_text(f"{len(checked)} safetensors files checked, {compared} digests compared\n")
