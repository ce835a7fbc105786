"""Rule generate_shard: one (class, adjective, shard) of synthetic images + metadata.csv."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

from meddap.generate import generate_shard  # noqa: E402
from meddap.prompts import build_prompt  # noqa: E402
from meddap.settings import provenance  # noqa: E402

params, config, wc = snakemake.params, snakemake.config, snakemake.wildcards
settings = params.generation
prompt = build_prompt(wc.cls, wc.adjective, params.template, params.subjects)
log.info("prompt %r, %d images", prompt, params.size)
metadata = generate_shard(
    params.base_model, snakemake.input.lora, snakemake.output[0], wc.cls, wc.adjective, int(wc.shard), prompt,
    shard_size=params.size, seed=config["seed"], resolution=settings["resolution"], steps=settings["steps"],
    guidance_scale=settings["guidance_scale"], scheduler=settings["scheduler"], batch_size=settings["batch_size"],
    lora_scale=settings["lora_scale"], negative_prompt=params.negative, device=config["device"],
    precision=config["precision"], allow_hub=config["allow_hub"], provenance=provenance(config),
    grayscale=settings["grayscale"], guidance_reference=settings["guidance_reference"],
    compile_unet=settings["compile"],
)
log.info("wrote %d images", len(metadata))
