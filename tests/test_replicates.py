"""Classifier replicates: matched seeds across variants, one job per replicate, and statistics that
average a fold's replicates before comparing variants across folds."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, TINY, planned_jobs, snakemake
from scipy.stats import ttest_rel

from meddap.classify.predict import ensemble_members
from meddap.classify.robustness import robustness_summary
from meddap.evidence.collect import class_fidelity, collect_metrics
from meddap.evidence.stats import summarise
from meddap.runtime.seeding import classifier_seed, derive_seed


# ------------------------------------------------------------------ seeds
def test_the_seed_is_matched_across_variants_and_differs_across_replicates():
    """The derivation has no variant part at all: every variant of (arch, fold, replicate) gets one
    seed; replicates, folds, architectures and the config seed each change it."""
    import inspect

    assert "variant" not in inspect.signature(classifier_seed).parameters
    seeds = {
        (arch, fold, rep): classifier_seed(42, arch, fold, rep)
        for arch in ("resnet18", "squeezenet1_1")
        for fold in range(3)
        for rep in range(3)
    }
    assert len(set(seeds.values())) == len(seeds)  # all (arch, fold, replicate) differ
    assert classifier_seed(42, "resnet18", 1, 0) != classifier_seed(42, "resnet18", 1, 1)
    assert classifier_seed(42, "resnet18", 1, 0) != classifier_seed(43, "resnet18", 1, 0)
    # Wildcards arrive as strings: the same seed as integers.
    assert classifier_seed(42, "resnet18", "1", "2") == classifier_seed(42, "resnet18", 1, 2)
    # Replicate 0 is part of the derivation too (one scheme whatever classifier.replicates says).
    assert classifier_seed(42, "resnet18", 1, 0) == derive_seed(42, "classifier", "resnet18", 1, 0)
    assert classifier_seed(42, "resnet18", 1, 0) != derive_seed(42, "classifier", "resnet18", 1)
    assert 0 <= classifier_seed(42, "resnet18", 1, 0) < 2**63


def test_the_rule_script_derives_the_seed_from_the_library_without_the_variant():
    script = open("workflow/scripts/train_classifier.py").read()
    call = re.search(r"seed = (.+)", script).group(1)
    assert call.startswith("classifier_seed(") and "variant" not in call


# ------------------------------------------------------------------ DAG
def test_two_replicates_plan_twice_the_classifier_jobs(tmp_path):
    one = planned_jobs((lambda r: r.stdout + r.stderr)(snakemake(tmp_path, "-n")))
    config = tmp_path / "replicates.yaml"
    config.write_text(yaml.safe_dump({"classifier": {"replicates": 2}}))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, TINY, config))
    two = planned_jobs(result.stdout + result.stderr)
    assert one["train_classifier"] == 8  # 4 variants x 1 architecture x 2 folds
    assert two["train_classifier"] == 2 * one["train_classifier"]
    assert two["evaluate"] == 2 * one["evaluate"]
    # Nothing upstream multiplies, and the quality judge stays one classifier per fold.
    assert {rule: n for rule, n in two.items() if rule not in ("train_classifier", "evaluate")} == {
        rule: n for rule, n in one.items() if rule not in ("train_classifier", "evaluate")
    }
    out = result.stdout + result.stderr
    assert "results/classifiers/bright_x1/squeezenet1_1/fold1/rep1" in out
    assert "results/evaluation/bright_x1/squeezenet1_1/fold1/rep1" in out


def test_replicates_must_be_a_positive_whole_number(tmp_path):
    config = tmp_path / "zero.yaml"
    config.write_text(yaml.safe_dump({"classifier": {"replicates": 0}}))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, TINY, config), check=False)
    assert result.returncode != 0 and "replicates" in result.stdout + result.stderr


def test_the_paper_protocol_runs_three_replicates_and_the_default_one():
    assert yaml.safe_load(open("config/busi.yaml"))["classifier"]["replicates"] == 3
    assert yaml.safe_load(open("config/config.yaml"))["classifier"].get("replicates", 1) == 1


# ------------------------------------------------------------------ statistics
FOLDS = 4


def _metrics(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Long form from variant -> per fold, the values of its replicates."""
    families = {"original": ("original", 0.0), "bright_x1": ("adjective", 1.0)}
    return pd.DataFrame(
        [
            {
                "variant": v,
                "family": families[v][0],
                "ratio": families[v][1],
                "arch": "resnet18",
                "fold": fold,
                "replicate": rep,
                "test_set": "test",
                "metric": "macro_f1",
                "value": x,
            }
            for v, folds in values.items()
            for fold, reps in enumerate(folds)
            for rep, x in enumerate(reps)
        ]
    )


def test_replicates_are_averaged_within_a_fold_before_the_paired_test():
    original = [[0.70, 0.74], [0.71, 0.69], [0.60, 0.66], [0.72, 0.72]]
    bright = [[0.75, 0.71], [0.80, 0.70], [0.70, 0.61], [0.78, 0.74]]
    summary = summarise(_metrics({"original": original, "bright_x1": bright})).set_index("variant")
    row = summary.loc["bright_x1"]
    fold_bright, fold_original = np.mean(bright, axis=1), np.mean(original, axis=1)
    assert row["n_pairs_vs_original"] == FOLDS  # pairs are folds, not the 8 classifiers
    assert row["n_folds"] == FOLDS and row["n_replicates"] == 2
    assert row["mean"] == pytest.approx(fold_bright.mean())
    assert row["std"] == pytest.approx(np.std(fold_bright, ddof=1))
    assert row["delta_vs_original"] == pytest.approx((fold_bright - fold_original).mean())
    assert row["p_t_vs_original"] == pytest.approx(ttest_rel(fold_bright, fold_original).pvalue)
    # Treating the 8 classifiers as independent pairs would give another p-value.
    assert not math.isclose(row["p_t_vs_original"], ttest_rel(np.ravel(bright), np.ravel(original)).pvalue)
    assert "replicate" not in summary.columns  # not carried as if it were a label of the group


