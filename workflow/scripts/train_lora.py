"""Rule train_lora: one LoRA of one generative arm (diffusers format, pytorch_lora_weights.safetensors)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.data.arms import arm_training_rows  # noqa: E402
from meddap.diffusion.lora import train_lora  # noqa: E402
from meddap.runtime.seeding import derive_seed  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.choices import SHARED_LORA  # noqa: E402
from meddap.settings.stages import LoraSettings, RuntimeSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
settings = LoraSettings.from_params(params.lora)
runtime = RuntimeSettings.from_params(params.runtime)
# Only the arm's originals: for fold k, the training split without fold k's validation images.
train = arm_training_rows(pd.read_csv(snakemake.input.manifest), wc.arm)
if wc.lora == SHARED_LORA:
    # One LoRA for every class: each image keeps its own class prompt.
    paths = list(train["path"])
    prompt = [params.prompts[cls] for cls in train["class"]]
    seed = derive_seed(params.seed, "lora", "shared")
    log.info("arm %s: one shared LoRA on %d images of %d classes", wc.arm, len(paths), train["class"].nunique())
else:
    paths = list(train.loc[train["class"] == wc.lora, "path"])
    prompt = params.prompts[wc.lora]
    seed = derive_seed(params.seed, "lora", wc.lora)
    log.info("arm %s: LoRA for %s on %d images with prompt %r", wc.arm, wc.lora, len(paths), prompt)
info = train_lora(
    params.base_model,
    paths,
    prompt,
    snakemake.output[0],
    settings,
    seed,
    runtime,
    checkpoint_dir=params.checkpoint_dir,
    provenance={"arm": wc.arm, "seed": seed, "lora": params.lora, "versions": library_versions()},
)
log.info("trainable parameters: %d (%.4f%% of the UNet)", info["trainable_parameters"], 100 * info["trainable_share"])
