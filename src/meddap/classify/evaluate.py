"""Classification metrics with scikit-learn; a test set may hold only some of the classes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from meddap.classify.metrics import expected_calibration_error, validation_threshold
from meddap.settings.kinds import TestSet, TestSetKind
from meddap.settings.stages import EvaluationSettings

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
VALIDATION_PREDICTIONS_FILE = "validation_predictions.csv"  # the fold's validation images, which fix the threshold
EVALUATED = "evaluated"  # metrics.json key: what was evaluated (variant, arch, fold, replicate, test set...)


def classification_metrics(
    y_true: list[str],
    probabilities: np.ndarray,
    classes: list[str],
    positive_class: str | None = "malignant",
    specificity: float = 0.9,
    threshold: float | None = None,
) -> dict:
    """Accuracy, balanced accuracy, macro-F1, macro AUROC, per-class sensitivity/specificity/precision, ECE.

    Also the top-label expected calibration error (``ece``) and, when ``threshold`` is given,
    ``positive_class`` is one of the classes and the set holds it and something else, its
    sensitivity at ``specificity`` (one-vs-rest on its probability):
    ``<positive>_sensitivity_at_<pct>_specificity``. ``threshold`` is the operating point fixed
    beforehand on the validation fold (``validation_operating_point``) to reach ``specificity``
    there: choosing it on the test labels would be an oracle operating point. The specificity it
    achieves on this set is ``<positive>_specificity_at_validation_threshold``.

    Macro averages run over the classes *present* in ``y_true`` (an unseen set may lack some);
    predictions may still be any trained class, and count as errors when absent from the set.
    AUROC per class is one-vs-rest on that class's probability; the macro AUROC averages the
    classes that have both positives and negatives here (NaN when none has).
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    index = {name: i for i, name in enumerate(classes)}
    truth = np.array([index[c] for c in y_true])
    predicted = probabilities.argmax(1)
    present = sorted(set(truth.tolist()))
    metrics: dict = {
        "n_images": int(len(truth)),
        "classes_present": [classes[i] for i in present],
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(recall_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
    }
    aurocs = []
    for i, name in enumerate(classes):
        positive = truth == i
        if i in present:
            tp = int(np.sum(positive & (predicted == i)))
            fn = int(np.sum(positive & (predicted != i)))
            fp = int(np.sum(~positive & (predicted == i)))
            tn = int(np.sum(~positive & (predicted != i)))
            metrics[f"sensitivity_{name}"] = tp / (tp + fn) if tp + fn else float("nan")
            metrics[f"specificity_{name}"] = tn / (tn + fp) if tn + fp else float("nan")
            metrics[f"precision_{name}"] = float(precision_score(positive, predicted == i, zero_division=0))
            if 0 < positive.sum() < len(truth):
                auc = float(roc_auc_score(positive, probabilities[:, i]))
                metrics[f"auroc_{name}"] = auc
                aurocs.append(auc)
    metrics["macro_auroc"] = float(np.mean(aurocs)) if aurocs else float("nan")
    metrics["ece"] = expected_calibration_error(truth, probabilities)
    if positive_class in index and threshold is not None and not np.isnan(threshold):
        positive = truth == index[positive_class]
        if 0 < positive.sum() < len(truth):
            flagged = probabilities[:, index[positive_class]] >= threshold
            metrics[f"{positive_class}_sensitivity_at_{round(specificity * 100)}_specificity"] = float(
                flagged[positive].mean()
            )
            metrics[f"{positive_class}_specificity_at_validation_threshold"] = float((~flagged[~positive]).mean())
            metrics["validation_threshold"] = float(threshold)
    return metrics


def validation_operating_point(
    validation: pd.DataFrame,
    probabilities: np.ndarray,
    classes: list[str],
    positive_class: str | None,
    specificity: float,
) -> float | None:
    """The threshold on ``positive_class``'s probability that reaches ``specificity`` on the
    classifier's own validation fold (``validation``: its rows, class column); None when the class
    is not trained or the fold lacks it or everything else."""
    if positive_class not in classes or validation.empty:
        return None
    threshold = validation_threshold(
        (validation["class"] == positive_class).to_numpy(), probabilities[:, classes.index(positive_class)], specificity
    )
    return None if np.isnan(threshold) else threshold


def predictions_frame(
    paths: list[str], y_true: list[str], probabilities: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    frame = pd.DataFrame({"path": paths, "class": y_true, "predicted": [classes[i] for i in probabilities.argmax(1)]})
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probabilities[:, i]
    return frame


def evaluate_classifier(
    model_dir: str | Path,
    test_sets: Mapping[TestSet, str | Path],
    out_dir: str | Path,
    settings: EvaluationSettings = EvaluationSettings(),
    *,
    seed: int = 0,
    labels: dict[str, object] | None = None,
) -> dict[str, dict]:
    """One classifier on every test set, written atomically as one folder.

    ``test_sets``: test set -> CSV of (path, class[, extra columns kept in the predictions]).
    Writes ``out_dir/<name>/predictions.csv`` and ``out_dir/<name>/metrics.json`` per test set,
    ``out_dir/validation_predictions.csv`` (the classifier's validation fold, which fixes the
    operating point of the sensitivity at ``settings.specificity``) and,
    when ``settings.corruptions`` are given and an internal test set is among them, ``out_dir/robustness.csv``
    (balanced error of the internal test split under each corruption and severity, with the
    ``labels`` columns first). ``labels`` say what was evaluated (variant, family, adjective, ratio,
    arch, fold, replicate): each metrics.json holds them, with the classifier's seed (its model.json
    ``seed``, as ``classifier_seed``), ``test_set`` and ``test_set_kind``, under
    ``EVALUATED``, so the report reads them as data instead of from folder names.
    The model is loaded once: one job per classifier, not per test set, because loading torch
    and the model costs more than scoring a few hundred images.
    Returns the metrics per test set name.
    """
    from meddap.classify.classifier import ROWS_NAME, load_classifier, predict_paths
    from meddap.classify.robustness import evaluate_corruptions
    from meddap.runtime.atomic import atomic_path, json_text

    internal = [test_set for test_set in test_sets if test_set.kind == TestSetKind.INTERNAL]
    if len(internal) > 1:
        raise ValueError(f"more than one internal test set: {[t.name for t in internal]}")
    model, meta = load_classifier(model_dir)
    results: dict[str, dict] = {}
    with atomic_path(out_dir) as folder:
        # The operating point for sensitivity at a specificity: fixed on the fold's validation images.
        rows = pd.read_csv(Path(model_dir) / ROWS_NAME)
        validation = rows.loc[rows["role"] == "validation", ["path", "class"]].reset_index(drop=True)
        validation_probabilities = predict_paths(model, meta, list(validation["path"]))
        threshold = validation_operating_point(
            validation, validation_probabilities, meta["classes"], settings.positive_class, settings.specificity
        )
        folder.mkdir(parents=True, exist_ok=True)
        predictions_frame(
            list(validation["path"]), list(validation["class"]), validation_probabilities, meta["classes"]
        ).to_csv(folder / VALIDATION_PREDICTIONS_FILE, index=False)
        tables = {test_set: pd.read_csv(csv) for test_set, csv in test_sets.items()}
        by_name = sorted(tables.items(), key=lambda item: item[0].name)
        for test_set, table in tqdm(by_name, desc="test sets", unit="set"):
            probabilities = predict_paths(model, meta, list(table["path"]))
            predictions = predictions_frame(list(table["path"]), list(table["class"]), probabilities, meta["classes"])
            for extra in table.columns.difference(["path", "class"]):
                predictions[extra] = table[extra].values
            metrics = classification_metrics(
                list(table["class"]),
                probabilities,
                meta["classes"],
                settings.positive_class,
                settings.specificity,
                threshold,
            )
            evaluated = {
                **(labels or {}),
                # the seed it trained with (matched across variants: meddap.runtime.seeding), where recorded
                **({"classifier_seed": meta["seed"]} if "seed" in meta else {}),
                "test_set": test_set.name,
                "test_set_kind": str(test_set.kind),
            }
            (folder / test_set.name).mkdir(parents=True)
            predictions.to_csv(folder / test_set.name / PREDICTIONS_FILE, index=False)
            (folder / test_set.name / METRICS_FILE).write_text(json_text({EVALUATED: evaluated, **metrics}))
            results[test_set.name] = metrics
        if settings.corruptions and internal:
            table = tables[internal[0]]
            errors = evaluate_corruptions(
                model,
                meta,
                list(table["path"]),
                list(table["class"]),
                corruptions=settings.corruptions,
                severities=settings.severities,
                seed=seed,
            )
            for position, (column, value) in enumerate((labels or {}).items()):
                errors.insert(position, column, value)
            errors.to_csv(folder / "robustness.csv", index=False)
    return results
