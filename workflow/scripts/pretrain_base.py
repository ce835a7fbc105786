"""Rule pretrain_base: the small Stable Diffusion, trained on the training split, saved with save_pretrained."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import atomic_path, write_json  # noqa: E402
from meddap.diffusion import SmallModelSpec, pretrain_small_model, prompt_words  # noqa: E402
from meddap.settings import provenance  # noqa: E402

params = snakemake.params
settings = params.pretrain
manifest = pd.read_csv(snakemake.input.manifest)
train_paths = list(manifest.loc[manifest["split"] == "train", "path"])
spec = SmallModelSpec.from_config({**settings["small"], "image_size": settings["image_size"]})
words = prompt_words(list(params.classes), list(params.adjectives))
with atomic_path(snakemake.output[0]) as folder:
    info = pretrain_small_model(
        train_paths, folder, spec, words,
        vae_steps=settings["vae_steps"], unet_steps=settings["unet_steps"],
        batch_size=settings["batch_size"], lr=settings["lr"], seed=params.seed,
    )
    write_json(folder / "meddap_pretrain.json", {**info, **provenance(snakemake.config)})
log.info("pretrained small SD: %s", info)
