"""Read a run's evaluations into tables: what each evaluation folder evaluated, the long-form
metrics (``METRICS_COLUMNS``), class fidelity of the synthetic images, robustness errors, and the
LoRA training histories. The report (``meddap.evidence.report``) builds on these."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from meddap.classify.evaluate import EVALUATED, METRICS_FILE, PREDICTIONS_FILE
from meddap.evidence.modes import TEXT_TO_IMAGE_MODE
from meddap.settings.kinds import TestSetKind
from meddap.settings.plan import CLASSIC, GUIDED, MIXED

METRICS_COLUMNS = [
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


def read_evaluations(evaluation_dirs: list[str | Path]) -> list[dict]:
    """One record per (classifier, test set) in evaluation folders (``meddap.classify.evaluate``): what its
    metrics.json says was evaluated (variant, family, adjective, ratio, filtered, arch, fold, replicate,
    test_set, test_set_kind) and the paths of its ``metrics`` and ``predictions`` files. Nothing is read
    from folder names."""
    records = []
    for folder in map(Path, evaluation_dirs):
        for metrics_path in sorted(folder.glob(f"*/{METRICS_FILE}")):
            evaluated = json.loads(metrics_path.read_text()).get(EVALUATED)
            if evaluated is None:
                raise ValueError(
                    f"{metrics_path} does not say what it evaluates (no {EVALUATED!r}): rerun its evaluate job"
                )
            predictions = metrics_path.with_name(PREDICTIONS_FILE)
            records.append({**evaluated, "metrics": str(metrics_path), "predictions": str(predictions)})
    return records


def of_kind(records: list[dict], kind: TestSetKind) -> list[dict]:
    """The records (``read_evaluations``) of test sets of one kind."""
    return [record for record in records if record["test_set_kind"] == kind]


def collect_metrics(records: list[dict]) -> pd.DataFrame:
    """Long form (``METRICS_COLUMNS``) from records {variant, family, adjective, ratio, arch, fold,
    replicate, test_set, test_set_kind, metrics: path to metrics.json} (``read_evaluations``; a
    record without a replicate, written before replicates, is replicate 0)."""
    rows = []
    for record in records:
        metrics = json.loads(Path(record["metrics"]).read_text())
        # The adjective column names the family where a variant has no single adjective.
        adjective = record["adjective"] or (record["family"] if record["family"] in (MIXED, GUIDED, CLASSIC) else "")
        labels = {
            "variant": record["variant"],
            "family": record["family"],
            "adjective": adjective,
            "ratio": float(record["ratio"]),
            "filtered": bool(record.get("filtered", False)),  # records written before filtered variants: not
            "arch": record["arch"],
            "fold": int(record["fold"]),
            "replicate": int(record.get("replicate", 0)),
            "test_set": record["test_set"],
            "test_set_kind": record["test_set_kind"],
        }
        for metric, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({**labels, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def class_fidelity(prediction_files: list[dict]) -> pd.DataFrame:
    """Share of each (mode, class, adjective)'s synthetic images the ``original`` classifier assigns to that class.

    ``prediction_files``: records {arch, fold, replicate, predictions} of the synthetic-images test
    set; its ``mode`` column is the generation mode (text-to-image where there is none). One row per
    (arch, mode, class, adjective) with mean, std and median over folds and each fold's
    value (``fidelity_folds``, in fold order), plus 'all' adjectives;
    a fold's value is the mean over its replicates (they are not independent of each other), and
    ``n_replicates`` says how many there were (the fewest of any fold). A fold's replicates are its
    judge ensemble, whose fidelity is the mean of its members'; ``fidelity_judge_min``/``_max`` are
    the range over every single judge (fold and replicate), ``n_judges`` their number.
    """
    columns = [
        "arch",
        "mode",
        "class",
        "adjective",
        "fidelity_mean",
        "fidelity_std",
        "fidelity_median",
        "fidelity_folds",
        "n_images",
        "n_folds",
        "n_replicates",
        "fidelity_judge_min",
        "fidelity_judge_max",
        "n_judges",
    ]
    frames = []
    for record in prediction_files:
        frame = pd.read_csv(record["predictions"])
        frame["arch"], frame["fold"] = record["arch"], int(record["fold"])
        frame["replicate"] = int(record.get("replicate", 0))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    data = pd.concat(frames, ignore_index=True)
    data["mode"] = data["mode"].fillna(TEXT_TO_IMAGE_MODE) if "mode" in data else TEXT_TO_IMAGE_MODE
    data["correct"] = data["class"] == data["predicted"]
    both = pd.concat([data, data.assign(adjective="all")], ignore_index=True)
    keys = ["arch", "mode", "class", "adjective", "fold"]
    per_replicate = both.groupby([*keys, "replicate"])["correct"].agg(["mean", "size"]).reset_index()
    per_fold = per_replicate.groupby(keys).agg(
        mean=("mean", "mean"), size=("size", "first"), replicates=("replicate", "nunique")
    )
    out = (
        per_fold.reset_index()
        .groupby(["arch", "mode", "class", "adjective"])
        .agg(
            fidelity_mean=("mean", "mean"),
            fidelity_std=("mean", "std"),
            # One judge (a fold's original classifier) can reject a class's images alone: the median and
            # every fold's value show it.
            fidelity_median=("mean", "median"),
            fidelity_folds=("mean", lambda values: " ".join(f"{v:.2f}" for v in values)),
            n_images=("size", "first"),
            n_folds=("fold", "nunique"),
            n_replicates=("replicates", "min"),
        )
    )
    # Every judge (a fold's replicate) on its own: the ensemble above is their mean; this is their range.
    judges = per_replicate.groupby(["arch", "mode", "class", "adjective"])["mean"].agg(
        fidelity_judge_min="min", fidelity_judge_max="max", n_judges="size"
    )
    return out.join(judges).reset_index()[columns]


def read_lora_histories(
    lora_dirs: list[str | Path], prompt_classes: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training histories of LoRA folders ``results/lora/<arm>/<lora>/`` (see ``meddap.diffusion.lora``).

    Returns (losses: arm, lora, step, loss, lr; validation: arm, lora, class, step, prompt, image,
    seed, path). ``class`` is the class of the image's prompt (``prompt_classes``: prompt -> class),
    else the LoRA's name, so a shared LoRA's images sort under their classes. A folder written
    before LoRAs kept their history contributes nothing.
    """
    from meddap.diffusion.lora import LOSS_FILE, VALIDATION_FILE

    losses, images = [], []
    for folder in map(Path, lora_dirs):
        arm, lora = folder.parent.name, folder.name
        if (folder / LOSS_FILE).is_file():
            losses.append(pd.read_csv(folder / LOSS_FILE).assign(arm=arm, lora=lora))
        if (folder / VALIDATION_FILE).is_file():
            frame = pd.read_csv(folder / VALIDATION_FILE).assign(arm=arm, lora=lora)
            frame["class"] = frame["prompt"].map(prompt_classes or {}).fillna(lora)
            frame["path"] = [str(folder / name) for name in frame["file"]]
            images.append(frame.drop(columns="file"))
    loss_columns = ["arm", "lora", "step", "loss", "lr"]
    image_columns = ["arm", "lora", "class", "step", "prompt", "image", "seed", "path"]
    return (
        pd.concat(losses, ignore_index=True)[loss_columns] if losses else pd.DataFrame(columns=loss_columns),
        pd.concat(images, ignore_index=True)[image_columns] if images else pd.DataFrame(columns=image_columns),
    )


def lora_loss_summary(losses: pd.DataFrame, window: int = 20) -> pd.DataFrame:
    """Per LoRA and arm: steps, and the mean loss over the first and the last ``window`` steps."""
    rows = []
    for (lora, arm), part in losses.groupby(["lora", "arm"], sort=True):
        loss = part.sort_values("step")["loss"]
        rows.append(
            {
                "lora": lora,
                "arm": arm,
                "steps": int(part["step"].max()),
                "loss_first": loss.head(window).mean(),
                "loss_last": loss.tail(window).mean(),
            }
        )
    return pd.DataFrame(rows, columns=["lora", "arm", "steps", "loss_first", "loss_last"])


def read_robustness(evaluation_dirs: list[str | Path]) -> pd.DataFrame:
    """Every evaluation folder's ``robustness.csv`` (its first columns say what was evaluated)."""
    frames = [
        pd.read_csv(Path(d) / "robustness.csv") for d in evaluation_dirs if (Path(d) / "robustness.csv").is_file()
    ]
    if not frames:
        return pd.DataFrame(columns=["variant", "arch", "fold", "corruption", "severity", "balanced_error"])
    return pd.concat(frames, ignore_index=True)
