"""Rule generate_shard: one (arm, class, adjective, shard) of synthetic images + metadata.csv."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

from meddap.generate import generate_shard  # noqa: E402
from meddap.prompts import build_prompt  # noqa: E402
from meddap.settings import library_versions  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
settings = params.generation
prompt = build_prompt(wc.cls, wc.adjective, params.template, params.subjects)
log.info("arm %s: prompt %r, %d images", wc.arm, prompt, params.size)
metadata = generate_shard(
    params.base_model, snakemake.input.lora, snakemake.output[0], wc.cls, wc.adjective, int(wc.shard), prompt,
    shard_size=params.size, seed=params.seed, resolution=settings["resolution"], steps=settings["steps"],
    guidance_scale=settings["guidance_scale"], scheduler=settings["scheduler"], batch_size=settings["batch_size"],
    lora_scale=settings["lora_scale"], negative_prompt=params.negative, device=params.device,
    precision=params.precision,
    provenance={"versions": library_versions()},
    grayscale=settings["grayscale"], guidance_reference=settings["guidance_reference"],
    compile_unet=settings["compile"], arm=wc.arm,
)
log.info("wrote %d images", len(metadata))
