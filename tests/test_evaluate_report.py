import json
import math

import numpy as np
import pandas as pd
import pytest

from meddap.evaluate import classification_metrics
from meddap.plan import Plan
from meddap.report import class_fidelity, collect_metrics
from meddap.stats import summarise

CLASSES = ["benign", "malignant", "normal"]


def test_metrics_match_hand_counts():
    truth = ["benign", "benign", "malignant", "malignant", "normal", "normal"]
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0, 0.1, 0.9], [0.6, 0.1, 0.3]])
    m = classification_metrics(truth, probs, CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity_benign"] == pytest.approx(0.5)
    assert m["specificity_benign"] == pytest.approx(3 / 4)
    assert m["precision_malignant"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert 0 <= m["macro_auroc"] <= 1
    # malignant vs rest: scores 0.8, 0.6 for the two malignant images; the best threshold with
    # specificity >= 0.9 (no false positive among 4 negatives, whose top is 0.7) keeps only 0.8.
    assert m["malignant_sensitivity_at_90_specificity"] == pytest.approx(0.5)
    assert 0 <= m["ece"] <= 1


def test_subset_of_classes_is_evaluated_on_present_classes():
    truth = ["benign", "malignant", "malignant"]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1]])
    m = classification_metrics(truth, probs, CLASSES)
    assert m["classes_present"] == ["benign", "malignant"]
    assert "sensitivity_normal" not in m
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert m["auroc_benign"] == pytest.approx(1.0)
    assert not math.isnan(m["macro_auroc"])


def test_summary_pairs_folds_against_original(tmp_path):
    plan = Plan(["a", "b"], {"a": 10, "b": 10}, ["none"], [1.0], 8, families=("adjective",))
    records = []
    for variant, scores in {"original": [0.70, 0.72, 0.74], "none_x1": [0.75, 0.78, 0.77]}.items():
        for fold, score in enumerate(scores):
            path = tmp_path / f"{variant}{fold}.json"
            path.write_text(json.dumps({"macro_f1": score, "classes_present": ["a", "b"]}))
            records.append({"variant": variant, "arch": "resnet18", "fold": fold, "test_set": "test", "metrics": str(path)})
    metrics = collect_metrics(records, plan)
    assert set(metrics["metric"]) == {"macro_f1"}
    summary = summarise(metrics).set_index("variant")
    assert summary.loc["none_x1", "mean"] == pytest.approx(np.mean([0.75, 0.78, 0.77]))
    assert summary.loc["none_x1", "delta_vs_original"] == pytest.approx(np.mean([0.05, 0.06, 0.03]))
    from scipy.stats import ttest_rel

    assert summary.loc["none_x1", "p_t_vs_original"] == pytest.approx(ttest_rel([0.75, 0.78, 0.77], [0.70, 0.72, 0.74]).pvalue)
    assert summary.loc["none_x1", "adjective"] == "none" and summary.loc["none_x1", "ratio"] == 1.0


def test_class_fidelity_per_adjective(tmp_path):
    frame = pd.DataFrame({
        "path": list("abcdef"), "class": ["benign"] * 4 + ["normal"] * 2,
        "predicted": ["benign", "benign", "normal", "benign", "normal", "benign"],
        "adjective": ["none", "none", "bright", "bright", "none", "none"],
    })
    frame.to_csv(tmp_path / "p.csv", index=False)
    fidelity = class_fidelity([{"arch": "r", "fold": 0, "predictions": str(tmp_path / "p.csv")}]).set_index(["class", "adjective"])
    assert fidelity.loc[("benign", "none"), "fidelity_mean"] == 1.0
    assert fidelity.loc[("benign", "bright"), "fidelity_mean"] == 0.5
    assert fidelity.loc[("benign", "all"), "fidelity_mean"] == 0.75
    assert fidelity.loc[("normal", "all"), "fidelity_mean"] == 0.5
