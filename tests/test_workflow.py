"""The DAG itself: dry run, lint, formatting, an end-to-end run on the tiny config, reruns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import DEFAULT, REPO, SNAKEMAKE, snakemake

ALL_RULES = {
    "simulate_phantom", "split", "augment_classic", "pretrain_base", "train_lora", "generate_shard", "merge_dataset",
    "train_classifier", "evaluate", "index_test_set", "synthetic_quality", "report", "all",
}


def planned_jobs(output: str) -> dict[str, int]:
    """The 'job count' table of a dry run."""
    table = output.split("Job stats:")[-1] if "Job stats:" in output else output
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_dry_run_of_the_default_config_lists_every_rule(tmp_path):
    result = snakemake(tmp_path, "-n", configs=(DEFAULT,))
    jobs = planned_jobs(result.stdout + result.stderr)
    config = yaml.safe_load(DEFAULT.read_text())
    folds, n_arch = config["dataset"]["folds"], len(config["classifier"]["architectures"])
    generation = config["generation"]
    families, n_adjectives = generation["variant_families"], len(generation["adjectives"])
    # augment_classic runs only for the classic family (the tiny config, which has it, runs it end to end)
    assert set(jobs) == ALL_RULES - ({"augment_classic"} if "classic" not in families else set())
    per_ratio = n_adjectives * ("adjective" in families) + ("mixed" in families and n_adjectives > 1) + ("classic" in families)
    n_variants = 1 + per_ratio * len(generation["ratios"])
    assert jobs["train_classifier"] == n_variants * n_arch * folds
    assert jobs["train_lora"] == len(config["dataset"]["classes"])
    assert jobs["simulate_phantom"] == 3
    assert jobs["evaluate"] == n_variants * n_arch * folds  # one job per classifier: every test set + robustness
    assert jobs["synthetic_quality"] == n_arch
    assert jobs.get("augment_classic", 0) == (folds if "classic" in families else 0)


def test_lint_is_clean_and_snakefmt_passes(tmp_path):
    lint = subprocess.run([SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations, your workflow is in a good condition" in lint.stdout + lint.stderr
    fmt = subprocess.run([str(Path(sys.executable).with_name("snakefmt")), "--check", "Snakefile", "workflow/rules"], capture_output=True, text=True, cwd=REPO)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_missing_dataset_root_stops_at_once_naming_the_path(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"phantom": {"enabled": False}, "dataset": {"root": str(tmp_path / "no-such-folder")}}))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    assert result.returncode != 0
    assert "no-such-folder" in result.stdout + result.stderr


@pytest.mark.slow
def test_end_to_end_outputs(tiny_run):
    results = tiny_run / "results"
    manifest = pd.read_csv(results / "splits" / "manifest.csv")
    assert set(manifest["split"]) == {"train", "test"}
    # The base model loads exactly as a downloaded SD v1.x folder would.
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(results / "base_model", safety_checker=None, requires_safety_checker=False)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    for cls in ("benign", "malignant", "normal"):
        assert (results / "lora" / cls / "pytorch_lora_weights.safetensors").is_file()
        log = (results / "logs" / "train_lora" / f"{cls}.log").read_text()
        assert re.search(r"trainable parameters: \d+ \(\d+\.\d+% of the UNet\)", log)
    metadata = pd.read_csv(results / "synthetic" / "benign" / "bright" / "shard000" / "metadata.csv")
    assert list(metadata.columns[:5]) == ["file", "class", "adjective", "prompt", "seed"]
    assert (metadata["prompt"] == "a bright ultrasound photo of benign tumor in breast").all()
    test_paths = set(manifest.loc[manifest["split"] == "test", "path"])
    for variant_csv in (results / "datasets").glob("*.csv"):
        rows = pd.read_csv(variant_csv)
        assert not rows["path"].isin(test_paths).any()
        assert (rows.loc[rows["source"] == "synthetic", "fold"] == -1).all()
    model_dir = results / "classifiers" / "classic_x1" / "squeezenet1_1" / "fold1"
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["classes"] == ["benign", "malignant", "normal"] and meta["input_size"] == 32
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "history.csv").is_file()
    metrics = json.loads((results / "evaluation" / "original" / "squeezenet1_1" / "fold0" / "linear-L7" / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc", "sensitivity_malignant", "specificity_benign", "precision_normal"):
        assert key in metrics
    long = pd.read_csv(results / "report" / "metrics.csv")
    assert list(long.columns) == ["variant", "adjective", "ratio", "arch", "fold", "test_set", "metric", "value"]
    assert set(long["test_set"]) == {"test", "linear-L7", "convex-C5"}
    summary = pd.read_csv(results / "report" / "summary.csv")
    assert {"mean", "std", "delta_vs_original", "p_t_vs_original"} <= set(summary.columns)
    fidelity = pd.read_csv(results / "report" / "fidelity.csv")
    assert set(fidelity["class"]) == {"benign", "malignant", "normal"}
    assert "Class fidelity" in (results / "report" / "summary.md").read_text()
    # Nothing half-written anywhere.
    assert not list(tiny_run.rglob("*.partial"))


@pytest.mark.slow
def test_predict_command_round_trip(tiny_run, tmp_path):
    model_dir = tiny_run / "results" / "classifiers" / "original" / "squeezenet1_1" / "fold0"
    images = tiny_run / "resources" / "phantom" / "linear-L7"
    out = tmp_path / "preds.csv"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("meddap")), "predict", "--model", str(model_dir), "--images", str(images), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert '"macro_f1"' in result.stdout  # class subfolders -> metrics printed
    ours = pd.read_csv(out).sort_values("path").reset_index(drop=True)
    workflow = pd.read_csv(tiny_run / "results" / "evaluation" / "original" / "squeezenet1_1" / "fold0" / "linear-L7" / "predictions.csv")
    workflow = workflow.sort_values("path").reset_index(drop=True)
    assert [Path(p).name for p in ours["path"]] == [Path(p).name for p in workflow["path"]]
    assert (ours["predicted"] == workflow["predicted"]).all()
    assert (ours[["prob_benign", "prob_malignant", "prob_normal"]] - workflow[["prob_benign", "prob_malignant", "prob_normal"]]).abs().max().max() < 1e-5


@pytest.mark.slow
def test_rerun_does_nothing_and_one_shard_reruns_only_its_dependents(tiny_run):
    again = snakemake(tiny_run, "--cores", "2")
    assert "Nothing to be done" in again.stdout + again.stderr

    shard = "results/synthetic/benign/bright/shard001"
    before = sorted((tiny_run / shard).glob("*.png"))
    before_bytes = [p.read_bytes() for p in before]
    # The documented command (README, `make regenerate-shard`): regenerate one shard only.
    regenerate = snakemake(tiny_run, "--cores", "2", "--forcerun", shard, "--until", shard)
    assert planned_jobs(regenerate.stdout + regenerate.stderr) == {"generate_shard": 1}
    assert [p.read_bytes() for p in sorted((tiny_run / shard).glob("*.png"))] == before_bytes  # same seeds, same images

    dry = snakemake(tiny_run, "-n")
    jobs = planned_jobs(dry.stdout + dry.stderr)
    # tiny: 6 training images per class, shards of 4; bright_x1 needs 6 per class = shards 0 and 1
    # -> only bright_x1 and the synthetic test set (scored by the original classifiers) depend on
    # shard001; none_x1 and classic_x1 do not.
    folds = 2
    assert jobs == {
        "merge_dataset": 1,
        "train_classifier": folds,
        "evaluate": folds + folds,  # bright_x1's classifiers + the original ones (synthetic test set)
        "index_test_set": 1,
        "synthetic_quality": 1,  # quality of all synthetic images
        "report": 1,
        "all": 1,
    }
    out = dry.stdout + dry.stderr
    assert "results/datasets/bright_x1.csv" in out
    assert "results/classifiers/none_x1" not in out and "results/classifiers/classic_x1" not in out
