"""The classic-augmentation baseline: equal counts, fold-safe sources, nested ratios, reproducible."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meddap.data.classic import classic_sources, read_classic, write_classic_images
from meddap.data.merge import fold_rows, merge_fold
from meddap.settings.plan import Plan


@pytest.fixture
def plan():
    return Plan(
        ["benign", "normal"], {"benign": 9, "normal": 6}, ["none"], [0.5, 1.0], 8, families=("adjective", "classic")
    )


@pytest.fixture
def manifest(tmp_path, plan):
    rows = []
    rng = np.random.default_rng(0)
    for cls, n in plan.train_counts.items():
        for i in range(n + 2):
            path = tmp_path / "data" / cls / f"{cls} ({i}).png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(path)
            rows.append((str(path), cls, "train" if i < n else "test", i % 3 if i < n else -1))
    return pd.DataFrame(rows, columns=["path", "class", "split", "fold"])


def test_sources_never_include_the_folds_validation_or_test_images(manifest):
    for fold in range(3):
        sources = classic_sources(manifest, fold, "benign", seed=1, count=20)
        used = manifest.set_index("path").loc[sources]
        assert (used["split"] == "train").all() and (used["fold"] != fold).all()
        assert (
            len(sources) == 20 and used.index.value_counts().max() - used.index.value_counts().min() <= 1
        )  # spread evenly


def test_classic_variant_equal_counts_nested_and_only_in_its_folds_training(tmp_path, manifest, plan):
    folders = []
    for fold in range(3):
        folder = tmp_path / "classic" / f"fold{fold}"
        write_classic_images(manifest, fold, {c: plan.max_synthetic_count(c) for c in plan.classes}, 42, folder)
        folders.append(folder)
    for fold in range(3):
        classic = read_classic([folders[fold]])
        half = merge_fold(manifest, fold, plan, plan.variant("classic_x0.5"), classic=classic)
        full = merge_fold(manifest, fold, plan, plan.variant("classic_x1"), classic=classic)
        assert set(half.loc[half.source == "classic", "path"]) <= set(full.loc[full.source == "classic", "path"])
        train, validation = fold_rows(full)
        added = train[train["source"] == "classic"]
        # The same number per class as a synthetic x1 variant adds, all made for this fold.
        assert added.groupby("class").size().to_dict() == {"benign": 9, "normal": 6}
        assert set(added["path"]).isdisjoint(validation["path"])
        assert all(f"fold{fold}" in p for p in added["path"])
        # derived_from names each copy's source: a training original of this fold, never a validation image.
        sources = manifest.set_index("path").loc[added["derived_from"]]
        assert (sources["split"] == "train").all() and (sources["fold"] != fold).all()
    with pytest.raises(ValueError, match="classic copies of folds"):
        merge_fold(manifest, 1, plan, plan.variant("classic_x1"), classic=read_classic([folders[0]]))
    # Reproducible: the same seed writes the same pixels.
    again = tmp_path / "again"
    write_classic_images(manifest, 0, {"benign": 3}, 42, again)
    for name in ("benign/classic_00000.png", "benign/classic_00002.png"):
        assert (again / name).read_bytes() == (folders[0] / name).read_bytes()
    # ...and the copies are transformed, not verbatim.
    meta = pd.read_csv(folders[0] / "metadata.csv")
    first = meta.iloc[0]
    assert not np.array_equal(
        np.asarray(Image.open(folders[0] / first["file"]).convert("L")),
        np.asarray(Image.open(first["source_path"]).convert("L")),
    )
