"""Rule index_synthetic: results/test_sets/synthetic/<arm>.csv (path, class, adjective, mode) of one
arm's synthetic images, per generation mode (meddap.evidence.filtered.mode_images)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.evidence.filtered import mode_images  # noqa: E402
from meddap.evidence.modes import TEXT_TO_IMAGE_MODE  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402

frames = [mode_images(list(snakemake.input.text_to_image)).assign(mode=TEXT_TO_IMAGE_MODE)]
for name, mode in snakemake.params.other_modes.items():
    frames.append(mode_images(mode["shards"], mode["verdicts"]).assign(mode=name))
frame = pd.concat(frames, ignore_index=True)[["path", "class", "adjective", "mode"]]
write_csv(snakemake.output[0], frame)
log.info("synthetic images of arm %s per mode: %s", snakemake.wildcards.arm, frame.groupby("mode").size().to_dict())
