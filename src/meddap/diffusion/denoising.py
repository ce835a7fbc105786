"""Denoising training of a Stable Diffusion UNet on cached latents, and the encodings it trains on.

Images become VAE posteriors once (``encode_latents``) and prompts text embeddings once
(``encode_text``); ``train_denoiser`` then trains the UNet (all of it, or a LoRA's parameters)
with the base model's noise schedule (``training_scheduler``) and prediction target
(``denoising_target``). Used by the small model's pretraining (``meddap.diffusion.small_model``) and by
LoRA training (``meddap.diffusion.lora``).
"""

from __future__ import annotations

import numpy as np
import torch

from meddap.diffusion.base_models import BaseModelError
from meddap.runtime.seeding import derive_seed

# The SD v1.x noise schedule (scaled-linear betas); the small model uses it too so LoRA training
# and sampling code is the same for both.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def images_to_tensor(paths: list[str], size: int) -> torch.Tensor:
    """Images as a float tensor in [-1, 1], shape (N, 3, size, size)."""
    from meddap.data.images import load_array

    arrays = np.stack([load_array(path, size) for path in paths])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts: list[str], device: torch.device) -> torch.Tensor:
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(device))[0]


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
    class prompt for a LoRA shared by all classes; with probability ``condition_dropout`` the empty prompt's
    embedding is used instead so that classifier-free guidance works. ``parameters`` are the ones to train
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


def denoising_target(
    noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's ``prediction_type``."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise BaseModelError(
        f"prediction_type {kind!r} of the base model's scheduler is not supported; use epsilon or v_prediction"
    )


def training_scheduler(pipeline):
    """A DDPMScheduler with the base model's own noise schedule and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipeline.scheduler.config)
