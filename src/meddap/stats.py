"""Statistics over evaluation results: fold summaries with paired tests, bootstrap CIs, calibration.

Two sources of uncertainty, kept apart on purpose:

* between folds (``summarise``): each fold is a different training set and classifier, so the
  spread over folds is the variability of the *training procedure*; the paired tests compare two
  variants fold by fold (same validation split, same test set). A fold's replicates (classifiers
  of other seeds, ``classifier.replicates``) share its data and are not independent: they are
  averaged within (variant, arch, test set, fold) first, so the pairs are the folds.
* between test images (``bootstrap_ci``, ``bootstrap_difference_ci``): the variability of the
  *test-set estimate* of one trained classifier; resampling the same images for two classifiers
  gives a paired CI of their difference.

Inputs are the project's tables: the long-form ``results/report/metrics.csv`` (columns variant,
family, ratio, arch, fold, test_set, metric, value and optionally replicate, adjective,
test_set_kind) and
the per-classifier ``predictions.csv`` (path, class, predicted, prob_<class>...). A variant's
family and ratio are data the plan wrote; variant names are labels only, never parsed.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from meddap.plan import ADJECTIVE, CLASSIC, MIXED, ORIGINAL

GROUP = ["variant", "arch", "test_set", "metric"]
WILCOXON_MIN_PAIRS = 6  # below this the exact Wilcoxon p-value cannot reach 0.05 (2/2^5 = 0.0625)
SYNTHETIC_FAMILIES = (ADJECTIVE, MIXED)  # the families that add synthetic images, compared with classic


# --------------------------------------------------------------------------- fold summaries


def variant_data(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (index: its name) with its family and ratio, as the table carries them."""
    missing = {"variant", "family", "ratio"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)} (written by the evaluate rule from the plan)")
    grouped = metrics.groupby("variant", sort=False)[["family", "ratio"]]
    inconsistent = grouped.nunique(dropna=False).max(axis=1) > 1
    if inconsistent.any():
        raise ValueError(f"variants {sorted(inconsistent[inconsistent].index)} have more than one family or ratio")
    return grouped.first()


def original_variant(metrics: pd.DataFrame) -> str | None:
    """The variant of the ``original`` family (no extra images) in ``metrics``; None without one."""
    families = variant_data(metrics)
    names = list(families.index[families["family"] == ORIGINAL])
    if len(names) > 1:
        raise ValueError(f"more than one variant of the original family: {names}")
    return names[0] if names else None


def classic_partners(metrics: pd.DataFrame) -> dict[str, str]:
    """Synthetic variant -> the classic-augmentation variant of the same ratio, both in ``metrics``.

    Paired by the family and ratio columns, so a variant's name does not matter; synthetic
    variants whose ratio has no classic variant in the table are left out.
    """
    families = variant_data(metrics)
    classic = families[families["family"] == CLASSIC]
    by_ratio = {float(ratio): name for name, ratio in classic["ratio"].items()}
    if len(by_ratio) < len(classic):
        raise ValueError(f"two classic variants share a ratio: {sorted(classic.index)}")
    synthetic = families[families["family"].isin(SYNTHETIC_FAMILIES)]
    return {name: by_ratio[float(ratio)] for name, ratio in synthetic["ratio"].items() if float(ratio) in by_ratio}


def paired_test(values: Sequence[float], baseline: Sequence[float]) -> dict:
    """Paired comparison of two per-fold series of equal length (fold i with fold i).

    Returns delta (mean of values - baseline), its 95% t-interval, the paired t-test p-value and,
    with at least ``WILCOXON_MIN_PAIRS`` pairs, the two-sided Wilcoxon signed-rank p-value
    (NaN otherwise). Edge cases: fewer than 2 pairs gives NaN p-values; all differences zero
    gives p = 1 (no evidence of a difference); identical non-zero differences give a NaN t-test
    (zero variance: undefined) while Wilcoxon still answers.
    """
    from scipy.stats import t as student_t
    from scipy.stats import ttest_rel, wilcoxon

    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    keep = ~(np.isnan(values) | np.isnan(baseline))
    diff = values[keep] - baseline[keep]
    n = int(len(diff))
    out = {
        "delta": math.nan,
        "delta_ci_low": math.nan,
        "delta_ci_high": math.nan,
        "p_t": math.nan,
        "p_wilcoxon": math.nan,
        "n_pairs": n,
    }
    if n == 0:
        return out
    out["delta"] = float(diff.mean())
    if n < 2:
        return out
    spread = float(diff.std(ddof=1))
    half = float(student_t.ppf(0.975, n - 1)) * spread / math.sqrt(n)
    out["delta_ci_low"], out["delta_ci_high"] = out["delta"] - half, out["delta"] + half
    if np.allclose(diff, 0.0, atol=1e-12):
        out["p_t"] = 1.0
        out["p_wilcoxon"] = 1.0 if n >= WILCOXON_MIN_PAIRS else math.nan
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not np.allclose(diff, diff[0], rtol=0, atol=1e-12):
            out["p_t"] = float(ttest_rel(values[keep], baseline[keep]).pvalue)
        if n >= WILCOXON_MIN_PAIRS:
            out["p_wilcoxon"] = float(wilcoxon(diff).pvalue)
    return out


