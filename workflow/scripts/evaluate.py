"""Rule evaluate: one classifier on every test set and on corrupted copies of the internal test split."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

from meddap.evaluate import evaluate_classifier  # noqa: E402

wildcards = snakemake.wildcards
results = evaluate_classifier(
    snakemake.input.model,
    dict(zip(snakemake.params.test_set_names, snakemake.input.test_sets)),
    snakemake.output[0],
    positive_class=snakemake.params.positive_class,
    specificity=snakemake.params.specificity,
    corruptions=snakemake.params.corruptions,
    severities=snakemake.params.severities,
    seed=snakemake.params.seed,
    labels={"variant": wildcards.variant, "arch": wildcards.arch, "fold": int(wildcards.fold)},
)
for name, metrics in results.items():
    log.info("%s: %s", name, metrics)
