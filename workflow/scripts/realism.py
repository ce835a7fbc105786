"""Rule realism: autoencoder ceiling, two-sample tests real vs synthetic, a figure per class
(meddap.evidence.realism)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from meddap.evidence.figures import plot_realism_examples  # noqa: E402
from meddap.evidence.filtered import mode_images  # noqa: E402
from meddap.evidence.realism import realism_tables  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402
from meddap.runtime.devices import pick_device  # noqa: E402

params = snakemake.params
tables = realism_tables(
    manifest=pd.read_csv(snakemake.input.manifest),
    arms=list(params.arms),
    arm_shards={arm: list(dirs) for arm, dirs in params.arm_shards.items()},
    base_model=params.base_model,
    resolution=params.resolution,
    judges={arch: list(dirs) for arch, dirs in params.judges.items()},
    seed=params.seed,
    grayscale=params.grayscale,
    device=str(pick_device(params.device)),
    other_modes={
        name: {arm: mode_images(dirs, mode["verdicts"].get(arm)) for arm, dirs in mode["shards"].items()}
        for name, mode in params.other_modes.items()
    },
)
for name in ("autoencoder", "two_sample", "inputs"):
    write_csv(snakemake.output[name], tables[name])
log.info("autoencoder:\n%s", tables["autoencoder"].to_string(index=False))
log.info("two-sample tests:\n%s", tables["two_sample"].to_string(index=False))
empty = np.zeros((0, 1, 1, 3), np.uint8)
for cls, target in zip(params.classes, snakemake.output.figures):
    real, reconstructed, synthetic = tables["examples"].get(cls, (empty, empty, {}))
    plot_realism_examples(cls, real, reconstructed, synthetic, target)
