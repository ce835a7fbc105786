"""The base model's autoencoder on real images: encode, take the posterior mean, decode.

No synthetic image can hold detail that this round trip loses (the LoRA and the UNet only ever
see and produce latents), so its error on a fold's training originals is the ceiling of any
synthetic image's realism: ``meddap.evidence.realism`` reports it beside the synthetic images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def load_autoencoder(base_model: str | Path, device: torch.device | str = "cpu"):
    """The ``vae/`` of a diffusers Stable Diffusion folder (every base model kind ends as one), in fp32."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(Path(base_model) / "vae"))
    return vae.to(device).eval()


@torch.no_grad()
def round_trip(vae, paths: list[str], size: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(originals, reconstructions): uint8 (N, size, size, 3) arrays of ``paths`` at ``size`` (the
    generation resolution) and of their posterior-mean reconstructions by ``vae``."""
    from meddap.diffusion.denoising import encode_latents, images_to_tensor

    images = images_to_tensor(paths, size)
    means, _ = encode_latents(vae, images, batch_size)
    decoded = []
    for start in range(0, len(means), batch_size):
        batch = means[start : start + batch_size].to(vae.device, vae.dtype)
        decoded.append(vae.decode(batch).sample.float().cpu())
    recon = torch.cat(decoded) if decoded else torch.empty(0, 3, size, size)

    def to_uint8(tensor: torch.Tensor) -> np.ndarray:
        return ((tensor.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return to_uint8(images), to_uint8(recon)
