import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meddap.classify.evaluate import classification_metrics
from meddap.evidence.collect import class_fidelity, collect_metrics, of_kind, read_evaluations
from meddap.evidence.stats import summarise
from meddap.settings.kinds import SYNTHETIC, TestSet, TestSetKind, unseen_test_set
from meddap.settings.plan import Plan
from meddap.settings.stages import EvaluationSettings

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
    assert 0 <= m["ece"] <= 1
    # No operating point given: no sensitivity at a specificity (its threshold is never taken from the test labels).
    assert "malignant_sensitivity_at_90_specificity" not in m
    # malignant vs rest, scores 0.8 and 0.6 for the two malignant images, 0.7 the top negative. A
    # threshold of 0.75 fixed beforehand keeps only 0.8; one of 0.55 both, and a false positive.
    at = classification_metrics(truth, probs, CLASSES, threshold=0.75)
    assert at["malignant_sensitivity_at_90_specificity"] == pytest.approx(0.5)
    assert at["malignant_specificity_at_validation_threshold"] == pytest.approx(1.0)
    low = classification_metrics(truth, probs, CLASSES, threshold=0.55)
    assert low["malignant_sensitivity_at_90_specificity"] == pytest.approx(1.0)
    assert low["malignant_specificity_at_validation_threshold"] == pytest.approx(3 / 4)


def test_the_operating_point_comes_from_the_validation_fold_not_the_test_set():
    """The threshold reaching 90% specificity on the validation images, applied unchanged to the test
    set: here the test's own oracle threshold would find every malignant image, the fixed one half."""
    import pandas as pd

    from meddap.classify.evaluate import validation_operating_point

    validation = pd.DataFrame({"class": ["malignant"] * 2 + ["benign"] * 10})
    scores = np.r_[[0.95, 0.97], np.linspace(0.0, 0.9, 10)]  # negatives up to 0.9: the threshold lands above
    probs = np.c_[1 - scores, scores, np.zeros(12)]
    threshold = validation_operating_point(validation, probs, CLASSES, "malignant", 0.9)
    assert 0.8 < threshold <= 0.95
    test_truth = ["malignant", "malignant", "benign", "benign"]
    test_scores = np.array([0.99, 0.6, 0.5, 0.1])  # the test set alone: 0.6 would separate perfectly
    test = classification_metrics(
        test_truth, np.c_[1 - test_scores, test_scores, np.zeros(4)], CLASSES, threshold=threshold
    )
    assert test["malignant_sensitivity_at_90_specificity"] == pytest.approx(0.5)
    assert validation_operating_point(validation, probs, CLASSES, "normal", 0.9) is None  # not in the fold


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
            labels = {**plan.variant(variant).labels(), "arch": "resnet18", "fold": fold}
            records.append({**labels, "test_set": "test", "test_set_kind": "internal", "metrics": str(path)})
    metrics = collect_metrics(records)
    assert set(metrics["metric"]) == {"macro_f1"}
    assert list(metrics.columns) == [
        "variant",
        "family",
        "adjective",
        "ratio",
        "filtered",
        "arch",
        "fold",
        "replicate",
        "test_set",
        "test_set_kind",
        "metric",
        "value",
    ]
    summary = summarise(metrics).set_index("variant")
    assert summary.loc["none_x1", "mean"] == pytest.approx(np.mean([0.75, 0.78, 0.77]))
    assert summary.loc["none_x1", "delta_vs_original"] == pytest.approx(np.mean([0.05, 0.06, 0.03]))
    from scipy.stats import ttest_rel

    assert summary.loc["none_x1", "p_t_vs_original"] == pytest.approx(
        ttest_rel([0.75, 0.78, 0.77], [0.70, 0.72, 0.74]).pvalue
    )
    assert summary.loc["none_x1", "adjective"] == "none" and summary.loc["none_x1", "ratio"] == 1.0


def test_class_fidelity_per_adjective(tmp_path):
    frame = pd.DataFrame(
        {
            "path": list("abcdef"),
            "class": ["benign"] * 4 + ["normal"] * 2,
            "predicted": ["benign", "benign", "normal", "benign", "normal", "benign"],
            "adjective": ["none", "none", "bright", "bright", "none", "none"],
        }
    )
    frame.to_csv(tmp_path / "p.csv", index=False)
    fidelity = class_fidelity([{"arch": "r", "fold": 0, "predictions": str(tmp_path / "p.csv")}]).set_index(
        ["class", "adjective"]
    )
    assert fidelity.loc[("benign", "none"), "fidelity_mean"] == 1.0
    assert fidelity.loc[("benign", "bright"), "fidelity_mean"] == 0.5
    assert fidelity.loc[("benign", "all"), "fidelity_mean"] == 0.75
    assert fidelity.loc[("normal", "all"), "fidelity_mean"] == 0.5


