"""Realism measures (meddap.evidence.realism): the two-sample test is calibrated, the autoencoder
ceiling is measured with scikit-image on any diffusers folder, the tiny run's report carries the
tables and figures, and nothing but each arm's training originals reaches the real side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BUSI
from PIL import Image, ImageFilter

from meddap.evidence.collect import class_fidelity
from meddap.evidence.realism import (
    IMAGE_STATISTICS,
    image_statistics,
    realism_by_class,
    reconstruction_errors,
    two_sample_auroc,
)

# Tolerances of the calibration on BUSI's benign images (350, two halves of 175): under the null the
# AUROC's standard error is about 0.03, so real vs real must land within 0.5 ± 0.1; a blur of
# 2 px (sigma, at 256 px) is a change a reader sees, so the test must tell it at least 0.95.
NULL_TOLERANCE = 0.1
BLUR_FLOOR = 0.95


@pytest.fixture(scope="module")
def benign_halves():
    if not (BUSI / "benign").is_dir():
        pytest.skip("../shared/data/busi is not present beside the checkout")
    paths = sorted(p for p in (BUSI / "benign").glob("*.png") if "mask" not in p.name)
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in paths])
    order = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    return images[order[:half]], images[order[half:]]


def test_real_vs_real_is_about_chance(benign_halves):
    a, b = benign_halves
    result = two_sample_auroc(image_statistics(a), image_statistics(b), seed=1)
    assert abs(result.auroc - 0.5) <= NULL_TOLERANCE, result
    assert result.ci_low <= result.auroc <= result.ci_high and result.n_per_side == min(len(a), len(b))


def test_real_vs_blurred_real_is_told_apart(benign_halves):
    a, b = benign_halves
    blurred = np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(2))) for x in b])
    result = two_sample_auroc(image_statistics(a), image_statistics(blurred), seed=1)
    assert result.auroc >= BLUR_FLOOR, result


def test_the_linear_probe_separates_shifted_features_and_not_equal_ones():
    rng = np.random.default_rng(0)
    same = two_sample_auroc(rng.normal(size=(80, 16)), rng.normal(size=(80, 16)), classifier="linear")
    shifted = two_sample_auroc(rng.normal(size=(80, 16)), rng.normal(0.8, size=(80, 16)), classifier="linear")
    assert abs(same.auroc - 0.5) < 0.15 and shifted.auroc > 0.9


def test_a_derived_63_bit_seed_is_accepted():
    from meddap.runtime.seeding import derive_seed

    rng = np.random.default_rng(0)
    seed = derive_seed(42, "realism", "fold0", "benign", "all")
    assert seed >= 2**32 or derive_seed(1, "x") >= 2**32  # the seeds the rule passes exceed 32 bits
    result = two_sample_auroc(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), seed=max(seed, 2**40))
    assert 0 <= result.auroc <= 1


def test_a_small_set_is_still_tested_and_a_constant_scorer_gives_no_verdict():
    """15 images a side (an adjective's shard of the default run): the trees must still be able to
    split, and a set they cannot tell apart by anything must not read as AUROC 0.5."""
    rng = np.random.default_rng(0)
    small = two_sample_auroc(rng.normal(size=(15, 8)), rng.normal(3.0, size=(15, 8)))
    assert small.n_per_side == 15 and small.auroc > 0.9, small
    constant = two_sample_auroc(np.zeros((15, 8)), np.zeros((15, 8)))
    assert np.isnan(constant.auroc) and constant.n_per_side == 15


def test_too_few_images_give_no_verdict():
    result = two_sample_auroc(np.zeros((4, 3)), np.ones((40, 3)))
    assert np.isnan(result.auroc) and result.n_per_side == 0


def test_image_statistics_see_blur_and_brightness():
    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(speckle[0]).filter(ImageFilter.GaussianBlur(2)))[None]
    features = image_statistics(np.concatenate([speckle, smooth]))
    radii = 64 // 2 - 1
    # High frequencies lose power under blur; the mean absolute gradients drop too.
    assert features[1, radii - 1] < features[0, radii - 1] - 1
    assert features[1, -1] < features[0, -1] and features[1, -2] < features[0, -2]
    assert features.shape == (2, radii + 16 + 4)


def test_reconstruction_errors_are_scikit_image_psnr_and_ssim():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(real.astype(int) + rng.integers(-10, 11, real.shape), 0, 255).astype(np.uint8)
    errors = reconstruction_errors(real, noisy)
    luma = lambda x: x.astype(float) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    mse = np.mean((luma(real[0]) - luma(noisy[0])) ** 2)
    assert errors.loc[0, "psnr"] == pytest.approx(10 * np.log10(255**2 / mse))
    assert 0 < errors.loc[0, "ssim"] < 1
    assert reconstruction_errors(real[:1], real[:1]).loc[0, "ssim"] == pytest.approx(1.0)


def test_the_autoencoder_round_trip_reads_an_sd15_architecture_folder(tmp_path, busi_root):
    """Every base model kind ends as a diffusers folder (a single file is converted into one): the
    ceiling reads its vae/ as it reads the embedded model's."""
    from meddap.diffusion.autoencoder import load_autoencoder, round_trip
    from meddap.diffusion.sd15 import build_sd15_pipeline

    folder = build_sd15_pipeline(tmp_path / "sd15", width_divisor=10, seed=0)
    paths = [str(p) for p in sorted((busi_root / "normal").glob("*.png")) if "mask" not in p.name][:2]
    originals, reconstructed = round_trip(load_autoencoder(folder), paths, 64)
    assert originals.shape == reconstructed.shape == (2, 64, 64, 3) and originals.dtype == np.uint8
    assert len(reconstruction_errors(originals, reconstructed)) == 2


def test_the_judge_ensemble_is_the_mean_of_its_members(tmp_path):
    """A fold's fidelity is the mean of its replicates' (its judge ensemble); the range covers every judge."""
    records = []
    correct = {(0, 0): 4, (0, 1): 2, (1, 0): 3, (1, 1): 1}  # (fold, replicate) -> right of 4
    for (fold, replicate), right in correct.items():
        path = tmp_path / f"f{fold}r{replicate}.csv"
        predicted = ["benign"] * right + ["normal"] * (4 - right)
        pd.DataFrame({"class": ["benign"] * 4, "adjective": ["none"] * 4, "predicted": predicted}).to_csv(path)
        records.append({"arch": "resnet18", "fold": fold, "replicate": replicate, "predictions": str(path)})
    table = class_fidelity(records).set_index("adjective").loc["all"]
    folds = [np.mean([correct[(f, r)] / 4 for r in (0, 1)]) for f in (0, 1)]
    assert table["fidelity_mean"] == pytest.approx(np.mean(folds))
    assert table["fidelity_folds"] == " ".join(f"{v:.2f}" for v in folds)
    assert (table["fidelity_judge_min"], table["fidelity_judge_max"], table["n_judges"]) == (0.25, 1.0, 4)


def test_realism_by_class_summarises_arms_and_judges():
    autoencoder = pd.DataFrame(
        {"arm": ["fold0", "fold1"], "class": ["benign"] * 2, "auroc": [0.9, 0.7], "psnr_mean": [20, 22]}
    ).assign(ssim_mean=0.5)
    tests = pd.DataFrame(
        {
            "arm": ["fold0", "fold1", "fold0", "fold0"],
            "class": ["benign"] * 4,
            "adjective": ["all", "all", "bright", "all"],
            "features": [IMAGE_STATISTICS, IMAGE_STATISTICS, IMAGE_STATISTICS, "resnet18 judge (fold 0)"],
            "auroc": [0.6, 0.8, 0.99, 0.7],
        }
    )
    row = realism_by_class(autoencoder, tests).iloc[0]
    assert row.auroc_synthetic == pytest.approx(0.7) and (row.auroc_synthetic_min, row.auroc_synthetic_max) == (
        0.6,
        0.8,
    )
    assert row.auroc_judge == pytest.approx(0.7) and row.auroc_reconstruction == pytest.approx(0.8) and row.psnr == 21
    # Per generation mode: text-to-image first, each mode with its own tests and the one autoencoder ceiling.
    guided = tests.assign(mode="guided", auroc=tests["auroc"] - 0.1)
    table = realism_by_class(autoencoder, pd.concat([tests.assign(mode="text-to-image"), guided]))
    assert table["mode"].tolist() == ["text-to-image", "guided"]
    assert table["auroc_synthetic"].tolist() == pytest.approx([0.7, 0.6]) and table["psnr"].tolist() == [21, 21]
    from meddap.evidence.summary import realism_lines

    lines = realism_lines(table)
    assert sum("**benign**" in line for line in lines) == 1  # the opening's line: text-to-image
    assert "| guided | benign | 0.60 | 0.60 |" in lines


@pytest.mark.slow
def test_the_tiny_run_reports_realism_from_training_originals_only(tiny_run):
    results = tiny_run / "results"
    manifest = pd.read_csv(results / "splits" / "manifest.csv")
    inputs = pd.read_csv(results / "realism" / "inputs.csv")
    assert set(inputs["arm"]) == {"fold0", "fold1"}
    for arm, used in inputs.groupby("arm"):
        fold = int(arm.removeprefix("fold"))
        allowed = manifest[(manifest["split"] == "train") & (manifest["fold"] != fold)]
        # Exactly the arm's training originals: no validation-fold, test-split or unseen image.
        assert set(used["path"]) == set(allowed["path"])
    unseen = {p for f in (results / "test_sets").glob("*.csv") for p in pd.read_csv(f)["path"]}
    assert not set(inputs["path"]) & (unseen - set(manifest["path"]))
    realism = pd.read_csv(results / "report" / "realism.csv")
    assert set(realism["class"]) == {"benign", "malignant", "normal"} and realism["psnr"].gt(0).all()
    assert {"auroc", "ci_low", "ci_high", "psnr_mean", "ssim_mean"} <= set(
        pd.read_csv(results / "report" / "autoencoder.csv")
    )
    for cls in ("benign", "malignant", "normal"):
        assert Image.open(results / "realism" / f"{cls}.png").size[0] > 100
    summary = (results / "report" / "summary.md").read_text()
    opening = summary.split("## How real the synthetic images are")[1].split("##")[0]
    assert all(f"**{cls}**: real vs synthetic AUROC" in opening for cls in ("benign", "malignant", "normal"))
    html = (results / "report" / "index.html").read_text()
    assert "How real the synthetic images are" in html
    fidelity = pd.read_csv(results / "report" / "fidelity.csv")
    assert {"fidelity_judge_min", "fidelity_judge_max", "n_judges"} <= set(fidelity.columns)
    assert Path(results / "benchmarks" / "realism.tsv").is_file()


def test_the_realism_figure_has_a_row_per_generation_mode(tmp_path, monkeypatch):
    from meddap.evidence import figures

    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, target: saved.append(fig))
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    modes = {"text-to-image": images, "guided": images[:2]}
    figures.plot_realism_examples("benign", images, images, modes, tmp_path / "benign.png")
    labels = [axis.get_ylabel() for axis in saved[0].axes[::3]]  # the first column of each row of 3
    assert labels == ["real", "VAE reconstruction", "text-to-image", "guided"]
