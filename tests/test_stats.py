import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel, wilcoxon

from meddap.stats import (
    align_predictions,
    bootstrap_ci,
    bootstrap_difference_ci,
    classic_partners,
    expected_calibration_error,
    paired_test,
    predictions_arrays,
    sensitivity_at_specificity,
    summarise,
)

ORIGINAL = [0.70, 0.72, 0.74, 0.71, 0.69, 0.73]
BRIGHT = [0.76, 0.78, 0.77, 0.77, 0.74, 0.80]  # consistently better than original
CLASSIC = [0.75, 0.79, 0.78, 0.76, 0.75, 0.79]  # about as good as bright


def _family_and_ratio(name: str) -> tuple[str, float]:
    """The plan's data for the usual names (the statistics never parse names themselves)."""
    if name == "original":
        return "original", 0.0
    prefix, ratio = name.rsplit("_x", 1)
    return ("classic" if prefix == "classic" else "mixed" if prefix == "mixed" else "adjective"), float(ratio)


def _long(scores: dict[str, list[float]], metric="macro_f1", test_set="test", arch="resnet18", families=None):
    families = families or {v: _family_and_ratio(v) for v in scores}
    rows = [
        {"variant": v, "family": families[v][0], "adjective": v.split("_")[0], "ratio": families[v][1], "arch": arch,
         "fold": f, "test_set": test_set, "metric": metric, "value": x}
        for v, values in scores.items()
        for f, x in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_classic_partner_is_found_by_family_and_ratio_not_by_name():
    # Names that a name-parsing rule reads wrongly: "bright_x1" holds ratio 0.5 here, "plain" is
    # the classic variant of ratio 0.5, "classic_x2" is a synthetic variant of ratio 2 (mixed),
    # "baseline" the original and "heavy" the classic variant of ratio 2.
    families = {
        "baseline": ("original", 0.0),
        "bright_x1": ("adjective", 0.5),
        "plain": ("classic", 0.5),
        "classic_x2": ("mixed", 2.0),
        "heavy": ("classic", 2.0),
        "dark_x1": ("adjective", 1.0),  # no classic variant of ratio 1 in the run
    }
    scores = {"baseline": ORIGINAL, "bright_x1": BRIGHT, "plain": CLASSIC, "classic_x2": BRIGHT, "heavy": ORIGINAL}
    metrics = _long({**scores, "dark_x1": BRIGHT}, families=families)
    assert classic_partners(metrics) == {"bright_x1": "plain", "classic_x2": "heavy"}
    s = summarise(metrics).set_index("variant")
    assert s.loc["bright_x1", "classic_variant"] == "plain"
    assert s.loc["bright_x1", "delta_vs_classic"] == pytest.approx(np.mean(np.subtract(BRIGHT, CLASSIC)))
    assert s.loc["classic_x2", "classic_variant"] == "heavy"
    assert s.loc["classic_x2", "delta_vs_classic"] == pytest.approx(np.mean(np.subtract(BRIGHT, ORIGINAL)))
    # The original baseline is the variant of the original family, whatever its name.
    assert s.loc["bright_x1", "delta_vs_original"] == pytest.approx(np.mean(np.subtract(BRIGHT, ORIGINAL)))
    assert s.loc["baseline", "delta_vs_original"] == 0
    for name in ("dark_x1", "plain", "heavy", "baseline"):
        assert s.loc[name, "classic_variant"] == "" and math.isnan(s.loc[name, "delta_vs_classic"])
    assert s.loc["bright_x1", "family"] == "adjective" and s.loc["bright_x1", "ratio"] == 0.5


def test_summarise_needs_the_variant_data():
    metrics = _long({"original": ORIGINAL, "bright_x1": BRIGHT}).drop(columns="family")
    with pytest.raises(ValueError, match="family"):
        summarise(metrics)
    inconsistent = _long({"original": ORIGINAL, "bright_x1": BRIGHT})
    inconsistent.loc[0, "ratio"] = 3.0
    with pytest.raises(ValueError, match="original"):
        summarise(inconsistent)


def test_summarise_pairs_with_original_and_classic():
    metrics = pd.concat([_long({"original": ORIGINAL, "bright_x1": BRIGHT, "classic_x1": CLASSIC, "dark_x2": BRIGHT})], ignore_index=True)
    s = summarise(metrics).set_index("variant")
    row = s.loc["bright_x1"]
    assert row["mean"] == pytest.approx(np.mean(BRIGHT))
    assert row["std"] == pytest.approx(np.std(BRIGHT, ddof=1))
    assert row["n_folds"] == 6 and row["adjective"] == "bright"
    assert row["delta_vs_original"] == pytest.approx(np.mean(np.subtract(BRIGHT, ORIGINAL)))
    assert row["p_t_vs_original"] == pytest.approx(ttest_rel(BRIGHT, ORIGINAL).pvalue)
    assert row["p_t_vs_original"] < 0.001  # the consistent difference is detected
    assert row["p_wilcoxon_vs_original"] == pytest.approx(wilcoxon(np.subtract(BRIGHT, ORIGINAL)).pvalue)
    assert row["p_wilcoxon_vs_original"] == pytest.approx(2 / 2**6)  # all six folds better
    assert row["delta_ci_low_vs_original"] > 0
    # vs the classic baseline of the same ratio: no real difference
    assert row["classic_variant"] == "classic_x1"
    assert row["delta_vs_classic"] == pytest.approx(np.mean(np.subtract(BRIGHT, CLASSIC)))
    assert row["p_t_vs_classic"] > 0.05 and row["n_pairs_vs_classic"] == 6
    # dark_x2 has no classic variant of ratio 2 in the run: NaN, not a wrong pairing
    assert s.loc["dark_x2", "classic_variant"] == ""
    assert math.isnan(s.loc["dark_x2", "delta_vs_classic"]) and s.loc["dark_x2", "n_pairs_vs_classic"] == 0
    # self comparisons
    assert s.loc["original", "delta_vs_original"] == 0 and math.isnan(s.loc["original", "p_t_vs_original"])
    assert math.isnan(s.loc["original", "delta_vs_classic"])


def test_summarise_few_folds_and_separate_groups():
    metrics = pd.concat(
        [
            _long({"original": ORIGINAL[:5], "bright_x1": BRIGHT[:5]}),
            _long({"original": ORIGINAL[:1], "bright_x1": BRIGHT[:1]}, test_set="deviceB"),
        ],
        ignore_index=True,
    )
    s = summarise(metrics).set_index(["variant", "test_set"])
    five = s.loc[("bright_x1", "test")]
    assert five["n_pairs_vs_original"] == 5
    assert not math.isnan(five["p_t_vs_original"]) and math.isnan(five["p_wilcoxon_vs_original"])  # n < 6: t-test only
    one = s.loc[("bright_x1", "deviceB")]
    assert one["n_folds"] == 1 and math.isnan(one["std"])
    assert one["delta_vs_original"] == pytest.approx(BRIGHT[0] - ORIGINAL[0])
    assert math.isnan(one["p_t_vs_original"]) and math.isnan(one["delta_ci_low_vs_original"])


def test_paired_test_edge_cases():
    same = paired_test([0.5] * 6, [0.5] * 6)
    assert same["delta"] == 0 and same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0
    shifted = paired_test(np.arange(6) + 0.1, np.arange(6.0))
    assert shifted["delta"] == pytest.approx(0.1) and math.isnan(shifted["p_t"])  # zero variance
    assert shifted["p_wilcoxon"] == pytest.approx(2 / 2**6)
    noise = np.random.default_rng(0).normal(0, 0.02, 8)
    assert paired_test(np.full(8, 0.7) + noise, np.full(8, 0.7))["p_t"] > 0.05


def _labels(n, accuracy, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, 3, n)) % 3)
    return y, pred


