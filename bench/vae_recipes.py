"""How close can the embedded small model's autoencoder come to real images, by training recipe?

The ceiling of every synthetic image's realism is the base model's VAE round trip (see
docs/method.md). This script trains the embedded ``AutoencoderKL`` (``meddap.diffusion.small_model``)
with several recipes on a pretraining corpus and measures, on other real images, what the report
measures: the two-sample AUROC real vs posterior-mean reconstruction (``meddap.evidence.realism``:
spectral, histogram and gradient statistics, boosted trees, 5-fold), PSNR and SSIM (scikit-image).

    # in a finished run of the embedded default (its phantom folders)
    python bench/vae_recipes.py --corpus resources/phantom/pretrain-corpus --real resources/phantom/linear-L12
    python bench/vae_recipes.py ... --recipes base,long --steps-scale 0.1   # a quick look

Prints one row per recipe: training seconds on this device (named), AUROC, PSNR, SSIM.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meddap.diffusion.small_model import SmallModelSpec, build_small_components, corpus_tensor
from meddap.evidence.realism import image_statistics, reconstruction_errors, two_sample_auroc


@dataclass(frozen=True)
class Recipe:
    steps: int
    channels: tuple[int, ...] = (16, 32, 32)  # the embedded default's; two entries: downsampling by 2
    latent_channels: int = 4
    mse: bool = True  # L1 + MSE (today's recipe), else L1 only
    spectral: float = 0.0  # weight of the L1 between log FFT magnitudes
    adversarial: float = 0.0  # weight of a PatchGAN hinge loss, after WARM_UP steps


WARM_UP = 100
RECIPES = {
    "base": Recipe(steps=120),  # what pretrain_base does today (vae_steps: 120)
    "long": Recipe(steps=600),
    "factor2": Recipe(steps=300, channels=(16, 32)),
    "spectral": Recipe(steps=600, spectral=0.1),
    "latents8": Recipe(steps=600, latent_channels=8),
    "factor2_gan": Recipe(steps=400, channels=(16, 32), mse=False, adversarial=0.1),
    "gan_spectral": Recipe(steps=600, mse=False, spectral=0.1, adversarial=0.1),
}


def spectral_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    def log_magnitude(x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft2(x.mean(1)).abs().clamp_min(1e-4).log()

    return (log_magnitude(a) - log_magnitude(b)).abs().mean()


def patch_discriminator() -> torch.nn.Module:
    n = torch.nn
    return n.Sequential(
        n.Conv2d(3, 32, 4, 2, 1),
        n.LeakyReLU(0.2),
        n.Conv2d(32, 64, 4, 2, 1),
        n.GroupNorm(8, 64),
        n.LeakyReLU(0.2),
        n.Conv2d(64, 1, 3, 1, 1),
    )


def train(vae, images: torch.Tensor, recipe: Recipe, steps: int, seed: int = 0) -> None:
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    critic = patch_discriminator() if recipe.adversarial else None
    critic_optimizer = torch.optim.AdamW(critic.parameters(), lr=1e-3, betas=(0.5, 0.9)) if critic else None
    vae.train()
    for step in tqdm(range(steps), desc="train VAE", mininterval=5):
        batch = images[torch.randint(0, len(images), (16,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = (reconstruction - batch).abs().mean() + 1e-6 * posterior.kl().mean()
        if recipe.mse:
            loss = loss + ((reconstruction - batch) ** 2).mean()
        if recipe.spectral:
            loss = loss + recipe.spectral * spectral_distance(reconstruction, batch)
        if critic is not None and step >= WARM_UP:
            loss = loss - recipe.adversarial * critic(reconstruction).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if critic is not None and step >= WARM_UP // 2:
            hinge = torch.relu(1 - critic(batch)).mean() + torch.relu(1 + critic(reconstruction.detach())).mean()
            critic_optimizer.zero_grad(set_to_none=True)
            hinge.backward()
            critic_optimizer.step()
    vae.eval()


@torch.no_grad()
def measure(vae, real: torch.Tensor) -> dict:
    reconstruction = vae.decode(vae.encode(real).latent_dist.mean).sample

    def to_uint8(t: torch.Tensor) -> np.ndarray:
        return ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    originals, reconstructed = to_uint8(real), to_uint8(reconstruction)
    test = two_sample_auroc(image_statistics(originals), image_statistics(reconstructed), seed=0, n_bootstrap=200)
    errors = reconstruction_errors(originals, reconstructed)
    return {
        "auroc_real_vs_recon": round(float(test.auroc), 3),
        "psnr_db": round(float(errors["psnr"].mean()), 2),
        "ssim": round(float(errors["ssim"].mean()), 3),
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, type=Path, help="training images (class subfolders)")
    parser.add_argument("--real", required=True, type=Path, help="other real images to measure on")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {list(RECIPES)}")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every recipe's steps")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    corpus = sorted(str(p) for p in args.corpus.glob("*/*.png"))
    real = sorted(str(p) for p in args.real.glob("*/*.png"))
    if not corpus or not real:
        raise SystemExit(f"no PNGs in class subfolders of {args.corpus} or {args.real}")
    images = corpus_tensor(corpus, ["none"] * len(corpus), args.image_size)
    measured = corpus_tensor(real, ["none"] * len(real), args.image_size)
    device = f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"device: {device}; corpus {len(corpus)} images, measured on {len(real)}, {args.image_size} px")
    for name in args.recipes.split(","):
        recipe = RECIPES[name]
        spec = SmallModelSpec(
            image_size=args.image_size, vae_channels=recipe.channels, latent_channels=recipe.latent_channels
        )
        vae, *_ = build_small_components(spec, ["benign"], seed=0)
        steps = max(1, round(recipe.steps * args.steps_scale))
        start = time.perf_counter()
        train(vae, images, recipe, steps)
        seconds = time.perf_counter() - start
        print(json.dumps({"recipe": name, "steps": steps, "seconds": round(seconds, 1), **measure(vae, measured)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
