"""Stable Diffusion base models: build and pretrain the small embedded one, load any SD v1.x folder.

The embedded default is a Stable Diffusion of the real architecture at reduced width: diffusers
``UNet2DConditionModel`` and ``AutoencoderKL``, a transformers ``CLIPTextModel`` and a
``CLIPTokenizer`` whose byte-level BPE vocabulary is built here, offline. It is saved with
``save_pretrained`` so ``StableDiffusionPipeline.from_pretrained(folder)`` loads it exactly like a
downloaded SD v1.x checkpoint folder, and every later rule goes through that same loader.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meddap.base_models import SUPPORTED_PIPELINES, BaseModelError, check_base_model_folder  # noqa: F401 (re-exported)
from meddap.prompts import GENERIC_PROMPT, prompt_words  # noqa: F401 (prompt_words: re-exported)
from meddap.seeding import derive_seed

log = logging.getLogger(__name__)

# The SD v1.x noise schedule (scaled-linear betas); the small model uses it too so LoRA training
# and sampling code is the same for both.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


# ---------------------------------------------------------------- devices and precision
def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """fp32 on CPU; bf16 (or fp16 when asked, or when bf16 is unsupported) on CUDA."""
    if device.type != "cuda" or precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---------------------------------------------------------------- offline CLIP tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP reversible byte -> printable-unicode table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def learn_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary whose merges spell every word in ``words`` as one token.

    Every byte (alone and as a word end ``</w>``) is in the vocabulary, so any text tokenizes;
    the words of the prompt vocabulary become single tokens, as in the real CLIP vocabulary.
    """
    byte_chars = list(_bytes_to_unicode().values())
    vocab_tokens = byte_chars + [char + "</w>" for char in byte_chars]
    sequences: Counter[tuple[str, ...]] = Counter()
    for word in words:
        symbols = [_bytes_to_unicode()[b] for b in word.lower().encode("utf-8")]
        if symbols:
            sequences[tuple(symbols[:-1]) + (symbols[-1] + "</w>",)] += 1
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for sequence, count in sequences.items():
            for pair in zip(sequence, sequence[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        vocab_tokens.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for sequence, count in sequences.items():
            out, i = [], 0
            while i < len(sequence):
                if i + 1 < len(sequence) and (sequence[i], sequence[i + 1]) == best:
                    out.append(sequence[i] + sequence[i + 1])
                    i += 2
                else:
                    out.append(sequence[i])
                    i += 1
            merged[tuple(out)] += count
        sequences = merged
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    return vocab, merges


def build_tokenizer(words: list[str], max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = learn_bpe(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


# ---------------------------------------------------------------- the small model
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
    def from_config(cls, config: dict) -> "SmallModelSpec":
        spec = cls()
        for key, value in config.items():
            if not hasattr(spec, key):
                raise BaseModelError(f"base_model.small.{key}: unknown key; known: {sorted(vars(spec))}")
            setattr(spec, key, tuple(value) if isinstance(value, list) else value)
        if len(spec.unet_channels) != len(spec.unet_cross_attention_levels):
            raise BaseModelError("base_model.small.unet_channels and unet_cross_attention_levels must have the same length")
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


def images_to_tensor(paths: list[str], size: int) -> torch.Tensor:
    """Images as a float tensor in [-1, 1], shape (N, 3, size, size)."""
    from meddap.images import load_array

    arrays = np.stack([load_array(path, size) for path in paths])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


def _cosine_lr(optimizer, steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, kl_weight: float = 1e-6) -> list[float]:
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


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of ``images`` (unscaled)."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        dist = vae.encode(images[start : start + batch_size].to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def train_denoiser(
    unet,
    latent_means: torch.Tensor,
    latent_stds: torch.Tensor,
    condition: torch.Tensor,
    uncondition: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    parameters=None,
    condition_dropout: float = 0.1,
    description: str = "train UNet",
    start_step: int = 0,
    optimizer=None,
    on_step=None,
    timestep_bias: float = 1.0,
    noise_scheduler=None,
    losses: list[float] | None = None,
) -> list[float]:
    """Denoising training on cached latents, with the base model's noise schedule and target.

    ``noise_scheduler`` (a ``DDPMScheduler``, default the SD v1.x schedule with epsilon
    prediction) noises the latents (``add_noise``) and says what the UNet predicts: the noise
    (``prediction_type`` epsilon, SD 1.x) or the velocity (v_prediction, SD 2.x 768 and the
    embedded small model), see ``denoising_target``.

    ``latent_means``/``latent_stds`` are scaled VAE posteriors (a fresh latent is sampled from
    them each step, as encoding every step would). ``condition`` is one text embedding
    (1, tokens, width) for every latent, or one per latent (N, tokens, width), e.g. each image's
    class prompt for a LoRA shared by all classes; with probability ``condition_dropout`` the empty prompt's embedding is
    used instead so that classifier-free guidance works. ``parameters`` are the ones to train
    (default: all of the UNet). ``on_step(step, optimizer)`` is called after each step.
    Each step's loss is appended to ``losses`` (a new list by default), which is returned: a
    caller's ``on_step`` can read the losses so far from the list it passed.
    ``timestep_bias`` > 1 draws noisier timesteps more often (t = T * u**(1/bias)): a class's
    global shape is decided at high noise, where the epsilon loss is otherwise tiny.
    """
    from diffusers import DDPMScheduler
    from tqdm import tqdm

    device = next(unet.parameters()).device
    noise_scheduler = noise_scheduler or DDPMScheduler(**SD_SCHEDULE)
    parameters = list(parameters if parameters is not None else unet.parameters())
    optimizer = optimizer or torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    losses = [] if losses is None else losses
    unet.train()
    amp_dtype = next((p.dtype for p in unet.parameters() if not p.requires_grad), torch.float32)
    use_amp = device.type == "cuda" and amp_dtype in (torch.float16, torch.bfloat16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one batch shape for every step
    for step in tqdm(range(start_step, steps), desc=description, mininterval=5, initial=start_step, total=steps):
        # One generator per step: a run resumed from a checkpoint at step k draws what an
        # uninterrupted run draws from step k on.
        generator = torch.Generator().manual_seed(derive_seed(seed, "denoiser-step", step))
        index = torch.randint(0, len(latent_means), (batch_size,), generator=generator)
        latents = latent_means[index] + latent_stds[index] * torch.randn(latent_means[index].shape, generator=generator)
        latents = latents.to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        n_train = noise_scheduler.config.num_train_timesteps
        uniform = torch.rand(batch_size, generator=generator)
        timesteps = (n_train * uniform ** (1.0 / timestep_bias)).long().clamp(max=n_train - 1).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = denoising_target(noise_scheduler, latents, noise, timesteps)
        drop = (torch.rand(batch_size, generator=generator) < condition_dropout).to(device)
        chosen_condition = condition[index] if len(condition) > 1 else condition
        text = torch.where(drop[:, None, None], uncondition.to(device), chosen_condition.to(device))
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            prediction = unet(noisy.to(unet.dtype), timesteps, text.to(unet.dtype)).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, optimizer)
    unet.eval()
    return losses


def denoising_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's ``prediction_type``."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise BaseModelError(f"prediction_type {kind!r} of the base model's scheduler is not supported; use epsilon or v_prediction")


def training_scheduler(pipeline):
    """A DDPMScheduler with the base model's own noise schedule and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipeline.scheduler.config)


def corpus_tensor(image_paths: list[str], adjectives: list[str], size: int) -> torch.Tensor:
    """Pretraining images in [-1, 1], each with its caption adjective's image operation applied."""
    from meddap.adjectives import apply_adjective
    from meddap.images import load_array

    if len(adjectives) != len(image_paths):
        raise ValueError(f"{len(adjectives)} adjectives for {len(image_paths)} pretraining images")
    arrays = np.stack([apply_adjective(load_array(path, size), adjective) for path, adjective in zip(image_paths, adjectives)])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def pretrain_small_model(
    image_paths: list[str],
    captions: list[str],
    adjectives: list[str],
    out_dir: str | Path,
    spec: SmallModelSpec,
    tokenizer_words: list[str],
    vae_steps: int,
    unet_steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    prediction_type: str = "epsilon",
) -> dict:
    """Build the small SD, train VAE then UNet on ``image_paths`` with their captions, save it.

    ``prediction_type`` "v_prediction" (as SD 2.x) makes the UNet predict the velocity, whose
    loss at high noise rewards knowing the image's global look (brightness, contrast, shape),
    which is what a caption's adjective and a class decide; epsilon leaves that loss tiny there.

    ``adjectives[i]`` is the image operation applied to image i before training (see
    ``meddap.adjectives``; 'none' for none) and ``captions[i]`` its caption, which names it.
    Returns a summary (parameter counts, final losses, latent scaling factor) for the log.
    """
    from diffusers import DDPMScheduler, PNDMScheduler, StableDiffusionPipeline

    if len(captions) != len(image_paths):
        raise ValueError(f"{len(captions)} captions for {len(image_paths)} pretraining images")
    vae, text_encoder, tokenizer, unet = build_small_components(spec, tokenizer_words, seed)
    images = corpus_tensor(image_paths, adjectives, spec.image_size)
    vae_losses = train_vae(vae, images, vae_steps, batch_size=16, lr=lr, seed=seed)
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
        unet, means * scaling, stds * scaling, condition, uncondition, unet_steps, batch_size, lr, seed, description="pretrain UNet",
        noise_scheduler=DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type),
    )
    scheduler = PNDMScheduler(**SD_SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, prediction_type=prediction_type)
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


# ---------------------------------------------------------------- loading any SD v1.x folder
def load_pipeline(path: str | Path, device: torch.device, dtype: torch.dtype = torch.float32):
    """``StableDiffusionPipeline.from_pretrained`` on a local diffusers folder, with the hub offline.

    Hub ids and single files never reach here: rules download_base_model / convert_base_model
    turn them into a local folder once (meddap.base_models).
    """
    from diffusers import StableDiffusionPipeline

    check_base_model_folder(path)
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder never touches the network
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            str(path), dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)
