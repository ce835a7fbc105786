"""Rule split: index dataset.root into results/splits/manifest.csv (test split + folds)."""

from meddap.runtime.rulescript import start

log = start(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from meddap.data.dataset import (
    DROPPED,
    DatasetError,
    check_images,
    dataset_digest,
    find_cross_class_duplicates,
    list_class_images,
    make_split,
)  # noqa: E402
from meddap.data.near_duplicates import duplicate_report, hash_images, hash_to_hex, near_duplicate_groups  # noqa: E402
from meddap.provenance.lineage import default_cache, write_lineage  # noqa: E402
from meddap.runtime.atomic import write_csv  # noqa: E402

params = snakemake.params
images = list_class_images(snakemake.input[0], list(params.classes), list(params.exclude))
for warning in check_images([p for paths in images.values() for p in paths], params.min_size):
    log.warning(warning)
clashes = find_cross_class_duplicates(images)
if clashes:
    listing = "; ".join(f"{a} == {b}" for a, b in clashes[:5])
    raise DatasetError(
        f"{len(clashes)} image(s) appear under two classes ({listing}). Keep each image in one class folder."
    )
all_paths = [p for paths in images.values() for p in paths]
hashes = hash_images(all_paths)
groups = near_duplicate_groups(all_paths, params.near_duplicate_distance, hashes)
groups.insert(1, "class", [cls for cls, paths in images.items() for _ in paths])
duplicates = duplicate_report(groups)
mixed = duplicates.groupby("group")["class"].nunique()
log.info(
    "near-duplicates (perceptual hash within %d bits): %d images in %d groups, kept on one side of the split",
    params.near_duplicate_distance,
    len(duplicates),
    duplicates["group"].nunique(),
)
for group in mixed[mixed > 1].index:
    log.warning(
        "the same scan under two classes (near-duplicate, conflicting labels; %s): %s",
        "kept whole in training" if params.mixed_label_groups == "keep" else "dropped",
        "; ".join(duplicates.loc[duplicates["group"] == group, "path"]),
    )
manifest = make_split(
    images,
    params.test_fraction,
    params.folds,
    params.seed,
    dict(zip(groups["path"], groups["group"])),
    params.mixed_label_groups,
)
# Perceptual hashes travel with the manifest: the lineage audit compares unseen and external
# images against them without re-reading the dataset.
manifest["phash"] = manifest["path"].map(dict(zip(all_paths, map(hash_to_hex, hashes))))
counts = (
    manifest.assign(fold=manifest["fold"].astype(str)).groupby(["class", "split"]).size().rename("images").reset_index()
)
for cls, expected in params.expected_train_counts.items():
    actual = int(((manifest["class"] == cls) & manifest["split"].isin(["train", DROPPED])).sum())
    if actual != expected:
        raise DatasetError(
            f"class {cls!r}: {actual} training images, but the DAG was planned for {expected}; "
            "rerun snakemake so it re-plans."
        )
write_csv(snakemake.output.counts, counts)
write_csv(
    snakemake.output.near_duplicates, duplicates.merge(manifest[["path", "split", "fold"]], on="path", how="left")
)
write_csv(snakemake.output.manifest, manifest)
# Provenance: the dataset's images and its digest as split read them (meddap verify compares them).
root = snakemake.input[0]
write_lineage(
    Path(snakemake.output.lineage).parent,
    "split",
    images=all_paths,
    inputs={"dataset": root},
    digests={"dataset": dataset_digest(root, list(params.classes), list(params.exclude), default_cache())},
    classes=list(params.classes),
    exclude=list(params.exclude),
)
log.info("split counts:\n%s", counts.to_string(index=False))
log.info("fold sizes:\n%s", manifest[manifest.split == "train"].groupby(["class", "fold"]).size().to_string())
