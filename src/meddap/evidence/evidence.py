"""What the report states before and beside its tables, so a reviewer's questions are answered:
the declared primary contrast in one sentence per architecture, multiplicity-adjusted p-values,
group-bootstrap intervals, the expansion ratio each fold's classifiers really saw, the make-up of
every test set, and a pooled relative robustness. The statistics are ``meddap.evidence.stats``'s,
``meddap.evidence.bootstrap``'s and ``meddap.classify.robustness``'s; this module picks their inputs
from the run and words the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from meddap.runtime.markdown import fmt as _fmt
from meddap.runtime.markdown import table as _markdown_table
from meddap.settings.stages import ContrastSettings

# Comparisons adjusted together: every architecture's and variant's comparison on one test set
# and one metric (a reader scans one such table at a time).
P_FAMILY = ("test_set", "metric")
METRIC_LABELS = {
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "macro_auroc": "macro AUROC",
    "accuracy": "accuracy",
}


def primary_contrast_table(metrics: pd.DataFrame, contrast: ContrastSettings) -> pd.DataFrame:
    """``meddap.evidence.stats.primary_contrast`` of the declared contrast on the run's metrics (long form,
    ``meddap.evidence.collect.collect_metrics``), one row and sentence per architecture."""
    from meddap.evidence.stats import primary_contrast

    return primary_contrast(
        metrics,
        contrast.variant,
        contrast.baseline,
        metric=contrast.metric,
        test_set=contrast.test_set,
        label=METRIC_LABELS.get(contrast.metric, contrast.metric),
    )


def primary_contrast_lines(table: pd.DataFrame, contrast: ContrastSettings) -> list[str]:
    """The report's opening: the declared question, then its answer per architecture."""
    metric = METRIC_LABELS.get(contrast.metric, contrast.metric)
    lines = [
        "## Primary contrast",
        "",
        f"Declared in the config before the run (`evaluation.primary_contrast`): `{contrast.variant}` vs "
        f"`{contrast.baseline}`, {metric}, test set `{contrast.test_set}`. Δ is the mean paired difference over "
        "folds (replicates averaged within their fold first) with its 95% t-interval and paired t-test; it is "
        "the one comparison read without a multiplicity correction.",
        "",
    ]
    lines += [f"- {sentence}" for sentence in table["sentence"]] or ["- no classifier of both variants was evaluated"]
    return lines


def adjust_summary(summary: pd.DataFrame, method: str) -> pd.DataFrame:
    """``summarise``'s table with ``p_t_vs_original_adj`` and ``p_t_vs_classic_adj`` (and the
    Wilcoxon ones): each adjusted within its family (``P_FAMILY``) by ``method`` (holm or bh)."""
    from meddap.evidence.stats import adjust_comparisons

    p_columns = [c for c in summary.columns if c.startswith("p_") and not c.endswith("_adj")]
    return adjust_comparisons(summary, list(P_FAMILY), p_columns=p_columns, method=method)


def group_bootstrap(
    records: Sequence[dict], partners: dict[str, str], original: str | None, n_resamples: int, seed: int
) -> pd.DataFrame:
    """Group-bootstrap intervals (``meddap.evidence.bootstrap.group_bootstrap_table``) per (architecture, test
    set): each variant's fold-mean macro-F1 and its paired Δ vs original and vs its classic
    partner, resampling near-duplicate groups (the ``group`` column of the predictions; images of
    an unseen set are their own groups)."""
    from meddap.evidence.bootstrap import group_bootstrap_table

    tables: dict[tuple[str, str], dict[str, list[pd.DataFrame]]] = {}
    for record in records:
        key = (record["arch"], record["test_set"])
        tables.setdefault(key, {}).setdefault(record["variant"], []).append(pd.read_csv(record["predictions"]))
    frames = []
    for (arch, test_set), predictions in sorted(tables.items()):
        table = group_bootstrap_table(
            predictions, "macro_f1", original=original, partners=partners, n_resamples=n_resamples, seed=seed
        )
        frames.append(table.assign(arch=arch, test_set=test_set))
    if not frames:
        return pd.DataFrame(columns=BOOTSTRAP_COLUMNS)
    return _wide(pd.concat(frames, ignore_index=True))


