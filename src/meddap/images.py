"""Reading images of any common mode into 8-bit RGB, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An input image could not be read; the message names the file and what to do."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (16-bit grey, RGBA, palette, CMYK, ...) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/float grey: rescale the actual range to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low) * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path, size: int | None = None) -> Image.Image:
    """Load ``path`` as RGB, optionally resized to ``size`` x ``size`` (bicubic).

    Raises ImageReadError naming the file for truncated, corrupt or non-image files.
    """
    path = Path(path)
    try:
        with Image.open(path) as handle:
            handle.load()
            image = to_rgb(handle)
    except FileNotFoundError as error:
        raise ImageReadError(f"image not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(
            f"cannot read image {path}: {error}. Replace or remove the file (it may be "
            "truncated or not an image), then rerun."
        ) from error
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def load_array(path: str | Path, size: int | None = None) -> np.ndarray:
    """Load ``path`` as a uint8 array of shape (H, W, 3)."""
    return np.asarray(load_rgb(path, size), dtype=np.uint8)
