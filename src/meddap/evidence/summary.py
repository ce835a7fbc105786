"""The report's Markdown summary and its paragraphs: leakage warnings, the near-duplicate and
replicate notes, and ``readable_summary`` (headline metrics, bootstrap CIs, robustness, class
fidelity, quality, LoRA training)."""

from __future__ import annotations

import pandas as pd

from meddap.evidence.modes import TEXT_TO_IMAGE_MODE
from meddap.runtime.markdown import fmt as _fmt
from meddap.runtime.markdown import table as _markdown_table
from meddap.settings.plan import ORIGINAL


def leakage_notes(lora_scope: str, pretrain_corpus: str | None, audit_verdict: str) -> list[str]:
    """The report's first paragraphs: what the config lets reach the validation folds, and the
    lineage audit's verdict."""
    notes = []
    if lora_scope == "split":
        notes.append(
            "**Warning: lora.scope is `split`.** One LoRA per class was trained on the whole training split, "
            "validation folds included, and its synthetic images train every fold's classifiers, which are then "
            "selected on those same validation images: validation-selected scores of synthetic variants are "
            "optimistic, and their gain over `original` and `classic` is biased upwards. Use `lora.scope: fold`."
        )
    if pretrain_corpus == "dataset":
        notes.append(
            "**Warning: the base model was pretrained on this dataset's training split** "
            "(`base_model.pretrain.corpus: dataset`), which holds every fold's validation images: synthetic "
            "variants' validation-selected scores are optimistic."
        )
    notes.append(audit_verdict.strip())
    return notes


def near_duplicate_note(duplicates: pd.DataFrame, max_distance: int, mixed_label_groups: str = "keep") -> str:
    """One sentence on the near-duplicates the split found (``results/splits/near_duplicates.csv``)."""
    if max_distance < 0:
        return "Near-duplicate grouping was off (dataset.near_duplicate_distance: -1)."
    if duplicates.empty:
        return f"No near-duplicate images (perceptual hashes within {max_distance} bits) in the dataset."
    conflicting = int((duplicates.groupby("group")["class"].nunique() > 1).sum())
    note = (
        f"Near-duplicates: {len(duplicates)} images in {duplicates['group'].nunique()} groups "
        f"(perceptual hashes within {max_distance} bits, formed across classes), "
        "each group kept on one side of the test split and in one fold."
    )
    if conflicting:
        action = (
            "kept whole in the training split, in one fold"
            if mixed_label_groups == "keep"
            else "dropped from the split"
        )
        n_images = int(duplicates.loc[duplicates.groupby("group")["class"].transform("nunique") > 1, "path"].nunique())
        note += (
            f" {conflicting} group(s) ({n_images} images) hold the same scan under two classes (conflicting labels): "
            f"{action} (dataset.mixed_label_groups: {mixed_label_groups}; see results/splits/near_duplicates.csv)."
        )
    return note


def replicates_note(summary: pd.DataFrame) -> str:
    """One sentence on the classifier replicates behind each fold's value (``summarise``'s n_replicates)."""
    counts = sorted({int(n) for n in summary.get("n_replicates", pd.Series([1])).dropna()}) or [1]
    matched = (
        "Every variant of one architecture, fold and replicate trained from the same seed "
        "(matched seeds), so initialisation and batch order cancel in the paired Δ."
    )
    if counts == [1]:
        return f"One classifier per variant, architecture and fold (classifier.replicates: 1). {matched}"
    number = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    return (
        f"Each fold's value is the mean of its {number} classifier replicates (classifier.replicates), "
        f"averaged before the comparison across folds: replicates share a fold's data and are not "
        f"independent, so n (pairs) is the number of folds. {matched}"
    )


def _delta(variant: str, delta, low, high) -> str:
    """A difference to `original` with its interval; a dash on original's own row."""
    return "—" if variant == ORIGINAL else f"{_fmt(delta)} [{_fmt(low)}, {_fmt(high)}]"


