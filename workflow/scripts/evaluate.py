"""Rule evaluate: one classifier on every test set and on corrupted copies of the internal test split."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.classify.evaluate import evaluate_classifier  # noqa: E402
from meddap.settings.kinds import TestSet  # noqa: E402
from meddap.settings.stages import EvaluationSettings  # noqa: E402

test_sets = [TestSet(**params) for params in snakemake.params.test_sets]
results = evaluate_classifier(
    snakemake.input.model,
    dict(zip(test_sets, snakemake.input.test_sets)),
    snakemake.output[0],
    EvaluationSettings.from_params(snakemake.params.evaluation),
    seed=snakemake.params.seed,
    labels=dict(snakemake.params.labels),
)
for name, metrics in results.items():
    log.info("%s: %s", name, metrics)
