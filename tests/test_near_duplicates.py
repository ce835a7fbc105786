"""Perceptual-hash near-duplicates: found through re-encoding/resizing/gain, kept on one split side."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from meddap.data.dataset import DatasetError, list_class_images, make_split, split_counts
from meddap.data.near_duplicates import duplicate_report, near_duplicate_groups, perceptual_hash


def speckle_scan(seed: int, size: int = 128) -> Image.Image:
    """A distinct ultrasound-like picture per seed: smooth blobs under multiplicative speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(6):
        cy, cx, r, a = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3), rng.uniform(-1, 1)
        field += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    image = field * rng.rayleigh(0.6, field.shape)
    return Image.fromarray(np.clip(image * 200, 0, 255).astype(np.uint8))


def test_hash_survives_resize_reencode_and_gain_but_separates_other_scans(tmp_path):
    original = speckle_scan(0)
    original.save(tmp_path / "a.png")
    original.resize((100, 100)).save(tmp_path / "a_small.jpg", quality=70)
    ImageEnhance.Brightness(original).enhance(1.2).save(tmp_path / "a_bright.png")
    for seed in range(1, 6):
        speckle_scan(seed).save(tmp_path / f"other{seed}.png")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    groups = near_duplicate_groups(paths, max_distance=10)
    copies = duplicate_report(groups)
    assert sorted(p.split("/")[-1] for p in copies["path"]) == ["a.png", "a_bright.png", "a_small.jpg"]
    assert copies["group"].nunique() == 1
    assert perceptual_hash(tmp_path / "a.png").shape == (63,)
    # -1 switches grouping off: every image its own group.
    assert near_duplicate_groups(paths, max_distance=-1)["group"].nunique() == len(paths)


def test_split_keeps_each_group_on_one_side_and_in_one_fold_with_exact_counts(tmp_path):
    images = {"a": [f"a{i}.png" for i in range(40)], "b": [f"b{i}.png" for i in range(21)]}
    # Groups of 2-4 near-copies, the rest single.
    groups = {path: i for i, path in enumerate(p for paths in images.values() for p in paths)}
    for members in (["a0.png", "a1.png", "a2.png", "a3.png"], ["a10.png", "a11.png"], ["b5.png", "b6.png", "b7.png"]):
        for path in members:
            groups[path] = groups[members[0]]
    for seed in range(20):
        manifest = make_split(images, test_fraction=0.25, folds=3, seed=seed, groups=groups)
        by_path = manifest.set_index("path")
        for members in (
            ["a0.png", "a1.png", "a2.png", "a3.png"],
            ["a10.png", "a11.png"],
            ["b5.png", "b6.png", "b7.png"],
        ):
            assert by_path.loc[members, "split"].nunique() == 1, (seed, members)
            assert by_path.loc[members, "fold"].nunique() == 1, (seed, members)
        for cls, paths in images.items():
            assert (manifest[(manifest["class"] == cls)]["split"] == "test").sum() == split_counts(len(paths), 0.25)[0]


def test_split_without_groups_is_unchanged_by_singleton_groups():
    images = {"a": [f"a{i}.png" for i in range(17)], "b": [f"b{i}.png" for i in range(9)]}
    singletons = {p: i for i, p in enumerate(p for paths in images.values() for p in paths)}
    split_columns = ["path", "class", "split", "fold"]
    pd.testing.assert_frame_equal(
        make_split(images, 0.25, 3, 7)[split_columns], make_split(images, 0.25, 3, 7, groups=singletons)[split_columns]
    )


def test_a_group_with_two_labels_is_kept_whole_in_training_or_dropped():
    images = {"a": [f"a{i}.png" for i in range(12)], "b": [f"b{i}.png" for i in range(12)]}
    groups = {p: i for i, p in enumerate(p for paths in images.values() for p in paths)}
    for path in ("b3.png", "b4.png"):
        groups[path] = groups["a0.png"]  # the same scan filed under a and b
    for seed in range(10):
        kept = make_split(images, 0.25, 3, seed, groups, mixed_label_groups="keep").set_index("path")
        members = kept.loc[["a0.png", "b3.png", "b4.png"]]
        assert (members["split"] == "train").all() and members["fold"].nunique() == 1, seed
        assert (kept["group"].loc[["a0.png", "b3.png"]] == groups["a0.png"]).all()
        for cls in images:
            assert (kept.loc[kept["class"] == cls, "split"] == "test").sum() == 3
        dropped = make_split(images, 0.25, 3, seed, groups, mixed_label_groups="drop").set_index("path")
        assert (dropped.loc[["a0.png", "b3.png", "b4.png"], "split"] == "dropped").all()
        assert (dropped.loc[["a0.png", "b3.png", "b4.png"], "fold"] == -1).all()
        assert (dropped["split"] == "test").sum() == 6


def test_groups_that_cannot_fill_the_test_split_exactly_are_a_clear_error():
    images = {"a": [f"a{i}.png" for i in range(8)], "b": [f"b{i}.png" for i in range(8)]}
    pairs = {p: i // 2 for i, p in enumerate(images["a"])} | {p: 100 + i for i, p in enumerate(images["b"])}
    with pytest.raises(DatasetError, match="near_duplicate_distance"):
        make_split(images, test_fraction=0.125, folds=2, seed=0, groups=pairs)  # 1 test image, groups of 2


@pytest.mark.parametrize("mixed_label_groups", ["keep", "drop"])
def test_busi_groups_across_classes_never_straddle_the_split(busi_root, mixed_label_groups):
    # The setting: seed 42, 3 folds, test share 0.2. BUSI holds the same scan under two
    # labels (benign (42).png == malignant (51).png); split per class, such a pair straddled.
    images = list_class_images(busi_root, ["benign", "malignant", "normal"], ["*_mask*"])
    paths = [p for ps in images.values() for p in ps]
    groups = near_duplicate_groups(paths, max_distance=10)
    copies = duplicate_report(groups).merge(
        pd.DataFrame([(p, c) for c, ps in images.items() for p in ps], columns=["path", "class"])
    )
    assert len(copies) > 20  # BUSI is known to repeat scans
    mixed = copies.groupby("group")["class"].nunique()
    mixed = mixed[mixed > 1].index
    assert len(mixed) >= 1
    manifest = make_split(images, 0.2, 3, 42, dict(zip(groups["path"], groups["group"])), mixed_label_groups)
    sides = copies.merge(manifest[["path", "split", "fold"]], on="path").groupby("group")[["split", "fold"]].nunique()
    assert (sides == 1).all().all()  # every group, whatever its labels: one side, one fold
    in_mixed = manifest["path"].isin(copies.loc[copies["group"].isin(mixed), "path"])
    expected = "train" if mixed_label_groups == "keep" else "dropped"
    assert (manifest.loc[in_mixed, "split"] == expected).all()
    assert not (manifest.loc[~in_mixed, "split"] == "dropped").any()


def test_hashes_round_trip_through_the_manifests_hex_digits():
    from meddap.data.near_duplicates import HASH_BITS, hash_to_hex, hashes_from_hex

    bits = np.random.default_rng(0).random((5, HASH_BITS)) > 0.5
    texts = [hash_to_hex(row) for row in bits]
    assert all(len(text) == 16 for text in texts)
    assert np.array_equal(hashes_from_hex(texts), bits)
    assert hashes_from_hex([]).shape == (0, HASH_BITS)
