"""Aggregate evaluations: long-form metrics, fold summaries with paired tests, class fidelity, and
the report itself (``build_report``: tables, figures, Markdown summary, HTML page)."""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from meddap.classify.evaluate import EVALUATED, METRICS_FILE, PREDICTIONS_FILE
from meddap.runtime.markdown import fmt as _fmt
from meddap.runtime.markdown import table as _markdown_table
from meddap.settings.kinds import TestSetKind
from meddap.settings.plan import CLASSIC, MIXED, ORIGINAL
from meddap.settings.stages import ContrastSettings

METRICS_COLUMNS = [
    "variant",
    "family",
    "adjective",
    "ratio",
    "arch",
    "fold",
    "replicate",
    "test_set",
    "test_set_kind",
    "metric",
    "value",
]


def read_evaluations(evaluation_dirs: list[str | Path]) -> list[dict]:
    """One record per (classifier, test set) in evaluation folders (``meddap.classify.evaluate``): what its
    metrics.json says was evaluated (variant, family, adjective, ratio, arch, fold, replicate,
    test_set, test_set_kind) and the paths of its ``metrics`` and ``predictions`` files. Nothing is read
    from folder names."""
    records = []
    for folder in map(Path, evaluation_dirs):
        for metrics_path in sorted(folder.glob(f"*/{METRICS_FILE}")):
            evaluated = json.loads(metrics_path.read_text()).get(EVALUATED)
            if evaluated is None:
                raise ValueError(
                    f"{metrics_path} does not say what it evaluates (no {EVALUATED!r}): rerun its evaluate job"
                )
            predictions = metrics_path.with_name(PREDICTIONS_FILE)
            records.append({**evaluated, "metrics": str(metrics_path), "predictions": str(predictions)})
    return records


def of_kind(records: list[dict], kind: TestSetKind) -> list[dict]:
    """The records (``read_evaluations``) of test sets of one kind."""
    return [record for record in records if record["test_set_kind"] == kind]


