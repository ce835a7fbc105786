"""Writing Stable Diffusion components as the diffusers folder every job reads (shared by the SD v1.5
architecture builder and the small embedded model)."""

from __future__ import annotations

from pathlib import Path


def save_pipeline_folder(out_dir: str | Path, vae, text_encoder, tokenizer, unet, scheduler) -> Path:
    """Write SD components as a diffusers ``StableDiffusionPipeline`` folder (no safety checker), safetensors."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)
