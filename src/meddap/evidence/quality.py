"""Quality of synthetic images, measured in the feature space of a trained classifier.

Inception-based FID/precision/recall judge natural-image statistics; a classifier trained on
breast ultrasound judges what matters here. Features are the classifier's penultimate layer
(the input of its classification head). With few images these measures are biased (FID most
of all: it grows as the sample shrinks), so compare sets of equal size, never absolute values
across studies.

Measures:

* ``frechet_distance`` (``meddap.evidence.features``, as the feature extraction): distance
  between Gaussian fits of two feature sets;
* ``precision_recall_knn`` (``meddap.evidence.features``): Kynkaanniemi et al. 2019 improved
  precision (synthetic realism) and recall (coverage of the real images) with k-NN manifolds;
* ``class_fidelity``: share of synthetic images the classifier assigns to the intended class;
* ``adjective_effect``: did "bright", "low-contrast", ... change what they say, measured on pixels;
* ``nearest_training_copies``: synthetic images suspiciously close to a training image
  (memorisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from meddap.evidence.features import extract_features, frechet_distance, precision_recall_knn

# --------------------------------------------------------------------------- fidelity and adjectives


def class_fidelity(pred_classes: Sequence, intended: Sequence) -> float:
    """Share of synthetic images whose predicted class is the class they were generated for."""
    pred, wanted = np.asarray(pred_classes), np.asarray(intended)
    if len(pred) != len(wanted):
        raise ValueError(f"{len(pred)} predictions but {len(wanted)} intended classes")
    return float((pred == wanted).mean()) if len(pred) else math.nan


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma
    return image.astype(np.float64)


def image_measures(image: np.ndarray) -> dict[str, float]:
    """Pixel measures of one uint8 image (grey or RGB), on the 0-255 scale.

    mean_intensity: mean luma; rms_contrast: std of luma / 255 (Peli 1990); grey_levels: number
    of distinct 8-bit luma values; colorfulness: Hasler and Suesstrunk 2003 (0 for grey).
    """
    image = np.asarray(image)
    luma = _grey(image)
    measures = {
        "mean_intensity": float(luma.mean()),
        "rms_contrast": float(luma.std() / 255.0),
        "grey_levels": float(len(np.unique(np.rint(luma).astype(np.uint8)))),
        "colorfulness": 0.0,
    }
    if image.ndim == 3 and image.shape[2] >= 3:
        r, g, b = (image[..., i].astype(np.float64) for i in range(3))
        rg, yb = r - g, 0.5 * (r + g) - b
        measures["colorfulness"] = float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))
    return measures


MEASURES = ("mean_intensity", "rms_contrast", "grey_levels", "colorfulness")
# What each prompt adjective should change, compared with the same class's 'none' images.
# The generated sets are independent (not pairs), so only population-level pixel statistics can
# be checked: solarized (tone inversion above a threshold), stylized and sheared (geometry) have
# no honest check without paired images, and are reported as "not measured".
EXPECTATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "bright": (("mean_intensity", "up"),),
    "dark": (("mean_intensity", "down"),),
    "high-contrast": (("rms_contrast", "up"),),
    "low-contrast": (("rms_contrast", "down"),),
    "posterized": (("grey_levels", "down"),),
    "colorful": (("colorfulness", "up"),),
    "solarized": (),
    "stylized": (),
    "sheared": (),
}


def _load(images: Sequence[str | Path | np.ndarray]) -> list[np.ndarray]:
    from meddap.data.images import load_array

    return [np.asarray(item) if isinstance(item, np.ndarray) else load_array(item) for item in images]


def adjective_effect(
    images_adj: Sequence[str | Path | np.ndarray],
    images_none: Sequence[str | Path | np.ndarray],
    adjective: str,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Did the adjective do what it says? Pixel measures of both sets and a verdict per measure.

    ``images_adj``: images generated with the adjective; ``images_none``: the same class without
    one (paths or uint8 arrays). One row per measure in ``MEASURES``: the means of both sets,
    difference, Cohen's d (pooled SD), the two-sided Mann-Whitney U p-value, the expected
    direction from ``EXPECTATIONS`` ("up", "down" or "" when the adjective does not target that
    measure), and a verdict: "as expected" (expected direction, p < alpha), "opposite"
    (other direction, p < alpha), "no clear change" (p >= alpha), "not targeted" (measure the
    adjective does not claim to change), or "not measured" (adjective without a pixel check).
    """
    from scipy.stats import mannwhitneyu

    adj = pd.DataFrame([image_measures(image) for image in _load(images_adj)], columns=list(MEASURES))
    none = pd.DataFrame([image_measures(image) for image in _load(images_none)], columns=list(MEASURES))
    expected = dict(EXPECTATIONS.get(adjective, ()))
    checked = bool(EXPECTATIONS.get(adjective))
    rows = []
    for measure in MEASURES:
        a, b = adj[measure].to_numpy(), none[measure].to_numpy()
        difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        pooled = (
            math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
            if len(a) > 1 and len(b) > 1
            else math.nan
        )
        cohens_d = difference / pooled if pooled and not math.isnan(pooled) else math.nan
        if len(a) and len(b) and not (np.all(a == a[0]) and np.all(b == a[0])):
            p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
        else:
            p = math.nan if not (len(a) and len(b)) else 1.0
        direction = expected.get(measure, "")
        if not checked:
            verdict = "not measured"
        elif not direction:
            verdict = "not targeted"
        elif math.isnan(p) or p >= alpha:
            verdict = "no clear change"
        else:
            verdict = "as expected" if (difference > 0) == (direction == "up") else "opposite"
        rows.append(
            {
                "adjective": adjective,
                "measure": measure,
                "mean_adjective": float(a.mean()) if len(a) else math.nan,
                "mean_none": float(b.mean()) if len(b) else math.nan,
                "difference": difference,
                "cohens_d": cohens_d,
                "p_value": p,
                "expected": direction,
                "verdict": verdict,
                "n_adjective": len(a),
                "n_none": len(b),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- memorisation


def nearest_training_copies(
    synth_feats: np.ndarray,
    train_feats: np.ndarray,
    synth_ids: Sequence[str],
    train_ids: Sequence[str],
    top: int | None = 8,
    percentile: float = 1.0,
) -> pd.DataFrame:
    """Each synthetic image's nearest training image, and a flag for suspiciously close ones.

    Distances are Euclidean in the given feature space. The scale of "close" comes from the
    real data: every training image's distance to its nearest *other* training image; a
    synthetic image is a ``near_copy`` when its distance is below the ``percentile``-th
    percentile (default 1st) of those train-train distances, i.e. closer than 99% of real
    images are to each other. Rows, sorted by distance (closest first): the ``top`` closest
    pairs plus every near copy (so none is hidden); ``top=None`` gives every synthetic image.
    Columns: synthetic_id, train_id, distance, relative_distance (distance / median train-train
    distance), threshold, near_copy, rank.
    """
    from sklearn.neighbors import NearestNeighbors

    synth, train = np.asarray(synth_feats, np.float64), np.asarray(train_feats, np.float64)
    if len(synth) != len(synth_ids) or len(train) != len(train_ids):
        raise ValueError("one id per feature row is needed for both sets")
    if len(train) < 2:
        raise ValueError("need at least 2 training images to set the near-copy threshold")
    index = NearestNeighbors(n_neighbors=2).fit(train)
    train_nn = index.kneighbors(train)[0][:, 1]
    threshold = float(np.percentile(train_nn, percentile))
    median = float(np.median(train_nn))
    columns = ["synthetic_id", "train_id", "distance", "relative_distance", "threshold", "near_copy", "rank"]
    if len(synth) == 0:
        return pd.DataFrame(columns=columns)
    distance, nearest = index.kneighbors(synth, n_neighbors=1)
    frame = (
        pd.DataFrame(
            {
                "synthetic_id": list(synth_ids),
                "train_id": np.asarray(train_ids, dtype=object)[nearest[:, 0]],
                "distance": distance[:, 0],
                "relative_distance": distance[:, 0] / median if median > 0 else math.nan,
                "threshold": threshold,
                "near_copy": distance[:, 0] < threshold,
            }
        )
        .sort_values("distance", kind="stable")
        .reset_index(drop=True)
    )
    frame["rank"] = np.arange(1, len(frame) + 1)
    if top is not None:
        frame = frame[(frame["rank"] <= top) | frame["near_copy"]]
    return frame[columns].reset_index(drop=True)


# --------------------------------------------------------------------------- entry point


def synthetic_quality(
    model: nn.Module,
    meta: dict,
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    k: int = 3,
    batch_size: int = 64,
) -> pd.DataFrame:
    """FD, precision/recall and class fidelity per (class, adjective) of the synthetic images.

    ``model``, ``meta``: a classifier from ``meddap.classify.classifier.load_classifier`` (normally the
    ``original`` one of a fold, which never saw synthetic images). ``real``: the real training
    images (columns path, class); ``synthetic``: ``meddap.diffusion.generate.read_shards`` output (path,
    class, adjective). Each synthetic (class, adjective) group is compared with the real images
    of its class, plus an "all" adjective row per class. Groups too small for a measure get NaN.
    """
    from meddap.classify.classifier import load_image_tensor

    classes = meta["classes"]

    def features(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images = load_image_tensor(paths, meta["input_size"])
        feats, logits = extract_features(
            model,
            images,
            batch_size,
            meta["mean"],
            meta["std"],
            n_classes=len(classes),
            progress=False,
            return_logits=True,
        )
        return feats, np.asarray(classes)[logits.argmax(1)]

    real_feats, _ = features(list(real["path"]))
    synth_feats, synth_pred = features(list(synthetic["path"]))
    synthetic = synthetic.reset_index(drop=True).assign(_pred=synth_pred)
    groups = [
        (cls, adj, synthetic.index[(synthetic["class"] == cls) & (synthetic["adjective"] == adj)])
        for cls, adj in synthetic[["class", "adjective"]].drop_duplicates().itertuples(index=False)
    ]
    groups += [(cls, "all", synthetic.index[synthetic["class"] == cls]) for cls in synthetic["class"].drop_duplicates()]
    rows = []
    for cls, adj, index in groups:
        fake = synth_feats[index]
        ref = real_feats[(real["class"] == cls).to_numpy()]
        row = {
            "class": cls,
            "adjective": adj,
            "n_synthetic": len(fake),
            "n_real": len(ref),
            "fidelity": class_fidelity(synthetic.loc[index, "_pred"], [cls] * len(index)),
        }
        row["frechet_distance"] = frechet_distance(ref, fake) if len(ref) >= 2 and len(fake) >= 2 else math.nan
        pr = (
            precision_recall_knn(ref, fake, k)
            if len(ref) > k and len(fake) > k
            else {"precision": math.nan, "recall": math.nan}
        )
        row.update(precision=pr["precision"], recall=pr["recall"], k=k)
        rows.append(row)
    return pd.DataFrame(rows)


def quality_report(
    model_dirs: Sequence[str | Path],
    manifest: pd.DataFrame,
    arms: Sequence[str],
    arm_shards: dict[str, Sequence[str | Path]],
    k: int = 3,
    top: int = 8,
) -> dict[str, pd.DataFrame]:
    """Every quality table of the report, from the ``original`` classifiers of the folds.

    ``model_dirs[i]``: the ``original`` classifier of fold i (one architecture), which never saw
    a synthetic image; ``arms[i]``: the generative arm whose synthetic images train fold i;
    ``arm_shards``: each arm's shard folders; ``manifest``: the split manifest. Fold i's images
    are compared with the originals that its arm's LoRAs trained on (test images never enter).

    Returns ``quality`` (per class and adjective: Fréchet distance, precision, recall and class
    fidelity as mean and std over the folds' classifiers), ``adjective_effect`` (pixel measures of
    each adjective against the no-adjective images of the same class, over every arm) and
    ``near_copies`` (the first fold's synthetic images closest to one of its arm's training
    images, with the near-copy flag of ``nearest_training_copies``).
    """
    from meddap.classify.classifier import load_classifier, load_image_tensor
    from meddap.data.arms import arm_training_rows
    from meddap.diffusion.generate import read_shards

    if len(arms) != len(model_dirs):
        raise ValueError(f"{len(model_dirs)} classifiers but {len(arms)} arms: one arm per fold")
    per_fold = []
    near = pd.DataFrame()
    for fold, (model_dir, arm) in enumerate(zip(model_dirs, arms)):
        real = arm_training_rows(manifest, arm).reset_index(drop=True)
        synthetic = read_shards(list(arm_shards[arm]))
        model, meta = load_classifier(model_dir)
        per_fold.append(synthetic_quality(model, meta, real, synthetic, k=k).assign(fold=fold))
        if fold == 0 and len(synthetic):

            def features(paths: list[str], model=model, meta=meta):
                images = load_image_tensor(paths, meta["input_size"])
                return extract_features(
                    model, images, 64, meta["mean"], meta["std"], n_classes=len(meta["classes"]), progress=False
                )

            train_feats, synth_feats = features(list(real["path"])), features(list(synthetic["path"]))
            near = nearest_training_copies(
                synth_feats, train_feats, list(synthetic["path"]), list(real["path"]), top=top
            )
    synthetic = read_shards([path for arm in dict.fromkeys(arms) for path in arm_shards[arm]])
    measures = ["frechet_distance", "precision", "recall", "fidelity"]
    if per_fold:
        joined = pd.concat(per_fold, ignore_index=True)
        grouped = joined.groupby(["class", "adjective"], sort=False)
        quality = grouped[measures].agg(["mean", "std"])
        quality.columns = [f"{measure}_{stat}" for measure, stat in quality.columns]
        quality = quality.reset_index().merge(
            grouped[["n_synthetic", "n_real"]].first().reset_index(), on=["class", "adjective"]
        )
        quality["n_folds"] = len(per_fold)
    else:
        quality = pd.DataFrame(
            columns=[
                "class",
                "adjective",
                *[f"{m}_{s}" for m in measures for s in ("mean", "std")],
                "n_synthetic",
                "n_real",
                "n_folds",
            ]
        )
    effects = []
    for cls in sorted(synthetic["class"].unique()):
        none = synthetic[(synthetic["class"] == cls) & (synthetic["adjective"] == "none")]
        for adjective in sorted(synthetic.loc[synthetic["class"] == cls, "adjective"].unique()):
            if adjective == "none" or none.empty:
                continue
            images = synthetic[(synthetic["class"] == cls) & (synthetic["adjective"] == adjective)]
            effects.append(
                adjective_effect(list(images["path"]), list(none["path"]), adjective).assign(**{"class": cls})
            )
    effect = (
        pd.concat(effects, ignore_index=True)
        if effects
        else pd.DataFrame(columns=["class", "adjective", "measure", "verdict"])
    )
    effect = effect[["class", *[c for c in effect.columns if c != "class"]]]
    return {"quality": quality, "adjective_effect": effect, "near_copies": near}
