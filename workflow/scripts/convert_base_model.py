"""Rule convert_base_model: a single-file SD v1.x checkpoint -> the diffusers folder every job reads."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.diffusion.base_models import convert_single_file  # noqa: E402

tokenizer = snakemake.input.tokenizer[0] if snakemake.input.tokenizer else None
source = convert_single_file(snakemake.input.checkpoint, snakemake.output[0], tokenizer_folder=tokenizer)
log.info(
    "converted %s (sha256 %s): UNet widths %s, %d parameters; tokenizer: %s",
    source["checkpoint"],
    source["sha256"],
    source["unet_block_out_channels"],
    source["unet_parameters"],
    source["tokenizer"],
)