def test_bootstrap_ci_contains_estimate_and_narrows():
    y, pred = _labels(100, 0.8, 1)
    small = bootstrap_ci(y, pred, "balanced_accuracy", n_boot=400, seed=3)
    assert small["low"] <= small["estimate"] <= small["high"]
    assert small["n_valid"] == 400
    assert bootstrap_ci(y, pred, "balanced_accuracy", n_boot=400, seed=3) == small  # seeded
    y2, pred2 = _labels(2000, 0.8, 2)
    large = bootstrap_ci(y2, pred2, "balanced_accuracy", n_boot=400, seed=3)
    assert large["low"] <= large["estimate"] <= large["high"]
    assert (large["high"] - large["low"]) < 0.5 * (small["high"] - small["low"])


def test_bootstrap_metrics_agree_with_evaluate():
    from meddap.evaluate import classification_metrics

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet([1, 1, 1], 60)
    proba[np.arange(60), y] += 0.4
    proba /= proba.sum(1, keepdims=True)
    classes = ["benign", "malignant", "normal"]
    reference = classification_metrics([classes[i] for i in y], proba, classes)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc"):
        assert bootstrap_ci(y, proba, name, n_boot=5)["estimate"] == pytest.approx(reference[name])


def test_bootstrap_difference_is_paired():
    y, good = _labels(300, 0.9, 7)
    _, bad = _labels(300, 0.6, 8)
    diff = bootstrap_difference_ci(y, good, bad, "accuracy", n_boot=300, seed=0)
    assert diff["low"] > 0 and diff["p_bootstrap"] < 0.01
    assert diff["low"] <= diff["estimate"] <= diff["high"]
    same = bootstrap_difference_ci(y, good, good.copy(), "accuracy", n_boot=100, seed=0)
    assert same["estimate"] == 0 and same["low"] == 0 and same["high"] == 0  # same indices for both


