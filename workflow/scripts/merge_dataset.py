"""Rule merge_dataset: results/datasets/<variant>.csv (a manifest; no images are copied)."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import write_csv  # noqa: E402
from meddap.classic import read_classic  # noqa: E402
from meddap.generate import read_shards  # noqa: E402
from meddap.merge import merge_variant  # noqa: E402
from meddap.settings import resolve  # noqa: E402

plan = resolve(snakemake.config, check_architectures=False).plan
variant = plan.variant(snakemake.wildcards.variant)
manifest = pd.read_csv(snakemake.input.manifest)
synthetic = read_shards(list(snakemake.input.shards))
classic = read_classic(list(snakemake.input.classic)) if snakemake.input.classic else None
rows = merge_variant(manifest, synthetic, plan, variant, classic)
write_csv(snakemake.output[0], rows)
log.info("variant %s:\n%s", variant.name, rows.groupby(["class", "source"]).size().to_string())
