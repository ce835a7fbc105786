"""Rule index_test_set: results/test_sets/<name>.csv for the internal test split or an unseen set."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.data.dataset import check_unseen_is_apart, index_test_set  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402
from meddap.settings.kinds import TEST_SPLIT, TestSetKind  # noqa: E402

name = snakemake.wildcards.test_set
manifest = pd.read_csv(snakemake.input.manifest)
if TestSetKind(snakemake.params.kind) == TestSetKind.INTERNAL:
    # With the near-duplicate groups: the report's bootstrap resamples groups, not single images.
    frame = manifest.loc[manifest["split"] == TEST_SPLIT, ["path", "class", "group"]]
else:
    frame = index_test_set(snakemake.input.source, list(snakemake.params.classes), list(snakemake.params.exclude))
    # An unseen set stands for other devices: a near-copy of a dataset image would make it a test on seen data.
    check_unseen_is_apart(name, frame, manifest, snakemake.params.max_distance)
write_csv(snakemake.output[0], frame.reset_index(drop=True))
log.info("test set %s: %s", name, frame["class"].value_counts().to_dict())
