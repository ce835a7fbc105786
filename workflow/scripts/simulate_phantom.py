"""Rule simulate_phantom: one device's phantom images under resources/phantom/<device>/<class>/."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821 - snakemake is injected by the script directive

import pandas as pd  # noqa: E402

from meddap.data.phantom import device_from_config, simulate_device_dataset  # noqa: E402
from meddap.provenance.lineage import write_lineage  # noqa: E402
from meddap.runtime.atomic import atomic_path, write_csv  # noqa: E402

device = device_from_config(snakemake.wildcards.device, snakemake.params.device)
log.info("device %s", device)
with atomic_path(snakemake.output[0]) as folder:
    records = simulate_device_dataset(
        folder, device, dict(snakemake.params.counts), snakemake.params.seed, snakemake.params.image_size
    )
    # Ground truth beside (not inside) the class folders, with final paths.
    frame = pd.DataFrame(records)
    frame["path"] = [p.replace(str(folder), snakemake.output[0], 1) for p in frame["path"]]
    write_csv(folder / "ground_truth.csv", frame)
    # Its files as written: the split tells this folder, untouched, from an edited one
    # (meddap.data.dataset.dataset_state).
    write_lineage(folder, "phantom", device=snakemake.wildcards.device, seed=snakemake.params.seed)
log.info("wrote %d images", len(records))
