"""The report's reading aids: test-set make-up with missing classes flagged, and p-values adjusted
within (test set, metric) families."""

import numpy as np
import pandas as pd
import pytest

from meddap.evidence import evidence
from meddap.evidence.evidence import adjust_summary, evidence_lines


def test_a_test_set_missing_a_class_is_flagged(tmp_path):
    records = []
    for name, kind, classes in (
        ("test", "internal", ["benign", "malignant", "normal"]),
        ("device-b", "unseen", ["benign", "malignant"]),
    ):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"path": [f"{c}.png" for c in classes], "class": classes}).to_csv(path, index=False)
        records.append({"test_set": name, "test_set_kind": kind, "predictions": str(path)})
    table = evidence.test_set_composition(records, ["benign", "malignant", "normal"]).set_index("test_set")
    assert table.loc["device-b", "missing_classes"] == "normal" and table.loc["device-b", "normal"] == 0
    assert table.loc["test", "missing_classes"] == ""
    text = "\n".join(evidence_lines(table.reset_index(), pd.DataFrame(), pd.DataFrame(), "holm"))
    assert "`device-b` (no normal)" in text and "not comparable" in text


def test_p_values_are_adjusted_within_each_test_set_and_metric():
    summary = pd.DataFrame(
        {
            "test_set": ["test", "test", "test", "other"],
            "metric": ["macro_f1"] * 4,
            "p_t_vs_original": [0.01, 0.04, np.nan, 0.01],
            "p_t_vs_classic": [np.nan] * 4,
        }
    )
    adjusted = adjust_summary(summary, "holm")
    # Holm over the two p-values of the "test" family: 0.01 x 2, then max(0.02, 0.04 x 1); "other" alone.
    assert adjusted["p_t_vs_original_adj"].tolist()[:2] == pytest.approx([0.02, 0.04])
    assert np.isnan(adjusted["p_t_vs_original_adj"].iloc[2]) and adjusted["p_t_vs_original_adj"].iloc[
        3
    ] == pytest.approx(0.01)
    bh = adjust_summary(summary, "bh")
    assert bh["p_t_vs_original_adj"].tolist()[:2] == pytest.approx([0.02, 0.04])