REPLICATE = "replicate"


def _series(frame: pd.DataFrame) -> pd.Series:
    """One value per fold: the mean over the fold's replicates (a table without a replicate column
    holds one classifier per fold)."""
    if REPLICATE in frame:
        frame = frame.groupby(["fold", REPLICATE])["value"].mean().reset_index()
    return frame.groupby("fold")["value"].mean()


def _replicates(frame: pd.DataFrame) -> int:
    """The fewest replicates of any fold in ``frame`` (1 without a replicate column)."""
    if REPLICATE not in frame:
        return 1
    return int(frame.groupby("fold")[REPLICATE].nunique().min())


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, arch, test_set, metric): mean/std over folds and paired tests vs two baselines.

    ``metrics``: long form, one row per (variant, arch, fold[, replicate], test_set, metric) with
    ``value`` and
    the variant's ``family`` and ``ratio`` (as ``meddap.report.collect_metrics`` writes it; extra
    columns such as adjective and test_set_kind are carried through). Baselines, paired on the
    shared folds of the same arch and test set, found by family and ratio (``classic_partners``):

    * the variant of the ``original`` family (columns ``*_vs_original``);
    * the classic-augmentation variant of the same ratio (``*_vs_classic``; NaN, and an empty
      ``classic_variant``, where no such variant was run, and for original/classic rows).

    A fold's replicates are averaged first (one value per fold), so n_pairs counts folds, never
    classifiers. A variant compared with itself gets delta 0 and NaN p-values. Wilcoxon p-values
    need at least 6 paired folds (NaN below). Columns: the key, any carried columns, mean, std
    (ddof=1, NaN for one fold), n_folds, n_replicates (the fewest of any fold), then for each
    baseline: delta, delta_ci_low/high (95% t-interval of the mean paired difference), p_t,
    p_wilcoxon, n_pairs; and ``classic_variant``.
    """
    missing = {"variant", "family", "ratio", "arch", "fold", "test_set", "metric", "value"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    original, partners = original_variant(metrics), classic_partners(metrics)
    carried = [c for c in metrics.columns if c not in {*GROUP, "fold", REPLICATE, "value"}]
    groups = {key: group for key, group in metrics.groupby(GROUP, sort=False)}
    series = {key: _series(group) for key, group in groups.items()}
    rows = []
    for key, per_fold in series.items():
        variant, arch, test_set, metric = key
        first = groups[key].iloc[0]
        row = dict(zip(GROUP, key))
        row.update({c: first[c] for c in carried})
        row.update(
            mean=float(per_fold.mean()),
            std=float(per_fold.std(ddof=1)) if len(per_fold) > 1 else math.nan,
            n_folds=int(len(per_fold)),
            n_replicates=_replicates(groups[key]),
        )
        classic = partners.get(variant)
        row["classic_variant"] = classic or ""
        for suffix, base_name in (("original", original), ("classic", classic)):
            if base_name == variant:
                result = {
                    "delta": 0.0,
                    "delta_ci_low": math.nan,
                    "delta_ci_high": math.nan,
                    "p_t": math.nan,
                    "p_wilcoxon": math.nan,
                    "n_pairs": len(per_fold),
                }
            elif base_name is None or (base_name, arch, test_set, metric) not in series:
                result = {
                    "delta": math.nan,
                    "delta_ci_low": math.nan,
                    "delta_ci_high": math.nan,
                    "p_t": math.nan,
                    "p_wilcoxon": math.nan,
                    "n_pairs": 0,
                }
            else:
                joined = pd.concat(
                    [per_fold.rename("v"), series[(base_name, arch, test_set, metric)].rename("b")],
                    axis=1,
                    join="inner",
                )
                result = paired_test(joined["v"].to_numpy(), joined["b"].to_numpy())
            row.update({f"{name}_vs_{suffix}": value for name, value in result.items()})
        rows.append(row)
    return pd.DataFrame(rows)


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
    """Per-class recall and F1 over the classes present in ``y_true`` (as meddap.evaluate)."""
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
    """One-vs-rest AUROC averaged over classes with positives and negatives (as meddap.evaluate)."""
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


def _resampled(y_true: np.ndarray, preds: list[np.ndarray], fn: Callable, n_boot: int, seed: int) -> np.ndarray:
    """Metric values over ``n_boot`` bootstrap resamples (rows = resamples, columns = preds)."""
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, len(preds)), np.nan)
    n = len(y_true)
    for b in range(n_boot):
        index = rng.integers(0, n, n)
        for j, pred in enumerate(preds):
            try:
                out[b, j] = fn(y_true[index], pred[index])
            except ValueError:
                pass  # e.g. AUROC of a resample with a single class: left out (NaN)
    return out


def _check(y_true, *preds) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y_true)
    arrays = [np.asarray(p) for p in preds]
    for p in arrays:
        if len(p) != len(y):
            raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if len(y) == 0:
        raise ValueError("no test images to bootstrap")
    return y, arrays


def bootstrap_ci(
    y_true: Sequence[int],
    y_pred_or_proba: np.ndarray,
    metric: str | Callable = "balanced_accuracy",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Percentile bootstrap CI of a metric over test images (resampled with replacement).

    ``y_true``: class indices; ``y_pred_or_proba``: predicted indices (N,) or probabilities (N, C)
    (label metrics use the argmax). ``metric``: a name in ``METRICS`` or f(y_true, pred) -> float.
    Resamples where the metric is undefined (ValueError, NaN) are left out; ``n_valid`` counts
    the rest. Returns {estimate (on all images), low, high, n_boot, n_valid, alpha}.
    """
    fn = _metric(metric)
    y, (pred,) = _check(y_true, y_pred_or_proba)
    values = _resampled(y, [pred], fn, n_boot, seed)[:, 0]
    low, high = _percentiles(values, alpha)
    return {
        "estimate": float(fn(y, pred)),
        "low": low,
        "high": high,
        "n_boot": n_boot,
        "n_valid": int((~np.isnan(values)).sum()),
        "alpha": alpha,
    }


