"""The whole DAG on real BUSI images (tests/configs/busi_small.yaml over config/busi.yaml),
from a read-only copy of the dataset that the run must leave byte-identical."""

import shutil

import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, REPO, digest_tree, snakemake

BUSI_CONFIG = REPO / "config" / "busi.yaml"
BUSI_SMALL = REPO / "tests" / "configs" / "busi_small.yaml"


@pytest.mark.slow
def test_busi_small_runs_the_whole_dag_on_real_images_and_leaves_them_unchanged(busi_root, tmp_path):
    # A copy in the layout users download (masks beside the images), made read-only: the workflow
    # must neither write into the dataset nor need to.
    dataset = tmp_path / "Dataset_BUSI_with_GT"
    shutil.copytree(busi_root, dataset, ignore=shutil.ignore_patterns("*.md"))
    mask = dataset / "benign" / "benign (1)_mask.png"
    shutil.copyfile(dataset / "benign" / "benign (1).png", mask)
    before = digest_tree(dataset)
    modes = {p: p.stat().st_mode for p in [dataset, *dataset.rglob("*")]}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    root = tmp_path / "root.yaml"
    root.write_text(yaml.safe_dump({"dataset": {"root": str(dataset)}}))
    workdir = tmp_path / "run"
    workdir.mkdir()
    try:
        snakemake(workdir, "--cores", "2", configs=(DEFAULT, BUSI_CONFIG, BUSI_SMALL, root))
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert digest_tree(dataset) == before
    busi_root = dataset
    results = workdir / "results"

    manifest = pd.read_csv(results / "splits" / "manifest.csv")
    assert len(manifest) == sum(1 for _ in busi_root.glob("*/*.png")) - 1  # the mask is skipped
    assert not manifest["path"].str.contains("_mask").any()
    assert manifest["path"].str.contains(r" \(\d+\)\.png$").all()  # BUSI's names, spaces and parentheses kept
    # Near-duplicates: found, reported, and each group on one side of the split and in one fold.
    duplicates = pd.read_csv(results / "splits" / "near_duplicates.csv")
    assert len(duplicates) > 20
    # Groups are formed across classes: a group is on one side and in one fold whatever its labels.
    assert (duplicates.groupby("group")[["split", "fold"]].nunique() == 1).all().all()
    assert (duplicates.groupby("group")["class"].nunique() > 1).any()
    assert "near-duplicates" in (results / "logs" / "split.log").read_text()

    variants = {p.name for p in (results / "datasets").iterdir()}
    assert variants == {"original", "mixed_x0.05", "classic_x0.05"}
    for fold in (0, 1):
        classic = pd.read_csv(results / "datasets" / "classic_x0.05" / f"fold{fold}.csv")
        mixed = pd.read_csv(results / "datasets" / "mixed_x0.05" / f"fold{fold}.csv")
        # The equal-count baseline: per fold, as many classic images per class as synthetic ones.
        synthetic_counts = mixed[mixed["source"] == "synthetic"].groupby("class").size()
        assert classic[classic["source"] == "classic"].groupby("class").size().equals(synthetic_counts), fold
    # The small base model pretrained on the training split (asked for in busi_small.yaml): the
    # audit lists the validation images it saw as accepted findings, and nothing else.
    findings = pd.read_csv(results / "audit" / "findings.csv")
    assert len(findings) and findings["accepted"].all() and set(findings["protected_set"]) == {"validation"}
    assert findings["via"].str.startswith("base_model:").all()
    report_text = (results / "report" / "summary.md").read_text()
    assert "pretrained on this dataset's training split" in report_text

    summary = pd.read_csv(results / "report" / "summary.csv")
    f1 = summary[(summary["metric"] == "macro_f1") & (summary["test_set"] == "test")].set_index("variant")
    assert set(f1.index) == variants and f1.loc["mixed_x0.05", "delta_vs_classic"] == pytest.approx(
        f1.loc["mixed_x0.05", "mean"] - f1.loc["classic_x0.05", "mean"]
    )
    assert (results / "report" / "index.html").is_file()
