"""What each prompt adjective means as an image operation, for captioning a pretraining corpus.

Stable Diffusion learnt what "bright" or "posterized" means from web images captioned that way.
The embedded default's small model has no web: its pretraining corpus (a phantom simulated apart
from the dataset) gets, for a share of its images, one adjective's operation applied and that
adjective put in the caption, so that "a bright ultrasound photo of ..." draws brighter images
than the plain prompt. Operations work on uint8 RGB arrays and are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from meddap.runtime.seeding import derive_seed
from meddap.settings.prompts import NO_ADJECTIVE


def _tone(array: np.ndarray, gamma: float) -> np.ndarray:
    return np.clip(255.0 * (array.astype(np.float64) / 255.0) ** gamma, 0, 255).round().astype(np.uint8)


def _contrast(array: np.ndarray, factor: float) -> np.ndarray:
    values = array.astype(np.float64)
    mean = values.mean()
    return np.clip(mean + factor * (values - mean), 0, 255).round().astype(np.uint8)


def _pil(array: np.ndarray, operation: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.asarray(operation(Image.fromarray(array, mode="RGB")).convert("RGB"))


def _shear(image: Image.Image) -> Image.Image:
    width, height = image.size
    shear = 0.3
    # x_in = x_out + shear * (y_out - h/2): a horizontal shear about the centre line.
    return image.transform(
        (width, height), Image.Transform.AFFINE, (1, shear, -shear * height / 2, 0, 1, 0), Image.Resampling.BILINEAR
    )


# Moderate strengths, as a photo captioned "bright" is brighter but still a plausible scan.
OPERATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bright": lambda a: _tone(a, 0.75),
    "dark": lambda a: _tone(a, 1.35),
    "high-contrast": lambda a: _contrast(a, 1.5),
    "low-contrast": lambda a: _contrast(a, 0.6),
    "posterized": lambda a: _pil(a, lambda im: ImageOps.posterize(im, 2)),
    "solarized": lambda a: _pil(a, lambda im: ImageOps.solarize(im, 128)),
    "sheared": lambda a: _pil(a, _shear),
    "colorful": lambda a: _pil(
        a, lambda im: ImageOps.colorize(im.convert("L"), black=(30, 0, 90), white=(255, 230, 40), mid=(220, 40, 120))
    ),
    "stylized": lambda a: _pil(
        a, lambda im: im.filter(ImageFilter.MedianFilter(5)).filter(ImageFilter.EDGE_ENHANCE_MORE)
    ),
}


def apply_adjective(array: np.ndarray, adjective: str) -> np.ndarray:
    """``array`` (uint8, H x W x 3) as ``adjective`` describes it; 'none' returns it unchanged."""
    if adjective in ("", NO_ADJECTIVE):
        return array
    if adjective not in OPERATIONS:
        raise KeyError(f"no image operation for the adjective {adjective!r}; known: {sorted(OPERATIONS)}")
    return OPERATIONS[adjective](np.asarray(array, dtype=np.uint8))


def taught_adjectives(adjectives: list[str]) -> list[str]:
    """The adjectives a pretraining corpus can teach: those with an image operation, sorted (so the
    order of ``generation.adjectives``, or one without an operation such as 'none', changes nothing)."""
    return sorted(a for a in set(adjectives) if a in OPERATIONS)


def caption_adjectives(n_images: int, share: float, seed: int, adjectives: list[str] | None = None) -> list[str]:
    """One adjective per corpus image: 'none' for (1 - share) of them, else one of ``adjectives``
    that has an operation (default: all of them), cycled in a seeded order so every adjective gets
    its share. Depends on nothing but the arguments."""
    rng = np.random.default_rng(derive_seed(seed, "caption-adjectives"))
    names = sorted(OPERATIONS) if adjectives is None else taught_adjectives(adjectives)
    n_captioned = int(round(share * n_images)) if names else 0
    chosen = [names[i % len(names)] for i in range(n_captioned)]
    adjectives = chosen + [NO_ADJECTIVE] * (n_images - n_captioned)
    return [adjectives[i] for i in rng.permutation(n_images)]
