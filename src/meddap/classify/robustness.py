"""Robustness to acquisition artefacts: MedMNIST-C's breast-ultrasound corruptions and its errors.

The corruption set and the five severities per corruption follow MedMNIST-C (Di Salvo, Doerrich
and Ledig 2024, arXiv:2406.17536; ``medmnistc/corruptions/registry.py``, entry
``breastmnist``), which in turn adapts ImageNet-C (Hendrycks and Dietterich 2019). They are
re-implemented here with numpy/scipy/PIL (no ImageMagick) and are deterministic given a numpy
Generator. Differences from MedMNIST-C, on purpose:

* motion blur uses an ImageNet-C style line kernel (one-sided Gaussian weights along a random
  direction in [-45, 45] degrees, edge-replicated shifts) instead of ImageMagick; its radius and
  sigma, given for 224-pixel images as in MedMNIST-C, are scaled to the image size;
* speckle noise rounds instead of truncating to uint8 (no systematic -0.5 grey-level bias), and
  a grey image stored as RGB gets one noise field shared by its channels (it stays grey).

Errors follow MedMNIST-C's ``medmnistc/eval.py``: balanced error BE = 1 - balanced accuracy;
normalised and relative BE against a reference model (MedMNIST-C: AlexNet; here the
``original`` classifier of the same architecture and fold).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from meddap.runtime.seeding import derive_seed

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # MedMNIST-C corrupts 224 x 224 images; pixel-sized parameters refer to it
CLEAN = "clean"
MIN_REFERENCE_DEGRADATION = 0.01  # mean BE increase per (corruption, severity) below which rBE is flagged

# MedMNIST-C, registry.py, 'breastmnist' (severity 1..5):
PARAMETERS: dict[str, tuple] = {
    "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),  # resize factor (box down, box up)
    "jpeg_compression": (50, 30, 15, 10, 7),  # JPEG quality
    "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),  # std of multiplicative Gaussian noise
    "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),  # (radius, sigma) at 224 px
    "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),  # PIL ImageEnhance.Brightness factor
    "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),  # PIL ImageEnhance.Contrast factor
}


def _parameter(corruption: str, severity: int):
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return PARAMETERS[corruption][severity - 1]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"expected a uint8 image of shape (H, W) or (H, W, 3); got {image.dtype} {image.shape}")
    return image


def _per_grey(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Run ``fn`` on the single channel of a grey image stored as RGB, and replicate the result.

    Ultrasound is grey: the corruption then matches MedMNIST-C's greyscale BreastMNIST and the
    output stays grey. Genuine colour images are corrupted as RGB.
    """

    def wrapped(image: np.ndarray) -> np.ndarray:
        if image.ndim == 3 and image.shape[2] == 3 and (image[..., :1] == image).all():
            return np.repeat(fn(image[..., 0])[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 1:
            return fn(image[..., 0])[..., None]
        return fn(image)

    return wrapped


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def speckle_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + x * N(0, c^2) on [0, 1] intensities: multiplicative noise, as speckle is."""
    c = _parameter("speckle_noise", severity)
    image = _check_image(image)

    def apply(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64) / 255.0
        noise = rng.standard_normal(x.shape if x.ndim == 2 else x.shape[:2] + (1,)) * c
        return _to_uint8(np.clip(x + x * noise, 0, 1) * 255.0)

    return _per_grey(apply)(image)


def _shift_edge(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``x`` moved by (dx, dy) pixels, the border replicated (no wrap-around)."""
    h, w = x.shape[:2]
    pad = [(abs(dy), abs(dy)), (abs(dx), abs(dx))] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, pad, mode="edge")
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[top : top + h, left : left + w]


def motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur along a random direction in [-45, 45] degrees with a one-sided Gaussian line kernel.

    Kernel width 2 * radius + 1 and weights exp(-i^2 / (2 sigma^2)), i = 0..width-1 (ImageNet-C's
    numpy rendition of ImageMagick's -motion-blur); radius and sigma scaled by min(H, W) / 224.
    """
    radius, sigma = _parameter("motion_blur", severity)
    image = _check_image(image)
    angle = math.radians(rng.uniform(-45.0, 45.0))
    scale = min(image.shape[:2]) / REFERENCE_SIZE
    radius, sigma = max(1, int(round(radius * scale))), max(1e-3, sigma * scale)
    width = 2 * radius + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()

    def apply(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        out = np.zeros_like(x)
        for i, weight in enumerate(kernel):
            dy = -math.ceil(i * math.sin(angle) - 0.5)
            dx = -math.ceil(i * math.cos(angle) - 0.5)
            out += weight * _shift_edge(x, dx, dy)
        return _to_uint8(out)

    return _per_grey(apply)(image)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")


def _enhance(kind: str, corruption: str):
    def corrupt(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
        factor = _parameter(corruption, severity)
        image = _check_image(image)
        enhancer = ImageEnhance.Brightness if kind == "brightness" else ImageEnhance.Contrast
        return _per_grey(lambda x: np.asarray(enhancer(_pil(x)).enhance(factor), dtype=np.uint8))(image)

    corrupt.__name__ = corruption
    corrupt.__doc__ = f"PIL ImageEnhance.{kind.capitalize()} with MedMNIST-C's factor for the severity " + (
        "(blend with black: multiplies intensities)." if kind == "brightness" else "(blend with the mean grey level)."
    )
    return corrupt


brightness_up = _enhance("brightness", "brightness_up")
brightness_down = _enhance("brightness", "brightness_down")
contrast_down = _enhance("contrast", "contrast_down")


def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Encode and decode as JPEG at MedMNIST-C's quality for the severity (PIL, in memory)."""
    quality = _parameter("jpeg_compression", severity)
    image = _check_image(image)

    def apply(x: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        _pil(x).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("L" if x.ndim == 2 else "RGB"), dtype=np.uint8)

    return _per_grey(apply)(image)


def pixelate(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Box-downsample by MedMNIST-C's factor and box-upsample back to the original size."""
    factor = _parameter("pixelate", severity)
    image = _check_image(image)

    def apply(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        small = _pil(x).resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
        return np.asarray(small.resize((w, h), Image.Resampling.BOX), dtype=np.uint8)

    return _per_grey(apply)(image)


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "motion_blur": motion_blur,
    "brightness_up": brightness_up,
    "brightness_down": brightness_down,
    "contrast_down": contrast_down,
}


def corrupt(image: np.ndarray, corruption: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One image through one corruption; severity 0 returns a copy of the clean image."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {sorted(CORRUPTIONS)}")
    if severity == 0:
        return _check_image(image).copy()
    return CORRUPTIONS[corruption](image, severity, rng)


def corrupt_images(
    paths_or_arrays: Sequence[str | Path | np.ndarray],
    corruption: str,
    severity: int,
    seed: int,
    size: int | None = None,
) -> list[np.ndarray]:
    """Corrupt each image reproducibly: image i draws from a Generator seeded by (seed, corruption, i).

    The seed does not depend on the severity, so every severity of an image uses the same random
    draws (noise field, blur direction) and severities differ only in strength. Paths are read as
    RGB (``meddap.data.images.load_array``) and resized to ``size`` first when given, so corrupt at the
    size the classifier sees. Returns uint8 arrays shaped like the (resized) inputs.
    """
    from meddap.data.images import load_array

    out = []
    for i, item in enumerate(paths_or_arrays):
        image = np.asarray(item, dtype=np.uint8) if isinstance(item, np.ndarray) else load_array(item, size)
        if size is not None and isinstance(item, np.ndarray) and image.shape[:2] != (size, size):
            image = np.asarray(_pil(image).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
        rng = np.random.default_rng(derive_seed(seed, "corruption", corruption, i))
        out.append(corrupt(image, corruption, severity, rng))
    return out


# --------------------------------------------------------------------------- errors


def balanced_error(y_true: Sequence, y_pred: Sequence) -> float:
    """1 - balanced accuracy: one minus the mean recall over the classes present in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        return math.nan
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return 1.0 - float(np.mean(recalls))


def relative_balanced_error(
    be_model: Sequence[float] | float,
    be_model_clean: float,
    be_original: Sequence[float] | float,
    be_original_clean: float,
) -> float:
    """MedMNIST-C's relative balanced error of one corruption (Hendrycks' relative mCE with BE).

    rBE_c = sum_s (BE_{s,c} - BE_clean) / sum_s (BE^ref_{s,c} - BE^ref_clean)

    over the severities s (``be_model`` and ``be_original`` hold one BE per severity, same order),
    where ``ref`` is the reference model (MedMNIST-C: AlexNet; here ``original``). It measures
    how much a model *degrades* under the corruption relative to the reference's degradation:
    below 1 = degrades less. MedMNIST-C's eval.py computes it as mean_s(BE_s) - BE_clean over
    mean_s(BE^ref_s) - BE^ref_clean, which is the same quotient. NaN when the reference does not
    degrade at all (zero denominator).
    """
    model, reference = np.atleast_1d(np.asarray(be_model, float)), np.atleast_1d(np.asarray(be_original, float))
    if model.shape != reference.shape:
        raise ValueError(f"need one BE per severity for both models; got {model.shape} and {reference.shape}")
    numerator = float(np.sum(model - be_model_clean))
    denominator = float(np.sum(reference - be_original_clean))
    return numerator / denominator if abs(denominator) > 1e-12 else math.nan


def pooled_relative_balanced_error(
    be_model: Sequence | np.ndarray,
    be_model_clean: float,
    be_original: Sequence | np.ndarray,
    be_original_clean: float,
    min_degradation: float = MIN_REFERENCE_DEGRADATION,
) -> dict:
    """rBE pooled over every (corruption, severity): sum of degradations over the reference's sum.

    rBE_pooled = sum_{c,s} (BE_{s,c} - BE_clean) / sum_{c,s} (BE^ref_{s,c} - BE^ref_clean)

    ``be_model`` and ``be_original`` hold one BE per cell, same shape (e.g. corruptions x
    severities). The mean over corruptions of per-corruption rBEs (``robustness_summary``'s
    "mean" row) lets one corruption that barely moves the reference (denominator ~ 0) dominate
    with a huge or sign-flipped ratio; pooling weights each corruption by how much it degrades
    the reference. Returns rbe_pooled (NaN for a zero denominator), degradation and
    reference_degradation (mean BE increase per cell) and small_reference (True when the
    reference's mean degradation is below ``min_degradation``: the ratio is then unstable).
    """
    model, reference = np.asarray(be_model, float), np.asarray(be_original, float)
    if model.shape != reference.shape:
        raise ValueError(f"need one BE per cell for both models; got {model.shape} and {reference.shape}")
    if model.size == 0:
        raise ValueError("no corrupted cells")
    numerator = float(np.sum(model - be_model_clean))
    denominator = float(np.sum(reference - be_original_clean))
    return {
        "rbe_pooled": numerator / denominator if abs(denominator) > 1e-12 else math.nan,
        "degradation": numerator / model.size,
        "reference_degradation": denominator / model.size,
        "small_reference": bool(denominator / model.size < min_degradation),
        "n_cells": int(model.size),
    }


def normalised_balanced_error(be_model: Sequence[float] | float, be_original: Sequence[float] | float) -> float:
    """MedMNIST-C's normalised BE of one corruption: sum_s BE_{s,c} / sum_s BE^ref_{s,c}."""
    model, reference = np.atleast_1d(np.asarray(be_model, float)), np.atleast_1d(np.asarray(be_original, float))
    denominator = float(reference.sum())
    return float(model.sum()) / denominator if denominator > 1e-12 else math.nan


def evaluate_corruptions(
    model,
    meta: dict,
    paths: Sequence[str],
    y_true: Sequence[str],
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Balanced error of one classifier on a test set, clean and under every corruption/severity.

    ``model``, ``meta``: from ``meddap.classify.classifier.load_classifier``; ``paths``/``y_true``: the
    test set's images and class names. Images are read at the classifier's input size, then
    corrupted (``corrupt_images`` with ``seed``), then normalised as in training. Returns rows
    (corruption, severity, balanced_error, accuracy, n_images), the first one ("clean", 0).
    """
    import torch

    from meddap.classify.classifier import predict_proba
    from meddap.data.images import load_array

    classes = meta["classes"]
    truth = np.asarray(y_true)
    clean = [load_array(path, meta["input_size"]) for path in paths]

    def score(images: list[np.ndarray]) -> tuple[float, float]:
        tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        predicted = np.asarray(classes)[predict_proba(model, tensor, batch_size, meta["mean"], meta["std"]).argmax(1)]
        return balanced_error(truth, predicted), float((predicted == truth).mean())

    rows = [
        dict(
            zip(("corruption", "severity"), (CLEAN, 0)),
            **dict(zip(("balanced_error", "accuracy"), score(clean))),
            n_images=len(clean),
        )
    ]
    for corruption in corruptions:
        for severity in severities:
            images = corrupt_images(clean, corruption, severity, seed)
            be, acc = score(images)
            rows.append(
                {
                    "corruption": corruption,
                    "severity": int(severity),
                    "balanced_error": be,
                    "accuracy": acc,
                    "n_images": len(images),
                }
            )
    return pd.DataFrame(rows)


def robustness_summary(errors: pd.DataFrame, reference: str = "original") -> pd.DataFrame:
    """Per (variant, arch, fold, corruption): mean BE over severities, nBE and rBE vs ``reference``.

    ``errors``: long form with columns variant, arch, fold, corruption, severity, balanced_error
    (``evaluate_corruptions`` output plus the classifier's keys), the clean error as corruption
    "clean", severity 0. The reference is the ``reference`` variant's classifier of the same
    arch and fold. A final corruption "mean" row per classifier averages nBE and rBE over the
    corruptions (MedMNIST-C's summary); melted, the result feeds the evidence stage's ``summarise``
    for fold statistics. A fold's replicates (column ``replicate``, optional) are averaged
    per severity before nBE and rBE, as the statistics average them within the fold;
    ``n_replicates`` says how many there were.
    """
    keys = ["variant", "arch", "fold"]
    missing = {*keys, "corruption", "severity", "balanced_error"} - set(errors.columns)
    if missing:
        raise ValueError(f"errors table lacks columns {sorted(missing)}")
    if "replicate" in errors:
        # One value per (classifier, corruption, severity), then the mean over a fold's replicates.
        errors = errors.groupby([*keys, "replicate", "corruption", "severity"], sort=False, as_index=False)[
            "balanced_error"
        ].mean()
        replicates = errors.groupby(keys)["replicate"].nunique().to_dict()
    else:
        replicates = {}  # one classifier per fold
    clean = errors[errors["corruption"] == CLEAN].groupby(keys)["balanced_error"].mean()
    corrupted = errors[errors["corruption"] != CLEAN]
    per_severity = corrupted.groupby([*keys, "corruption", "severity"])["balanced_error"].mean()
    rows = []
    for (variant, arch, fold, corruption), group in corrupted.groupby([*keys, "corruption"], sort=False):
        be = group.groupby("severity")["balanced_error"].mean()
        row = {
            "variant": variant,
            "arch": arch,
            "fold": fold,
            "corruption": corruption,
            "be_mean": float(be.mean()),
            "be_clean": float(clean.get((variant, arch, fold), math.nan)),
            "n_replicates": int(replicates.get((variant, arch, fold), 1)),
        }
        try:
            ref = per_severity.loc[(reference, arch, fold, corruption)].reindex(be.index)
            ref_clean = float(clean.loc[(reference, arch, fold)])
        except KeyError:
            ref, ref_clean = None, math.nan
        if ref is None or ref.isna().any():
            row.update(nbe=math.nan, rbe=math.nan)
        else:
            row.update(
                nbe=normalised_balanced_error(be.to_numpy(), ref.to_numpy()),
                rbe=relative_balanced_error(be.to_numpy(), row["be_clean"], ref.to_numpy(), ref_clean),
            )
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*keys, "corruption", "be_mean", "be_clean", "nbe", "rbe", "n_replicates"])
    if table.empty:
        return table
    means = (
        table.groupby(keys, sort=False)
        .agg(
            be_mean=("be_mean", "mean"),
            be_clean=("be_clean", "mean"),
            nbe=("nbe", "mean"),
            rbe=("rbe", "mean"),
            n_replicates=("n_replicates", "min"),
        )
        .reset_index()
        .assign(corruption="mean")
    )
    return pd.concat([table, means[table.columns]], ignore_index=True)


def pooled_robustness(
    errors: pd.DataFrame,
    reference: str = "original",
    by: Sequence[str] = ("variant", "arch", "fold"),
    min_degradation: float = MIN_REFERENCE_DEGRADATION,
) -> pd.DataFrame:
    """``pooled_relative_balanced_error`` per ``by`` group, each cell against the same-fold reference.

    ``errors``: as ``robustness_summary`` (variant, arch, fold, corruption, severity,
    balanced_error; the clean error as corruption "clean"). Every (corruption, severity) cell of a
    classifier is paired with the ``reference`` variant's classifier of the same arch and fold,
    and each side's degradation is taken from its own clean error; ``by`` without "fold" pools
    the folds too. A group where the reference lacks a cell or a clean error gets NaN. Columns:
    ``by``, n_cells, degradation, reference_degradation, rbe_pooled, small_reference.
    """
    keys = ["variant", "arch", "fold"]
    by = list(by)
    missing = {*keys, *by, "corruption", "severity", "balanced_error"} - set(errors.columns)
    if missing:
        raise ValueError(f"errors table lacks columns {sorted(missing)}")
    cells = [*keys, "corruption", "severity"]
    mean = errors.groupby(cells, as_index=False)["balanced_error"].mean()
    clean = mean[mean["corruption"] == CLEAN].set_index(keys)["balanced_error"]
    table = mean[mean["corruption"] != CLEAN].copy()
    table["degradation"] = (
        table["balanced_error"].to_numpy() - clean.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    )
    ref = table[table["variant"] == reference].drop(columns=["variant", "balanced_error"])
    table = table.merge(
        ref.rename(columns={"degradation": "reference_degradation"}),
        on=["arch", "fold", "corruption", "severity"],
        how="left",
    )
    extra = [c for c in by if c not in table.columns]
    if extra:
        table = table.merge(errors[[*keys, *extra]].drop_duplicates(keys), on=keys, how="left")
    rows = []
    for key, group in table.groupby(by, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if group[["degradation", "reference_degradation"]].isna().any().any():
            row.update(
                n_cells=len(group),
                degradation=math.nan,
                reference_degradation=math.nan,
                rbe_pooled=math.nan,
                small_reference=False,
            )
        else:
            pooled = pooled_relative_balanced_error(
                group["degradation"].to_numpy(), 0.0, group["reference_degradation"].to_numpy(), 0.0, min_degradation
            )
            row.update(pooled)
        rows.append(row)
    return pd.DataFrame(
        rows, columns=[*by, "n_cells", "degradation", "reference_degradation", "rbe_pooled", "small_reference"]
    )
