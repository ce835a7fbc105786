"""The filter of filtered synthetic variants (``generation.filter``): a judge per generative arm, and
its verdict on each synthetic image of the arm.

The judge is a classifier trained on the arm's training originals only (the training split less
the arm's fold), for ``classifier.epochs`` epochs with the last one kept: no validation image trains
or selects it. Its folder lists those originals in its ``lineage.json``, so the lineage audit checks
that none of them is an image that a classifier of the fold is validated or tested on.

An image is dropped when the judge puts it in another class with at least
``FilterSettings.judge_confidence``, or when its perceptual hash is within
``FilterSettings.near_copy_bits`` of one of the arm's training originals (the images its LoRAs
and, for guided images, its guides come from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from meddap.data.arms import arm_training_rows
from meddap.settings.kinds import ORIGINAL_SOURCE
from meddap.settings.stages import FilterSettings

JUDGE_KIND = "judge"  # the lineage kind of a judge folder


def judge_training_rows(manifest: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The rows a judge trains on: the arm's training originals (never its validation fold)."""
    rows = arm_training_rows(manifest, arm)
    return pd.DataFrame({"path": list(rows["path"]), "class": list(rows["class"]), "source": ORIGINAL_SOURCE})


def train_judge(manifest: pd.DataFrame, arm: str, out_dir: str | Path, **training) -> pd.DataFrame:
    """Train the arm's judge into ``out_dir``: ``train_classifier`` (its other arguments in
    ``training``) on ``judge_training_rows`` and no validation rows, so the last epoch is kept; its
    lineage lists the training originals."""
    from meddap.classify.classifier import train_classifier

    rows = judge_training_rows(manifest, arm)
    provenance = {"arm": arm, "role": JUDGE_KIND, **(training.pop("provenance", None) or {})}
    return train_classifier(
        rows, rows.iloc[0:0], out_dir=out_dir, provenance=provenance, lineage_kind=JUDGE_KIND, **training
    )


def judge_verdicts(
    images: pd.DataFrame,
    probabilities: np.ndarray,
    classes: list[str],
    distances: np.ndarray,
    originals: list[str],
    settings: FilterSettings,
) -> pd.DataFrame:
    """One row per synthetic image (``images``: ``read_shards`` rows): the judge's class and its
    probability, the Hamming distance to the nearest training original, and whether the image is
    kept (``reason``: why not). ``distances``: (images, originals) pHash distances."""
    predicted = [classes[i] for i in probabilities.argmax(1)] if len(images) else []
    confidence = probabilities.max(1) if len(images) else np.zeros(0)
    nearest = distances.argmin(1) if distances.size else np.zeros(len(images), dtype=int)
    nearest_distance = (
        distances[np.arange(len(images)), nearest] if distances.size else np.full(len(images), 10**6, dtype=int)
    )
    reasons = [
        settings.reason(label, guess, float(p), int(d))
        for label, guess, p, d in zip(images["class"], predicted, confidence, nearest_distance)
    ]
    table = pd.DataFrame(
        {
            "path": list(images["path"]),
            "class": list(images["class"]),
            "adjective": list(images["adjective"]),
            "shard": list(images["shard"]),
            "index": list(images["index"]),
            "predicted": predicted,
            "confidence": np.round(confidence.astype(float), 6),
            "near_copy_distance": nearest_distance.astype(int),
            "nearest_original": [originals[i] for i in nearest] if originals else "",
            "kept": [not reason for reason in reasons],
            "reason": reasons,
            "judge": "",
        }
    )
    for i, cls in enumerate(classes):
        table[f"p_{cls}"] = np.round(probabilities[:, i].astype(float), 6) if len(images) else []
    return table


def filter_arm(
    shard_dirs: list[str],
    judge_dir: str | Path,
    manifest: pd.DataFrame,
    arm: str,
    settings: FilterSettings,
    device: str = "cpu",
) -> pd.DataFrame:
    """The verdict on every image of the arm's shards (``judge_verdicts``) by the arm's judge."""
    from meddap.classify.classifier import load_classifier, predict_paths
    from meddap.data.near_duplicates import hamming_distances, hash_images, hashes_from_hex
    from meddap.diffusion.generate import read_shards
    from meddap.provenance.lineage import lineage_images, read_lineage
    from meddap.runtime.devices import pick_device

    images = read_shards(shard_dirs)
    training = arm_training_rows(manifest, arm)  # the judge's training rows, with the split's hashes
    originals = list(training["path"])
    judged = set(lineage_images(read_lineage(judge_dir)))
    if judged != set(originals):  # a judge of another arm, or of an older split
        raise ValueError(
            f"{judge_dir} was trained on other images than arm {arm}'s training originals; retrain it "
            f"(snakemake --cores all --forcerun {judge_dir})"
        )
    model, meta = load_classifier(judge_dir, str(pick_device(device)))
    probabilities = predict_paths(model, meta, list(images["path"]))
    classes = list(meta["classes"])
    # The originals' hashes as the split recorded them: the feature space it grouped near-duplicates in.
    original_hashes = hashes_from_hex(training["phash"])
    distances = hamming_distances(hash_images(list(images["path"])), original_hashes)
    verdicts = judge_verdicts(
        images, probabilities.reshape(len(images), len(classes)), classes, distances, originals, settings
    )
    return verdicts.assign(judge=str(judge_dir))
