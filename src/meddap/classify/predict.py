"""``meddap predict``: classify a folder with one trained classifier or the ensemble of a variant's folds.

``--model results/classifiers/<variant>/<arch>/fold<k>/rep<r>`` is one classifier;
``--model results/classifiers/<variant>/<arch>`` is the ensemble of every fold and replicate,
``.../<arch>/fold<k>`` that of the fold's replicates (class probabilities averaged). Images are
read and classified in batches, so a folder of any size fits in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddap.classify.classifier import WEIGHTS_NAME, ClassifierError
from meddap.provenance.file_checks import SafetensorsFileError, retrain_hint


class PredictError(ValueError):
    """A user error: the message is one line that says what to fix."""


def ensemble_members(model: str | Path) -> list[Path]:
    """The classifier folders behind ``model``: itself, or every classifier folder below it (any
    depth: ``<variant>/<arch>`` holds fold<k>/rep<r>), ordered by the fold and replicate that
    their model.json records (folder names are not parsed)."""
    import json

    from meddap.classify.classifier import META_NAME

    model = Path(model)
    # Weights without model.json are a damaged classifier folder: load_classifier names the missing file.
    if (model / META_NAME).is_file() or (model / WEIGHTS_NAME).is_file():
        return [model]

    def order(folder: Path) -> tuple:
        try:
            meta = json.loads((folder / META_NAME).read_text())
            return (int(meta.get("fold", 0)), int(meta.get("replicate", 0)), str(folder))
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            return (0, 0, str(folder))  # a corrupt model.json: load_classifier names it

    members = sorted((p.parent for p in model.rglob(META_NAME)), key=order)
    if not members:
        raise PredictError(
            f"--model {model} is neither a classifier folder (model.json) "
            "nor a folder of classifiers (<variant>/<arch> of fold<k>/rep<r> classifiers)"
        )
    return members


def load_members(members: list[Path], device: str = "cpu"):
    """(models, shared metadata); the members must agree on classes and preprocessing."""
    from meddap.classify.classifier import load_classifier

    models, metas = [], []
    for folder in members:
        try:
            model, meta = load_classifier(folder, device)
        except (ClassifierError, SafetensorsFileError) as error:
            raise PredictError(str(error)) from None
        except Exception as error:  # anything load_classifier's checks did not foresee: still one line
            raise PredictError(
                f"{folder / WEIGHTS_NAME} cannot be loaded ({type(error).__name__}: "
                f"{(str(error).splitlines() or [''])[0][:200]}); {retrain_hint(folder, 'train_classifier')}"
            ) from None
        models.append(model)
        metas.append(meta)
    keys = ("classes", "input_size", "mean", "std")
    for folder, meta in zip(members[1:], metas[1:]):
        if any(meta[key] != metas[0][key] for key in keys):
            raise PredictError(
                f"{folder} differs from {members[0]} in its classes or input size; an ensemble needs the same ones"
            )
    return models, metas[0]


def pick_device(requested: str) -> str:
    """``meddap.runtime.devices.pick_device`` for ``--device``, as a name; a clear error where CUDA is
    asked for and absent."""
    import torch

    from meddap.runtime.devices import pick_device as torch_device

    if requested == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return str(torch_device(requested))


def predict_ensemble(models, meta: dict, paths: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Mean class probabilities of ``models`` over ``paths``, read ``batch_size`` images at a time
    (each model on the device it was loaded to)."""
    from tqdm import tqdm

    from meddap.classify.classifier import load_image_tensor, predict_proba

    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=not progress, unit="batch"):
        images = load_image_tensor(paths[start : start + batch_size], meta["input_size"])
        out.append(
            np.mean([predict_proba(model, images, batch_size, meta["mean"], meta["std"]) for model in models], axis=0)
        )
    return np.concatenate(out) if out else np.zeros((0, len(meta["classes"])))


def metrics_table(metrics: dict, classes: list[str]) -> str:
    """A short readable table: the headline scores, then sensitivity/specificity/precision per class."""
    lines = []
    for key, label in (
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("macro_f1", "macro-F1"),
        ("macro_auroc", "macro AUROC"),
    ):
        if key in metrics:
            lines.append(f"{label:>18}: {metrics[key]:.3f}")
    lines.append(f"{'class':>18}  sensitivity  specificity  precision")
    for cls in classes:
        values = [metrics.get(f"{kind}_{cls}") for kind in ("sensitivity", "specificity", "precision")]
        lines.append(f"{cls:>18}  " + "  ".join("        n/a" if v is None or v != v else f"{v:11.3f}" for v in values))
    return "\n".join(lines)


def image_labels(folder: Path, paths: list[Path], classes: list[str], unlabelled: bool = False) -> list[str] | None:
    """Each image's class from its subfolder when the images sit in subfolders named exactly after
    the model's classes; None for unlabelled images (a flat folder, or ``unlabelled``). Subfolders
    that match only up to case, or not at all, or images beside them: a PredictError naming them."""
    parts = [path.relative_to(folder).parts for path in paths]
    if unlabelled or all(len(part) == 1 for part in parts):
        return None
    subfolders = sorted({part[0] for part in parts if len(part) > 1})
    loose = sum(1 for part in parts if len(part) == 1)
    if loose == 0 and all(name in classes for name in subfolders):
        return [part[0] for part in parts]
    by_case = {cls.casefold(): cls for cls in classes}
    up_to_case = [name for name in subfolders if name not in classes and name.casefold() in by_case]
    unknown = [name for name in subfolders if name not in classes and name.casefold() not in by_case]
    problems = []
    if up_to_case:
        problems.append(
            f"subfolder(s) {up_to_case} match the classes only up to case "
            f"(rename to {[by_case[name.casefold()] for name in up_to_case]})"
        )
    if unknown:
        problems.append(f"subfolder(s) {unknown} are not classes of the model")
    if loose:
        problems.append(f"{loose} image(s) sit directly in the folder, beside the class subfolders")
    raise PredictError(
        f"--images {folder}: {'; '.join(problems)}; the model's classes are {classes}. Fix the folders for "
        "metrics, or pass --unlabelled to classify the images without them"
    )


def small_image_warnings(paths: list[Path], input_size: int) -> list[str]:
    """A warning naming the images under half the model's input size (they are upsampled); the
    same rule as the data folder's parse-time check, which refuses tiny images outright."""
    from meddap.data.folder_checks import SMALL_IMAGE_FRACTION, name_some, read_header

    small = []
    for path in paths:
        header = read_header(path)
        if not isinstance(header, str) and min(header) < SMALL_IMAGE_FRACTION * input_size:
            small.append(f"{path} ({header[0]}x{header[1]})")
    if not small:
        return []
    return [
        f"{len(small)} image(s) under half the model's input size ({input_size} px), upsampled to it, so "
        f"their predictions say little: {name_some(small)}"
    ]
