"""Statistics over evaluation results between folds: fold summaries with paired tests, p-value
adjustment, and the declared primary contrast.

Two sources of uncertainty, kept apart on purpose:

* between folds (``summarise``, here): each fold is a different training set and classifier, so
  the spread over folds is the variability of the *training procedure*; the paired tests compare
  two variants fold by fold (same validation split, same test set). A fold's replicates
  (classifiers of other seeds, ``classifier.replicates``) share its data and are not independent:
  they are averaged within (variant, arch, test set, fold) first, so the pairs are the folds.
* between test images (``meddap.evidence.bootstrap``): the variability of the *test-set estimate*
  of trained classifiers, resampling near-duplicate groups (not single images: a scan and its
  near-copies are one observation).

On top: ``adjust_pvalues``/``adjust_comparisons`` (Holm, Benjamini-Hochberg) for the many
comparisons and ``primary_contrast`` for the one comparison declared in advance (replicates
averaged within folds). Per-prediction metrics, calibration and operating points (e.g.
``sensitivity_at_validation_specificity``) are ``meddap.classify.metrics``'s.

Input is the project's long-form ``results/report/metrics.csv`` (columns variant, family, ratio,
arch, fold, test_set, metric, value and optionally replicate, adjective, test_set_kind). A
variant's family and ratio are data the plan wrote; variant names are labels only, never parsed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from meddap.settings.plan import ADJECTIVE, CLASSIC, GUIDED, MIXED, ORIGINAL

GROUP = ["variant", "arch", "test_set", "metric"]
WILCOXON_MIN_PAIRS = 6  # below this the exact Wilcoxon p-value cannot reach 0.05 (2/2^5 = 0.0625)
SYNTHETIC_FAMILIES = (ADJECTIVE, MIXED, GUIDED)  # the families that add synthetic images, compared with classic


# --------------------------------------------------------------------------- fold summaries


def variant_data(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (index: its name) with its family, ratio and whether it is filtered (False
    where the table has no such column), as the table carries them."""
    missing = {"variant", "family", "ratio"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)} (written by the evaluate rule from the plan)")
    grouped = metrics.groupby("variant", sort=False)[["family", "ratio"]]
    inconsistent = grouped.nunique(dropna=False).max(axis=1) > 1
    if inconsistent.any():
        raise ValueError(f"variants {sorted(inconsistent[inconsistent].index)} have more than one family or ratio")
    first = grouped.first()
    filtered = metrics.groupby("variant", sort=False)["filtered"].first() if "filtered" in metrics else False
    return first.assign(filtered=filtered)


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


def fold_values(frame: pd.DataFrame) -> pd.Series:
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
    the variant's ``family`` and ``ratio`` (as ``meddap.evidence.collect.collect_metrics`` writes it; extra
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
    series = {key: fold_values(group) for key, group in groups.items()}
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


# --------------------------------------------------------------------------- multiplicity

P_ADJUST_METHODS = ("holm", "bh")


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """One family of p-values adjusted for multiple comparisons; NaN stays NaN and is not counted.

    ``holm``: Holm's step-down, the i-th smallest of the m p-values times (m - i + 1), made
    non-decreasing in that order and capped at 1. It controls the family-wise error rate whatever
    the dependence between the tests (variants compared with one baseline on the same folds are
    correlated). ``bh``: Benjamini-Hochberg (``scipy.stats.false_discovery_control``), which
    controls the false discovery rate for independent or positively dependent tests. A NaN
    p-value is a comparison that was not made (a variant with itself, too few folds), so it does
    not count towards m.
    """
    from scipy.stats import false_discovery_control

    if method not in P_ADJUST_METHODS:
        raise ValueError(f"unknown p-value adjustment {method!r}; choose one of {P_ADJUST_METHODS}")
    p = np.asarray(pvalues, float)
    if p.ndim != 1:
        raise ValueError(f"expected a 1-D family of p-values, got shape {p.shape}")
    out = np.full(p.shape, math.nan)
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = int(valid.sum())
    if m == 0:
        return out
    if method == "holm":
        order = np.argsort(p[valid], kind="stable")
        stepped = np.minimum(1.0, np.maximum.accumulate(p[valid][order] * (m - np.arange(m))))
        adjusted = np.empty(m)
        adjusted[order] = stepped
    else:
        adjusted = false_discovery_control(p[valid], method="bh")
    out[valid] = adjusted
    return out