def report_folder(tmp_path: Path, fidelity: pd.DataFrame) -> Path:
    """A report folder with ``fidelity`` and a summary.csv whose `original` macro-F1 (0.9) passes the
    floor: the fidelity checks alone decide."""
    report = tmp_path / "report"
    report.mkdir()
    fidelity.to_csv(report / "fidelity.csv", index=False)
    pd.DataFrame(
        {
            "variant": ["original"],
            "family": ["original"],
            "arch": ["r"],
            "test_set": ["test"],
            "test_set_kind": ["internal"],
            "metric": ["macro_f1"],
            "mean": [0.9],
            "std": [0.01],
            "delta_vs_original": [0.0],
        }
    ).to_csv(report / "summary.csv", index=False)
    return report


def test_class_fidelity_per_generation_mode_and_the_floor_on_text_to_image(tmp_path, capsys):
    """Each mode's images are judged apart (issue 28 item 3); the floor of make check-results is the
    text-to-image images', the other modes' fidelity is printed."""
    from meddap.evidence.check import check

    frame = pd.DataFrame(
        {
            "path": list("abcdefgh"),
            "class": ["benign"] * 8,
            "predicted": ["benign"] * 4 + ["normal"] * 3 + ["benign"],
            "adjective": "none",
            "mode": ["text-to-image"] * 4 + ["guided"] * 4,
        }
    )
    frame.to_csv(tmp_path / "p.csv", index=False)
    fidelity = class_fidelity([{"arch": "r", "fold": 0, "predictions": str(tmp_path / "p.csv")}])
    by_mode = fidelity[fidelity["adjective"] == "all"].set_index("mode")
    assert by_mode.loc["text-to-image", "fidelity_mean"] == 1.0 and by_mode.loc["guided", "fidelity_mean"] == 0.25
    assert set(by_mode["n_images"]) == {4}
    # Without a mode column (a report of older results): text-to-image.
    frame.drop(columns="mode").to_csv(tmp_path / "old.csv", index=False)
    old = class_fidelity([{"arch": "r", "fold": 0, "predictions": str(tmp_path / "old.csv")}])
    assert set(old["mode"]) == {"text-to-image"} and old.loc[old["adjective"] == "all", "n_images"].item() == 8
    report = report_folder(tmp_path, fidelity)
    assert check(report, 0.8, 0.7) == []
    assert "class fidelity r benign (guided): median over folds 0.250" in capsys.readouterr().out
    frame.assign(mode=frame["mode"].map({"text-to-image": "guided", "guided": "text-to-image"})).to_csv(
        tmp_path / "p.csv", index=False
    )
    class_fidelity([{"arch": "r", "fold": 0, "predictions": str(tmp_path / "p.csv")}]).to_csv(
        report / "fidelity.csv", index=False
    )
    assert check(report, 0.8, 0.7) == ["fidelity of benign: median 0.250 < 0.7"]


def test_the_fidelity_floor_reads_the_median_over_folds_and_prints_every_fold(tmp_path, capsys):
    """One fold's judge rejecting a class does not fail the gate; a class rejected in most folds does."""
    from meddap.evidence.check import check

    records = []
    for fold, normal_right in enumerate((4, 4, 0)):  # fold 2's classifier calls every normal image benign
        frame = pd.DataFrame(
            {
                "path": [f"{fold}{i}" for i in range(8)],
                "class": ["benign"] * 4 + ["normal"] * 4,
                "predicted": ["benign"] * 4 + ["normal"] * normal_right + ["benign"] * (4 - normal_right),
                "adjective": "none",
            }
        )
        frame.to_csv(tmp_path / f"p{fold}.csv", index=False)
        records.append({"arch": "r", "fold": fold, "predictions": str(tmp_path / f"p{fold}.csv")})
    fidelity = class_fidelity(records)
    normal = fidelity.set_index(["class", "adjective"]).loc[("normal", "all")]
    assert normal["fidelity_median"] == 1.0 and normal["fidelity_mean"] == pytest.approx(2 / 3)
    assert normal["fidelity_folds"] == "1.00 1.00 0.00"
    report = report_folder(tmp_path, fidelity)
    assert check(report, 0.8, 0.7) == []
    assert "folds 1.00 1.00 0.00" in capsys.readouterr().out
    for fold in (0, 1):  # now most folds' judges reject the normal images
        pd.read_csv(tmp_path / f"p{fold}.csv").assign(predicted="benign").to_csv(tmp_path / f"p{fold}.csv", index=False)
    class_fidelity(records).to_csv(report / "fidelity.csv", index=False)
    assert check(report, 0.8, 0.7) == ["fidelity of normal: median 0.000 < 0.7"]


