"""Near-duplicate images by perceptual hash, so that no near-copy of a test image trains anything.

BUSI is known to hold the same scan more than once (re-exported, cropped slightly differently,
with or without calipers). Byte hashes miss those; a DCT perceptual hash (pHash) does not: the
image is reduced to 32x32 grey, its lowest 8x8 DCT frequencies (without the DC term) are
compared with their median, giving 63 bits that survive resizing, re-encoding, small crops and
gain changes. Images whose hashes differ in at most ``max_distance`` bits are linked, and the
connected components are the groups that the split keeps on one side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HASH_BITS = 63
HASH_SIDE = 32
LOW_FREQUENCIES = 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``M @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(HASH_SIDE)


def perceptual_hash(path: str | Path) -> np.ndarray:
    """The 63-bit pHash of one image as a boolean vector."""
    from meddap.data.images import load_rgb

    grey = load_rgb(path).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    frequencies = _DCT @ pixels @ _DCT.T
    low = frequencies[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()[1:]  # drop DC: overall brightness
    return low > np.median(low)


def hash_images(paths: list[str]) -> np.ndarray:
    """(N, 63) boolean hashes, with a progress bar."""
    from tqdm import tqdm

    if not paths:
        return np.zeros((0, HASH_BITS), dtype=bool)
    return np.stack([perceptual_hash(path) for path in tqdm(paths, desc="perceptual hashes", mininterval=5)])


def hamming_distances(hashes: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """(N, M) number of differing bits between every hash and every other (default: each other)."""
    bits = hashes.astype(np.int32)
    other = bits if others is None else others.astype(np.int32)
    return bits @ (1 - other).T + (1 - bits) @ other.T


def hash_to_hex(bits: np.ndarray) -> str:
    """A 63-bit hash as 16 hex digits (stored in the split manifest)."""
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hex_to_hash(text: str) -> np.ndarray:
    value = int(text, 16)
    return np.array([(value >> (HASH_BITS - 1 - i)) & 1 for i in range(HASH_BITS)], dtype=bool)


def hashes_from_hex(texts) -> np.ndarray:
    """(N, 63) boolean hashes from their hex digits (the split manifest's ``phash`` column)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, HASH_BITS), dtype=bool)
    return np.stack([hex_to_hash(text) for text in texts])


def near_duplicate_groups(paths: list[str], max_distance: int, hashes: np.ndarray | None = None) -> pd.DataFrame:
    """Group images whose perceptual hashes are within ``max_distance`` bits (transitively).

    Returns one row per image: path, group (the smallest index of its component, so a
    singleton's group is its own index) and nearest (the Hamming distance to its closest other
    image, -1 when alone). ``max_distance < 0`` disables grouping: every image is its own group.
    """
    hashes = hash_images(paths) if hashes is None else hashes
    n = len(paths)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    nearest = np.full(n, -1)
    if n > 1:
        distances = hamming_distances(hashes)
        np.fill_diagonal(distances, HASH_BITS + 1)
        nearest = distances.min(axis=1)
        if max_distance >= 0:
            for i, j in zip(*np.nonzero(np.triu(distances <= max_distance, k=1))):
                a, b = find(int(i)), find(int(j))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return pd.DataFrame({"path": paths, "group": [find(i) for i in range(n)], "nearest": nearest})


def duplicate_report(groups: pd.DataFrame) -> pd.DataFrame:
    """Only the images that share their group with another image (the near-duplicates found)."""
    sizes = groups.groupby("group")["path"].transform("size")
    return groups[sizes > 1].sort_values(["group", "path"]).reset_index(drop=True)