def adjust_comparisons(
    comparisons: pd.DataFrame,
    family: Sequence[str],
    p_columns: Sequence[str] | None = None,
    method: str = "holm",
    suffix: str = "_adj",
) -> pd.DataFrame:
    """A copy of ``comparisons`` with ``<p column><suffix>``: each p-value column adjusted per family.

    A family is the set of rows sharing the values of the ``family`` columns (e.g. test_set and
    metric, with arch to adjust per architecture; with a long-form ``comparison`` column, add it).
    Each p column is adjusted on its own, since each is its own comparison (``summarise``'s
    ``p_t_vs_original`` and ``p_t_vs_classic`` answer different questions). Default
    ``p_columns``: ``p`` and the columns starting with ``p_`` (not already adjusted). An empty
    ``family`` makes the whole table one family.
    """
    missing = set(family) - set(comparisons.columns)
    if missing:
        raise ValueError(f"comparisons lack the family columns {sorted(missing)}")
    if p_columns is None:
        p_columns = [c for c in comparisons.columns if (c == "p" or c.startswith("p_")) and not c.endswith(suffix)]
    out = comparisons.copy()
    for column in p_columns:
        adjusted = pd.Series(math.nan, index=out.index)
        groups = out.groupby(list(family), dropna=False, sort=False) if family else [(None, out)]
        for _, group in groups:
            adjusted.loc[group.index] = adjust_pvalues(group[column].to_numpy(float), method)
        out[f"{column}{suffix}"] = adjusted
    return out


# --------------------------------------------------------------------------- the primary contrast

METRIC_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "balanced_error": "balanced error",
    "macro_f1": "macro-F1",
    "macro_auroc": "macro AUROC",
    "ece": "ECE",
}
LOWER_IS_BETTER = {"balanced_error", "ece", "be_mean", "be_clean", "nbe", "rbe", "rbe_pooled"}


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "p not computable"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _design_text(n_folds: int, replicates: list[int]) -> str:
    folds = f"{n_folds} fold" + ("" if n_folds == 1 else "s")
    low, high = (min(replicates), max(replicates)) if replicates else (1, 1)
    if high <= 1:
        return folds
    return f"{folds} × {low if low == high else f'{low}–{high}'} replicates"


IMPROVES, WORSENS, NO_EVIDENCE = "improves", "worsens", "no evidence"


def contrast_verdict(result: dict, higher_is_better: bool) -> str:
    """``improves`` / ``worsens`` when the 95% interval excludes 0 on that side and p < 0.05, else ``no evidence``.

    Both conditions, so that a zero-width interval (identical differences: no p-value) claims nothing.
    """
    low, high, p = result["delta_ci_low"], result["delta_ci_high"], result["p_t"]
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(p) and p < 0.05):
        return NO_EVIDENCE
    if low > 0:
        return IMPROVES if higher_is_better else WORSENS
    if high < 0:
        return WORSENS if higher_is_better else IMPROVES
    return NO_EVIDENCE


def contrast_sentence(
    arch: str,
    variant: str,
    baseline: str,
    label: str,
    result: dict,
    higher_is_better: bool,
    design: str,
) -> str:
    """One plain sentence for a paired comparison (``paired_test``'s result), never claiming a change
    from an interval that contains 0 (``contrast_verdict``).

    A claimed change gives its size in the claimed direction with its interval; otherwise the
    sentence says there is no evidence of a change and gives the signed Δ (variant - baseline).
    """
    delta, low, high = result["delta"], result["delta_ci_low"], result["delta_ci_high"]
    verdict, p_text = contrast_verdict(result, higher_is_better), _p_text(result["p_t"])
    gain = 1.0 if (verdict == IMPROVES) == higher_is_better else -1.0  # sign turning Δ into the claimed change
    size_low, size_high = sorted((gain * low, gain * high))
    if verdict == IMPROVES:
        return (
            f"{arch}: {variant} improves {label} over {baseline} by {gain * delta:.3f} "
            f"(95% CI {size_low:.3f} to {size_high:.3f}, {p_text}, {design})"
        )
    if verdict == WORSENS:
        return (
            f"{arch}: {variant} worsens {label} compared with {baseline} by {gain * delta:.3f} "
            f"(95% CI {size_low:.3f} to {size_high:.3f}, {p_text}, {design})"
        )
    if not math.isfinite(delta):
        return f"{arch}: no evidence that {variant} changes {label} compared with {baseline} (no shared folds)"
    finite = math.isfinite(low) and math.isfinite(high)
    interval = f"95% CI {low:.3f} to {high:.3f}" if finite else "no interval: too few folds"
    return (
        f"{arch}: no evidence that {variant} changes {label} compared with {baseline} "
        f"(Δ = {delta:+.3f}, {interval}, {p_text}, {design})"
    )


