"""Torchvision classifiers: build any by name, train on a variant's fold, save, load, predict.

A trained classifier is a folder: ``model.safetensors`` (weights), ``model.json`` (architecture,
classes, input size, normalisation; the variant, fold, replicate and seed it was trained with) and
``history.csv`` (one row per epoch). The epoch with the best validation score
(``classifier.selection_metric``: macro-F1, or accuracy) is the one saved.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from meddap.provenance.lineage import write_lineage
from meddap.runtime.atomic import atomic_path, write_json
from meddap.settings.kinds import SYNTHETIC_SOURCES
from meddap.settings.stages import ClassifierSettings

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"  # architecture, classes, preprocessing; variant, fold, replicate and seed as trained
ROWS_NAME = "rows.csv"  # the rows that trained (role train) and selected (role validation) the model


class ClassifierError(ValueError):
    """A classifier cannot be built or loaded; the message says what to do."""


def available_architectures() -> list[str]:
    from meddap.classify.architectures import classification_architectures

    return list(classification_architectures())


def _replace_head(model: nn.Module, n_classes: int) -> None:
    """Swap the last 1000-way layer of an ImageNet model for an ``n_classes`` one."""
    last_name, last = None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == 1000:
            last_name, last = name, module
        elif isinstance(module, nn.Conv2d) and module.out_channels == 1000:
            last_name, last = name, module
    if last is None:
        raise ClassifierError("cannot find the 1000-class output layer to resize")
    if isinstance(last, nn.Linear):
        new = nn.Linear(last.in_features, n_classes)
    else:
        new = nn.Conv2d(last.in_channels, n_classes, last.kernel_size, last.stride, last.padding)
    parent = model
    *path, leaf = last_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, new)


def build_classifier(arch: str, n_classes: int, pretrained: bool = False) -> nn.Module:
    """A torchvision classification model by name with an ``n_classes`` head.

    ``pretrained`` loads torchvision's ImageNet weights from the local torch cache (offline);
    a missing cache is an error that says where the file is expected.
    """
    import torchvision

    names = available_architectures()
    if arch not in names:
        raise ClassifierError(
            f"unknown architecture {arch!r}; choose a torchvision classifier such as densenet121, resnet34, "
            f"squeezenet1_1 (all: {', '.join(names)})"
        )
    if arch.startswith("inception") or arch.startswith("googlenet"):
        # their auxiliary heads change the training API; keep the loop one simple shape
        raise ClassifierError(
            f"architecture {arch!r} (auxiliary outputs) is not supported; use another torchvision classifier"
        )
    if not pretrained:
        model = torchvision.models.get_model(arch, weights=None, num_classes=n_classes)
    else:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():  # checked first: torchvision would otherwise download it
            raise ClassifierError(
                f"ImageNet weights for {arch} are not in the local torch cache: expected {cached}. "
                "meddap never downloads them; place the file there or set classifier.pretrained: false."
            )
        model = torchvision.models.get_model(arch, weights=weights)
        _replace_head(model, n_classes)
    if arch.startswith("squeezenet"):
        # SqueezeNet's head ends in ReLU + average pool: start it from zero logits, not dead ReLUs.
        model.classifier[1].bias.data.fill_(0.1)
    return model


def load_image_tensor(paths: list[str], size: int) -> torch.Tensor:
    """uint8 tensor (N, 3, size, size) of the images (read once, kept in memory)."""
    from tqdm import tqdm

    from meddap.data.images import load_array

    if not paths:  # e.g. a judge's validation rows (none)
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    arrays = np.stack([load_array(path, size) for path in tqdm(paths, desc="load images", mininterval=5)])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def normalise(batch: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """float32 (batch / 255 - mean) / std on the batch's device."""
    batch = batch.float() / 255.0
    mean = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _draw(shape, generator: torch.Generator, device: torch.device, integers: tuple[int, int] | None = None):
    """Per-sample parameters from the seeded CPU ``generator`` (the same draws on every device),
    moved to ``device``."""
    if integers is None:
        values = torch.rand(shape, generator=generator)
    else:
        values = torch.randint(*integers, shape, generator=generator)
    return values.to(device)


