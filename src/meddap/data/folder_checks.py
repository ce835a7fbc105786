"""Parse-time checks of a data folder's images, from what the parse already computes: each image's
header (its size, cached with its digest by path, size and mtime_ns) and each file's sha256.

- a file named like an image that is not one (text, a truncated header, unreadable): an error;
- an image whose shorter side is under ``MIN_IMAGE_SIDE`` pixels: an error (nothing to learn from);
- an image under half the model's resolution: a warning naming it (it is upsampled);
- a byte-identical copy of a dataset image in an unseen set: an error (it would be tested on an
  image the classifiers trained on). Near-duplicates need perceptual hashes, computed by the
  ``index_test_set`` job, which refuses them too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from meddap.data.dataset import DatasetError
from meddap.provenance.lineage import DigestCache

MIN_IMAGE_SIDE = 8  # pixels; a 28 px MedMNIST image passes (with a warning), a 1x1 or 3x3 does not
SMALL_IMAGE_FRACTION = 0.5  # warn below this share of the model's resolution
SHOWN = 3  # files named in one message


def read_header(path: Path) -> list[int] | str:
    """[width, height] from the image's header, or why it is not an image (a JSON value, cached)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # as meddap.data.images
            with Image.open(path) as image:
                return [int(image.size[0]), int(image.size[1])]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return f"too large to decode safely ({error}); Downscale it (e.g. to 2048 pixels on its longer side)"
    except UnidentifiedImageError:
        return "not an image PIL can read (is it a text or another file renamed?)"
    except (SyntaxError, ValueError) as error:
        return f"a damaged image header ({error})"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"


@dataclass
class ImageCheck:
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def name_some(items: list[str]) -> str:
    """The first ``SHOWN`` items and how many more: what one message names."""
    more = f" (and {len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def check_image_files(
    paths: list[str], resolution: int, cache: DigestCache | None = None, what: str = "dataset.root"
) -> ImageCheck:
    """Read every image's header (cached); raise ``DatasetError`` naming the files that are not
    images or are below ``MIN_IMAGE_SIDE``; warn about those under half of ``resolution``."""
    cache = cache or DigestCache(None)
    check = ImageCheck()
    broken, tiny, small = [], [], []
    for path in paths:
        try:
            header = cache.remember(path, "image_size", read_header)
        except OSError as error:
            header = f"unreadable ({error.strerror or error})"
        if isinstance(header, str):
            broken.append(f"{path!r}: {header}")
            continue
        width, height = header
        check.sizes[path] = (width, height)
        if min(width, height) < MIN_IMAGE_SIDE:
            tiny.append(f"{path!r} ({width}x{height})")
        elif min(width, height) < SMALL_IMAGE_FRACTION * resolution:
            small.append(f"{path!r} ({width}x{height})")
    if broken:
        raise DatasetError(
            f"{what}: {name_some(broken)}. Replace or remove these files (or match them with dataset.exclude)."
        )
    if tiny:
        raise DatasetError(
            f"{what}: {len(tiny)} image(s) under {MIN_IMAGE_SIDE} px on a side: {name_some(tiny)}. "
            "They hold nothing to learn from; remove them (or match them with dataset.exclude)."
        )
    if small:
        check.warnings.append(
            f"{what}: {len(small)} image(s) under half the model's resolution ({resolution} px), upsampled "
            f"for training and generation: {name_some(small)}"
        )
    return check


def byte_identical_copies(dataset: dict[str, str], unseen: dict[str, str]) -> list[tuple[str, str]]:
    """(unseen file, dataset file) pairs with the same sha256; both maps are path -> sha256."""
    by_digest = {}
    for path, digest in dataset.items():
        by_digest.setdefault(digest, path)
    return [(path, by_digest[digest]) for path, digest in sorted(unseen.items()) if digest in by_digest]


def refuse_copies(name: str, copies: list[tuple[str, str]]) -> None:
    if copies:
        shown = [f"{unseen!r} = {original!r}" for unseen, original in copies]
        raise DatasetError(
            f"unseen set {name!r} holds {len(copies)} byte-identical copie(s) of dataset images: {name_some(shown)}. "
            "An unseen set must not hold images the classifiers may train on; remove them from it."
        )
