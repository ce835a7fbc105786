"""Aggregate evaluations: long-form metrics, fold summaries with paired tests, class fidelity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from meddap.plan import ORIGINAL, Plan

KEY = ["variant", "adjective", "ratio", "arch", "test_set"]
HEADLINE_METRICS = ("macro_f1", "balanced_accuracy", "macro_auroc", "accuracy")


def collect_metrics(records: list[dict], plan: Plan) -> pd.DataFrame:
    """Long form from records {variant, arch, fold, test_set, path-to-metrics.json}."""
    rows = []
    for record in records:
        metrics = json.loads(Path(record["metrics"]).read_text())
        variant = plan.variant(record["variant"])
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append(
                    {
                        "variant": variant.name,
                        "adjective": variant.adjective or ("mixed" if variant.kind == "mixed" else ""),
                        "ratio": variant.ratio,
                        "arch": record["arch"],
                        "fold": int(record["fold"]),
                        "test_set": record["test_set"],
                        "metric": metric,
                        "value": float(value),
                    }
                )
    return pd.DataFrame(rows, columns=[*KEY[:4], "fold", "test_set", "metric", "value"])


def _paired(values: pd.Series, baseline: pd.Series) -> tuple[float, float, int]:
    """Mean paired difference over shared folds and the paired t-test p-value."""
    from scipy.stats import ttest_rel

    joined = pd.concat([values.rename("v"), baseline.rename("b")], axis=1).dropna()
    if joined.empty:
        return math.nan, math.nan, 0
    delta = float((joined["v"] - joined["b"]).mean())
    if len(joined) < 2 or np.allclose(joined["v"] - joined["b"], (joined["v"] - joined["b"]).iloc[0]):
        return delta, math.nan, len(joined)
    return delta, float(ttest_rel(joined["v"], joined["b"]).pvalue), len(joined)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over folds, paired delta vs ``original`` (same arch, test set, fold) and its p-value."""
    rows = []
    indexed = metrics.set_index([*KEY, "metric", "fold"])["value"]
    for key, group in metrics.groupby([*KEY, "metric"], sort=False, dropna=False):
        variant, _, _, arch, test_set, metric = key
        per_fold = group.set_index("fold")["value"]
        row = dict(zip([*KEY, "metric"], key))
        row.update(mean=per_fold.mean(), std=per_fold.std(ddof=1) if len(per_fold) > 1 else math.nan, n_folds=len(per_fold))
        baseline = metrics[(metrics["variant"] == ORIGINAL) & (metrics["arch"] == arch) & (metrics["test_set"] == test_set) & (metrics["metric"] == metric)]
        if variant != ORIGINAL and not baseline.empty:
            delta, p_value, n_pairs = _paired(per_fold, baseline.set_index("fold")["value"])
        else:
            delta, p_value, n_pairs = (0.0 if variant == ORIGINAL else math.nan), math.nan, 0
        row.update(delta_vs_original=delta, p_value_paired_t=p_value, n_paired_folds=n_pairs)
        rows.append(row)
    del indexed
    return pd.DataFrame(rows)


def class_fidelity(prediction_files: list[dict]) -> pd.DataFrame:
    """Share of each (class, adjective)'s synthetic images the ``original`` classifier assigns to that class.

    ``prediction_files``: records {arch, fold, predictions} for the test set "synthetic".
    One row per (arch, class, adjective) with mean and std over folds, plus 'all' adjectives.
    """
    frames = []
    for record in prediction_files:
        frame = pd.read_csv(record["predictions"])
        frame["arch"], frame["fold"] = record["arch"], int(record["fold"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["arch", "class", "adjective", "fidelity_mean", "fidelity_std", "n_images", "n_folds"])
    data = pd.concat(frames, ignore_index=True)
    data["correct"] = data["class"] == data["predicted"]
    both = pd.concat([data, data.assign(adjective="all")], ignore_index=True)
    per_fold = both.groupby(["arch", "class", "adjective", "fold"])["correct"].agg(["mean", "size"]).reset_index()
    out = per_fold.groupby(["arch", "class", "adjective"]).agg(
        fidelity_mean=("mean", "mean"), fidelity_std=("mean", "std"), n_images=("size", "first"), n_folds=("fold", "nunique")
    )
    return out.reset_index()


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def readable_summary(summary: pd.DataFrame, fidelity: pd.DataFrame, chance: float) -> str:
    """A Markdown page: headline metrics per test set, then class fidelity."""
    lines = ["# MEDDAP results", ""]
    lines.append(
        "Mean ± standard deviation over cross-validation folds. Δ is the mean paired difference "
        "to `original` (same architecture, test set and fold); p is a paired t-test across folds "
        "(with few folds it has little power: read Δ with its spread)."
    )
    for metric in ("macro_f1", "balanced_accuracy", "macro_auroc"):
        part = summary[summary["metric"] == metric]
        if part.empty:
            continue
        lines += ["", f"## {metric}", "", "| test set | arch | variant | mean ± std | Δ vs original | p |", "|---|---|---|---|---|---|"]
        for _, row in part.sort_values(["test_set", "arch", "variant"]).iterrows():
            lines.append(
                f"| {row.test_set} | {row.arch} | {row.variant} | {_fmt(row['mean'])} ± {_fmt(row['std'])} | "
                f"{_fmt(row.delta_vs_original, 3) if row.variant != ORIGINAL else '—'} | {_fmt(row.p_value_paired_t, 3)} |"
            )
    lines += ["", "## Class fidelity of the synthetic images", ""]
    lines.append(
        f"Share of each class's synthetic images that the `original` classifier assigns to the intended "
        f"class (chance: {chance:.2f}); mean ± std over the classifiers of the folds."
    )
    lines += ["", "| arch | class | adjective | fidelity | images |", "|---|---|---|---|---|"]
    for _, row in fidelity.sort_values(["arch", "class", "adjective"]).iterrows():
        lines.append(f"| {row.arch} | {row['class']} | {row.adjective} | {_fmt(row.fidelity_mean)} ± {_fmt(row.fidelity_std)} | {row.n_images} |")
    return "\n".join(lines) + "\n"
