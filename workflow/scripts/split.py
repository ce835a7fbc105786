"""Rule split: index dataset.root into results/splits/manifest.csv (test split + folds)."""

from _meddap_script import start

log = start(snakemake)  # noqa: F821

import pandas as pd  # noqa: E402

from meddap.atomic import write_csv  # noqa: E402
from meddap.dataset import DatasetError, check_images, find_cross_class_duplicates, list_class_images, make_split  # noqa: E402

params = snakemake.params
images = list_class_images(snakemake.input[0], list(params.classes), list(params.exclude))
for warning in check_images([p for paths in images.values() for p in paths], params.min_size):
    log.warning(warning)
clashes = find_cross_class_duplicates(images)
if clashes:
    listing = "; ".join(f"{a} == {b}" for a, b in clashes[:5])
    raise DatasetError(f"{len(clashes)} image(s) appear under two classes ({listing}). Keep each image in one class folder.")
manifest = make_split(images, params.test_fraction, params.folds, params.seed)
counts = manifest.assign(fold=manifest["fold"].astype(str)).groupby(["class", "split"]).size().rename("images").reset_index()
for cls, expected in params.expected_train_counts.items():
    actual = int(((manifest["class"] == cls) & (manifest["split"] == "train")).sum())
    if actual != expected:
        raise DatasetError(f"class {cls!r}: {actual} training images, but the DAG was planned for {expected}; rerun snakemake so it re-plans.")
write_csv(snakemake.output.counts, counts)
write_csv(snakemake.output.manifest, manifest)
log.info("split counts:\n%s", counts.to_string(index=False))
log.info("fold sizes:\n%s", manifest[manifest.split == "train"].groupby(["class", "fold"]).size().to_string())
