"""Rule augment_classic: results/classic/fold<k>/<class>/*.png + metadata.csv (equal-count baseline)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.data.classic import write_classic_images  # noqa: E402
from meddap.runtime.atomic import atomic_path  # noqa: E402

fold = int(snakemake.wildcards.fold)
manifest = pd.read_csv(snakemake.input.manifest)
with atomic_path(snakemake.output[0]) as folder:
    metadata = write_classic_images(manifest, fold, dict(snakemake.params.counts), snakemake.params.seed, folder)
log.info("fold %d: classic-augmentation images per class:\n%s", fold, metadata.groupby("class").size().to_string())
