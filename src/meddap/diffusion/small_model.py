"""The embedded small Stable Diffusion: its widths, its randomly initialised components, its pretraining.

A Stable Diffusion of the real architecture at reduced width: diffusers ``UNet2DConditionModel``
and ``AutoencoderKL``, a transformers ``CLIPTextModel`` and a ``CLIPTokenizer`` whose byte-level
BPE vocabulary is built offline (``meddap.diffusion.tokenizer``). It is saved with ``save_pretrained`` so
``StableDiffusionPipeline.from_pretrained(folder)`` loads it exactly like a downloaded SD v1.x
checkpoint folder, and every later rule goes through that same loader
(``meddap.diffusion.base_models.load_pipeline``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meddap.diffusion.base_models import BaseModelError
from meddap.diffusion.denoising import SD_SCHEDULE, encode_latents, encode_text, train_denoiser
from meddap.diffusion.pipeline_folder import save_pipeline_folder
from meddap.diffusion.tokenizer import build_tokenizer
from meddap.settings.stages import PretrainSettings


@dataclass
class SmallModelSpec:
    """Widths of the embedded small Stable Diffusion (same classes as SD v1.x, fewer channels)."""

    image_size: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_cross_attention_levels: tuple[bool, ...] = (False, True, False)
    text_width: int = 64
    text_layers: int = 2

    @classmethod
    def from_config(cls, config: dict) -> SmallModelSpec:
        spec = cls()
        for key, value in config.items():
            if not hasattr(spec, key):
                raise BaseModelError(f"base_model.small.{key}: unknown key; known: {sorted(vars(spec))}")
            setattr(spec, key, tuple(value) if isinstance(value, list) else value)
        if len(spec.unet_channels) != len(spec.unet_cross_attention_levels):
            raise BaseModelError(
                "base_model.small.unet_channels and unet_cross_attention_levels must have the same length"
            )
        return spec


def build_small_components(spec: SmallModelSpec, tokenizer_words: list[str], seed: int):
    """Randomly initialised VAE, text encoder, tokenizer and UNet of the SD v1.x classes."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tokenizer_words)
    groups = min(8, *spec.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
        block_out_channels=spec.vae_channels,
        latent_channels=spec.latent_channels,
        layers_per_block=1,
        norm_num_groups=groups,
        sample_size=spec.image_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=spec.text_width,
            intermediate_size=spec.text_width * 4,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=max(1, spec.text_width // 32),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=spec.text_width,
        )
    )
    down = tuple("CrossAttnDownBlock2D" if attn else "DownBlock2D" for attn in spec.unet_cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(spec.unet_cross_attention_levels))
    latent_size = spec.image_size // 2 ** (len(spec.vae_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=spec.latent_channels,
        out_channels=spec.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=spec.unet_channels,
        layers_per_block=1,
        cross_attention_dim=spec.text_width,
        attention_head_dim=8,
        norm_num_groups=min(32, *spec.unet_channels),
    )
    return vae, text_encoder, tokenizer, unet


def _cosine_lr(optimizer, steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_vae(
    vae, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, kl_weight: float = 1e-6
) -> list[float]:
    """Reconstruction + small KL training of the VAE; returns the loss history."""
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = _cosine_lr(optimizer, steps, warmup=max(1, steps // 20))
    losses = []
    vae.train()
    for _ in tqdm(range(steps), desc="pretrain VAE", mininterval=5):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        batch = images[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=None)).sample
        loss = torch.nn.functional.l1_loss(reconstruction, batch) + torch.nn.functional.mse_loss(reconstruction, batch)
        loss = loss + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    vae.eval()
    return losses


def corpus_tensor(image_paths: list[str], adjectives: list[str], size: int) -> torch.Tensor:
    """Pretraining images in [-1, 1], each with its caption adjective's image operation applied."""
    from meddap.data.images import load_array
    from meddap.diffusion.adjectives import apply_adjective

    if len(adjectives) != len(image_paths):
        raise ValueError(f"{len(adjectives)} adjectives for {len(image_paths)} pretraining images")
    arrays = np.stack(
        [apply_adjective(load_array(path, size), adjective) for path, adjective in zip(image_paths, adjectives)]
    )
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def pretrain_small_model(
    image_paths: list[str],
    captions: list[str],
    adjectives: list[str],
    out_dir: str | Path,
    settings: PretrainSettings,
    tokenizer_words: list[str],
    seed: int,
) -> dict:
    """Build the small SD (``settings.small`` widths at ``settings.image_size``), train VAE then
    UNet on ``image_paths`` with their captions, save it.

    ``settings.prediction_type`` "v_prediction" (as SD 2.x) makes the UNet predict the velocity, whose
    loss at high noise rewards knowing the image's global look (brightness, contrast, shape),
    which is what a caption's adjective and a class decide; epsilon leaves that loss tiny there.

    ``adjectives[i]`` is the image operation applied to image i before training (see
    ``meddap.diffusion.adjectives``; 'none' for none) and ``captions[i]`` its caption, which names it.
    Returns a summary (parameter counts, final losses, latent scaling factor) for the log.
    """
    from diffusers import DDPMScheduler, PNDMScheduler

    if len(captions) != len(image_paths):
        raise ValueError(f"{len(captions)} captions for {len(image_paths)} pretraining images")
    spec = SmallModelSpec.from_config({**settings.small, "image_size": settings.image_size})
    lr, batch_size, prediction_type = settings.lr, settings.batch_size, settings.prediction_type
    vae, text_encoder, tokenizer, unet = build_small_components(spec, tokenizer_words, seed)
    images = corpus_tensor(image_paths, adjectives, spec.image_size)
    vae_losses = train_vae(vae, images, settings.vae_steps, batch_size=16, lr=lr, seed=seed)
    # Latents of both flips, scaled to unit variance as SD's 0.18215 factor does for SD v1.x.
    means, stds = encode_latents(vae, torch.cat([images, images.flip(-1)]))
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    distinct = sorted(set(captions))
    embeddings = encode_text(tokenizer, text_encoder, distinct, torch.device("cpu"))
    per_image = torch.tensor([distinct.index(caption) for caption in captions])
    condition = embeddings[torch.cat([per_image, per_image])] if len(distinct) > 1 else embeddings
    uncondition = encode_text(tokenizer, text_encoder, [""], torch.device("cpu"))
    unet_losses = train_denoiser(
        unet,
        means * scaling,
        stds * scaling,
        condition,
        uncondition,
        settings.unet_steps,
        batch_size,
        lr,
        seed,
        description="pretrain UNet",
        noise_scheduler=DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type),
    )
    scheduler = PNDMScheduler(
        **SD_SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, prediction_type=prediction_type
    )
    save_pipeline_folder(out_dir, vae, text_encoder, tokenizer, unet, scheduler)
    return {
        "images": len(image_paths),
        "captions": len(distinct),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in text_encoder.parameters()),
        "vae_final_loss": float(np.mean(vae_losses[-20:])),
        "unet_final_loss": float(np.mean(unet_losses[-50:])),
        "latent_scaling_factor": scaling,
        "prediction_type": prediction_type,
    }
