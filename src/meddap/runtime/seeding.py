"""Deterministic seeds derived from names, stable across processes and Python versions.

Python's ``hash()`` is salted per process, so seeds are derived with SHA-256 instead: the same
(class, adjective, shard, index) gives the same seed on every machine and every run.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(*parts: object, bits: int = 63) -> int:
    """Return a non-negative integer seed derived from ``parts`` (joined with a separator)."""
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << bits) - 1)


def classifier_seed(seed: int, arch: str, fold: int | str, replicate: int | str) -> int:
    """The seed of one classifier training: the same for every variant of one (architecture, fold,
    replicate), so initialisation and batch-order noise are shared by the variants compared in a
    paired difference and cancel there; replicates of a fold differ only in it.

    The variant is deliberately not a part; the replicate always is (replicate 0 too), so the
    scheme is the same whatever ``classifier.replicates`` says."""
    return derive_seed(seed, "classifier", arch, int(fold), int(replicate))


def judge_seed(seed: int, arch: str, arm: str) -> int:
    """The seed of one arm's filter judge (apart from every classifier's: no variant shares it)."""
    return derive_seed(seed, "judge", arch, arm)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