def bootstrap_difference_ci(
    y_true: Sequence[int],
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: str | Callable = "balanced_accuracy",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired percentile bootstrap CI of metric(a) - metric(b) on the same test images.

    Both models are scored on the *same* resampled indices, so image difficulty cancels.
    Also returns ``p_bootstrap``: two-sided share of resampled differences on the other side of
    zero (2 x min(P(d <= 0), P(d >= 0)), capped at 1) - an approximate, not an exact, p-value.
    """
    fn = _metric(metric)
    y, (a, b) = _check(y_true, pred_a, pred_b)
    values = _resampled(y, [a, b], fn, n_boot, seed)
    diff = values[:, 0] - values[:, 1]
    low, high = _percentiles(diff, alpha)
    return {
        "estimate": float(fn(y, a) - fn(y, b)),
        "low": low,
        "high": high,
        "p_bootstrap": _bootstrap_p(diff),
        "n_boot": n_boot,
        "n_valid": int((~np.isnan(diff)).sum()),
        "alpha": alpha,
    }


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


def bootstrap_fold_mean(
    y_true: Sequence[int],
    variant_preds: Sequence[np.ndarray],
    baseline_preds: Sequence[np.ndarray] = (),
    metric: str | Callable = "macro_f1",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    variant_folds: Sequence[object] | None = None,
    baseline_folds: Sequence[object] | None = None,
) -> dict:
    """Bootstrap CI over test images of the fold-mean metric, and of its difference to a baseline.

    Every fold's classifier is scored on the *same* resampled images (and so is the baseline's),
    so the interval is that of the number the report shows (the mean over folds) under the
    variability of the test sample. ``variant_folds`` / ``baseline_folds`` name the fold of each
    prediction where a fold has several (replicates): their metrics are averaged within the fold
    first, then over folds (None: one prediction per fold). Returns estimate/low/high and, with a
    baseline, delta/delta_low/delta_high/p_bootstrap (as in ``bootstrap_difference_ci``).
    """
    fn = _metric(metric)
    y, preds = _check(y_true, *variant_preds, *baseline_preds)
    k = len(variant_preds)
    variant_folds = list(range(k)) if variant_folds is None else list(variant_folds)
    baseline_folds = list(range(len(preds) - k)) if baseline_folds is None else list(baseline_folds)
    if len(variant_folds) != k or len(baseline_folds) != len(preds) - k:
        raise ValueError("one fold label per prediction is needed")
    values = _resampled(y, preds, fn, n_boot, seed)
    on_all = np.array([[fn(y, p) for p in preds]])
    mean_variant = _fold_mean(values[:, :k], variant_folds)
    low, high = _percentiles(mean_variant, alpha)
    out = {"estimate": float(_fold_mean(on_all[:, :k], variant_folds)[0]), "low": low, "high": high, "n_boot": n_boot}
    if baseline_preds:
        diff = mean_variant - _fold_mean(values[:, k:], baseline_folds)
        d_low, d_high = _percentiles(diff, alpha)
        baseline = float(_fold_mean(on_all[:, k:], baseline_folds)[0])
        out.update(delta=out["estimate"] - baseline, delta_low=d_low, delta_high=d_high, p_bootstrap=_bootstrap_p(diff))
    return out


def _fold_mean(values: np.ndarray, folds: Sequence[object]) -> np.ndarray:
    """Row-wise mean over folds of the mean over each fold's columns (``folds``: one label per column)."""
    labels = list(dict.fromkeys(folds))
    folds = np.asarray(folds, dtype=object)
    return np.stack([values[:, folds == label].mean(1) for label in labels], axis=1).mean(1)


