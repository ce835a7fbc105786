"""Rule train_classifier: one (variant, architecture, fold) classifier folder."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.classifier import train_classifier  # noqa: E402
from meddap.kinds import SYNTHETIC_SOURCE  # noqa: E402
from meddap.merge import fold_rows  # noqa: E402
from meddap.seeding import derive_seed  # noqa: E402
from meddap.settings import library_versions  # noqa: E402
from meddap.stages import ClassifierSettings  # noqa: E402

params, wc = snakemake.params, snakemake.wildcards
settings = ClassifierSettings.from_params(params.classifier)
train_rows, val_rows = fold_rows(pd.read_csv(snakemake.input[0]))
seed = derive_seed(params.seed, "classifier", wc.variant, wc.arch, wc.fold)
n_synthetic = int((train_rows.source == SYNTHETIC_SOURCE).sum())
log.info(
    "%s fold %s: %d training rows (%d synthetic), %d validation rows",
    wc.variant,
    wc.fold,
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
    },
    lineage_inputs={"dataset": snakemake.input[0]},
)
log.info("history:\n%s", history.to_string(index=False))
