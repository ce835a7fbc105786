"""Guided (image-to-image) generation: each synthetic image starts from a real training original.

The semantics of diffusers' ``StableDiffusionImg2ImgPipeline`` (DA-Fusion's starting point): the
guide is encoded by the VAE, noised to the strength's timestep and denoised over the remaining
``int(steps * strength)`` steps with the class prompt, its adjective and the arm's LoRA. meddap
runs it in its own sampler so that guided images keep what text-to-image shards have: one noise
generator per image (an image does not depend on its batch) and guidance against the base model
(``generation.guidance_reference: base``). One difference from the pipeline, so that an image
depends on nothing but its guide, strength and seed: the guide's latent is the VAE posterior's
mean (the pipeline samples it). Strength 0 therefore decodes the guide's own latent: the base
model's VAE round trip of the guide (``meddap.diffusion.autoencoder.round_trip``, to within one
grey level from scaling the latent and back), where the pipeline refuses to run.

Guides are assigned by position: image ``i`` of a (arm, class, adjective) stream takes guide
``(i + offset) mod n`` of the class's ``n`` training originals in path order, so the guides spread
evenly (each original guides ``floor`` or ``ceil`` of count / n images) and a shard's guides depend
only on its index range. The caller passes the candidates: for leak-free shards, the arm's
training rows of the class (rule generate_guided_shard, ``meddap.diffusion.generate.generate_guided_shard``,
whose shard lineage lists every guide for the audit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from meddap.diffusion.sampling import decode_to_uint8, denoise, image_noise
from meddap.runtime.seeding import derive_seed
from meddap.settings.stages import SamplingSettings, check_strengths


def guide_offset(seed: int, arm: str, cls: str, adjective: str, candidates: int) -> int:
    """Where a (arm, class, adjective) stream starts in its class's originals: adjectives start at
    different originals, so a mixed variant's guides spread as evenly as each adjective's."""
    return derive_seed(seed, "guides", arm, cls, adjective) % max(candidates, 1)


def assign_guides(candidates: Sequence[str], first_index: int, count: int, offset: int) -> list[str]:
    """The guides of images ``first_index .. first_index + count - 1`` of a stream: candidate
    ``(index + offset) mod n`` in path order (independent of the order the caller lists them in)."""
    ordered = sorted(set(candidates))
    if not ordered:
        raise ValueError("guided generation needs at least one training original of the class to start from")
    return [ordered[(first_index + position + offset) % len(ordered)] for position in range(count)]


def draw_strengths(strength: float | Sequence[float], seeds: Sequence[int]) -> list[float]:
    """Each image's strength: the one value, or a uniform draw from the list seeded by the image's
    own seed (as DA-Fusion samples t0 per image), so a shard's draws do not depend on its batches."""
    values = check_strengths(strength)
    if len(values) == 1:
        return [values[0]] * len(seeds)
    return [values[np.random.default_rng(derive_seed(seed, "strength")).integers(len(values))] for seed in seeds]


def denoising_start(steps: int, strength: float) -> int:
    """The first of ``steps`` scheduler steps that a guided image runs (``steps`` when it runs
    none): the pipeline's ``get_timesteps``, ``steps - min(int(steps * strength), steps)``."""
    return max(steps - min(int(steps * strength), steps), 0)


@torch.no_grad()
def generate_guided_images(
    pipeline,
    prompt: str,
    guides: torch.Tensor,
    seeds: Sequence[int],
    strengths: Sequence[float],
    sampling: SamplingSettings,
    negative_prompt: str = "",
    reference_unet=None,
) -> list[np.ndarray]:
    """uint8 RGB arrays, one per guide: ``guides`` (N, 3, H, W) in [-1, 1] at the generation
    resolution, each with its seed and strength; ``sampling``'s steps, guidance scale and batch
    size (its scheduler is the pipeline's). Images of equal strength share batches (they share a
    timestep schedule); the output keeps the guides' order."""
    from tqdm import tqdm

    from meddap.diffusion.denoising import encode_latents

    if not len(guides) == len(seeds) == len(strengths):
        raise ValueError(f"{len(guides)} guides, {len(seeds)} seeds and {len(strengths)} strengths: give one each")
    device = pipeline._execution_device
    unet, vae = pipeline.unet, pipeline.vae
    prompt_embeds, negative_embeds = pipeline.encode_prompt(prompt, device, 1, True, negative_prompt=negative_prompt)
    steps, batch_size = sampling.steps, sampling.batch_size
    means, _ = encode_latents(vae, guides, batch_size)
    starts = means * vae.config.scaling_factor
    images: list[np.ndarray | None] = [None] * len(seeds)
    batches = []  # (strength, indices of up to batch_size images of that strength)
    for strength in sorted(set(strengths)):
        same = [i for i, value in enumerate(strengths) if value == strength]
        batches += [(strength, same[start : start + batch_size]) for start in range(0, len(same), batch_size)]
    for strength, members in tqdm(batches, desc=f"guided {prompt}", mininterval=5):
        latents = starts[members].to(device, unet.dtype)
        scheduler = pipeline.scheduler.__class__.from_config(pipeline.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        begin = denoising_start(steps, strength) * scheduler.order
        timesteps = scheduler.timesteps[begin:]
        if len(timesteps):
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
            noise = image_noise(tuple(latents.shape[1:]), [seeds[i] for i in members]).to(device, unet.dtype)
            latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(members)))
            n = len(members)
            cond, uncond = prompt_embeds.expand(n, -1, -1), negative_embeds.expand(n, -1, -1)
            latents = denoise(
                unet, scheduler, latents, timesteps, cond, uncond, sampling.guidance_scale, reference_unet
            )
        for index, image in zip(members, decode_to_uint8(vae, latents)):
            images[index] = image
    return images  # type: ignore[return-value]