def test_a_fold_with_more_replicates_does_not_weigh_more():
    # Fold 0 has three replicates, the others one: the mean is over folds.
    values = {"original": [[0.5, 0.5, 0.5], [0.7], [0.7]], "bright_x1": [[0.9, 0.9, 0.9], [0.6], [0.6]]}
    row = summarise(_metrics(values)).set_index("variant").loc["bright_x1"]
    assert row["mean"] == pytest.approx(0.7) and row["n_replicates"] == 1
    assert row["delta_vs_original"] == pytest.approx((0.4 - 0.1 - 0.1) / 3)


def test_collect_metrics_carries_the_replicate(tmp_path):
    records = []
    for rep in (0, 1):
        path = tmp_path / f"m{rep}.json"
        path.write_text(json.dumps({"evaluated": {}, "macro_f1": 0.5 + rep / 10}))
        records.append(
            {
                "variant": "original",
                "family": "original",
                "adjective": "",
                "ratio": 0.0,
                "arch": "r",
                "fold": 0,
                "replicate": rep,
                "test_set": "test",
                "test_set_kind": "internal",
                "metrics": str(path),
            }
        )
    table = collect_metrics(records)
    assert table["replicate"].tolist() == [0, 1]


def _predictions(path, truth, predicted):
    classes = ["a", "b"]
    frame = pd.DataFrame({"path": [f"img{i}.png" for i in range(len(truth))], "class": truth, "predicted": predicted})
    for cls in classes:
        frame[f"prob_{cls}"] = [1.0 if p == cls else 0.0 for p in predicted]
    frame.to_csv(path, index=False)
    return str(path)


def test_fidelity_averages_a_folds_replicates_first(tmp_path):
    truth = ["a"] * 4 + ["b"] * 4
    right, half = truth, ["a", "a", "b", "b", "b", "b", "a", "a"]
    # Fold 0: replicates right and half; fold 1: one replicate, half. Mean of fold means:
    # ((1 + 0.5) / 2 + 0.5) / 2 = 0.625 (pooled equally it would be (1 + 0.5 + 0.5) / 3).
    records = [
        {
            "variant": "original",
            "arch": "r",
            "fold": 0,
            "replicate": 0,
            "test_set": "test",
            "predictions": _predictions(tmp_path / "p00.csv", truth, right),
        },
        {
            "variant": "original",
            "arch": "r",
            "fold": 0,
            "replicate": 1,
            "test_set": "test",
            "predictions": _predictions(tmp_path / "p01.csv", truth, half),
        },
        {
            "variant": "original",
            "arch": "r",
            "fold": 1,
            "replicate": 0,
            "test_set": "test",
            "predictions": _predictions(tmp_path / "p10.csv", truth, half),
        },
    ]
    # Fidelity: the same per-fold averaging; n_images counts one classifier's images.
    for record in records:
        pd.read_csv(record["predictions"]).assign(adjective="none").to_csv(record["predictions"], index=False)
    fidelity = class_fidelity(records).set_index(["class", "adjective"])
    assert fidelity.loc[("a", "all"), "fidelity_mean"] == pytest.approx(((1 + 0.5) / 2 + 0.5) / 2)
    assert fidelity.loc[("a", "all"), "n_images"] == 4 and fidelity.loc[("a", "all"), "n_folds"] == 2


def test_robustness_summary_averages_replicates_and_counts_them():
    rows = []
    for variant, be in (("original", [0.2, 0.4]), ("bright_x1", [0.1, 0.3])):
        for rep, error in enumerate(be):
            rows += [
                {
                    "variant": variant,
                    "arch": "r",
                    "fold": 0,
                    "replicate": rep,
                    "corruption": "clean",
                    "severity": 0,
                    "balanced_error": error,
                },
                {
                    "variant": variant,
                    "arch": "r",
                    "fold": 0,
                    "replicate": rep,
                    "corruption": "pixelate",
                    "severity": 1,
                    "balanced_error": error + 0.1,
                },
            ]
    table = robustness_summary(pd.DataFrame(rows)).set_index(["variant", "corruption"])
    assert table.loc[("bright_x1", "pixelate"), "be_clean"] == pytest.approx(0.2)
    assert table.loc[("bright_x1", "pixelate"), "be_mean"] == pytest.approx(0.3)
    assert table.loc[("bright_x1", "pixelate"), "nbe"] == pytest.approx(0.3 / 0.4)
    assert table.loc[("bright_x1", "mean"), "n_replicates"] == 2


# ------------------------------------------------------------------ predict
def test_ensemble_members_are_found_by_model_json_at_any_depth(tmp_path):
    arch = tmp_path / "classifiers" / "original" / "resnet18"
    for fold in (1, 0):
        for rep in (1, 0):
            folder = arch / f"fold{fold}" / f"rep{rep}"
            folder.mkdir(parents=True)
            (folder / "model.json").write_text(json.dumps({"fold": fold, "replicate": rep}))
    members = ensemble_members(arch)
    assert [(m.parent.name, m.name) for m in members] == [
        ("fold0", "rep0"),
        ("fold0", "rep1"),
        ("fold1", "rep0"),
        ("fold1", "rep1"),
    ]
    assert [m.name for m in ensemble_members(arch / "fold1")] == ["rep0", "rep1"]
    assert ensemble_members(arch / "fold1" / "rep1") == [arch / "fold1" / "rep1"]