def _gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each image (N, C, H, W, float) with its own sigma, as one grouped
    convolution: kernel radius round(2.5 sigma), reflect padding. Every kernel is padded with zero
    taps to the largest radius, so each image gets exactly its own kernel."""
    n, channels, height, width = images.shape
    radii = (2.5 * sigmas).round().clamp(min=1)
    radius = int(radii.max())
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernels = torch.exp(-0.5 * (x[None] / sigmas[:, None]) ** 2) * (x[None].abs() <= radii[:, None])
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (N*C, K)
    flat = images.reshape(1, n * channels, height, width)
    flat = nn.functional.conv2d(
        nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect"),
        kernels.view(-1, 1, 1, 2 * radius + 1),
        groups=n * channels,
    )
    flat = nn.functional.conv2d(
        nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect"),
        kernels.view(-1, 1, 2 * radius + 1, 1),
        groups=n * channels,
    )
    return flat.view(n, channels, height, width)


def random_blur(
    batch: torch.Tensor, generator: torch.Generator, probability: float = 0.5, max_sigma: float = 1.5
) -> torch.Tensor:
    """Gaussian blur of a random strength (sigma uniform in [0, max_sigma], at least 0.3) on a
    random subset (each image with ``probability``) of the batch, batched on the batch's device.

    Scanners differ in point-spread function (resolution), and synthetic images are smoother than
    speckled originals: blur makes the classifier rely on shape rather than on speckle texture.
    """
    out = batch.float().clone()
    chosen = _draw(len(batch), generator, batch.device) < probability
    sigmas = (_draw(len(batch), generator, batch.device) * max_sigma).clamp(min=0.3)
    index = torch.nonzero(chosen).flatten()
    if len(index):
        out[index] = _gaussian_blur(out[index], sigmas[index])
    return out


def random_intensity(
    batch: torch.Tensor, generator: torch.Generator, max_gamma: float = 1.4, max_contrast: float = 1.3
) -> torch.Tensor:
    """A random gamma (overall gain, in [1/max_gamma, max_gamma]) and contrast about the image mean
    per image, on the 0-255 scale: scanners, gain and TGC settings differ in brightness and
    contrast, and "bright" or "low-contrast" synthetic images should be judged by their anatomy."""
    n = len(batch)
    gamma = torch.exp((_draw(n, generator, batch.device) * 2 - 1) * math.log(max_gamma)).view(n, 1, 1, 1)
    contrast = torch.exp((_draw(n, generator, batch.device) * 2 - 1) * math.log(max_contrast)).view(n, 1, 1, 1)
    out = 255.0 * (batch.float().clamp(0, 255) / 255.0) ** gamma
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + contrast * (out - mean)).clamp(0, 255)


def augment(
    batch: torch.Tensor,
    generator: torch.Generator,
    blur: bool = True,
    intensity: bool = False,
    geometric: bool = True,
) -> torch.Tensor:
    """Horizontal flip and a small random translation (reflect-padded crop) unless ``geometric`` is
    off (the paper's classifiers saw the images as they are), optional blur and optional
    brightness/contrast jitter. Batched on the batch's device (no loop over images); the
    per-image parameters come from the CPU ``generator`` in a fixed order, so a seed gives the
    same augmentation on every device."""
    n, device = len(batch), batch.device
    if geometric:
        flip = _draw(n, generator, device) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if blur:
        batch = random_blur(batch, generator)
    if intensity:
        batch = random_intensity(batch, generator)
    if not geometric:
        return batch.float()
    size = batch.shape[-1]
    pad = max(1, size // 16)
    padded = nn.functional.pad(batch.float(), (pad, pad, pad, pad), mode="reflect")
    offsets = _draw((n, 2), generator, device, integers=(0, 2 * pad + 1))
    steps = torch.arange(size, device=device)
    rows = (offsets[:, 0:1] + steps)[:, :, None]  # (N, size, 1)
    cols = (offsets[:, 1:2] + steps)[:, None, :]  # (N, 1, size)
    samples = torch.arange(n, device=device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[samples, rows, cols].permute(0, 3, 1, 2).contiguous()


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing elsewhere (CPU results stay fp32 and deterministic)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> np.ndarray:
    """Class probabilities of uint8 images (N, 3, H, W), batched; the images move to the model's
    device a batch at a time (or stay there: an on-device tensor is used as it is)."""
    model.eval()
    device = next(model.parameters()).device
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    out = []
    for start in range(0, len(images), batch_size):
        batch = normalise(images[start : start + batch_size].to(device, non_blocking=True), mean, std)
        with _autocast(device):
            logits = model(batch.contiguous(memory_format=memory_format))
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0))


def selected_epoch(history: pd.DataFrame, metric: str) -> int:
    """The first epoch with the best validation ``metric`` (``history`` has val_<metric> per epoch):
    the one whose weights ``train_classifier`` keeps."""
    scores = history[f"val_{metric}"]
    return int(history.loc[scores.idxmax(), "epoch"])


def train_classifier(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    classes: list[str],
    arch: str,
    out_dir: str | Path,
    settings: ClassifierSettings,
    seed: int,
    device: str = "auto",
    provenance: dict | None = None,
    lineage_inputs: dict[str, str] | None = None,
    lineage_kind: str = "classifier",
    on_epoch: Callable[[int, dict | None], None] | None = None,
) -> pd.DataFrame:
    """Train; keep the epoch with the best validation ``settings.selection_metric`` (macro-F1 or
    accuracy); write the folder atomically. Without validation rows (a filter's judge) every epoch
    runs and the last is kept: nothing is selected on any image.

    The folder records what trained and selected the model: ``rows.csv`` (every training and
    validation row, with its source and what it was derived from) and ``lineage.json``.

    The images stay on the device as uint8 and are augmented there a batch at a time; on CUDA the
    steps run in bf16 autocast with channels_last (and ``torch.compile`` with ``settings.compile``),
    on the CPU in fp32, byte-identical for a seed. ``on_epoch(epoch, history_row)`` is called with
    0 (and None) when the loop starts and after every epoch (the benchmark's clock)."""
    from safetensors.torch import save_file
    from sklearn.metrics import f1_score
    from tqdm import tqdm

    from meddap.runtime.devices import pick_device
    from meddap.runtime.seeding import seed_everything

    seed_everything(seed)
    torch_device = pick_device(device)
    cuda = torch_device.type == "cuda"
    class_index = {name: i for i, name in enumerate(classes)}
    # The fold's images, read and resized once, stay on the device as uint8 (N, 3, size, size).
    x_train = load_image_tensor(list(train_rows["path"]), settings.image_size).to(torch_device)
    y_train = torch.tensor([class_index[c] for c in train_rows["class"]]).to(torch_device)
    x_val = load_image_tensor(list(val_rows["path"]), settings.image_size).to(torch_device)
    y_val = np.array([class_index[c] for c in val_rows["class"]])

    model = build_classifier(arch, len(classes), settings.pretrained).to(torch_device)
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # torch.compile (classifier.compile, CUDA only) wraps the module for the training steps; evaluation and
    # the saved weights use the module itself.
    forward = torch.compile(model) if settings.compile and cuda else model
    counts = torch.bincount(y_train.cpu(), minlength=len(classes)).float()
    weights = (
        (counts.sum() / (len(classes) * counts.clamp(min=1))) if settings.class_weighting else torch.ones(len(classes))
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(torch_device))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    # Cosine decay to 1% over the epochs: late epochs settle instead of jumping between minima.
    steps_per_epoch = max(1, -(-len(x_train) // settings.batch_size))
    if settings.lr_schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=settings.lr,
            total_steps=settings.epochs * steps_per_epoch + 1,
            pct_start=0.15,
            anneal_strategy="cos",
            div_factor=10.0,
            final_div_factor=10.0,
        )
    else:  # constant, as the original MEDDAP scripts
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    # On the CPU: batch order and augmentation parameters are the same draws on every device.
    generator = torch.Generator().manual_seed(seed)

    validating = len(x_val) > 0
    history, best_state, best_score = [], None, -1.0
    if on_epoch is not None:
        on_epoch(0, None)
    for epoch in tqdm(range(1, settings.epochs + 1), desc=f"train {arch}", mininterval=5):
        started = time.time()
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        # Summed on the device in float64 (no sync per step; the same sum as Python floats).
        total_loss = torch.zeros((), dtype=torch.float64, device=torch_device)
        for start in range(0, len(order), settings.batch_size):
            index = order[start : start + settings.batch_size]
            if len(index) < 2 and len(order) > 1:
                continue  # a lone sample breaks batch norm
            device_index = index.to(torch_device)
            batch = augment(
                x_train[device_index],
                generator,
                blur=settings.blur_augmentation,
                intensity=settings.intensity_augmentation,
                geometric=settings.geometric_augmentation,
            )
            with _autocast(torch_device):
                logits = forward(normalise(batch).contiguous(memory_format=memory_format))
                loss = loss_fn(logits.float(), y_train[device_index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach().double() * len(index)
        val_loss = val_f1 = val_accuracy = math.nan
        if validating:
            probabilities = predict_proba(model, x_val, batch_size=max(64, 2 * settings.batch_size))
            predicted = probabilities.argmax(1)
            val_f1 = float(f1_score(y_val, predicted, labels=range(len(classes)), average="macro", zero_division=0))
            val_loss = float(
                nn.functional.nll_loss(
                    torch.log(torch.from_numpy(probabilities).clamp(min=1e-8)), torch.from_numpy(y_val)
                )
            )
            val_accuracy = float((predicted == y_val).mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(total_loss) / len(order),
                "val_loss": val_loss,
                "val_macro_f1": val_f1,
                "val_accuracy": val_accuracy,
                "seconds": time.time() - started,
            }
        )
        score = history[-1][f"val_{settings.selection_metric}"]
        if not validating or score > best_score:  # without validation: the last epoch
            best_score, best_state = score, copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    frame = pd.DataFrame(history)
    best_epoch = selected_epoch(frame, settings.selection_metric) if validating else settings.epochs
    frame["selected"] = frame["epoch"] == best_epoch
    n_synthetic = int(train_rows["source"].isin(SYNTHETIC_SOURCES).sum()) if "source" in train_rows else 0
    meta = {
        "arch": arch,
        "classes": classes,
        "input_size": settings.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "best_epoch": best_epoch,
        "best_val_macro_f1": float(frame.loc[frame["selected"], "val_macro_f1"].iloc[0]) if validating else None,
        "selection_metric": settings.selection_metric if validating else "none (the last epoch)",
        "train_images": int(len(x_train)),
        "train_synthetic_images": n_synthetic,
        "val_images": int(len(x_val)),
        "pretrained": settings.pretrained,
        "seed": seed,
        **(provenance or {}),
    }
    with atomic_path(out_dir) as temporary:
        temporary.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in best_state.items()}, temporary / WEIGHTS_NAME)
        write_json(temporary / META_NAME, meta)
        frame.to_csv(temporary / "history.csv", index=False)
        rows = pd.concat([train_rows.assign(role="train"), val_rows.assign(role="validation")], ignore_index=True)
        rows.to_csv(temporary / ROWS_NAME, index=False)
        # A judge lists its training images (the audit reads them: meddap.audit.leaks); a classifier's
        # are in rows.csv.
        images = list(train_rows["path"]) if lineage_kind != "classifier" else []
        write_lineage(temporary, lineage_kind, images=images, inputs=lineage_inputs or {})
    return frame


def load_classifier(model_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Model and its metadata from a classifier folder (safetensors; no pickles).

    Every problem with the folder (a missing, truncated or corrupt file, a ``model.json`` that does
    not describe the weights) is a one-line ClassifierError or SafetensorsFileError that names the
    file and the command that retrains it, never a torch traceback mid-job."""
    from safetensors.torch import load_file

    from meddap.provenance.file_checks import check_safetensors, retrain_hint

    model_dir = Path(model_dir)
    meta_path, weights = model_dir / META_NAME, model_dir / WEIGHTS_NAME
    remedy = retrain_hint(model_dir, "train_classifier")
    for path in (meta_path, weights):
        if not path.is_file():
            raise ClassifierError(f"{path} is missing: {model_dir} is not a whole meddap classifier folder; {remedy}")
    try:
        meta = json.loads(meta_path.read_text())
        arch, classes = meta["arch"], list(meta["classes"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ClassifierError(f"{meta_path} is corrupt ({type(error).__name__}: {error}); {remedy}") from None
    shapes = check_safetensors(weights, remedy)  # truncation is found here, before torch reads the weights
    try:
        model = build_classifier(arch, len(classes), pretrained=False)
    except ClassifierError as error:
        raise ClassifierError(f"{meta_path}: {error}") from None
    # Compare shapes first: load_state_dict's own error is a many-line dump that names neither file.
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    wrong = sorted(key for key in expected.keys() & shapes.keys() if expected[key] != shapes[key])
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if wrong and not missing and not unexpected and all(expected[key][0] == len(classes) for key in wrong):
        raise ClassifierError(
            f"{meta_path} lists {len(classes)} classes {classes}, but the output layer in {weights} has "
            f"{shapes[wrong[0]][0]} ({wrong[0]} {list(shapes[wrong[0]])}): the two files are from different "
            f"trainings; {remedy}"
        )
    if wrong or missing or unexpected:
        first = (
            f"{wrong[0]} is {list(shapes[wrong[0]])}, not {list(expected[wrong[0]])}"
            if wrong
            else f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
        )
        raise ClassifierError(f"{weights} does not hold the {arch} that {meta_path} describes ({first}); {remedy}")
    model.load_state_dict(load_file(weights))
    return model.to(device).eval(), meta


def predict_paths(model: nn.Module, meta: dict, paths: list[str], batch_size: int = 64) -> np.ndarray:
    images = load_image_tensor(paths, meta["input_size"])
    return predict_proba(model, images, batch_size, meta["mean"], meta["std"])
