"""Generative arms: which training originals a fold's LoRAs, synthetic images and classifiers learn from."""

from __future__ import annotations

from meddap.settings.choices import FOLD_SCOPE, SPLIT_ARM
from meddap.settings.kinds import TRAIN_SPLIT


def arm_for_fold(fold: int, scope: str = FOLD_SCOPE) -> str:
    return f"fold{int(fold)}" if scope == FOLD_SCOPE else SPLIT_ARM


def arm_training_rows(manifest, arm: str):
    """The originals an arm's LoRAs (and the fold's classifiers) train on: the training split
    without the arm's validation fold, or the whole training split for the "split" arm."""
    train = manifest[manifest["split"] == TRAIN_SPLIT]
    if arm == SPLIT_ARM:
        return train
    if not arm.startswith("fold") or not arm.removeprefix("fold").isdigit():
        raise ValueError(f"unknown generative arm {arm!r}: expected 'split' or 'fold<k>'")
    return train[train["fold"].astype(int) != int(arm.removeprefix("fold"))]