def primary_contrast(
    metrics: pd.DataFrame,
    variant: str,
    baseline: str,
    metric: str = "macro_f1",
    test_set: str | None = None,
    replicate: str = "replicate",
    higher_is_better: bool | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """The declared primary comparison of ``variant`` with ``baseline``: one row and sentence per arch.

    ``metrics``: long form (variant, arch, fold, metric, value; test_set when it holds more than
    one, then ``test_set`` picks one; optionally a ``replicate`` column: classifiers trained again
    with another seed on the same fold). Replicates of one fold share its training set and its
    validation split, so they are not independent pairs: each variant's replicates are averaged
    within the fold first, and the paired t-interval and t-test (``paired_test``) run over the
    shared folds (n = folds). Counting fold x replicate as independent pairs would narrow the
    interval for a variability (other training sets) that the replicates never sampled.

    Columns: arch, variant, baseline, metric, test_set, delta (variant - baseline), ci_low,
    ci_high (95%), p (paired t-test), n_pairs (shared folds), n_replicates (per fold and variant,
    fewest), verdict (improves | worsens | no evidence) and sentence (``contrast_sentence``).
    ``higher_is_better`` defaults by metric name (``LOWER_IS_BETTER``).
    """
    missing = {"variant", "arch", "fold", "metric", "value"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics table lacks columns {sorted(missing)}")
    rows = metrics[(metrics["metric"] == metric) & metrics["variant"].isin([variant, baseline])]
    if "test_set" in rows.columns:
        sets = sorted(rows["test_set"].unique())
        if test_set is None and len(sets) > 1:
            raise ValueError(f"metrics hold test sets {sets}; name the primary one")
        if test_set is not None:
            rows = rows[rows["test_set"] == test_set]
    if rows.empty:
        raise ValueError(f"no {metric} values of {variant} or {baseline}" + (f" on {test_set}" if test_set else ""))
    if replicate in rows.columns and rows.duplicated(["variant", "arch", "fold", replicate]).any():
        raise ValueError(f"more than one {metric} value for a (variant, arch, fold, {replicate})")
    higher = metric not in LOWER_IS_BETTER if higher_is_better is None else higher_is_better
    label = label or METRIC_LABELS.get(metric, metric)
    chosen = test_set if test_set is not None else (rows["test_set"].iloc[0] if "test_set" in rows else "")
    out = []
    for arch, group in rows.groupby("arch", sort=True):
        per_fold = group.groupby(["fold", "variant"])["value"].agg(["mean", "size"]).unstack("variant")
        if {variant, baseline} <= set(per_fold["mean"].columns):
            shared = per_fold.dropna(subset=[("mean", variant), ("mean", baseline)])
        else:
            shared = per_fold.iloc[0:0]
        pairs = {name: shared["mean"][name] if len(shared) else pd.Series(dtype=float) for name in (variant, baseline)}
        result = paired_test(pairs[variant].to_numpy(float), pairs[baseline].to_numpy(float))
        replicates = [int(n) for name in (variant, baseline) if len(shared) for n in shared["size"][name]]
        design = _design_text(result["n_pairs"], replicates)
        out.append(
            {
                "arch": arch,
                "variant": variant,
                "baseline": baseline,
                "metric": metric,
                "test_set": chosen,
                "delta": result["delta"],
                "ci_low": result["delta_ci_low"],
                "ci_high": result["delta_ci_high"],
                "p": result["p_t"],
                "n_pairs": result["n_pairs"],
                "n_replicates": min(replicates) if replicates else 0,
                "verdict": contrast_verdict(result, higher),
                "sentence": contrast_sentence(str(arch), variant, baseline, label, result, higher, design),
            }
        )
    return pd.DataFrame(out)