def collect_metrics(records: list[dict]) -> pd.DataFrame:
    """Long form (``METRICS_COLUMNS``) from records {variant, family, adjective, ratio, arch, fold,
    replicate, test_set, test_set_kind, metrics: path to metrics.json} (``read_evaluations``; a
    record without a replicate, written before replicates, is replicate 0)."""
    rows = []
    for record in records:
        metrics = json.loads(Path(record["metrics"]).read_text())
        # The adjective column names the family where a variant has no single adjective.
        adjective = record["adjective"] or (record["family"] if record["family"] in (MIXED, CLASSIC) else "")
        labels = {
            "variant": record["variant"],
            "family": record["family"],
            "adjective": adjective,
            "ratio": float(record["ratio"]),
            "arch": record["arch"],
            "fold": int(record["fold"]),
            "replicate": int(record.get("replicate", 0)),
            "test_set": record["test_set"],
            "test_set_kind": record["test_set_kind"],
        }
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({**labels, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def class_fidelity(prediction_files: list[dict]) -> pd.DataFrame:
    """Share of each (class, adjective)'s synthetic images the ``original`` classifier assigns to that class.

    ``prediction_files``: records {arch, fold, replicate, predictions} of the synthetic-images test
    set. One row per (arch, class, adjective) with mean, std and median over folds and each fold's
    value (``fidelity_folds``, in fold order), plus 'all' adjectives;
    a fold's value is the mean over its replicates (they are not independent of each other), and
    ``n_replicates`` says how many there were (the fewest of any fold).
    """
    columns = [
        "arch",
        "class",
        "adjective",
        "fidelity_mean",
        "fidelity_std",
        "fidelity_median",
        "fidelity_folds",
        "n_images",
        "n_folds",
        "n_replicates",
    ]
    frames = []
    for record in prediction_files:
        frame = pd.read_csv(record["predictions"])
        frame["arch"], frame["fold"] = record["arch"], int(record["fold"])
        frame["replicate"] = int(record.get("replicate", 0))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    data = pd.concat(frames, ignore_index=True)
    data["correct"] = data["class"] == data["predicted"]
    both = pd.concat([data, data.assign(adjective="all")], ignore_index=True)
    keys = ["arch", "class", "adjective", "fold"]
    per_replicate = both.groupby([*keys, "replicate"])["correct"].agg(["mean", "size"]).reset_index()
    per_fold = per_replicate.groupby(keys).agg(
        mean=("mean", "mean"), size=("size", "first"), replicates=("replicate", "nunique")
    )
    out = (
        per_fold.reset_index()
        .groupby(["arch", "class", "adjective"])
        .agg(
            fidelity_mean=("mean", "mean"),
            fidelity_std=("mean", "std"),
            # One judge (a fold's original classifier) can reject a class's images alone: the median and
            # every fold's value show it.
            fidelity_median=("mean", "median"),
            fidelity_folds=("mean", lambda values: " ".join(f"{v:.2f}" for v in values)),
            n_images=("size", "first"),
            n_folds=("fold", "nunique"),
            n_replicates=("replicates", "min"),
        )
    )
    return out.reset_index()[columns]


def read_lora_histories(
    lora_dirs: list[str | Path], prompt_classes: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training histories of LoRA folders ``results/lora/<arm>/<lora>/`` (see ``meddap.diffusion.lora``).

    Returns (losses: arm, lora, step, loss, lr; validation: arm, lora, class, step, prompt, image,
    seed, path). ``class`` is the class of the image's prompt (``prompt_classes``: prompt -> class),
    else the LoRA's name, so a shared LoRA's images sort under their classes. A folder written
    before LoRAs kept their history contributes nothing.
    """
    from meddap.diffusion.lora import LOSS_FILE, VALIDATION_FILE

    losses, images = [], []
    for folder in map(Path, lora_dirs):
        arm, lora = folder.parent.name, folder.name
        if (folder / LOSS_FILE).is_file():
            losses.append(pd.read_csv(folder / LOSS_FILE).assign(arm=arm, lora=lora))
        if (folder / VALIDATION_FILE).is_file():
            frame = pd.read_csv(folder / VALIDATION_FILE).assign(arm=arm, lora=lora)
            frame["class"] = frame["prompt"].map(prompt_classes or {}).fillna(lora)
            frame["path"] = [str(folder / name) for name in frame["file"]]
            images.append(frame.drop(columns="file"))
    loss_columns = ["arm", "lora", "step", "loss", "lr"]
    image_columns = ["arm", "lora", "class", "step", "prompt", "image", "seed", "path"]
    return (
        pd.concat(losses, ignore_index=True)[loss_columns] if losses else pd.DataFrame(columns=loss_columns),
        pd.concat(images, ignore_index=True)[image_columns] if images else pd.DataFrame(columns=image_columns),
    )


def lora_loss_summary(losses: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Per LoRA and arm: steps, and the mean loss over the first and the last ``window`` steps."""
    rows = []
    for (lora, arm), part in losses.groupby(["lora", "arm"], sort=True):
        loss = part.sort_values("step")["loss"]
        rows.append(
            {
                "lora": lora,
                "arm": arm,
                "steps": int(part["step"].max()),
                "loss_first": loss.head(window).mean(),
                "loss_last": loss.tail(window).mean(),
            }
        )
    return pd.DataFrame(rows, columns=["lora", "arm", "steps", "loss_first", "loss_last"])


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
    class fidelity, quality, LoRA training (``lora_losses``: ``lora_loss_summary``)."""
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
        f"class (chance: {chance:.2f}); mean ± std over folds (a fold: the mean of its replicates)."
    )
    lines.append("")
    lines += _markdown_table(
        ["arch", "class", "adjective", "fidelity", "images"],
        [
            [
                row.arch,
                row["class"],
                row.adjective,
                f"{_fmt(row.fidelity_mean)} ± {_fmt(row.fidelity_std)}",
                row.n_images,
            ]
            for _, row in fidelity.sort_values(["arch", "class", "adjective"]).iterrows()
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


def read_robustness(evaluation_dirs: list[str | Path]) -> pd.DataFrame:
    """Every evaluation folder's ``robustness.csv`` (its first columns say what was evaluated)."""
    frames = [
        pd.read_csv(Path(d) / "robustness.csv") for d in evaluation_dirs if (Path(d) / "robustness.csv").is_file()
    ]
    if not frames:
        return pd.DataFrame(columns=["variant", "arch", "fold", "corruption", "severity", "balanced_error"])
    return pd.concat(frames, ignore_index=True)


def build_report(
    inputs: Mapping,
    outputs: Mapping[str, str],
    classes: list[str],
    prompt_classes: dict[str, str],
    n_bootstrap: int,
    seed: int,
    benchmarks: str | Path,
    near_duplicate_distance: int,
    mixed_label_groups: str,
    lora_scope: str,
    pretrain_corpus: str | None,
    contrast: ContrastSettings = ContrastSettings(variant="mixed_x1", baseline="original"),
    datasets: list[dict] | None = None,
    verify_results: str | Path | None = None,
) -> str:
    """Rule report: write every table, figure, the Markdown summary and the HTML page; return the summary.

    ``inputs`` and ``outputs`` hold the files of rule ``report`` under its names (evaluation
    folders, quality tables, manifest, audit, shards, LoRA folders; metrics.csv ... index.html and
    the figures); ``prompt_classes`` maps each class's LoRA training prompt to the class (a shared
    LoRA's validation images are shown by class); ``benchmarks`` is the folder of the rules'
    benchmark files (run times); ``verify_results``: the results folder to check first with
    ``meddap verify`` (its findings are stated; one that concerns an input fails the report);
    ``contrast``: the declared primary contrast and the p-value adjustment; ``datasets``: the
    (variant, fold) of each ``inputs["datasets"]`` file, in order; the rest are the rule's params.
    """
    from meddap.classify.robustness import robustness_summary
    from meddap.diffusion.generate import read_shards
    from meddap.evidence import evidence, figures
    from meddap.evidence.stats import classic_partners, original_variant, summarise
    from meddap.runtime.atomic import write_csv, write_text

    provenance = []
    if verify_results is not None:
        from meddap.audit.verify import report_findings

        read = [str(path) for value in inputs.values() for path in ([value] if isinstance(value, str) else value)]
        provenance = report_findings(verify_results, read)
    inputs, out = SimpleNamespace(**inputs), SimpleNamespace(**outputs)
    # What each evaluation is (variant, family, ratio, arch, fold, test set and its kind) is in its metrics.json.
    evaluations = read_evaluations(list(inputs.evaluations))
    synthetic = of_kind(evaluations, TestSetKind.SYNTHETIC)
    records = [record for record in evaluations if record["test_set_kind"] != TestSetKind.SYNTHETIC]
    errors = read_robustness(list(inputs.evaluations))

    metrics = collect_metrics(records)
    # The declared contrast first; every other comparison's p-values adjusted within its family.
    primary = evidence.primary_contrast_table(metrics, contrast)
    summary = evidence.adjust_summary(summarise(metrics), contrast.p_adjust)
    bootstrap = evidence.group_bootstrap(
        records, classic_partners(metrics), original_variant(metrics), n_resamples=n_bootstrap, seed=seed
    )
    fidelity = class_fidelity(synthetic)
    robustness = robustness_summary(errors)
    pooled = evidence.pooled_robustness_summary(errors)
    composition = evidence.test_set_composition(records, classes)
    expansion = evidence.expansion(
        {(d["variant"], int(d["fold"])): path for d, path in zip(datasets or [], getattr(inputs, "datasets", []))}
    )
    quality_tables = {}
    for name in ("quality", "adjective_effect", "near_copies"):
        frames = [pd.read_csv(path).assign(arch=Path(path).parent.name) for path in getattr(inputs, name)]
        quality_tables[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    write_csv(out.metrics, metrics)
    write_csv(out.summary, summary)
    write_csv(out.bootstrap, bootstrap)
    for name, table in (
        ("primary_contrast", primary),
        ("robustness_pooled", pooled),
        ("test_sets", composition),
        ("expansion", expansion),
    ):
        if hasattr(out, name):
            write_csv(getattr(out, name), table)
    write_csv(out.fidelity, fidelity)
    write_csv(out.robustness, robustness)
    write_csv(out.quality, quality_tables["quality"])
    write_csv(out.adjective_effect, quality_tables["adjective_effect"])
    write_csv(out.near_copies, quality_tables["near_copies"])

    # Figures: scores, robustness curves, confusion matrices, image grid, run times.
    figures.plot_variant_scores(summary, "macro_f1", out.fig_scores)
    figures.plot_robustness(errors, out.fig_robustness)
    internal = of_kind(records, TestSetKind.INTERNAL)
    predictions = pd.concat(
        [pd.read_csv(r["predictions"]).assign(variant=r["variant"]) for r in internal], ignore_index=True
    )
    figures.plot_confusions(predictions, classes, out.fig_confusion)
    manifest = pd.read_csv(inputs.manifest)
    figures.plot_image_grid(manifest[manifest["split"] == "train"], read_shards(list(inputs.shards)), out.fig_grid)
    bench_root = Path(benchmarks)
    runtimes = figures.benchmark_runtimes(
        sorted(glob.glob(str(bench_root / "**" / "*.tsv"), recursive=True)), bench_root
    )
    write_csv(out.runtimes, runtimes)
    figures.plot_runtimes(runtimes, out.fig_runtimes)
    # LoRA training: loss curves and validation images per checkpoint (a shared LoRA's by class prompt).
    lora_losses, lora_validation = read_lora_histories(list(inputs.loras), prompt_classes)
    lora_summary = lora_loss_summary(lora_losses)
    figures.plot_lora_losses(lora_losses, out.fig_lora_loss)
    figures.plot_lora_validation(lora_validation, out.fig_lora_validation)

    duplicates_note = near_duplicate_note(
        pd.read_csv(inputs.near_duplicates), near_duplicate_distance, mixed_label_groups
    )
    audit_summary = pd.read_csv(inputs.audit_summary)
    preface = leakage_notes(lora_scope, pretrain_corpus, Path(inputs.audit_verdict).read_text())
    if provenance:
        preface.append("\n".join(provenance))
    text = readable_summary(
        summary,
        fidelity,
        chance=1.0 / len(classes),
        bootstrap=bootstrap,
        robustness=robustness,
        quality=quality_tables,
        near_duplicates=duplicates_note,
        preface=preface,
        lora_losses=lora_summary,
        opening=evidence.primary_contrast_lines(primary, contrast),
        evidence=evidence.evidence_lines(composition, expansion, pooled, contrast.p_adjust),
    )
    write_text(out.readable, text)
    headline = summary[
        summary["metric"].isin(["macro_f1", "balanced_accuracy", "ece", "malignant_sensitivity_at_90_specificity"])
    ]
    columns = [
        "test_set",
        "arch",
        "variant",
        "metric",
        "mean",
        "std",
        "delta_vs_original",
        "p_t_vs_original",
        "p_t_vs_original_adj",
        "delta_vs_classic",
        "p_t_vs_classic",
        "p_t_vs_classic_adj",
    ]
    figures.html_page(
        out.html,
        "MEDDAP results",
        [
            (
                "Primary contrast",
                " ".join(evidence.primary_contrast_lines(primary, contrast)[2:]).replace("`", ""),
                [],
                [primary.drop(columns=["sentence"], errors="ignore")],
            ),
            (
                "Leakage and lineage audit",
                " ".join(preface).replace("**", ""),
                [],
                [audit_summary, pd.read_csv(inputs.audit_findings).head(50)],
            ),
            ("Data", duplicates_note, [], []),
            (
                "LoRA training",
                "Loss per step of every LoRA (one line per arm), and its validation images at each checkpoint "
                "(same seeds in every column).",
                [out.fig_lora_loss, out.fig_lora_validation],
                [lora_summary],
            ),
            (
                "Synthetic images",
                "Real training images next to synthetic images of each adjective.",
                [out.fig_grid],
                [],
            ),
            (
                "Scores",
                "Macro-F1 per variant: mean ± std over folds; the dashed line is `original`.",
                [out.fig_scores],
                [
                    headline[[c for c in columns if c in headline]].sort_values(
                        ["metric", "test_set", "arch", "variant"]
                    )
                ],
            ),
            (
                "Bootstrap confidence intervals",
                (
                    "95% intervals (BCa, else percentile) over the test set's near-duplicate groups of the mean "
                    "macro-F1 of a variant's classifiers, and of its differences to original and to classic."
                ),
                [],
                [bootstrap],
            ),
            (
                "What the numbers rest on",
                (
                    f"p adj: {contrast.p_adjust}-adjusted within each (test set, metric) family. Test sets and the "
                    "classes they hold; the expansion ratio each fold's classifiers saw; robustness pooled over "
                    "corruptions, severities and folds."
                ),
                [],
                [composition, expansion, pooled],
            ),
            (
                "Robustness",
                (
                    "Balanced error on corrupted copies of the internal test split; "
                    "nBE and rBE relative to original (MedMNIST-C)."
                ),
                [out.fig_robustness],
                [
                    robustness[robustness["corruption"] == "mean"]
                    .groupby(["variant", "arch"])[["be_clean", "be_mean", "nbe", "rbe"]]
                    .agg(["mean", "std"])
                    .pipe(lambda f: f.set_axis([f"{a}_{b}" for a, b in f.columns], axis=1))
                    .reset_index()
                ],
            ),
            ("Confusion matrices", "", [out.fig_confusion], []),
            (
                "Synthetic-image quality",
                (
                    "Fréchet distance, precision and recall in the feature space of the original classifiers; "
                    "class fidelity; adjective effects; nearest training images."
                ),
                [],
                [
                    fidelity,
                    quality_tables["quality"],
                    quality_tables["adjective_effect"],
                    quality_tables["near_copies"],
                ],
            ),
            ("Run time per rule", "", [out.fig_runtimes], [runtimes]),
        ],
    )
    return text
