"""Rule merge_dataset: results/datasets/<variant>/fold<k>.csv (a manifest; no images are copied)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.data.classic import read_classic  # noqa: E402
from meddap.data.merge import merge_fold  # noqa: E402
from meddap.diffusion.generate import read_shards  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402
from meddap.settings.plan import Plan, Variant  # noqa: E402

plan = Plan(**snakemake.params.plan)
variant = Variant(**snakemake.params.variant)
fold = int(snakemake.wildcards.fold)
manifest = pd.read_csv(snakemake.input.manifest)
synthetic = read_shards(list(snakemake.input.shards))
classic = read_classic(list(snakemake.input.classic)) if snakemake.input.classic else None
verdicts = pd.read_csv(snakemake.input.verdicts[0], keep_default_na=False) if snakemake.input.verdicts else None
rows = merge_fold(manifest, fold, plan, variant, synthetic, classic, verdicts)
write_csv(snakemake.output[0], rows)
log.info("variant %s fold %d:\n%s", variant.name, fold, rows.groupby(["role", "class", "source"]).size().to_string())
