import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel, wilcoxon

from meddap.classify.metrics import (
    align_predictions,
    expected_calibration_error,
    predictions_arrays,
    sensitivity_at_specificity,
)
from meddap.evidence.stats import classic_partners, paired_test, summarise

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
        {
            "variant": v,
            "family": families[v][0],
            "adjective": v.split("_")[0],
            "ratio": families[v][1],
            "arch": arch,
            "fold": f,
            "test_set": test_set,
            "metric": metric,
            "value": x,
        }
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
    metrics = pd.concat(
        [_long({"original": ORIGINAL, "bright_x1": BRIGHT, "classic_x1": CLASSIC, "dark_x2": BRIGHT})],
        ignore_index=True,
    )
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


def test_bootstrap_metrics_agree_with_evaluate():
    from meddap.classify.evaluate import classification_metrics
    from meddap.evidence.bootstrap import group_bootstrap_ci

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet([1, 1, 1], 60)
    proba[np.arange(60), y] += 0.4
    proba /= proba.sum(1, keepdims=True)
    classes = ["benign", "malignant", "normal"]
    reference = classification_metrics([classes[i] for i in y], proba, classes)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc"):
        assert group_bootstrap_ci(y, proba, None, name, n_resamples=20)["estimate"] == pytest.approx(reference[name])


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
    a = pd.DataFrame(
        {
            "path": ["x", "y", "z"],
            "class": ["b", "m", "b"],
            "predicted": ["b", "b", "b"],
            "prob_b": [0.9, 0.6, 0.7],
            "prob_m": [0.1, 0.4, 0.3],
        }
    )
    b = a.iloc[[2, 0]].assign(prob_b=[0.2, 0.3], prob_m=[0.8, 0.7])
    a2, b2 = align_predictions(a, b)
    assert list(a2["path"]) == ["x", "z"] and list(b2["path"]) == ["x", "z"]
    y, proba, classes = predictions_arrays(a2)
    assert classes == ["b", "m"] and list(y) == [0, 0] and proba.shape == (2, 2)
    with pytest.raises(ValueError):
        align_predictions(a, b.assign(**{"class": ["m", "m"]}))


# --------------------------------------------------------------------------- multiplicity


