"""Reading images of any common mode into 8-bit RGB, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    """Load ``path`` as RGB, turned upright as a viewer shows it (EXIF orientation), optionally
    resized to ``size`` x ``size`` (bicubic).

    Raises ImageReadError naming the file for truncated, corrupt or non-image files, and for
    images over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit, then decodes gigabytes: refuse both alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                handle.load()
                # A phone or scanner JPEG stores its rotation as an EXIF tag: without it the image is sideways.
                image = to_rgb(ImageOps.exif_transpose(handle))
    except FileNotFoundError as error:
        raise ImageReadError(f"image not found: {path}") from error
    # Neither is an OSError: Pillow's bomb error derives from Exception, its warning from RuntimeWarning.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            f"image {path} is too large to decode safely ({error}). Downscale it (e.g. to 2048 pixels on its "
            "longer side) or remove it, then rerun."
        ) from error
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