def _bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided share of resampled differences on the other side of zero (NaN resamples left out)."""
    valid = diff[~np.isnan(diff)]
    if not len(valid):
        return math.nan
    return min(1.0, 2 * min(float((valid <= 0).mean()), float((valid >= 0).mean())))


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    valid = values[~np.isnan(values)]
    if not len(valid):
        return math.nan, math.nan
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_table(
    records: Sequence[dict], metric: str = "macro_f1", n_boot: int = 1000, seed: int = 0, reference: str = ORIGINAL
) -> pd.DataFrame:
    """Per (variant, arch, test_set): bootstrap CI of the fold-mean ``metric`` and of its difference to ``reference``.

    ``records``: {variant, arch, fold, test_set, predictions (path to predictions.csv)} and
    optionally replicate. The tables are paired by image path (each test set is the same images
    for every classifier); a fold's replicates are averaged within the fold before the mean over
    folds (``bootstrap_fold_mean``).
    """
    frames = {}
    for record in records:
        frames.setdefault((record["variant"], record["arch"], record["test_set"]), []).append(
            (int(record["fold"]), int(record.get("replicate", 0)), pd.read_csv(record["predictions"]))
        )
    rows = []
    for (variant, arch, test_set), members in sorted(frames.items(), key=lambda item: item[0]):
        members = sorted(members, key=lambda member: member[:2])
        baseline = sorted(frames.get((reference, arch, test_set), []), key=lambda member: member[:2])
        baseline = baseline if variant != reference else []
        tables = [table for _, _, table in [*members, *baseline]]
        paths = sorted(set.intersection(*(set(t["path"]) for t in tables)))
        if not paths:
            continue
        aligned = [t.set_index("path").loc[paths].reset_index() for t in tables]
        y, _, _ = predictions_arrays(aligned[0])
        probas = [predictions_arrays(t)[1] for t in aligned]
        folds = [fold for fold, _, _ in members]
        result = bootstrap_fold_mean(
            y,
            probas[: len(members)],
            probas[len(members) :],
            metric,
            n_boot,
            seed,
            variant_folds=folds,
            baseline_folds=[fold for fold, _, _ in baseline],
        )
        replicates = pd.Series([replicate for _, replicate, _ in members]).groupby(folds).nunique()
        rows.append(
            {
                "variant": variant,
                "arch": arch,
                "test_set": test_set,
                "metric": metric,
                "n_images": len(paths),
                "n_folds": len(set(folds)),
                "n_replicates": int(replicates.min()),
                **result,
            }
        )
    return pd.DataFrame(rows)
