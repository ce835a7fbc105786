"""A Stable Diffusion v1.5-architecture folder (real component configs, reduced width, random
weights, save_pretrained) goes through the workflow's loader, LoRA training and generation
unchanged, as a downloaded SD v1.5 checkpoint would."""

import json

import pandas as pd
import pytest
import torch
from PIL import Image

from meddap.diffusion.sd15 import SD15_TEXT, SD15_UNET, SD15_VAE, build_sd15_pipeline, sd15_components
from meddap.settings.stages import LoraSettings, SamplingSettings


def test_full_width_configs_are_stable_diffusion_v1_5():
    with torch.device("meta"):
        vae, text_encoder, _, unet, scheduler = sd15_components(width_divisor=1)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(unet) == 859_520_964  # runwayml/stable-diffusion-v1-5 unet
    assert count(vae) == 83_653_863
    assert count(text_encoder) == 123_060_480  # CLIP ViT-L/14 text tower
    assert type(scheduler).__name__ == "PNDMScheduler" and scheduler.config.beta_schedule == "scaled_linear"


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    return build_sd15_pipeline(tmp_path_factory.mktemp("sd15") / "stable-diffusion-v1-5-w10", width_divisor=10, seed=0)


def test_folder_has_the_layout_and_configs_of_a_downloaded_checkpoint(sd15_folder):
    index = json.loads((sd15_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    unet = json.loads((sd15_folder / "unet" / "config.json").read_text())
    assert tuple(unet["down_block_types"]) == SD15_UNET["down_block_types"] and unet["layers_per_block"] == 2
    assert unet["block_out_channels"] == [32, 64, 128, 128]
    vae = json.loads((sd15_folder / "vae" / "config.json").read_text())
    assert vae["scaling_factor"] == SD15_VAE["scaling_factor"] and len(vae["block_out_channels"]) == 4
    text = json.loads((sd15_folder / "text_encoder" / "config.json").read_text())
    assert text["num_hidden_layers"] == SD15_TEXT["num_hidden_layers"] and text["vocab_size"] == 49408
    assert (sd15_folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_workflow_loader_lora_training_and_generation_accept_it(sd15_folder, tmp_path):
    from meddap.config.resolve import resolve
    from meddap.data.phantom import DEFAULT_DEVICES, simulate_case
    from meddap.diffusion.base_models import load_pipeline
    from meddap.diffusion.generate import generate_shard
    from meddap.diffusion.lora import LORA_WEIGHT_NAME, train_lora

    pipeline = load_pipeline(str(sd15_folder), torch.device("cpu"))
    assert type(pipeline.unet).__name__ == "UNet2DConditionModel"
    # The config resolver accepts the folder as base_model.path (no pretraining, no network).
    import yaml

    config = yaml.safe_load(open("config/config.yaml"))
    config["base_model"] = {
        **config["base_model"],
        "path": str(sd15_folder),
        "pretrain": {**config["base_model"]["pretrain"], "enabled": False},
    }
    from snakemake.utils import validate

    validate(config, "workflow/schemas/config.schema.yaml")
    settings = resolve(config)
    assert not settings.pretrain and settings.base_model == str(sd15_folder)

    images = []
    for i in range(3):
        path = tmp_path / f"benign ({i}).png"
        Image.fromarray(simulate_case("benign", DEFAULT_DEVICES["linear-L12"], seed=i, image_size=64).image).save(path)
        images.append(str(path))
    prompt = "an ultrasound photo of benign tumor in breast"
    settings = LoraSettings(rank=4, steps=2, batch_size=2, lr=1e-4, resolution=64)
    info = train_lora(str(sd15_folder), images, prompt, tmp_path / "lora", settings, seed=0)
    assert (tmp_path / "lora" / LORA_WEIGHT_NAME).is_file()
    # SD v1.5's layout: 16 attention blocks with to_q/k/v/out.0 in self- and cross-attention.
    assert info["trainable_parameters"] > 0 and info["trainable_share"] < 0.05
    metadata = generate_shard(
        str(sd15_folder),
        tmp_path / "lora",
        tmp_path / "shard000",
        "benign",
        "bright",
        0,
        "a bright ultrasound photo of benign tumor in breast",
        shard_size=2,
        seed=42,
        sampling=SamplingSettings(resolution=64, steps=2, guidance_scale=7.5, batch_size=2),
    )
    assert len(metadata) == 2
    for name in metadata["file"]:
        with Image.open(tmp_path / "shard000" / name) as image:
            assert image.size == (64, 64)
    assert list(pd.read_csv(tmp_path / "shard000" / "metadata.csv")["seed"]) == list(metadata["seed"])
