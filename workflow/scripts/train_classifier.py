"""Rule train_classifier: one (variant, architecture, fold, replicate) classifier folder."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.classify.classifier import train_classifier  # noqa: E402
from meddap.data.merge import fold_rows  # noqa: E402
from meddap.runtime.seeding import classifier_seed  # noqa: E402
from meddap.runtime.versions import library_versions  # noqa: E402
from meddap.settings.kinds import SYNTHETIC_SOURCES  # noqa: E402
from meddap.settings.stages import ClassifierSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
settings = ClassifierSettings.from_params(params.classifier)
train_rows, val_rows = fold_rows(pd.read_csv(snakemake.input[0]))
# Matched seeds: every variant of this (architecture, fold, replicate) starts from the same seed.
seed = classifier_seed(params.seed, wc.arch, wc.fold, wc.replicate)
n_synthetic = int(train_rows.source.isin(SYNTHETIC_SOURCES).sum())
log.info(
    "%s fold %s replicate %s (seed %d): %d training rows (%d synthetic), %d validation rows",
    wc.variant,
    wc.fold,
    wc.replicate,
    seed,
    len(train_rows),
    n_synthetic,
    len(val_rows),
)
history = train_classifier(
    train_rows,
    val_rows,
    list(params.classes),
    wc.arch,
    snakemake.output[0],
    settings,
    seed,
    device=params.device,
    provenance={
        "seed": seed,
        "classifier": params.classifier,
        "versions": library_versions(),
        "variant": wc.variant,
        "fold": int(wc.fold),
        "replicate": int(wc.replicate),
    },
    lineage_inputs={"dataset": snakemake.input[0]},
)
log.info("history:\n%s", history.to_string(index=False))
