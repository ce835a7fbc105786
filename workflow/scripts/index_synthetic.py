"""Rule index_synthetic: results/test_sets/synthetic/<arm>.csv (path, class, adjective) of one arm's shards."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.diffusion.generate import read_shards  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402

frame = read_shards(list(snakemake.input))[["path", "class", "adjective"]]
write_csv(snakemake.output[0], frame.reset_index(drop=True))
log.info("synthetic images of arm %s: %s", snakemake.wildcards.arm, frame["class"].value_counts().to_dict())