# bootstrap.csv: one row per (test set, arch, variant); delta_* vs original, delta_classic_* vs the
# classic variant of the same ratio.
BOOTSTRAP_COLUMNS = [
    "test_set",
    "arch",
    "variant",
    "metric",
    "estimate",
    "low",
    "high",
    "delta",
    "delta_low",
    "delta_high",
    "classic_variant",
    "delta_classic",
    "delta_classic_low",
    "delta_classic_high",
    "method",
    "n_images",
    "n_groups",
    "n_classifiers",
]


def _method(row: pd.Series) -> str:
    reason = row["reason"]
    return f"{row['method']} ({reason})" if isinstance(reason, str) and reason else str(row["method"])


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (test_set, arch, variant), part in long.groupby(["test_set", "arch", "variant"], sort=True):
        by = {row["comparison"]: row for _, row in part.iterrows()}
        own = by.get("metric")
        if own is None:
            continue
        row = {"test_set": test_set, "arch": arch, "variant": variant, "metric": own["metric"]}
        row.update(estimate=own["estimate"], low=own["low"], high=own["high"])
        original, classic = by.get("vs_original"), by.get("vs_classic")
        nan = float("nan")
        row.update(
            delta=original["estimate"] if original is not None else nan,
            delta_low=original["low"] if original is not None else nan,
            delta_high=original["high"] if original is not None else nan,
            classic_variant=classic["baseline"] if classic is not None else "",
            delta_classic=classic["estimate"] if classic is not None else nan,
            delta_classic_low=classic["low"] if classic is not None else nan,
            delta_classic_high=classic["high"] if classic is not None else nan,
            # BCa, or percentile where BCa could not be computed (with its reason, if any part fell back).
            method="; ".join(sorted({_method(r) for _, r in part.iterrows()})),
            n_images=own["n_images"],
            n_groups=own["n_groups"],
            n_classifiers=own["n_classifiers"],
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=BOOTSTRAP_COLUMNS)


def expansion(variant_tables: dict[tuple[str, int], str | Path]) -> pd.DataFrame:
    """Per (variant, fold, class): originals trained on, images added, effective ratio (``meddap.data.merge``)."""
    from meddap.data.merge import expansion_table

    table = expansion_table(variant_tables)
    return table[table["n_added"] > 0].reset_index(drop=True)


def test_set_composition(records: Sequence[dict], classes: list[str]) -> pd.DataFrame:
    """Images per class of every test set (from one classifier's predictions; all see the same
    images) and the classes it lacks: its macro metrics average over the classes present only."""
    rows = []
    seen = set()
    for record in records:
        if record["test_set"] in seen:
            continue
        seen.add(record["test_set"])
        counts = pd.read_csv(record["predictions"])["class"].value_counts()
        missing = [cls for cls in classes if cls not in counts.index]
        rows.append(
            {
                "test_set": record["test_set"],
                "kind": record["test_set_kind"],
                **{cls: int(counts.get(cls, 0)) for cls in classes},
                "missing_classes": ", ".join(missing),
            }
        )
    return pd.DataFrame(rows).sort_values("test_set").reset_index(drop=True) if rows else pd.DataFrame()


