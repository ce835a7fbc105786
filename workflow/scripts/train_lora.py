"""Rule train_lora: one class's LoRA (diffusers format, pytorch_lora_weights.safetensors)."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.lora import train_lora  # noqa: E402
from meddap.prompts import training_prompt  # noqa: E402
from meddap.seeding import derive_seed  # noqa: E402
from meddap.settings import provenance  # noqa: E402

params, config = snakemake.params, snakemake.config
settings = params.lora
manifest = pd.read_csv(snakemake.input.manifest)
train = manifest[manifest["split"] == "train"]
if snakemake.rule == "train_lora_shared":
    # One LoRA for every class: each image keeps its own class prompt.
    paths = list(train["path"])
    prompt = [training_prompt(cls, params.template, params.subjects) for cls in train["class"]]
    seed = derive_seed(config["seed"], "lora", "shared")
    log.info("training one shared LoRA on %d images of %d classes", len(paths), train["class"].nunique())
else:
    cls = snakemake.wildcards.cls
    paths = list(train.loc[train["class"] == cls, "path"])
    prompt = training_prompt(cls, params.template, params.subjects)
    seed = derive_seed(config["seed"], "lora", cls)
    log.info("training LoRA for %s on %d images with prompt %r", cls, len(paths), prompt)
info = train_lora(
    params.base_model, paths, prompt, snakemake.output[0],
    rank=settings["rank"], alpha=settings["alpha"], target_modules=settings["target_modules"],
    steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
    resolution=settings["resolution"], flip=settings["flip"], seed=seed,
    device=config["device"], precision=config["precision"],
    checkpoint_every=settings["checkpoint_every"], checkpoint_dir=params.checkpoint_dir,
    allow_hub=config["allow_hub"], provenance=provenance(config, seed),
    condition_dropout=settings["condition_dropout"], timestep_bias=settings["timestep_bias"],
)
log.info("trainable parameters: %d (%.4f%% of the UNet)", info["trainable_parameters"], 100 * info["trainable_share"])
