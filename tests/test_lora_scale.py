"""A LoRA file means what was trained, in meddap and in plain diffusers, for any alpha / rank."""

import json

import pytest
import torch

from meddap.diffusion.lora import ALPHA_FOLDED, LoraError, add_lora, apply_lora, check_lora_scale, save_lora


def unet_output(unet, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(
        1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=generator
    )
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), text).sample


@pytest.fixture(scope="module")
def trained(small_pipeline_dir, tmp_path_factory):
    """A rank-3, alpha-6 adapter with random (trained-like) weights, saved by meddap."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(small_pipeline_dir, subfolder="unet")
    base = unet_output(unet)
    torch.manual_seed(1)
    add_lora(unet, rank=3, alpha=6, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.2)
    expected = unet_output(unet)
    folder = tmp_path_factory.mktemp("lora") / "benign"
    folder.mkdir()
    save_lora(unet, folder, rank=3, alpha=6)
    (folder / "lora_info.json").write_text(json.dumps({"rank": 3, "alpha": 6.0, ALPHA_FOLDED: True}))
    return folder, base, expected


def test_the_adapter_changes_the_unet(trained):
    _, base, expected = trained
    assert (expected - base).abs().max() > 1e-2


def test_diffusers_load_lora_weights_reproduces_the_trained_unet(small_pipeline_dir, trained):
    from diffusers import StableDiffusionPipeline

    folder, _, expected = trained
    pipeline = StableDiffusionPipeline.from_pretrained(small_pipeline_dir)
    pipeline.load_lora_weights(str(folder))
    assert (unet_output(pipeline.unet) - expected).abs().max() <= 1e-5


def test_apply_lora_fused_reproduces_the_trained_unet(small_pipeline_dir, trained):
    from diffusers import StableDiffusionPipeline

    folder, _, expected = trained
    pipeline = StableDiffusionPipeline.from_pretrained(small_pipeline_dir)
    apply_lora(pipeline, folder)
    assert (unet_output(pipeline.unet) - expected).abs().max() <= 1e-5


def test_a_lora_saved_without_its_scale_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "lora_info.json").write_text(json.dumps({"rank": 3, "alpha": 6.0}))
    with pytest.raises(LoraError, match="Retrain it"):
        check_lora_scale(tmp_path)
    # alpha == rank needed no scale: such old files load as they are.
    (tmp_path / "lora_info.json").write_text(json.dumps({"rank": 4, "alpha": 4.0}))
    check_lora_scale(tmp_path)


def test_the_training_target_follows_the_base_models_prediction_type(small_pipeline_dir, tmp_path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from meddap.diffusion.denoising import SD_SCHEDULE, denoising_target, training_scheduler
    from meddap.diffusion.sampling import set_scheduler

    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    epsilon = DDPMScheduler(**SD_SCHEDULE)
    assert torch.equal(denoising_target(epsilon, latents, noise, timesteps), noise)
    velocity = DDPMScheduler(**SD_SCHEDULE, prediction_type="v_prediction")
    target = denoising_target(velocity, latents, noise, timesteps)
    alpha_bar = velocity.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    assert torch.allclose(target, alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents, atol=1e-6)
    # A v-prediction pipeline (SD 2.x style) built offline: LoRA training and generation read
    # the prediction type from its scheduler config.
    pipeline = StableDiffusionPipeline.from_pretrained(small_pipeline_dir)
    pipeline.scheduler = pipeline.scheduler.__class__.from_config(
        pipeline.scheduler.config, prediction_type="v_prediction"
    )
    pipeline.save_pretrained(tmp_path / "v_pipeline")
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path / "v_pipeline")
    assert training_scheduler(reloaded).config.prediction_type == "v_prediction"
    set_scheduler(reloaded, "dpm")
    assert reloaded.scheduler.config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    "pipeline_class",
    ["StableDiffusionXLPipeline", "StableDiffusion3Pipeline", "FluxPipeline", "StableDiffusionControlNetPipeline"],
)
def test_a_base_model_that_is_not_sd_1_or_2_is_refused_naming_its_class(tmp_path, pipeline_class):
    from meddap.diffusion.base_models import BaseModelError, check_base_model_folder

    folder = tmp_path / "model"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / name).mkdir(parents=True)
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": pipeline_class, "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(BaseModelError, match=f"holds a {pipeline_class}.*StableDiffusionPipeline"):
        check_base_model_folder(folder)


def test_the_small_models_own_folder_passes_the_check(small_pipeline_dir):
    from meddap.diffusion.base_models import check_base_model_folder

    assert check_base_model_folder(small_pipeline_dir) == small_pipeline_dir