def test_holm_and_bh_by_hand():
    from meddap.evidence.stats import adjust_pvalues

    p = [0.01, 0.04, 0.03, math.nan, 0.20]  # the NaN is no test: m = 4
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.20; made monotone: 0.08 -> 0.09
    holm = adjust_pvalues(p, "holm")
    assert holm[[0, 1, 2, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert math.isnan(holm[3])
    # BH: p_(i) m / i = 0.04, 0.06, 0.0533, 0.20; minimum from the top down: 0.04, 0.0533, 0.0533, 0.20
    bh = adjust_pvalues(p, "bh")
    assert bh[[0, 1, 2, 4]] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert math.isnan(bh[3])
    # capped at 1: 0.3 x 3 = 0.9, 0.6 x 2 = 1.2 -> 1, 0.7 x 1 -> monotone 1
    assert adjust_pvalues([0.6, 0.3, 0.7], "holm") == pytest.approx([1.0, 0.9, 1.0])
    assert adjust_pvalues([0.6, 0.3, 0.7], "bh") == pytest.approx([0.7, 0.7, 0.7])
    assert np.isnan(adjust_pvalues([math.nan, math.nan])).all()
    with pytest.raises(ValueError):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(ValueError):
        adjust_pvalues([1.5])


def test_adjust_comparisons_per_family():
    from meddap.evidence.stats import adjust_comparisons

    frame = pd.DataFrame(
        {
            "test_set": ["test", "test", "test", "deviceB", "deviceB"],
            "metric": ["macro_f1"] * 5,
            "variant": ["original", "bright_x1", "mixed_x1", "bright_x1", "mixed_x1"],
            "p_t_vs_original": [math.nan, 0.01, 0.04, 0.02, 0.5],
            "p_t_vs_classic": [math.nan, 0.03, math.nan, 0.03, 0.01],
            "delta_vs_original": [0.0, 0.1, 0.05, 0.1, 0.0],
        }
    )
    out = adjust_comparisons(frame, ["test_set", "metric"], method="holm")
    assert "p_t_vs_original" in out and "delta_vs_original_adj" not in out
    assert "p_t_vs_original_adj" not in frame  # a copy
    # test: 0.01, 0.04 (the original's NaN not counted) -> 0.02, 0.04; deviceB: 0.02, 0.5 -> 0.04, 0.5
    assert out["p_t_vs_original_adj"].tolist()[1:] == pytest.approx([0.02, 0.04, 0.04, 0.5])
    assert math.isnan(out["p_t_vs_original_adj"].iloc[0])
    # vs classic, its own column: test holds one p-value (unchanged), deviceB two: 0.03, 0.01 -> 0.03, 0.02
    assert out["p_t_vs_classic_adj"].tolist()[1] == pytest.approx(0.03)
    assert out["p_t_vs_classic_adj"].tolist()[3:] == pytest.approx([0.03, 0.02])
    # one family for the whole table: four p-values vs original
    whole = adjust_comparisons(frame, [], p_columns=["p_t_vs_original"], method="holm")
    assert whole["p_t_vs_original_adj"].tolist()[1:] == pytest.approx([0.04, 0.08, 0.06, 0.5])
    with pytest.raises(ValueError, match="family"):
        adjust_comparisons(frame, ["comparison"])


# --------------------------------------------------------------------------- the primary contrast

DIFFS = [0.02, 0.03, 0.04, 0.025, 0.035]  # per-fold mean difference, mixed - classic


def _replicated(values_by_variant: dict, arch: str, metric="macro_f1", offsets=(-0.01, 0.0, 0.01)) -> pd.DataFrame:
    """Rows per (variant, fold, replicate) whose replicates average to the given fold values."""
    rows = []
    for variant, values in values_by_variant.items():
        for fold, value in enumerate(values):
            for replicate, offset in enumerate(offsets):
                shift = offset if variant != "classic_x1" else -offset * (fold % 2)  # replicates differ
                rows.append(
                    {
                        "variant": variant,
                        "arch": arch,
                        "fold": fold,
                        "replicate": replicate,
                        "test_set": "test",
                        "metric": metric,
                        "value": value + shift,
                    }
                )
    return pd.DataFrame(rows)


def test_primary_contrast_averages_replicates_within_folds():
    from scipy.stats import t as student_t

    from meddap.evidence.stats import primary_contrast

    base = np.array([0.70, 0.72, 0.68, 0.71, 0.69])
    noise = np.array([0.01, -0.012, 0.003, -0.004, 0.002])  # mean 0.0 -> no evidence
    metrics = pd.concat(
        [
            _replicated({"mixed_x1": base + DIFFS, "classic_x1": base}, "densenet121"),
            _replicated({"mixed_x1": base + noise - noise.mean(), "classic_x1": base}, "resnet18"),
            _replicated({"mixed_x1": base + 0.5, "classic_x1": base}, "densenet121", metric="accuracy"),
        ],
        ignore_index=True,
    )
    out = primary_contrast(metrics, "mixed_x1", "classic_x1", "macro_f1", "test").set_index("arch")
    dense = out.loc["densenet121"]
    # five pairs (folds), not fifteen (folds x replicates): t-interval with 4 degrees of freedom
    half = student_t.ppf(0.975, 4) * np.std(DIFFS, ddof=1) / math.sqrt(5)
    assert dense["n_pairs"] == 5 and dense["n_replicates"] == 3
    assert dense["delta"] == pytest.approx(0.03)
    assert (dense["ci_low"], dense["ci_high"]) == pytest.approx((0.03 - half, 0.03 + half))
    assert dense["verdict"] == "improves"
    p = ttest_rel(base + DIFFS, base).pvalue
    assert dense["p"] == pytest.approx(p)
    # sd of DIFFS = sqrt(0.00025 / 4) = 0.00791; half-width 2.776 x 0.00791 / sqrt(5) = 0.0098; t = 8.49, p = 0.0011
    assert half == pytest.approx(0.0098, abs=1e-4)
    assert dense["sentence"] == (
        "densenet121: mixed_x1 improves macro-F1 over classic_x1 by 0.030 "
        "(95% CI 0.020 to 0.040, p = 0.0011, 5 folds × 3 replicates)"
    )
    res = out.loc["resnet18"]
    assert res["ci_low"] < 0 < res["ci_high"] and res["verdict"] == "no evidence"
    assert res["sentence"].startswith(
        "resnet18: no evidence that mixed_x1 changes macro-F1 compared with classic_x1 (Δ = +0.000, 95% CI -0.0"
    )
    assert res["sentence"].endswith(f"p = {res['p']:.2g}, 5 folds × 3 replicates)")
    with pytest.raises(ValueError, match="test set"):
        primary_contrast(metrics.assign(test_set=["test", "deviceB"] * (len(metrics) // 2)), "mixed_x1", "classic_x1")


def test_primary_contrast_direction_and_never_a_gain_from_an_interval_holding_zero():
    from meddap.evidence.stats import primary_contrast

    base = np.array([0.30, 0.28, 0.32, 0.29, 0.31])
    lower = _replicated({"mixed_x1": base - DIFFS, "classic_x1": base}, "vit", metric="balanced_error", offsets=(0.0,))
    row = primary_contrast(lower, "mixed_x1", "classic_x1", "balanced_error").iloc[0]
    assert row["verdict"] == "improves" and row["delta"] == pytest.approx(-0.03)  # lower error is better
    assert row["sentence"].startswith("vit: mixed_x1 improves balanced error over classic_x1 by 0.030 (95% CI 0.0")
    assert row["sentence"].endswith(", 5 folds)")
    worse = primary_contrast(lower, "classic_x1", "mixed_x1", "balanced_error").iloc[0]
    assert worse["verdict"] == "worsens"
    assert worse["sentence"].startswith("vit: classic_x1 worsens balanced error compared with mixed_x1 by 0.030")
    rng = np.random.default_rng(0)
    for seed in range(200):
        values = _replicated({"mixed_x1": base + rng.normal(0.01, 0.02, 5), "classic_x1": base}, "a")
        row = primary_contrast(values, "mixed_x1", "classic_x1").iloc[0]
        if row["ci_low"] <= 0 <= row["ci_high"]:
            assert row["verdict"] == "no evidence" and " improves " not in row["sentence"], seed
        else:
            assert row["verdict"] == ("improves" if row["ci_low"] > 0 else "worsens"), seed
    one = primary_contrast(_replicated({"mixed_x1": [0.8], "classic_x1": [0.7]}, "a"), "mixed_x1", "classic_x1")
    assert one.iloc[0]["verdict"] == "no evidence" and "too few folds" in one.iloc[0]["sentence"]


# --------------------------------------------------------------------------- group bootstrap


def _grouped_set(n=40, seed=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), y] += rng.uniform(0, 0.8, n)
    other = rng.dirichlet([1, 1, 1], n)
    other[np.arange(n), y] += rng.uniform(0, 0.4, n)
    return y, proba, other


def test_group_bootstrap_counts_a_duplicated_image_once():
    from meddap.evidence.bootstrap import group_bootstrap_ci, group_bootstrap_difference_ci

    y, good, bad = _grouped_set()
    groups = [f"g{i}" for i in range(len(y))]
    twice = np.repeat(np.arange(len(y)), 2)  # each image twice, next to its copy, same group
    intervals = {}
    for metric in ("macro_f1", "macro_auroc"):
        single = intervals[metric] = group_bootstrap_ci(y, good, groups, metric, n_resamples=300, seed=1)
        doubled = group_bootstrap_ci(y[twice], good[twice], np.asarray(groups)[twice], metric, n_resamples=300, seed=1)
        assert single["method"] == doubled["method"] == "BCa"
        assert single["n_groups"] == doubled["n_groups"] == 40 and doubled["n_images"] == 80
        for key in ("estimate", "low", "high"):
            assert doubled[key] == pytest.approx(single[key], abs=1e-12), (metric, key)
        assert single["low"] < single["estimate"] < single["high"]
    diff = group_bootstrap_difference_ci(y, good, bad, groups, "macro_f1", n_resamples=300, seed=2)
    diff2 = group_bootstrap_difference_ci(
        y[twice], good[twice], bad[twice], np.asarray(groups)[twice], "macro_f1", n_resamples=300, seed=2
    )
    assert (diff2["low"], diff2["high"]) == pytest.approx((diff["low"], diff["high"]), abs=1e-12)
    assert diff["estimate"] == pytest.approx(_macro_f1(y, good) - _macro_f1(y, bad))
    # resampling single images instead would treat the copies as independent: a narrower interval
    images = group_bootstrap_ci(y[twice], good[twice], None, "macro_f1", n_resamples=300, seed=1)
    width = intervals["macro_f1"]["high"] - intervals["macro_f1"]["low"]
    assert images["n_groups"] == 80 and images["high"] - images["low"] < 0.85 * width


def _macro_f1(y, proba):
    from sklearn.metrics import f1_score

    return f1_score(y, proba.argmax(1), average="macro")


def test_group_bootstrap_ungrouped_images_and_fallback():
    from meddap.evidence.bootstrap import group_bootstrap_ci, group_codes

    assert group_codes(["a", None, "a", math.nan, "b"], 5).tolist() == [0, 2, 0, 3, 1]
    assert group_codes(None, 3).tolist() == [0, 1, 2]
    y, good, _ = _grouped_set()
    none = group_bootstrap_ci(y, good, None, "accuracy", n_resamples=200, seed=0)
    nans = group_bootstrap_ci(y, good, [math.nan] * len(y), "accuracy", n_resamples=200, seed=0)
    assert (none["low"], none["high"]) == (nans["low"], nans["high"])
    perfect = np.eye(3)[y]  # every resample scores 1: BCa cannot be computed
    result = group_bootstrap_ci(y, perfect, None, "macro_f1", n_resamples=100, seed=0)
    assert result["method"] == "percentile" and "degenerate" in result["reason"]
    assert result["low"] == result["high"] == 1.0
    auroc = group_bootstrap_ci(y[:6], good[:6], None, "macro_auroc", n_resamples=200, seed=0)  # single-class resamples
    assert auroc["method"] == "percentile" and "undefined" in auroc["reason"]
    assert auroc["low"] <= auroc["high"]


def test_group_bootstrap_table_pairs_variants_by_path():
    from meddap.evidence.bootstrap import group_bootstrap_table

    y, good, bad = _grouped_set(30)
    classes = ["benign", "malignant", "normal"]

    def table(proba, order):
        frame = pd.DataFrame(
            {
                "path": [f"{i}.png" for i in range(30)],
                "class": [classes[i] for i in y],
                "group": [i // 2 for i in range(30)],
            }
        )
        for j, name in enumerate(classes):
            frame[f"prob_{name}"] = proba[:, j]
        return frame.iloc[order].reset_index(drop=True)

    shuffled = np.random.default_rng(0).permutation(30)
    predictions = {
        "original": table(bad, np.arange(30)),
        "mixed_x1": [table(good, shuffled), table(good, np.arange(30))],  # two folds
        "classic_x1": table(bad, shuffled),
    }
    out = group_bootstrap_table(
        predictions, "macro_f1", original="original", partners={"mixed_x1": "classic_x1"}, n_resamples=200
    ).set_index(["variant", "comparison"])
    assert set(out.index) == {
        ("original", "metric"),
        ("mixed_x1", "metric"),
        ("mixed_x1", "vs_original"),
        ("mixed_x1", "vs_classic"),
        ("classic_x1", "metric"),
        ("classic_x1", "vs_original"),
    }
    delta = _macro_f1(y, good) - _macro_f1(y, bad)
    assert out.loc[("mixed_x1", "vs_original"), "estimate"] == pytest.approx(delta)
    assert out.loc[("mixed_x1", "vs_classic"), "estimate"] == pytest.approx(delta)  # rows paired by path
    assert out.loc[("mixed_x1", "vs_classic"), "baseline"] == "classic_x1"
    assert out.loc[("mixed_x1", "metric"), "n_classifiers"] == 2 and out.loc[("mixed_x1", "metric"), "n_groups"] == 15


# --------------------------------------------------------------------------- operating point on validation


def test_threshold_is_fixed_on_validation_not_on_test():
    from meddap.classify.metrics import sensitivity_at_validation_specificity, validation_threshold

    val_negatives = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    val_positives = [0.97, 0.85, 0.6, 0.3]
    val_y = np.r_[np.zeros(10), np.ones(4)].astype(bool)
    val_score = np.r_[val_negatives, val_positives]
    # 90% specificity on validation needs 9 of 10 negatives below the threshold: 0.95 (0.9 leaves two above)
    assert validation_threshold(val_y, val_score, 0.9) == pytest.approx(0.95)
    test_negatives = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    test_positives = [0.6, 0.7, 0.8, 0.96]
    test_y = np.r_[np.zeros(10), np.ones(4)].astype(bool)
    test_score = np.r_[test_negatives, test_positives]
    result = sensitivity_at_validation_specificity(val_y, val_score, test_y, test_score, 0.9)
    assert result == pytest.approx(
        {
            "threshold": 0.95,
            "validation_sensitivity": 0.25,  # only 0.97 reaches 0.95
            "validation_specificity": 0.9,
            "test_sensitivity": 0.25,  # only 0.96
            "test_specificity": 1.0,
        }
    )
    # the test-set oracle picks its own threshold (0.5: nine test negatives below) and finds every positive
    assert sensitivity_at_specificity(test_y, test_score, 0.9) == pytest.approx(1.0)
    assert validation_threshold(test_y, test_score, 0.9) == pytest.approx(0.5)
    # 100% specificity: above every validation negative
    assert validation_threshold(val_y, val_score, 1.0) == pytest.approx(0.97)
    missing = sensitivity_at_validation_specificity(np.zeros(4, bool), np.arange(4.0), test_y, test_score)
    assert all(math.isnan(v) for v in missing.values())


def test_generation_modes_are_compared_with_each_other_at_equal_counts():
    from meddap.evidence.modes import mode_comparisons, mode_variants

    scores = {
        "original": [0.70, 0.72, 0.71, 0.69, 0.70, 0.73],
        "t2i": [0.74, 0.76, 0.75, 0.73, 0.74, 0.77],  # the mixed variant, under a name no rule parses
        "from_guides": [0.80, 0.81, 0.79, 0.80, 0.82, 0.81],
        "copies": CLASSIC,
        "mixed_half": [0.71, 0.73, 0.72, 0.70, 0.71, 0.74],
        "bright_x1": [0.9] * 6,  # an adjective variant beside a mixed one: not a mode of its own
    }
    families = {
        "original": ("original", 0.0),
        "t2i": ("mixed", 1.0),
        "from_guides": ("guided", 1.0),
        "copies": ("classic", 1.0),
        "mixed_half": ("mixed", 0.5),
        "bright_x1": ("adjective", 1.0),
    }
    metrics = pd.concat([_long(scores, families=families), _long(scores, test_set="unseen", families=families)])
    assert mode_variants(metrics) == {
        0.5: {"text-to-image": "mixed_half"},
        1.0: {"text-to-image": "t2i", "guided": "from_guides", "classic": "copies"},
    }
    table = mode_comparisons(metrics)
    pairs = table[table["test_set"] == "test"][["variant", "baseline"]].apply(tuple, axis=1).tolist()
    assert pairs == [("from_guides", "t2i"), ("from_guides", "copies"), ("t2i", "copies")]
    row = table[(table["test_set"] == "test") & (table["variant"] == "from_guides") & (table["baseline"] == "t2i")]
    expected = ttest_rel(scores["from_guides"], scores["t2i"]).pvalue
    assert row["p_t"].iloc[0] == pytest.approx(expected) and row["n_pairs"].iloc[0] == 6
    assert row["delta"].iloc[0] == pytest.approx(np.mean(scores["from_guides"]) - np.mean(scores["t2i"]))
    # Holm within each (test set, metric) family of the three comparisons.
    test = table[table["test_set"] == "test"].sort_values("p_t")
    holm = np.minimum(1, np.maximum.accumulate(test["p_t"].to_numpy() * np.array([3, 2, 1])))
    assert test["p_t_adj"].to_numpy() == pytest.approx(holm)
    # With one adjective and no mixed variant, that adjective's variant is the text-to-image mode.
    one = {"original": scores["original"], "none_x1": scores["t2i"], "guided_x1": scores["from_guides"]}
    single = mode_comparisons(
        _long(
            one, families={"original": ("original", 0.0), "none_x1": ("adjective", 1.0), "guided_x1": ("guided", 1.0)}
        )
    )
    assert single[["mode", "baseline_mode"]].values.tolist() == [["guided", "text-to-image"]]
