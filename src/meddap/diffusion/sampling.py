"""Sampling images from a Stable Diffusion pipeline: schedulers, classifier-free guidance (against the
pipeline's negative prompt or a reference UNet), batched denoising and decoding to uint8 RGB."""

from __future__ import annotations

import numpy as np
import torch

# generation.scheduler -> diffusers class (keyed by meddap.settings.choices.SCHEDULERS, checked by a test)
SCHEDULER_CLASSES = {
    "dpm": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def to_grey_rgb(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, repeated in three channels (the layout of grey ultrasound PNGs)."""
    luma = np.round(image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def set_scheduler(pipeline, name: str) -> None:
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"generation.scheduler {name!r} unknown; choose one of {sorted(SCHEDULER_CLASSES)}")
    scheduler_class = getattr(diffusers, SCHEDULER_CLASSES[name])
    pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)


def prepare_for_generation(pipeline, reference_unet=None, compile_unet: bool = False) -> bool:
    """Device-specific speed-ups that leave the images unchanged in kind: channels_last for the
    convolutions on CUDA, and optionally ``torch.compile`` of the UNet(s) there (compiled once per
    batch shape; keep the shard a multiple of the batch to compile once). SDPA attention is
    diffusers' default on PyTorch 2. Returns whether the UNet(s) were compiled."""
    device = pipeline._execution_device
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True  # fixed shapes per shard: let cuDNN pick its fastest convolutions
    unets = [module for module in (pipeline.unet, reference_unet) if module is not None]
    for module in (*unets, pipeline.vae):
        module.to(memory_format=torch.channels_last)
    if compile_unet:
        for module in unets:
            module.compile(dynamic=False)  # in place: the pipeline keeps the same module object
    return compile_unet


def denoise(unet, scheduler, latents, timesteps, cond, uncond, guidance_scale: float, reference_unet=None):
    """Run ``scheduler`` over ``timesteps`` from ``latents`` with classifier-free guidance:
    eps = eps_ref + g * (eps_cond - eps_ref), ``eps_ref`` from the pipeline's own UNet on ``uncond``
    (standard CFG) or from ``reference_unet`` (the base model without the LoRA) when given."""
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        if guidance_scale == 1.0:
            eps = unet(model_input, t, cond).sample
        elif reference_unet is None:
            both = unet(torch.cat([model_input, model_input]), t, torch.cat([uncond, cond])).sample
            eps_ref, eps_cond = both.chunk(2)
            eps = eps_ref + guidance_scale * (eps_cond - eps_ref)
        else:
            eps_cond = unet(model_input, t, cond).sample
            eps_ref = reference_unet(model_input, t, uncond).sample
            eps = eps_ref + guidance_scale * (eps_cond - eps_ref)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents


def decode_to_uint8(vae, latents) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB from scaled latents."""
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_noise(latent_shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """One standard normal latent per seed, each from its own CPU generator: an image does not
    depend on the batch it is drawn in."""
    return torch.stack([torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


@torch.no_grad()
def generate_images(
    pipeline,
    prompt: str,
    seeds: list[int],
    resolution: int,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    negative_prompt: str = "",
    reference_unet=None,
) -> list[np.ndarray]:
    """uint8 RGB arrays, one per seed, generated in batches of ``batch_size`` (guidance: ``denoise``)."""
    from tqdm import tqdm

    device = pipeline._execution_device
    unet, vae = pipeline.unet, pipeline.vae
    prompt_embeds, negative_embeds = pipeline.encode_prompt(prompt, device, 1, True, negative_prompt=negative_prompt)
    scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (unet.config.in_channels, resolution // scale_factor, resolution // scale_factor)
    images: list[np.ndarray] = []
    for start in tqdm(range(0, len(seeds), batch_size), desc=f"generate {prompt}", mininterval=5):
        batch_seeds = seeds[start : start + batch_size]
        n = len(batch_seeds)
        scheduler = pipeline.scheduler.__class__.from_config(pipeline.scheduler.config)
        scheduler.set_timesteps(steps, device=device)
        latents = (image_noise(latent_shape, batch_seeds) * scheduler.init_noise_sigma).to(device, unet.dtype)
        cond = prompt_embeds.expand(n, -1, -1)
        uncond = negative_embeds.expand(n, -1, -1)
        latents = denoise(unet, scheduler, latents, scheduler.timesteps, cond, uncond, guidance_scale, reference_unet)
        images.extend(decode_to_uint8(vae, latents))
    return images
