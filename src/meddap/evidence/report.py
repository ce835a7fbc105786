"""The report itself (``build_report``): every table, figure, the Markdown summary and the HTML page
of a run, from its evaluations (``meddap.evidence.collect``), statistics (``meddap.evidence.stats``,
``meddap.evidence.bootstrap``) and wording (``meddap.evidence.summary``, ``meddap.evidence.evidence``)."""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from meddap.evidence.collect import (
    class_fidelity,
    collect_metrics,
    lora_loss_summary,
    of_kind,
    read_evaluations,
    read_lora_histories,
    read_robustness,
)
from meddap.evidence.realism import realism_by_class
from meddap.evidence.summary import leakage_notes, near_duplicate_note, readable_summary, realism_lines
from meddap.settings.kinds import TestSetKind
from meddap.settings.stages import ContrastSettings


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
    from meddap.evidence.filtered import filter_lines, filter_summary
    from meddap.evidence.modes import mode_comparisons
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
    modes = mode_comparisons(metrics, contrast.p_adjust)
    filtered = filter_summary(list(getattr(inputs, "filters", [])))
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
    realism_tests = pd.read_csv(inputs.realism_two_sample) if hasattr(inputs, "realism_two_sample") else pd.DataFrame()
    autoencoder = pd.read_csv(inputs.realism_autoencoder) if hasattr(inputs, "realism_autoencoder") else pd.DataFrame()
    realism = realism_by_class(autoencoder, realism_tests)
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
        ("modes", modes),
        ("filter", filtered),
    ):
        if hasattr(out, name):
            write_csv(getattr(out, name), table)
    write_csv(out.fidelity, fidelity)
    write_csv(out.robustness, robustness)
    write_csv(out.quality, quality_tables["quality"])
    write_csv(out.adjective_effect, quality_tables["adjective_effect"])
    write_csv(out.near_copies, quality_tables["near_copies"])
    for name, table in (("realism", realism), ("realism_tests", realism_tests), ("autoencoder", autoencoder)):
        if hasattr(out, name):
            write_csv(getattr(out, name), table)

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
        opening=[*evidence.primary_contrast_lines(primary, contrast), *realism_lines(realism)],
        evidence=[
            *evidence.evidence_lines(composition, expansion, pooled, contrast.p_adjust),
            *evidence.mode_lines(modes, contrast),
            *filter_lines(filtered),
        ],
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
                "How real the synthetic images are",
                " ".join(realism_lines(realism)[3:]).replace("`", "").replace("**", ""),
                list(getattr(inputs, "realism_figures", [])),
                [realism, autoencoder, realism_tests],
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
                "Generation modes at equal counts",
                " ".join(evidence.mode_lines(modes, contrast)[3:4]).replace("`", ""),
                [],
                [modes],
            ),
            (
                "Filtered synthetic sets",
                " ".join(filter_lines(filtered)[3:4]).replace("`", "") or "No filtered variants (generation.filter).",
                [],
                [filtered],
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
