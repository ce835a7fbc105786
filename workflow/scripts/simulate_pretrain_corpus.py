"""Rule simulate_pretrain_corpus: resources/phantom/pretrain-corpus/<class>/*.png (never part of the dataset)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from meddap.data.phantom import device_from_config, simulate_device_dataset  # noqa: E402
from meddap.runtime.atomic import atomic_path  # noqa: E402
from meddap.runtime.seeding import derive_seed  # noqa: E402

params = snakemake.params
device = device_from_config(params.device_name, params.device)
# Its own seed stream: the same device and index never give a dataset image.
seed = derive_seed(params.seed, "pretrain-corpus")
with atomic_path(snakemake.output[0]) as folder:
    records = simulate_device_dataset(folder, device, dict(params.counts), seed, params.image_size)
log.info("pretraining corpus on %s: %d images", device.name, len(records))
