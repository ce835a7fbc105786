"""Per-prediction metrics of one classifier on one set of images: the scores that the bootstrap
resamples (accuracy, balanced accuracy, macro-F1, macro AUROC), top-label calibration error, and
operating points (sensitivity at a specificity, a threshold fixed on the validation fold).

Inputs are arrays of true class indices and predictions (labels (N,) or probabilities (N, C)), or
the per-classifier ``predictions.csv`` table (path, class, predicted, prob_<class>...), read by
``predictions_arrays``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- per-image metrics


def predictions_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true class indices, probabilities (N, C), class names) from a ``predictions.csv`` table.

    Classes are the ``prob_<class>`` columns in file order (the classifier's class order).
    """
    columns = [c for c in predictions.columns if c.startswith("prob_")]
    classes = [c[len("prob_") :] for c in columns]
    unknown = sorted(set(predictions["class"]) - set(classes))
    if unknown:
        raise ValueError(f"predictions hold classes {unknown} that have no prob_ column")
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[c] for c in predictions["class"]], dtype=int), predictions[columns].to_numpy(float), classes


def align_predictions(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two predictions tables restricted to their shared images, in the same row order (by path)."""
    if a["path"].duplicated().any() or b["path"].duplicated().any():
        raise ValueError("a predictions table lists an image twice; cannot pair by path")
    shared = a[a["path"].isin(set(b["path"]))]["path"]
    a2, b2 = a.set_index("path").loc[shared].reset_index(), b.set_index("path").loc[shared].reset_index()
    if not (a2["class"].to_numpy() == b2["class"].to_numpy()).all():
        raise ValueError("the two predictions tables disagree on the true class of some images")
    return a2, b2


def _labels(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(1) if pred.ndim == 2 else pred


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def _recalls_and_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and F1 over the classes present in ``y_true`` (as meddap.classify.evaluate)."""
    n = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    cm = _confusion(y_true, y_pred, n)
    present = np.flatnonzero(cm.sum(1) > 0)
    tp = np.diag(cm)[present].astype(float)
    support, predicted = cm.sum(1)[present], cm.sum(0)[present]
    recall = tp / support
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return recall, f1


def _balanced_accuracy(y_true: np.ndarray, pred: np.ndarray) -> float:
    return float(_recalls_and_f1(y_true, _labels(pred))[0].mean())


def _macro_f1(y_true: np.ndarray, pred: np.ndarray) -> float:
    return float(_recalls_and_f1(y_true, _labels(pred))[1].mean())


def _accuracy(y_true: np.ndarray, pred: np.ndarray) -> float:
    return float((y_true == _labels(pred)).mean())


def _macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest AUROC averaged over classes with positives and negatives (as meddap.classify.evaluate)."""
    from sklearn.metrics import roc_auc_score

    if proba.ndim != 2:
        raise ValueError("macro_auroc needs probabilities of shape (N, C)")
    aucs = [
        roc_auc_score(y_true == i, proba[:, i]) for i in range(proba.shape[1]) if 0 < (y_true == i).sum() < len(y_true)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "balanced_error": lambda y, p: 1.0 - _balanced_accuracy(y, p),
    "macro_f1": _macro_f1,
    "macro_auroc": _macro_auroc,
}


def _metric(metric: str | Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a function (y_true, pred) -> float"
        )
    return METRICS[metric]


def expected_calibration_error(y_true: Sequence[int], proba: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of (n_b / N) |accuracy_b - confidence_b|.

    Confidence is the largest class probability, correctness whether its class is the true one.
    Bins are (k/n_bins, (k+1)/n_bins], the first one also holding confidence 0 (Guo et al. 2017).
    """
    y = np.asarray(y_true)
    proba = np.asarray(proba, float)
    if proba.ndim != 2 or len(proba) != len(y):
        raise ValueError("proba must have shape (N, C) with one row per label")
    if len(y) == 0:
        return math.nan
    confidence = proba.max(1)
    correct = (proba.argmax(1) == y).astype(float)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for k in range(n_bins):
        inside = bins == k
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def sensitivity_at_specificity(
    y_true_binary: Sequence[bool], score: Sequence[float], specificity: float = 0.9
) -> float:
    """Best sensitivity among the ROC's achievable thresholds with specificity >= ``specificity``.

    Exact and conservative: no interpolation between ROC points, so the value is attained by a
    real threshold on these images (sklearn ``roc_curve`` with ``drop_intermediate=False``).
    E.g. malignant vs rest: ``y_true_binary = class == "malignant"``, ``score = prob_malignant``.
    NaN when either class is absent.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, float)
    if y.all() or not y.any():
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    allowed = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[allowed].max())


# --------------------------------------------------------------------------- operating point on validation


def validation_threshold(y_true_binary: Sequence[bool], score: Sequence[float], specificity: float = 0.9) -> float:
    """The lowest score threshold whose specificity on these images is at least ``specificity``.

    Decision rule: positive when score >= threshold. Candidates are the observed scores and +inf
    (nothing positive); the lowest one allowed gives the highest sensitivity. NaN when either
    class is absent.
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, float)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if y.all() or not y.any():
        return math.nan
    negatives = np.sort(s[~y])
    candidates = np.r_[np.unique(s), np.inf]
    specificities = np.searchsorted(negatives, candidates, side="left") / len(negatives)
    return float(candidates[np.argmax(specificities >= specificity - 1e-12)])


def sensitivity_at_validation_specificity(
    val_y: Sequence[bool],
    val_score: Sequence[float],
    test_y: Sequence[bool],
    test_score: Sequence[float],
    specificity: float = 0.9,
) -> dict:
    """Test sensitivity and specificity at a threshold fixed on the VALIDATION fold's predictions.

    ``sensitivity_at_specificity`` on the test set picks its threshold on the test labels (an
    oracle operating point, optimistic); a deployed model's threshold is set beforehand, here on
    the fold's validation images, and the test set then says what it achieves (its specificity
    may miss the target). E.g. malignant vs rest: ``*_y = class == "malignant"``,
    ``*_score = prob_malignant``. Returns threshold, validation_sensitivity,
    validation_specificity, test_sensitivity, test_specificity (NaN where a class is absent).
    """
    val_y, val_score = np.asarray(val_y).astype(bool), np.asarray(val_score, float)
    test_y, test_score = np.asarray(test_y).astype(bool), np.asarray(test_score, float)
    if len(test_y) != len(test_score):
        raise ValueError(f"{len(test_y)} test labels but {len(test_score)} scores")
    threshold = validation_threshold(val_y, val_score, specificity)

    def rates(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
        if math.isnan(threshold):
            return math.nan, math.nan
        positive = s >= threshold
        sensitivity = float(positive[y].mean()) if y.any() else math.nan
        return sensitivity, float((~positive[~y]).mean()) if (~y).any() else math.nan

    val_sens, val_spec = rates(val_y, val_score)
    test_sens, test_spec = rates(test_y, test_score)
    return {
        "threshold": threshold,
        "validation_sensitivity": val_sens,
        "validation_specificity": val_spec,
        "test_sensitivity": test_sens,
        "test_specificity": test_spec,
    }