def _evaluate_with_a_fake_model(tmp_path, monkeypatch) -> tuple[Path, list[list[str]]]:
    """evaluate_classifier on three two-image test sets (internal "holdout", unseen "deviceB",
    synthetic) with a model that calls every image class a; returns (its folder, the paths that
    the corruption step scored)."""
    import meddap.classify.classifier
    import meddap.classify.robustness
    from meddap.classify.evaluate import evaluate_classifier

    monkeypatch.setattr(
        meddap.classify.classifier, "load_classifier", lambda folder: ("model", {"classes": ["a", "b"]})
    )
    monkeypatch.setattr(
        meddap.classify.classifier, "predict_paths", lambda m, meta, paths: np.tile([0.9, 0.1], (len(paths), 1))
    )
    corrupted = []

    def fake_corruptions(model, meta, paths, y_true, **kwargs):
        corrupted.append(list(paths))
        return pd.DataFrame({"corruption": ["clean"], "severity": [0], "balanced_error": [0.5]})

    monkeypatch.setattr(meddap.classify.robustness, "evaluate_corruptions", fake_corruptions)
    tables = {}
    for name in ("holdout", "deviceB", "synthetic"):
        tables[name] = tmp_path / f"{name}.csv"
        table = pd.DataFrame({"path": [f"{name}/1.png", f"{name}/2.png"], "class": ["a", "b"]})
        table.to_csv(tables[name], index=False)
    internal = TestSet("holdout", TestSetKind.INTERNAL)  # a name other than "test": the kind decides
    deviceb = unseen_test_set("deviceB", "/data/b")
    test_sets = {internal: tables["holdout"], deviceb: tables["deviceB"], SYNTHETIC: tables["synthetic"]}
    plan = Plan(["a", "b"], {"a": 10, "b": 10}, ["bright"], [0.5], 8, families=("adjective", "classic"))
    labels = {**plan.variant("bright_x0.5").labels(), "arch": "resnet18", "fold": 1}
    out = tmp_path / "anywhere"  # the folder's name says nothing about what it holds
    settings = EvaluationSettings(corruptions=("pixelate",), severities=(1,))
    model_dir = tmp_path / "model-dir"
    model_dir.mkdir()
    pd.DataFrame({"path": ["v/1.png", "v/2.png"], "class": ["a", "b"], "role": ["validation"] * 2}).to_csv(
        model_dir / "rows.csv", index=False
    )
    evaluate_classifier(model_dir, test_sets, out, settings, labels=labels)
    return out, corrupted


def test_evaluate_writes_what_it_evaluated_into_metrics_json(tmp_path, monkeypatch):
    """metrics.json carries the variant's data (family, ratio), arch, fold and the test set's kind;
    robustness runs on the set of the internal kind, whatever its name."""
    out, corrupted = _evaluate_with_a_fake_model(tmp_path, monkeypatch)
    written = json.loads((out / "deviceB" / "metrics.json").read_text())
    assert written["evaluated"] == {
        "variant": "bright_x0.5",
        "family": "adjective",
        "adjective": "bright",
        "ratio": 0.5,
        "filtered": False,
        "arch": "resnet18",
        "fold": 1,
        "test_set": "deviceB",
        "test_set_kind": "unseen",
    }
    assert written["accuracy"] == pytest.approx(0.5)  # the metrics stay where they were
    assert json.loads((out / "synthetic" / "metrics.json").read_text())["evaluated"]["test_set_kind"] == "synthetic"
    assert corrupted == [["holdout/1.png", "holdout/2.png"]]
    robustness = pd.read_csv(out / "robustness.csv")
    assert list(robustness.columns[:7]) == ["variant", "family", "adjective", "ratio", "filtered", "arch", "fold"]


def test_report_reads_what_was_evaluated_from_metrics_json(tmp_path, monkeypatch):
    out, _ = _evaluate_with_a_fake_model(tmp_path, monkeypatch)
    records = read_evaluations([out])
    kinds = {(r["test_set"], r["test_set_kind"]) for r in records}
    assert kinds == {("holdout", "internal"), ("deviceB", "unseen"), ("synthetic", "synthetic")}
    assert [r["test_set"] for r in of_kind(records, TestSetKind.SYNTHETIC)] == ["synthetic"]
    metrics = collect_metrics(of_kind(records, TestSetKind.INTERNAL))
    assert set(metrics["variant"]) == {"bright_x0.5"} and set(metrics["family"]) == {"adjective"}
    assert set(metrics["ratio"]) == {0.5}
    assert set(metrics["fold"]) == {1} and set(metrics["test_set_kind"]) == {"internal"}


def test_report_refuses_an_evaluation_that_does_not_say_what_it_is(tmp_path):
    folder = tmp_path / "original" / "resnet18" / "fold0" / "test"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"macro_f1": 0.5}))
    with pytest.raises(ValueError, match="rerun its evaluate job"):
        read_evaluations([folder.parent])
