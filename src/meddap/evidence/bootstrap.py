"""Group bootstrap over test images: the variability of the *test-set estimate* of trained classifiers.

Near-duplicate groups are resampled, not single images (a scan and its near-copies are one
observation); resampling the same groups for two variants gives a paired CI of their difference
(``group_bootstrap_table``, BCa, else percentile). The metrics are ``meddap.classify.metrics``'s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from meddap.classify.metrics import _metric, predictions_arrays


def group_codes(groups: Sequence | None, n: int) -> np.ndarray:
    """Group index (0..G-1, in order of first appearance) of each of ``n`` images.

    Images without a group (None, NaN, or ``groups`` None) are each their own group.
    """
    if groups is None:
        return np.arange(n)
    codes, _ = pd.factorize(pd.Series(list(groups), dtype=object))
    if len(codes) != n:
        raise ValueError(f"{n} images but {len(codes)} group labels")
    alone = codes < 0
    codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
    return codes


def _as_list(preds) -> list[np.ndarray]:
    """One classifier's predictions (an array) or several (a list or tuple of arrays)."""
    return [np.asarray(p) for p in preds] if isinstance(preds, (list, tuple)) else [np.asarray(preds)]


def _group_bootstrap(
    statistic: Callable[[np.ndarray], float],
    codes: np.ndarray,
    n_resamples: int,
    seed: int,
    alpha: float,
    method: str,
) -> dict:
    """CI of ``statistic(image indices)`` resampling whole groups (``scipy.stats.bootstrap``).

    A resample draws G groups with replacement and keeps every image of each drawn group as many
    times as it was drawn. BCa's bias and acceleration need a finite statistic on every resample
    and a non-degenerate distribution; when scipy cannot compute it, the percentile interval of
    the same resamples is returned and ``reason`` says why.
    """
    from scipy.stats import bootstrap

    n_groups, n = int(codes.max(initial=-1)) + 1, len(codes)
    out = {"estimate": statistic(np.arange(n)), "low": math.nan, "high": math.nan, "method": method, "reason": ""}
    out.update(n_images=n, n_groups=n_groups, n_resamples=n_resamples, alpha=alpha)
    if n_groups < 2:
        out.update(method="", reason="fewer than 2 groups: nothing to resample")
        return out

    def resampled(sample: np.ndarray) -> float:
        drawn = np.bincount(sample, minlength=n_groups)
        return statistic(np.repeat(np.arange(n), drawn[codes]))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bootstrap(
            (np.arange(n_groups),),
            resampled,
            n_resamples=n_resamples,
            vectorized=False,
            confidence_level=1 - alpha,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    distribution = np.asarray(result.bootstrap_distribution, float)
    if math.isfinite(low) and math.isfinite(high):
        out.update(low=low, high=high)
        return out
    if method.lower() != "bca":
        out["reason"] = f"{method} interval not computable"
        return out
    if np.isnan(distribution).any():
        reason = f"metric undefined on {int(np.isnan(distribution).sum())} resamples"
    elif np.ptp(distribution) == 0:
        reason = "degenerate: every resample gives the same value"
    else:
        messages = "; ".join(sorted({str(w.message).split(".")[0] for w in caught}))
        reason = f"BCa not computable ({messages})" if messages else "BCa not computable"
    out.update(method="percentile", reason=reason + "; percentile interval instead")
    out["low"], out["high"] = _percentiles(distribution, alpha)
    return out


def group_bootstrap_ci(
    y_true: Sequence[int],
    preds: np.ndarray | Sequence[np.ndarray],
    groups: Sequence | None = None,
    metric: str | Callable = "macro_f1",
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = "BCa",
) -> dict:
    """Bootstrap CI of a metric over test images, resampling near-duplicate GROUPS, not images.

    Near-duplicates of one scan are not independent test cases: resampling them one by one
    counts them as separate evidence and narrows the interval. ``groups``: one label per image
    (e.g. the manifest's ``group``); images without one are their own group. ``preds``: one
    classifier's predictions (N,) or probabilities (N, C), or a list of several (folds,
    replicates) scored on the same resampled images, whose mean metric is bootstrapped.
    Returns {estimate, low, high, method (BCa, or percentile with a reason), reason, n_images,
    n_groups, n_resamples, alpha}.
    """
    fn = _metric(metric)
    y, arrays = _check(y_true, *_as_list(preds))
    codes = group_codes(groups, len(y))
    return _group_bootstrap(lambda index: _mean_metric(fn, y, arrays, index), codes, n_resamples, seed, alpha, method)


def group_bootstrap_difference_ci(
    y_true: Sequence[int],
    preds_a: np.ndarray | Sequence[np.ndarray],
    preds_b: np.ndarray | Sequence[np.ndarray],
    groups: Sequence | None = None,
    metric: str | Callable = "macro_f1",
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    method: str = "BCa",
) -> dict:
    """Paired group-bootstrap CI of metric(a) - metric(b): both scored on the same resampled groups.

    As ``group_bootstrap_ci``; ``preds_a``/``preds_b`` are one classifier each or lists (their
    mean metrics are compared), e.g. a variant's folds against the original's folds.
    """
    fn = _metric(metric)
    a, b = _as_list(preds_a), _as_list(preds_b)
    y, arrays = _check(y_true, *a, *b)
    codes = group_codes(groups, len(y))

    def statistic(index: np.ndarray) -> float:
        return _mean_metric(fn, y, arrays[: len(a)], index) - _mean_metric(fn, y, arrays[len(a) :], index)

    return _group_bootstrap(statistic, codes, n_resamples, seed, alpha, method)


def _mean_metric(fn: Callable, y: np.ndarray, arrays: list[np.ndarray], index: np.ndarray) -> float:
    try:
        values = [fn(y[index], pred[index]) for pred in arrays]
    except ValueError:
        return math.nan  # e.g. AUROC of a resample with a single class
    return float(np.mean(values))


def group_bootstrap_table(
    predictions: dict[str, pd.DataFrame | Sequence[pd.DataFrame]],
    metric: str | Callable = "macro_f1",
    original: str | None = None,
    partners: dict[str, str] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Group-bootstrap CIs on one test set: each variant's metric, and its paired Δ vs original and classic.

    ``predictions``: variant -> its ``predictions.csv`` table(s) on this test set (several: its
    folds or replicates, whose mean metric is used), with a ``group`` column (images without
    one, or tables without it, are their own group). ``original``: the original variant's name;
    ``partners``: variant -> its classic partner (``meddap.evidence.stats.classic_partners``). Tables are paired by
    image path. Long form, one row per (variant, comparison): comparison ``metric`` (baseline
    empty), ``vs_original`` or ``vs_classic``; with estimate, low, high, method, reason,
    n_images, n_groups, n_classifiers.
    """
    tables = {name: list(t) if isinstance(t, (list, tuple)) else [t] for name, t in predictions.items()}
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    rows = []
    for variant, frames in tables.items():
        comparisons = [("metric", "")]
        if original is not None and original in tables and variant != original:
            comparisons.append(("vs_original", original))
        if partners and partners.get(variant) in tables:
            comparisons.append(("vs_classic", partners[variant]))
        for comparison, baseline in comparisons:
            both = [*frames, *(tables[baseline] if baseline else [])]
            shared = set.intersection(*(set(t["path"]) for t in both))
            paths = [p for p in dict.fromkeys(both[0]["path"]) if p in shared]
            if not paths:
                continue
            aligned = [t.drop_duplicates("path").set_index("path").loc[paths].reset_index() for t in both]
            y, _, _ = predictions_arrays(aligned[0])
            probas = [predictions_arrays(t)[1] for t in aligned]
            groups = aligned[0]["group"] if "group" in aligned[0] else None
            if baseline:
                result = group_bootstrap_difference_ci(
                    y, probas[: len(frames)], probas[len(frames) :], groups, metric, n_resamples, seed, alpha
                )
            else:
                result = group_bootstrap_ci(y, probas, groups, metric, n_resamples, seed, alpha)
            rows.append(
                {
                    "variant": variant,
                    "comparison": comparison,
                    "baseline": baseline,
                    "metric": name,
                    "n_classifiers": len(frames),
                    **result,
                }
            )
    return pd.DataFrame(rows)


def _check(y_true, *preds) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y_true)
    arrays = [np.asarray(p) for p in preds]
    for p in arrays:
        if len(p) != len(y):
            raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if len(y) == 0:
        raise ValueError("no test images to bootstrap")
    return y, arrays


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    valid = values[~np.isnan(values)]
    if not len(valid):
        return math.nan, math.nan
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
