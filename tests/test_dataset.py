import re
import shutil

import numpy as np
import pytest
from PIL import Image

from meddap.data.dataset import DatasetError, index_test_set, list_class_images, make_split, split_counts


def make_folder(root, counts, size=8):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((size, size), (i * 7 + len(cls)) % 255, np.uint8)).save(
                root / cls / f"{cls} ({i}).png"
            )
    return root


def test_split_is_stratified_deterministic_and_disjoint(tmp_path):
    images = list_class_images(make_folder(tmp_path, {"a": 40, "b": 20, "c": 11}), None, [])
    first = make_split(images, test_fraction=0.25, folds=3, seed=1)
    again = make_split(images, test_fraction=0.25, folds=3, seed=1)
    other = make_split(images, test_fraction=0.25, folds=3, seed=2)
    assert first.equals(again)
    assert not first.equals(other)
    for cls, n in {"a": 40, "b": 20, "c": 11}.items():
        rows = first[first["class"] == cls]
        n_test, n_train = split_counts(n, 0.25)
        assert (rows["split"] == "test").sum() == n_test
        fold_sizes = rows[rows["split"] == "train"]["fold"].value_counts()
        assert fold_sizes.sum() == n_train and fold_sizes.max() - fold_sizes.min() <= 1
    test_paths = set(first.loc[first["split"] == "test", "path"])
    train_paths = set(first.loc[first["split"] == "train", "path"])
    assert test_paths.isdisjoint(train_paths)
    assert (first.loc[first["split"] == "test", "fold"] == -1).all()
    assert len(test_paths | train_paths) == 71


def test_exclude_patterns_and_non_images_are_skipped(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    Image.new("L", (4, 4)).save(tmp_path / "a" / "a (0)_mask.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    images = list_class_images(tmp_path, None, ["*_mask*"])
    assert len(images["a"]) == 3 and all("_mask" not in p for p in images["a"])


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does-not-exist"):
        list_class_images(tmp_path / "does-not-exist", None, [])


def test_empty_root_and_empty_class_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="no class subfolders"):
        list_class_images(tmp_path, None, [])
    (tmp_path / "benign").mkdir()
    with pytest.raises(DatasetError, match="benign.*holds no images"):
        list_class_images(tmp_path, ["benign"], [])


def test_too_few_images_for_the_folds(tmp_path):
    images = list_class_images(make_folder(tmp_path, {"a": 3, "b": 10}), None, [])
    with pytest.raises(DatasetError, match="class 'a'"):
        make_split(images, 0.25, folds=5, seed=0)


def test_busi_file_names_with_spaces_and_parentheses(busi_root, tmp_path):
    images = list_class_images(busi_root, ["benign", "malignant", "normal"], ["*_mask*"])
    assert {c: len(p) for c, p in images.items()} == {"benign": 350, "malignant": 168, "normal": 106}
    manifest = make_split(images, 0.2, 5, seed=42)
    manifest.to_csv(tmp_path / "m.csv", index=False)
    import pandas as pd

    assert pd.read_csv(tmp_path / "m.csv")["path"].tolist() == manifest["path"].tolist()
    assert any(" (" in p for p in manifest["path"])


def test_unseen_set_may_hold_a_subset_but_not_new_classes(tmp_path):
    make_folder(tmp_path / "u", {"benign": 2, "malignant": 2})
    frame = index_test_set(tmp_path / "u", ["benign", "malignant", "normal"], [])
    assert set(frame["class"]) == {"benign", "malignant"}
    make_folder(tmp_path / "v", {"cyst": 2})
    with pytest.raises(DatasetError, match="cyst"):
        index_test_set(tmp_path / "v", ["benign", "malignant", "normal"], [])
    shutil.rmtree(tmp_path / "v")


def test_an_unseen_set_holding_a_near_copy_of_a_dataset_image_is_refused(busi_root, tmp_path):
    """A re-encoded, slightly brighter copy of a training scan is not "unseen": indexing names the pair."""
    import pandas as pd

    from meddap.data.dataset import check_unseen_is_apart
    from meddap.data.near_duplicates import hash_images, hash_to_hex

    dataset = sorted((busi_root / "benign").glob("*.png"))[:4]
    manifest = pd.DataFrame({"path": [str(p) for p in dataset]})
    manifest["phash"] = [hash_to_hex(h) for h in hash_images(list(manifest["path"]))]
    copy = tmp_path / "copy.jpg"
    bright = np.clip(np.asarray(Image.open(dataset[2]).convert("L"), dtype=np.int16) + 12, 0, 255).astype(np.uint8)
    Image.fromarray(bright).save(copy, quality=90)
    other = sorted((busi_root / "malignant").glob("*.png"))[0]
    apart = pd.DataFrame({"path": [str(other)], "class": ["malignant"]})
    check_unseen_is_apart("device-b", apart, manifest, max_distance=10)  # another patient's scan: accepted
    with_copy = pd.DataFrame({"path": [str(other), str(copy)], "class": ["malignant", "benign"]})
    with pytest.raises(
        DatasetError, match=r"unseen set 'device-b': 1 image\(s\).*copy\.jpg ~ .*" + re.escape(dataset[2].name)
    ):
        check_unseen_is_apart("device-b", with_copy, manifest, max_distance=10)
    check_unseen_is_apart("device-b", with_copy, manifest, max_distance=-1)  # the check switched off
