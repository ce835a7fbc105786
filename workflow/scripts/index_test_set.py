"""Rule index_test_set: results/test_sets/<name>.csv for the internal test split or an unseen set."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import write_csv  # noqa: E402
from meddap.dataset import index_test_set  # noqa: E402
from meddap.kinds import TEST_SPLIT, TestSetKind  # noqa: E402

name = snakemake.wildcards.test_set
if TestSetKind(snakemake.params.kind) == TestSetKind.INTERNAL:
    manifest = pd.read_csv(snakemake.input[0])
    frame = manifest.loc[manifest["split"] == TEST_SPLIT, ["path", "class"]]
else:
    frame = index_test_set(snakemake.input[0], list(snakemake.params.classes), list(snakemake.params.exclude))
write_csv(snakemake.output[0], frame.reset_index(drop=True))
log.info("test set %s: %s", name, frame["class"].value_counts().to_dict())