def test_expected_calibration_error():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 40000)
    correct = rng.random(40000) < confidence  # right exactly as often as claimed
    proba = np.stack([confidence, 1 - confidence], 1)
    assert expected_calibration_error(np.where(correct, 0, 1), proba) < 0.015
    over = np.tile([0.9, 0.1], (10, 1))
    assert expected_calibration_error(np.array([0, 1] * 5), over) == pytest.approx(0.4)  # 90% claimed, 50% right
    assert expected_calibration_error(np.array([0, 1, 2]), np.eye(3)) == pytest.approx(0.0)


def test_sensitivity_at_specificity():
    negatives = np.arange(10) / 10  # 0.0 .. 0.9
    positives = np.array([0.95, 0.91, 0.85, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.r_[np.zeros(10), np.ones(10)].astype(bool)
    score = np.r_[negatives, positives]
    assert sensitivity_at_specificity(y, score, 0.9) == pytest.approx(0.3)  # threshold 0.85: one FP
    assert sensitivity_at_specificity(y, score, 1.0) == pytest.approx(0.2)
    # agrees with brute force over every threshold
    for target in (0.5, 0.7, 0.8):
        best = max((score[y] >= t).mean() for t in np.r_[score, np.inf] if (score[~y] < t).mean() >= target)
        assert sensitivity_at_specificity(y, score, target) == pytest.approx(best)
    assert math.isnan(sensitivity_at_specificity(np.ones(4, bool), np.arange(4.0)))


def test_predictions_tables_pair_by_path():
    a = pd.DataFrame({"path": ["x", "y", "z"], "class": ["b", "m", "b"], "predicted": ["b", "b", "b"], "prob_b": [0.9, 0.6, 0.7], "prob_m": [0.1, 0.4, 0.3]})
    b = a.iloc[[2, 0]].assign(prob_b=[0.2, 0.3], prob_m=[0.8, 0.7])
    a2, b2 = align_predictions(a, b)
    assert list(a2["path"]) == ["x", "z"] and list(b2["path"]) == ["x", "z"]
    y, proba, classes = predictions_arrays(a2)
    assert classes == ["b", "m"] and list(y) == [0, 0] and proba.shape == (2, 2)
    with pytest.raises(ValueError):
        align_predictions(a, b.assign(**{"class": ["m", "m"]}))
