"""A Stable Diffusion v1.5-architecture pipeline with random weights, at full or reduced width.

The component configurations are those of runwayml/stable-diffusion-v1-5 (unet/, vae/,
text_encoder/ and scheduler/ config.json); ``width_divisor`` divides every channel width (and
the text encoder's) while the depth, block types, attention layout and schedules stay. A folder
written by ``build_sd15_pipeline`` is what a downloaded SD v1.5 checkpoint looks like to the
workflow, so tests can prove that the loader, LoRA training and generation accept one, and the
benchmark can time full-size arithmetic without downloading weights. The tokenizer is the
offline one (meddap.diffusion.build_tokenizer): the real CLIP BPE vocabulary cannot be built
offline, and the text encoder keeps SD's 49408-token embedding table all the same.
"""

from __future__ import annotations

from pathlib import Path

import torch

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
)


def sd15_components(width_divisor: int = 1, tokenizer_words: list[str] | None = None, seed: int = 0):
    """(vae, text_encoder, tokenizer, unet, scheduler) of the SD v1.5 architecture, random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from meddap.diffusion import build_tokenizer

    if width_divisor < 1 or any((c // width_divisor) % 32 or c % width_divisor for c in SD15_UNET["block_out_channels"]):
        raise ValueError(f"width_divisor must keep the UNet widths whole multiples of 32 (1, 2, 5 or 10), got {width_divisor}")
    torch.manual_seed(seed)

    def multiple_of(width: float, step: int) -> int:
        return max(step, int(round(width / step)) * step)

    unet_config = {**SD15_UNET, "block_out_channels": tuple(c // width_divisor for c in SD15_UNET["block_out_channels"])}
    text_width = multiple_of(SD15_TEXT["hidden_size"] / width_divisor, 64)  # CLIP heads are 64 wide
    unet_config["cross_attention_dim"] = text_width
    vae_config = {**SD15_VAE, "block_out_channels": tuple(multiple_of(c / width_divisor, 32) for c in SD15_VAE["block_out_channels"])}
    tokenizer = build_tokenizer(tokenizer_words or ["benign", "malignant", "normal", "tumor", "no"])
    text_config = CLIPTextConfig(
        **{
            **SD15_TEXT,
            "hidden_size": text_width,
            "intermediate_size": 4 * text_width,
            "projection_dim": text_width,
            "num_attention_heads": text_width // 64,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(text_config)
    return vae, text_encoder, tokenizer, unet, PNDMScheduler(**SD15_SCHEDULER)


def build_sd15_pipeline(out_dir: str | Path, width_divisor: int = 1, tokenizer_words: list[str] | None = None, seed: int = 0) -> Path:
    """Write a random-weight SD v1.5-architecture pipeline folder with ``save_pretrained``."""
    from diffusers import StableDiffusionPipeline

    vae, text_encoder, tokenizer, unet, scheduler = sd15_components(width_divisor, tokenizer_words, seed)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out_dir = Path(out_dir)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
