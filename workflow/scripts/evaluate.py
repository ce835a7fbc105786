"""Rule evaluate: one classifier on one test set -> predictions.csv + metrics.json."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import write_csv, write_json  # noqa: E402
from meddap.classifier import load_classifier, predict_paths  # noqa: E402
from meddap.evaluate import classification_metrics, predictions_frame  # noqa: E402

model, meta = load_classifier(snakemake.input.model)
test_set = pd.read_csv(snakemake.input.test_set)
probabilities = predict_paths(model, meta, list(test_set["path"]))
predictions = predictions_frame(list(test_set["path"]), list(test_set["class"]), probabilities, meta["classes"])
for extra in test_set.columns.difference(["path", "class"]):
    predictions[extra] = test_set[extra].values
metrics = classification_metrics(
    list(test_set["class"]), probabilities, meta["classes"], snakemake.params.positive_class, snakemake.params.specificity
)
write_csv(snakemake.output.predictions, predictions)
write_json(snakemake.output.metrics, metrics)
log.info("metrics: %s", metrics)