def readable_summary(
    summary: pd.DataFrame,
    fidelity: pd.DataFrame,
    chance: float,
    bootstrap: pd.DataFrame | None = None,
    robustness: pd.DataFrame | None = None,
    quality: dict[str, pd.DataFrame] | None = None,
    near_duplicates: str | None = None,
    preface: list[str] | None = None,
    lora_losses: pd.DataFrame | None = None,
    opening: list[str] | None = None,
    evidence: list[str] | None = None,
) -> str:
    """A Markdown page: ``opening`` (the primary contrast's answer), ``preface`` paragraphs (leakage
    warnings, the audit's verdict), ``evidence`` (how to read the comparisons, test sets, expansion
    ratios, pooled robustness), then headline metrics per test set, bootstrap CIs, robustness,
    class fidelity, quality, LoRA training (``lora_losses``: ``meddap.evidence.collect.lora_loss_summary``)."""
    lines = ["# MEDDAP results", ""]
    if opening:
        lines += [*opening, ""]
    for paragraph in preface or []:
        lines += [paragraph, ""]
    if near_duplicates:
        lines += [near_duplicates, ""]
    lines.append(
        "Mean ± standard deviation over cross-validation folds. Δ is the mean paired difference "
        "to `original` (same architecture, test set and fold) with its 95% t-interval; p is a paired "
        "t-test across folds (with few folds it has little power: read Δ with its spread). "
        "Δ classic compares with the classic-augmentation variant of the same ratio where it was run."
    )
    lines += ["", replicates_note(summary)]
    lines += evidence or []
    metrics = [m for m in ("macro_f1", "balanced_accuracy", "macro_auroc", "ece") if m in set(summary["metric"])]
    metrics += sorted(m for m in set(summary["metric"]) if "_sensitivity_at_" in m)
    for metric in metrics:
        part = summary[summary["metric"] == metric].sort_values(["test_set", "arch", "variant"])
        lines += ["", f"## {metric}", ""]
        lines += _markdown_table(
            [
                "test set",
                "arch",
                "variant",
                "mean ± std",
                "Δ vs original [95% CI]",
                "p",
                "p adj",
                "Δ vs classic",
                "p",
                "p adj",
            ],
            [
                [
                    row.test_set,
                    row.arch,
                    row.variant,
                    f"{_fmt(row['mean'])} ± {_fmt(row['std'])}",
                    _delta(
                        row.variant, row.delta_vs_original, row.delta_ci_low_vs_original, row.delta_ci_high_vs_original
                    ),
                    _fmt(row.p_t_vs_original),
                    _fmt(row.get("p_t_vs_original_adj")),
                    _fmt(row.delta_vs_classic),
                    _fmt(row.p_t_vs_classic),
                    _fmt(row.get("p_t_vs_classic_adj")),
                ]
                for _, row in part.iterrows()
            ],
        )
    if bootstrap is not None and not bootstrap.empty:
        lines += ["", "## Bootstrap over test images (macro-F1, mean over the classifiers)", ""]
        lines.append(
            "95% intervals (BCa where it can be computed, else percentile) from resampling the test set's "
            "near-duplicate groups, not single images: a scan and its near-copies go in or out together. Every "
            "classifier of a variant (folds, replicates) is scored on the same resample; Δ pairs two variants "
            "on it."
        )
        lines.append("")
        lines += _markdown_table(
            ["test set", "arch", "variant", "macro-F1 [95% CI]", "Δ vs original [95% CI]", "Δ vs classic [95% CI]"],
            [
                [
                    row.test_set,
                    row.arch,
                    row.variant,
                    f"{_fmt(row.estimate)} [{_fmt(row.low)}, {_fmt(row.high)}]",
                    _delta(row.variant, row.get("delta"), row.get("delta_low"), row.get("delta_high")),
                    "—"
                    if not row.get("classic_variant")
                    else _delta(
                        row.variant,
                        row.get("delta_classic"),
                        row.get("delta_classic_low"),
                        row.get("delta_classic_high"),
                    ),
                ]
                for _, row in bootstrap.sort_values(["test_set", "arch", "variant"]).iterrows()
            ],
        )
    if robustness is not None and not robustness.empty:
        lines += ["", "## Robustness (MedMNIST-C breast-ultrasound corruptions, internal test split)", ""]
        lines.append(
            "Mean over folds of the balanced error (BE) clean and averaged over corruptions and severities; "
            "nBE and rBE relative to `original` (1 = as robust as original; lower is better)."
        )
        means = (
            robustness[robustness["corruption"] == "mean"]
            .groupby(["arch", "variant"])[["be_clean", "be_mean", "nbe", "rbe"]]
            .mean()
        )
        lines.append("")
        lines += _markdown_table(
            ["arch", "variant", "BE clean", "BE corrupted", "nBE", "rBE"],
            [
                [arch, variant, _fmt(row.be_clean), _fmt(row.be_mean), _fmt(row.nbe), _fmt(row.rbe)]
                for (arch, variant), row in means.iterrows()
            ],
        )
    lines += ["", "## Class fidelity of the synthetic images", ""]
    lines.append(
        f"Share of each class's synthetic images that the `original` classifier assigns to the intended "
        f"class (chance: {chance:.2f}), per generation mode (a filtered mode: the images its filter kept); "
        "mean ± std over folds (a fold: the mean of its replicates, its judge ensemble), and the range over "
        "every single judge (fold and replicate)."
    )
    lines.append("")
    lines += _markdown_table(
        ["arch", "mode", "class", "adjective", "fidelity", "judges' range", "judges", "images"],
        [
            [
                row.arch,
                row.get("mode", TEXT_TO_IMAGE_MODE),
                row["class"],
                row.adjective,
                f"{_fmt(row.fidelity_mean)} ± {_fmt(row.fidelity_std)}",
                f"{_fmt(row.get('fidelity_judge_min'), 2)}–{_fmt(row.get('fidelity_judge_max'), 2)}",
                row.get("n_judges", "n/a"),
                row.n_images,
            ]
            for _, row in fidelity.sort_values(
                [c for c in ("arch", "mode", "class", "adjective") if c in fidelity]
            ).iterrows()
        ],
    )
    quality = quality or {}
    table = quality.get("quality")
    if table is not None and not table.empty:
        lines += ["", "## Synthetic-image quality (feature space of the original classifiers)", ""]
        lines += _markdown_table(
            ["arch", "class", "adjective", "Fréchet distance", "precision", "recall"],
            [
                [
                    row.arch,
                    row["class"],
                    row.adjective,
                    _fmt(row.frechet_distance_mean, 2),
                    _fmt(row.precision_mean),
                    _fmt(row.recall_mean),
                ]
                for _, row in table.iterrows()
            ],
        )
    effect = quality.get("adjective_effect")
    if effect is not None and not effect.empty:
        targeted = effect[effect["expected"].fillna("") != ""]
        lines += ["", "## Did the adjectives do what they say?", ""]
        lines += _markdown_table(
            ["class", "adjective", "measure", "expected", "difference", "verdict"],
            [
                [row["class"], row.adjective, row.measure, row.expected, _fmt(row.difference), row.verdict]
                for _, row in targeted.drop_duplicates(["class", "adjective", "measure"]).iterrows()
            ],
        )
        untested = sorted(set(effect.loc[effect["verdict"] == "not measured", "adjective"]))
        if untested:
            lines.append(f"\nNo pixel check exists for: {', '.join(untested)}.")
    near = quality.get("near_copies")
    if near is not None and not near.empty:
        flagged = near[near["near_copy"].astype(bool)]
        lines += ["", "## Near copies of training images", ""]
        lines.append(
            f"{len(flagged.drop_duplicates('synthetic_id'))} synthetic images are closer to a training image "
            "than 99% of training images are to each other (see near_copies.csv for the closest pairs)."
        )
    if lora_losses is not None and not lora_losses.empty:
        lines += ["", "## LoRA training", ""]
        lines.append(
            "Denoising loss per LoRA and arm, mean over its first and last 20 steps; the curves are in "
            "`figures/lora_loss.png`, the validation images of each checkpoint in `figures/lora_validation.png`."
        )
        lines.append("")
        lines += _markdown_table(
            ["LoRA", "arm", "steps", "loss, first steps", "loss, last steps"],
            [
                [row.lora, row.arm, row.steps, _fmt(row.loss_first), _fmt(row.loss_last)]
                for _, row in lora_losses.iterrows()
            ],
        )
    return "\n".join(lines) + "\n"


