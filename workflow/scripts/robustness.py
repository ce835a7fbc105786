"""Rule robustness: one classifier on corrupted copies of the internal test split -> errors.csv."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import write_csv  # noqa: E402
from meddap.classifier import load_classifier  # noqa: E402
from meddap.robustness import evaluate_corruptions  # noqa: E402

model, meta = load_classifier(snakemake.input.model)
test_set = pd.read_csv(snakemake.input.test_set)
errors = evaluate_corruptions(
    model,
    meta,
    list(test_set["path"]),
    list(test_set["class"]),
    corruptions=snakemake.params.corruptions,
    severities=snakemake.params.severities,
    seed=snakemake.params.seed,
)
errors.insert(0, "fold", int(snakemake.wildcards.fold))
errors.insert(0, "arch", snakemake.wildcards.arch)
errors.insert(0, "variant", snakemake.wildcards.variant)
write_csv(snakemake.output[0], errors)
log.info("balanced error under corruption:\n%s", errors.to_string(index=False))