def pooled_robustness_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, arch): the pooled relative balanced error over every corruption, severity and
    fold (``meddap.classify.robustness.pooled_robustness``), flagged where original barely degrades."""
    from meddap.classify.robustness import pooled_robustness

    if errors.empty:
        return pd.DataFrame()
    return pooled_robustness(errors, by=("variant", "arch"))


def evidence_lines(
    composition: pd.DataFrame, expansion_frame: pd.DataFrame, pooled: pd.DataFrame, p_adjust: str
) -> list[str]:
    """The Markdown sections on what the numbers rest on: test sets, expansion ratios, pooled rBE."""
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(p_adjust, p_adjust)
    lines = [
        "",
        "## How to read the comparisons",
        "",
        f"Every p-value other than the primary contrast's is shown raw and {method}-adjusted (`p adj`) within "
        "its family: all architectures' and variants' comparisons on one test set and one metric. Read a "
        "difference as evidence only where its adjusted p-value is small and its interval excludes 0.",
    ]
    if not composition.empty:
        classes = [c for c in composition.columns if c not in ("test_set", "kind", "missing_classes")]
        lines += ["", "## Test sets", ""]
        flagged = composition[composition["missing_classes"] != ""]
        if not flagged.empty:
            lines.append(
                "Macro metrics average over the classes a set holds: on "
                + ", ".join(f"`{t}` (no {m})" for t, m in zip(flagged["test_set"], flagged["missing_classes"]))
                + " they are not comparable with the other sets'."
            )
            lines.append("")
        lines += _markdown_table(
            ["test set", "kind", *classes, "missing"],
            [
                [r["test_set"], r["kind"], *[r[c] for c in classes], r["missing_classes"] or "—"]
                for _, r in composition.iterrows()
            ],
        )
    if not expansion_frame.empty:
        lines += ["", "## Expansion ratios the classifiers saw", ""]
        lines.append(
            "Images added per class over the originals each fold's classifier trained on (its validation fold "
            "excluded); the configured ratio is the target, this is what was trained."
        )
        lines.append("")
        summary = expansion_frame.groupby(["variant", "class"])["effective_ratio"].agg(["min", "max"]).reset_index()
        lines += _markdown_table(
            ["variant", "class", "effective ratio (folds' min – max)"],
            [[r["variant"], r["class"], f"{r['min']:.3f} – {r['max']:.3f}"] for _, r in summary.iterrows()],
        )
    if not pooled.empty:
        lines += ["", "## Robustness, pooled", ""]
        lines.append(
            "rBE pooled: the summed degradation (corrupted minus clean balanced error) over every corruption, "
            "severity and fold, divided by original's. A mean of per-corruption ratios explodes where original "
            "barely degrades; those rows are flagged."
        )
        lines.append("")
        rows = pooled[pooled["variant"] != "original"] if "variant" in pooled else pooled
        lines += _markdown_table(
            ["arch", "variant", "rBE pooled", "original's degradation", "flag"],
            [
                [
                    r["arch"],
                    r["variant"],
                    _fmt(r["rbe_pooled"]),
                    _fmt(r["reference_degradation"]),
                    "original barely degrades: read with care" if bool(r["small_reference"]) else "",
                ]
                for _, r in rows.iterrows()
            ],
        )
    return lines


def mode_lines(modes: pd.DataFrame, contrast: ContrastSettings) -> list[str]:
    """The Markdown section comparing the generation modes with each other at equal counts
    (``meddap.evidence.modes.mode_comparisons``), on the primary contrast's metric; none when
    fewer than two modes ran at any ratio."""
    part = modes[modes["metric"] == contrast.metric] if not modes.empty else modes
    if part.empty:
        return []
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}.get(contrast.p_adjust, contrast.p_adjust)
    lines = [
        "",
        "## Generation modes at equal counts",
        "",
        f"Each mode run at a ratio (text-to-image, guided, each filtered, classic) against the others at that ratio, "
        f"{contrast.metric}, paired fold by fold; p adj: {method}-adjusted within each test set's comparisons "
        "of modes. Each mode against `original` is in the tables below. `modes.csv` has every metric.",
        "",
    ]
    rows = part.sort_values(["test_set", "ratio", "arch", "variant", "baseline"])
    lines += _markdown_table(
        ["test set", "ratio", "arch", "variant", "vs", "Δ [95% CI]", "p", "p adj", "folds"],
        [
            [
                r["test_set"],
                format(float(r["ratio"]), "g"),
                r["arch"],
                f"{r['variant']} ({r['mode']})",
                f"{r['baseline']} ({r['baseline_mode']})",
                f"{_fmt(r['delta'])} [{_fmt(r['delta_ci_low'])}, {_fmt(r['delta_ci_high'])}]",
                _fmt(r["p_t"]),
                _fmt(r["p_t_adj"]),
                int(r["n_pairs"]),
            ]
            for _, r in rows.iterrows()
        ],
    )
    return lines
