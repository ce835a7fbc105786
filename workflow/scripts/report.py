"""Rule report: tables (metrics, summary with paired tests, bootstrap CIs, fidelity, robustness,
quality, LoRA losses), figures and a self-contained HTML page in results/report/."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import glob  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from meddap import figures  # noqa: E402
from meddap.atomic import write_csv, write_text  # noqa: E402
from meddap.generate import read_shards  # noqa: E402
from meddap.kinds import TestSetKind  # noqa: E402
from meddap.prompts import training_prompt  # noqa: E402
from meddap.report import (  # noqa: E402
    class_fidelity, collect_metrics, leakage_notes, lora_loss_summary, near_duplicate_note, of_kind, read_evaluations,
    read_lora_histories, readable_summary,
)
from meddap.robustness import robustness_summary  # noqa: E402
from meddap.settings import resolve  # noqa: E402
from meddap.stats import bootstrap_table, summarise  # noqa: E402

settings = resolve(snakemake.config, check_architectures=False)
plan = settings.plan
out = snakemake.output
# What each evaluation is (variant, family, ratio, arch, fold, test set and its kind) is in its metrics.json.
evaluations = read_evaluations(list(snakemake.input.evaluations))
synthetic = of_kind(evaluations, TestSetKind.SYNTHETIC)
records = [record for record in evaluations if record["test_set_kind"] != TestSetKind.SYNTHETIC]
robustness_files = [Path(folder) / "robustness.csv" for folder in snakemake.input.evaluations]
error_frames = [pd.read_csv(path) for path in robustness_files if path.is_file()]

metrics = collect_metrics(records)
summary = summarise(metrics)
bootstrap = bootstrap_table(records, metric="macro_f1", n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed)
fidelity = class_fidelity(synthetic)
errors = pd.concat(error_frames, ignore_index=True) if error_frames else pd.DataFrame(columns=["variant", "arch", "fold", "corruption", "severity", "balanced_error"])
robustness = robustness_summary(errors)
quality_tables = {}
for name in ("quality", "adjective_effect", "near_copies"):
    frames = [pd.read_csv(path).assign(arch=Path(path).parent.name) for path in snakemake.input[name]]
    quality_tables[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

write_csv(out.metrics, metrics)
write_csv(out.summary, summary)
write_csv(out.bootstrap, bootstrap)
write_csv(out.fidelity, fidelity)
write_csv(out.robustness, robustness)
write_csv(out.quality, quality_tables["quality"])
write_csv(out.adjective_effect, quality_tables["adjective_effect"])
write_csv(out.near_copies, quality_tables["near_copies"])

# Figures: scores, robustness curves, confusion matrices, image grid, run times.
figures.plot_variant_scores(summary, "macro_f1", out.fig_scores)
figures.plot_robustness(errors, out.fig_robustness)
internal = of_kind(records, TestSetKind.INTERNAL)
predictions = pd.concat([pd.read_csv(r["predictions"]).assign(variant=r["variant"]) for r in internal], ignore_index=True)
figures.plot_confusions(predictions, settings.classes, out.fig_confusion)
manifest = pd.read_csv(snakemake.input.manifest)
figures.plot_image_grid(manifest[manifest["split"] == "train"], read_shards(list(snakemake.input.shards)), out.fig_grid)
bench_root = Path(snakemake.params.benchmarks)
runtimes = figures.benchmark_runtimes(sorted(glob.glob(str(bench_root / "**" / "*.tsv"), recursive=True)), bench_root)
write_csv(out.runtimes, runtimes)
figures.plot_runtimes(runtimes, out.fig_runtimes)
# LoRA training: loss curves and validation images per checkpoint (a shared LoRA's by class prompt).
prompts = snakemake.config["prompts"]
prompt_classes = {training_prompt(cls, prompts["template"], prompts["subjects"]): cls for cls in settings.classes}
lora_losses, lora_validation = read_lora_histories(list(snakemake.input.loras), prompt_classes)
lora_summary = lora_loss_summary(lora_losses)
figures.plot_lora_losses(lora_losses, out.fig_lora_loss)
figures.plot_lora_validation(lora_validation, out.fig_lora_validation)

params = snakemake.params
duplicates_note = near_duplicate_note(pd.read_csv(snakemake.input.near_duplicates), params.near_duplicate_distance, params.mixed_label_groups)
audit_summary = pd.read_csv(snakemake.input.audit_summary)
preface = leakage_notes(params.lora_scope, params.pretrain_corpus, Path(snakemake.input.audit_verdict).read_text())
text = readable_summary(
    summary, fidelity, chance=1.0 / len(plan.classes), bootstrap=bootstrap, robustness=robustness, quality=quality_tables,
    near_duplicates=duplicates_note, preface=preface, lora_losses=lora_summary,
)
write_text(out.readable, text)
headline = summary[summary["metric"].isin(["macro_f1", "balanced_accuracy", "ece", "malignant_sensitivity_at_90_specificity"])]
columns = ["test_set", "arch", "variant", "metric", "mean", "std", "delta_vs_original", "p_t_vs_original", "delta_vs_classic", "p_t_vs_classic"]
figures.html_page(
    out.html,
    "MEDDAP results",
    [
        ("Leakage and lineage audit", " ".join(preface).replace("**", ""), [], [audit_summary, pd.read_csv(snakemake.input.audit_findings).head(50)]),
        ("Data", duplicates_note, [], []),
        ("LoRA training", "Loss per step of every LoRA (one line per arm), and its validation images at each checkpoint "
         "(same seeds in every column).", [out.fig_lora_loss, out.fig_lora_validation], [lora_summary]),
        ("Synthetic images", "Real training images next to synthetic images of each adjective.", [out.fig_grid], []),
        ("Scores", "Macro-F1 per variant: mean ± std over folds; the dashed line is `original`.", [out.fig_scores],
         [headline[[c for c in columns if c in headline]].sort_values(["metric", "test_set", "arch", "variant"])]),
        ("Bootstrap confidence intervals", "95% percentile intervals over test images of the fold-mean macro-F1 and of its difference to original.", [], [bootstrap]),
        ("Robustness", "Balanced error on corrupted copies of the internal test split; nBE and rBE relative to original (MedMNIST-C).", [out.fig_robustness],
         [robustness[robustness["corruption"] == "mean"].groupby(["variant", "arch"])[["be_clean", "be_mean", "nbe", "rbe"]].agg(["mean", "std"]).pipe(lambda f: f.set_axis([f"{a}_{b}" for a, b in f.columns], axis=1)).reset_index()]),
        ("Confusion matrices", "", [out.fig_confusion], []),
        ("Synthetic-image quality", "Fréchet distance, precision and recall in the feature space of the original classifiers; class fidelity; adjective effects; nearest training images.", [],
         [fidelity, quality_tables["quality"], quality_tables["adjective_effect"], quality_tables["near_copies"]]),
        ("Run time per rule", "", [out.fig_runtimes], [runtimes]),
    ],
)
log.info("\n%s", text)