def realism_lines(realism: pd.DataFrame) -> list[str]:
    """The opening's lines on realism: per class, how well a classifier tells synthetic from real
    images (AUROC, 0.5 = cannot) and what bounds it (the autoencoder's own round trip)."""
    if realism is None or realism.empty:
        return []
    lines = [
        "",
        "## How real the synthetic images are",
        "",
        "AUROC of a classifier telling an arm's synthetic images from its training originals (5-fold "
        "cross-validated, equal numbers; 0.5: it cannot, 1.0: always). The base model's autoencoder bounds "
        "them: no synthetic image is sharper than the originals' own round trip through it (PSNR, SSIM and "
        "the same test real vs reconstructed). Tables: `realism.csv`, `realism_tests.csv`, `autoencoder.csv`.",
        "",
    ]
    modes = realism["mode"] if "mode" in realism else pd.Series("text-to-image", index=realism.index)
    first = modes.iloc[0]  # text-to-image (meddap.evidence.realism.realism_by_class puts it first)
    for _, row in realism[modes == first].iterrows():
        judge = "" if pd.isna(row.auroc_judge) else f", judge-feature probe {_fmt(row.auroc_judge, 2)}"
        lines.append(
            f"- **{row['class']}**: real vs synthetic AUROC {_fmt(row.auroc_synthetic, 2)} (image statistics; "
            f"arms {_fmt(row.auroc_synthetic_min, 2)}–{_fmt(row.auroc_synthetic_max, 2)}){judge}; bounded by the "
            f"autoencoder: real vs its reconstruction {_fmt(row.auroc_reconstruction, 2)}, "
            f"PSNR {_fmt(row.psnr, 1)} dB, SSIM {_fmt(row.ssim, 2)}."
        )
    if modes.nunique() > 1:  # guided, filtered: the same tests on each mode's images
        lines += ["", "The same tests on each generation mode's images (`realism.csv`):", ""]
        lines += _markdown_table(
            ["mode", "class", "AUROC, image statistics", "AUROC, judge features"],
            [
                [row["mode"], row["class"], _fmt(row.auroc_synthetic, 2), _fmt(row.auroc_judge, 2)]
                for _, row in realism.iterrows()
            ],
        )
    return lines
