"""The small base model's pretraining corpus: which images, and how each is captioned.

``phantom`` (the embedded default) is a corpus simulated apart from the dataset, on the training
device, like Stable Diffusion's web data: no image of the dataset (and so no validation or test
image) shapes the base model. ``dataset`` pretrains on the dataset's training split, which holds
every fold's validation images: allowed when asked for, and said in the report and the audit.
A share of the images gets one adjective's image operation and that adjective in its caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meddap.diffusion.adjectives import caption_adjectives
from meddap.settings.choices import DATASET_CORPUS, PHANTOM_CORPUS
from meddap.settings.prompts import generic_caption

CORPUS_COLUMNS = ["path", "class", "adjective", "caption"]


def decontaminate(
    corpus: pd.DataFrame, reference_paths: list[str], reference_hashes: list[str], max_distance: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped): corpus images within ``max_distance`` perceptual-hash bits of (or at the
    same path as) any reference image (the dataset, the unseen sets) are dropped, as large
    pretraining corpora are deduplicated against evaluation sets. ``reference_hashes`` are the
    split manifest's hex hashes (empty strings are computed here)."""
    from meddap.data.near_duplicates import hamming_distances, hash_images, hex_to_hash, perceptual_hash

    same_path = (
        corpus["path"].map(lambda p: str(Path(p).resolve())).isin({str(Path(p).resolve()) for p in reference_paths})
    )
    near = pd.Series(False, index=corpus.index)
    if max_distance >= 0 and len(corpus) and reference_paths:
        reference = np.stack(
            [
                hex_to_hash(h) if isinstance(h, str) and h else perceptual_hash(p)
                for p, h in zip(reference_paths, reference_hashes)
            ]
        )
        distances = hamming_distances(hash_images(list(corpus["path"])), reference)
        near = pd.Series(distances.min(axis=1) <= max_distance, index=corpus.index)
    dropped = same_path | near
    return corpus[~dropped].reset_index(drop=True), corpus[dropped].reset_index(drop=True)


def pretraining_corpus(
    kind: str,
    source: str | Path,
    classes: list[str],
    adjectives: list[str],
    adjective_share: float,
    seed: int,
) -> pd.DataFrame:
    """path, class, adjective, caption of every pretraining image. ``source`` is the simulated
    corpus folder (class subfolders) for ``phantom``, the split manifest for ``dataset``. A share
    of the images gets one of the workflow's ``adjectives`` that has an image operation (the
    others, e.g. 'none', have nothing to teach)."""
    from meddap.data.dataset import list_class_images

    if kind == PHANTOM_CORPUS:
        images = list_class_images(source, classes, [])
        frame = pd.DataFrame(
            [(path, cls) for cls, paths in images.items() for path in paths], columns=["path", "class"]
        )
    elif kind == DATASET_CORPUS:
        manifest = pd.read_csv(source)
        frame = manifest.loc[manifest["split"] == "train", ["path", "class"]].reset_index(drop=True)
    else:
        raise ValueError(f"base_model.pretrain.corpus {kind!r}: use {PHANTOM_CORPUS!r} or {DATASET_CORPUS!r}")
    frame["adjective"] = caption_adjectives(len(frame), adjective_share, seed, adjectives)
    frame["caption"] = [generic_caption(adjective) for adjective in frame["adjective"]]
    return frame[CORPUS_COLUMNS]
