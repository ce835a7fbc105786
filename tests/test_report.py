"""The evidence of a run: statistics, robustness, synthetic-image quality, and the HTML report in Chromium."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import snakemake
from PIL import Image

CORRUPTIONS = {
    "speckle_noise",
    "motion_blur",
    "brightness_up",
    "brightness_down",
    "contrast_down",
    "jpeg_compression",
    "pixelate",
}


@pytest.mark.slow
def test_summary_has_fold_statistics_calibration_and_fixed_specificity_sensitivity(tiny_run):
    summary = pd.read_csv(tiny_run / "results" / "report" / "summary.csv")
    metrics = set(summary["metric"])
    assert {"macro_f1", "balanced_accuracy", "ece", "malignant_sensitivity_at_90_specificity"} <= metrics
    assert {
        "mean",
        "std",
        "delta_vs_original",
        "p_t_vs_original",
        "delta_vs_classic",
        "delta_ci_low_vs_original",
    } <= set(summary.columns)
    f1 = summary[(summary["metric"] == "macro_f1") & (summary["test_set"] == "test")].set_index(["variant", "arch"])
    assert (f1["n_folds"] == 2).all()
    original = f1.xs("original", level="variant")
    assert (original["delta_vs_original"] == 0).all()
    metrics_long = pd.read_csv(tiny_run / "results" / "report" / "metrics.csv")
    one = metrics_long[
        (metrics_long["variant"] == "none_x1")
        & (metrics_long["metric"] == "macro_f1")
        & (metrics_long["test_set"] == "test")
    ]
    assert f1.loc[("none_x1", "squeezenet1_1"), "mean"] == pytest.approx(one["value"].mean())
    # The equal-count classic-augmentation baseline is in the run, so synthetic variants are compared with it.
    classic = f1.loc[("classic_x1", "squeezenet1_1"), "mean"]
    assert f1.loc[("none_x1", "squeezenet1_1"), "delta_vs_classic"] == pytest.approx(
        f1.loc[("none_x1", "squeezenet1_1"), "mean"] - classic
    )
    ece = summary[summary["metric"] == "ece"]["mean"]
    assert ((ece >= 0) & (ece <= 1)).all()


@pytest.mark.slow
def test_the_report_opens_with_the_declared_contrast_and_states_what_the_numbers_rest_on(tiny_run):
    report = tiny_run / "results" / "report"
    text = (report / "summary.md").read_text()
    # The primary contrast (tiny.yaml plans no mixed variant: none_x1 vs classic_x1) before any table.
    opening = text.split("\n## ")[1]
    assert opening.startswith("Primary contrast") and "`none_x1` vs `classic_x1`" in opening
    assert text.index("## Primary contrast") < text.index("|")
    primary = pd.read_csv(report / "primary_contrast.csv")
    assert list(primary["arch"]) == ["squeezenet1_1"] and (primary["n_pairs"] == 2).all()
    assert primary["sentence"].iloc[0] in opening
    # Every other comparison: raw and Holm-adjusted p-values side by side.
    summary = pd.read_csv(report / "summary.csv")
    assert {"p_t_vs_original_adj", "p_t_vs_classic_adj"} <= set(summary.columns)
    raw, adjusted = summary["p_t_vs_original"], summary["p_t_vs_original_adj"]
    assert (adjusted.dropna() >= raw[adjusted.notna()] - 1e-12).all()
    assert "| p adj |" in text
    # The expansion ratio each fold's classifier saw: its synthetic rows over its training originals.
    expansion = pd.read_csv(report / "expansion.csv").set_index(["variant", "fold", "class"])
    for fold in (0, 1):
        rows = pd.read_csv(tiny_run / "results" / "datasets" / "none_x1" / f"fold{fold}.csv")
        training = rows[rows["role"] == "train"]
        for cls, part in training.groupby("class"):
            synthetic, originals = (part["source"] == "synthetic").sum(), (part["source"] == "original").sum()
            assert expansion.loc[("none_x1", fold, cls), "effective_ratio"] == pytest.approx(synthetic / originals)
    # Each test set's classes, and the ones it lacks.
    sets = pd.read_csv(report / "test_sets.csv").set_index("test_set")
    assert sets.loc["test", ["benign", "malignant", "normal"]].sum() == len(
        pd.read_csv(tiny_run / "results" / "test_sets" / "test.csv")
    )


@pytest.mark.slow
def test_bootstrap_intervals_contain_their_estimates(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "report" / "bootstrap.csv")
    assert {"test", "synthetic"} & set(table["test_set"]) == {"test"}  # synthetic images are no test set here
    assert (table["low"] <= table["estimate"] + 1e-9).all() and (table["estimate"] <= table["high"] + 1e-9).all()
    augmented = table[table["variant"] != "original"]
    assert augmented["delta"].notna().all() and (augmented["delta_low"] <= augmented["delta_high"]).all()


@pytest.mark.slow
def test_robustness_covers_every_classifier_corruption_and_severity(tiny_run):
    files = sorted((tiny_run / "results" / "evaluation").glob("*/*/fold*/rep*/robustness.csv"))
    assert (
        len(files) == 4 * 2
    )  # 4 variants (original, none_x1, bright_x1, classic_x1) x 1 architecture x 2 folds x 1 replicate
    errors = pd.read_csv(files[0])
    assert set(errors["corruption"]) == CORRUPTIONS | {"clean"}
    assert sorted(errors.loc[errors["corruption"] == "pixelate", "severity"]) == [1, 3, 5]  # config.yaml's severities
    assert errors["balanced_error"].between(0, 1).all()
    summary = pd.read_csv(tiny_run / "results" / "report" / "robustness.csv")
    original = summary[(summary["variant"] == "original") & (summary["corruption"] != "mean")]
    # original against itself: nBE is exactly 1 (rBE too, where the error changes at all)
    assert np.allclose(original["nbe"].dropna(), 1.0) and len(original["nbe"].dropna()) > 0
    assert {"mean"} <= set(summary["corruption"])


@pytest.mark.slow
def test_quality_tables_per_class_and_adjective(tiny_run):
    report = tiny_run / "results" / "report"
    quality = pd.read_csv(report / "quality.csv")
    assert {(c, a) for c in ("benign", "malignant", "normal") for a in ("none", "bright", "all")} <= set(
        zip(quality["class"], quality["adjective"])
    )
    assert quality["fidelity_mean"].between(0, 1).all()
    assert (quality["frechet_distance_mean"].dropna() >= 0).all()
    effect = pd.read_csv(report / "adjective_effect.csv")
    bright = effect[(effect["adjective"] == "bright") & (effect["measure"] == "mean_intensity")]
    assert len(bright) == 3 and set(bright["expected"]) == {"up"}
    assert set(bright["verdict"]) <= {"as expected", "opposite", "no clear change"}
    near = pd.read_csv(report / "near_copies.csv")
    assert len(near) >= 8 and near["distance"].is_monotonic_increasing
    assert all((tiny_run / p).exists() or Path(p).exists() for p in near["synthetic_id"])


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True)
    return shutil.which("chromium")


def headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
    ]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


def assert_screenshot_shows_content(path: Path) -> None:
    assert path.is_file(), path
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.std() > 10, f"{path} looks blank"


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(tiny_run, tmp_path):
    browser = chromium()
    # Our self-contained page: every inlined figure must decode in the browser.
    page = tiny_run / "results" / "report" / "index.html"
    dom = headless(browser, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    loaded = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    total = re.search(r'data-images-total="(\d+)"', dom.stdout)
    assert loaded and total, dom.stdout[-2000:] + dom.stderr[-2000:]
    # 7 report figures and one realism figure per class (3)
    assert int(total.group(1)) == 10 and int(loaded.group(1)) == int(total.group(1))
    for heading in (
        "Robustness",
        "Synthetic-image quality",
        "Bootstrap confidence intervals",
        "Run time per rule",
        "LoRA training",
    ):
        assert heading in dom.stdout
    shot = tmp_path / "index.png"
    headless(browser, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri())
    assert_screenshot_shows_content(shot)

    # Snakemake's own report: one self-contained file with our figures and captions.
    report = tmp_path / "report.html"
    snakemake(tiny_run, "--report", str(report))
    text = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000
    for name in (
        "image_grid.png",
        "scores.png",
        "robustness.png",
        "confusion.png",
        "runtimes.png",
        "lora_loss.png",
        "lora_validation.png",
        "index.html",
    ):
        assert name in text, name
    dom = headless(browser, "--virtual-time-budget=15000", "--dump-dom", report.as_uri())
    assert "1. Summary" in dom.stdout and "4. Robustness" in dom.stdout, dom.stdout[-3000:]
    shot = tmp_path / "report.png"
    headless(browser, "--virtual-time-budget=15000", f"--screenshot={shot}", "--window-size=1400,1000", report.as_uri())
    assert_screenshot_shows_content(shot)
    assert not math.isnan(float(pd.read_csv(tiny_run / "results" / "report" / "runtimes.csv")["total_s"].sum()))


def test_report_draws_lora_loss_curves_and_validation_images_per_class_and_arm(tmp_path):
    from meddap.diffusion.lora import TrainingHistory
    from meddap.evidence import figures
    from meddap.evidence.collect import lora_loss_summary, read_lora_histories
    from meddap.evidence.summary import readable_summary

    prompts = {
        "an ultrasound photo of benign tumor in breast": "benign",
        "an ultrasound photo of no tumor in breast": "normal",
    }
    rng = np.random.default_rng(0)

    def lora_folder(arm: str, lora: str, lora_prompts: list[str]) -> Path:
        folder = tmp_path / "lora" / arm / lora
        folder.mkdir(parents=True)
        history = TrainingHistory()
        history.losses = list(1.0 / np.arange(1, 31) + rng.normal(0, 0.05, 30))
        history.learning_rates = [1e-3] * 30
        for step in (20, 30):
            for k, (prompt, image) in enumerate((p, i) for p in lora_prompts for i in range(2)):
                name = f"validation/step{step:05d}_{k:02d}.png"
                history.validation_rows.append(
                    {"step": step, "prompt": prompt, "image": image, "seed": 7 + image, "file": name}
                )
                history.validation_images[name] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        history.write(folder)
        return folder

    benign, normal = list(prompts)
    dirs = [
        lora_folder(arm, cls, [prompt])
        for arm in ("fold0", "fold1")
        for cls, prompt in (("benign", benign), ("normal", normal))
    ]
    dirs.append(
        lora_folder("split", "shared", [benign, normal])
    )  # lora.mode: shared: its images go under their classes
    legacy = tmp_path / "lora" / "fold2" / "benign"
    legacy.mkdir(parents=True)  # trained before LoRAs kept their history: skipped
    losses, validation = read_lora_histories([*dirs, legacy], prompts)

    assert len(losses) == 5 * 30 and set(losses["arm"]) == {"fold0", "fold1", "split"}
    assert len(validation) == 4 * 2 * 2 + 2 * 2 * 2 and all(Path(p).is_file() for p in validation["path"])
    shared = validation[validation["lora"] == "shared"]
    assert (shared["class"] == shared["prompt"].map(prompts)).all() and set(shared["class"]) == {"benign", "normal"}

    loss_png, grid_png = tmp_path / "figures" / "lora_loss.png", tmp_path / "figures" / "lora_validation.png"
    figures.plot_lora_losses(losses, loss_png)
    figures.plot_lora_validation(validation, grid_png)
    for png in (loss_png, grid_png):
        assert_screenshot_shows_content(png)
    one_row = tmp_path / "one_row.png"
    figures.plot_lora_validation(
        validation[(validation["class"] == "benign") & (validation["arm"] == "fold0")], one_row
    )
    # rows: class x arm (benign and normal, each in fold0, fold1 and split); columns: steps 20 and 30
    assert Image.open(grid_png).height > 4 * Image.open(one_row).height
    assert Image.open(grid_png).width == pytest.approx(Image.open(one_row).width, rel=0.2)

    summary = lora_loss_summary(losses)
    assert len(summary) == 5 and (summary["loss_first"] > summary["loss_last"]).all()
    text = readable_summary(
        pd.DataFrame(columns=["metric", "test_set", "arch", "variant"]),
        pd.DataFrame(columns=["arch", "class", "adjective"]),
        chance=0.5,
        lora_losses=summary,
    )
    assert "## LoRA training" in text and "| benign | fold0 | 30 |" in text

    # Without any history the figures still render, saying so.
    empty_losses, empty_validation = read_lora_histories([legacy], prompts)
    figures.plot_lora_losses(empty_losses, tmp_path / "empty_loss.png")
    figures.plot_lora_validation(empty_validation, tmp_path / "empty_grid.png")
    assert (tmp_path / "empty_loss.png").is_file() and (tmp_path / "empty_grid.png").is_file()
