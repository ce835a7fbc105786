"""Classifier training benchmark: the original MEDDAP classifier script's loop against
``meddap.classify.classifier.train_classifier`` (runners for ``meddap.bench.measure.interleave``), and
N concurrent meddap jobs on one device (``--concurrent``).

baseline  torchvision ``ImageFolder`` with ``Resize((R, R))``, ``ToTensor``, ``Normalize`` (ImageNet),
          no augmentation; ``DataLoader(batch_size, shuffle=True, drop_last=True)`` with
          ``num_workers`` 0 (as written) or ``--classifier-workers``; fp32; Adam 1e-3; a full
          validation pass (batch size the same, no shuffle) every epoch.
meddap    ``train_classifier`` itself: the images read and resized once (its ``setup_s``), kept on
          the device as uint8, batched on-device augmentation (flip, shift, blur, intensity), bf16
          autocast and channels_last on CUDA, batched validation every epoch.

Both train the same architecture (random init) at the same resolution, batch size and epochs on the
same training and validation images. The rate is training images per second of epoch time
(training steps + the validation pass).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from meddap.bench.measure import StampedCall, clock, since, sync

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Dense bf16 tensor-core peak (TFLOP/s) by a part of the CUDA device name; unknown devices get no MFU.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def peak_bf16_tflops(name: str) -> float | None:
    """The dense bf16 peak of a CUDA device from its name (the longest matching key), else None."""
    matches = [key for key in PEAK_BF16_TFLOPS if key.lower() in name.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def class_images(root: str | Path, per_class: int | None, seed: int) -> dict[str, list[str]]:
    """{class: image paths} of a folder of class folders (masks, ``*_mask*``, left out), at most
    ``per_class`` each (a seeded sample), sorted."""
    root = Path(root)
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        paths = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.stem)
        if per_class and len(paths) > per_class:
            paths = sorted(random.Random(seed).sample(paths, per_class))
        if paths:
            found[folder.name] = paths
    if len(found) < 2:
        raise SystemExit(f"--classifier-data {root}: need at least two class folders with images")
    return found


def split_images(images: dict[str, list[str]], val_fraction: float = 0.2) -> tuple[list, list]:
    """(train, validation) lists of (path, class): every 1/val_fraction-th image of a class validates."""
    step = max(2, round(1 / val_fraction))
    train, val = [], []
    for name, paths in images.items():
        for index, path in enumerate(paths):
            (val if index % step == step - 1 else train).append((path, name))
    return train, val


def link_image_folder(rows: list[tuple[str, str]], root: Path) -> Path:
    """An ImageFolder tree of symlinks (no copies) for the baseline."""
    for index, (path, name) in enumerate(rows):
        target = root / name / f"{index:05d}{Path(path).suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(Path(path).resolve())
    return root


def classifier_flops(arch: str, n_classes: int, resolution: int, device: torch.device) -> int:
    """FLOPs of one training image: 3 x one forward (FlopCounterMode), the usual forward+backward count."""
    from torch.utils.flop_counter import FlopCounterMode

    from meddap.classify.classifier import build_classifier

    model = build_classifier(arch, n_classes).to(device).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution, device=device))
    return 3 * int(counter.get_total_flops())


class BaselineClassifier:
    """The original MEDDAP classifier script's loop (see the module docstring)."""

    def __init__(self, args, train_root: Path, val_root: Path, device: torch.device, num_workers: int):
        from torchvision import datasets, transforms

        from meddap.classify.classifier import IMAGENET_MEAN, IMAGENET_STD, build_classifier

        self.device, self.num_workers = device, num_workers
        self.batch_size = args.classifier_batch_size
        self.how = (
            f"ImageFolder + Resize + ToTensor + Normalize, DataLoader(batch {self.batch_size}, shuffle, drop_last, "
            f"num_workers={num_workers}), fp32, Adam, validation every epoch"
        )
        transform = transforms.Compose(
            [
                transforms.Resize((args.classifier_resolution, args.classifier_resolution)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.train_set = datasets.ImageFolder(str(train_root), transform=transform)
        self.val_set = datasets.ImageFolder(str(val_root), transform=transform)
        torch.manual_seed(args.seed)
        loader_args = {"num_workers": num_workers, "persistent_workers": False}
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True, **loader_args
        )
        self.val_loader = torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size, **loader_args)
        self.model = build_classifier(args.classifier_arch, len(self.train_set.classes)).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.warmup = args.classifier_warmup
        self.images = 0

    def _epoch(self) -> int:
        model, device, seen = self.model, self.device, 0
        model.train()
        for images, labels in self.train_loader:
            images, labels = images.to(device), labels.to(device)
            self.optimizer.zero_grad()
            loss = self.loss_fn(model(images), labels)
            loss.backward()
            self.optimizer.step()
            loss.item()  # the script accumulates the running loss
            seen += len(labels)
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in self.val_loader:
                correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
        return seen

    def warm_up(self, epochs: int) -> None:
        for _ in range(self.warmup):
            self._epoch()

    def timed(self, epochs: int) -> tuple[float, float]:
        sync(self.device)
        start = clock()
        for _ in range(epochs):
            self.images += self._epoch()
        sync(self.device)
        return since(start)

    def close(self) -> None:
        del self.model, self.optimizer, self.train_loader, self.val_loader


class MeddapClassifier(StampedCall):
    """``train_classifier`` itself: one call per round (read + resize once, warm-up epochs, timed epochs)."""

    def __init__(self, args, train_rows: list, val_rows: list, device: torch.device, out_dir: Path):
        super().__init__()
        import pandas as pd

        from meddap.settings.stages import ClassifierSettings

        self.args, self.device, self.out_dir = args, device, out_dir
        self.batch_size = args.classifier_batch_size
        self.train_rows = pd.DataFrame(train_rows, columns=["path", "class"]).assign(source="original")
        self.val_rows = pd.DataFrame(val_rows, columns=["path", "class"]).assign(source="original")
        self.classes = sorted(set(self.train_rows["class"]))
        self.settings = ClassifierSettings(
            image_size=args.classifier_resolution,
            batch_size=self.batch_size,
            lr=1e-3,
            compile=args.classifier_compile,
        )
        extra = ", torch.compile" if args.classifier_compile and device.type == "cuda" else ""
        self.how = (
            f"train_classifier: uint8 images on the device, batched on-device augmentation, "
            f"{'bf16 autocast + channels_last' if device.type == 'cuda' else 'fp32'}{extra}, batch {self.batch_size}"
        )
        self.images = 0
        self.per_epoch = len(self.train_rows) - (1 if len(self.train_rows) % self.batch_size == 1 else 0)

    def timed(self, epochs: int) -> tuple[float, float]:
        import dataclasses

        from meddap.classify.classifier import train_classifier

        warmup, stamps = self.args.classifier_warmup, []
        start = time.perf_counter()
        train_classifier(
            self.train_rows,
            self.val_rows,
            self.classes,
            self.args.classifier_arch,
            self.out_dir,
            dataclasses.replace(self.settings, epochs=warmup + epochs),
            self.args.seed,
            device=str(self.device),
            on_epoch=lambda epoch, row: (sync(self.device), stamps.append(clock())),
        )
        self.images += epochs * self.per_epoch
        return self.stamped(stamps, warmup, epochs, start, "train_classifier epochs")


# ---------------------------------------------------------------- concurrent jobs on one device
def concurrent_rates(args, train_rows: list, val_rows: list, scratch: Path, jobs: list[int]) -> list[dict]:
    """meddap's loop as ``n`` separate processes at once on the same device, for each ``n`` of ``jobs``:
    every process trains ``--classifier-epochs`` timed epochs after the warm-up and reports its rate;
    the device's rate is their sum (the processes start together and run the same work)."""
    spec = scratch / "concurrent.json"
    spec.write_text(json.dumps({"args": _plain(args), "train": train_rows, "val": val_rows}))
    rows = []
    for n in jobs:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])),
        )
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "meddap.bench.classifier", str(spec), str(scratch / f"job{n}-{i}")],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            for i in range(n)
        ]
        results = []
        for process in processes:
            out, _ = process.communicate()
            if process.returncode:
                raise RuntimeError(f"a concurrent classifier job failed (exit {process.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - started
        rates = [r["images"] / r["seconds"] for r in results]
        rows.append(
            {
                "jobs": n,
                "images_per_s_per_job": sum(rates) / n,
                "images_per_s_total": sum(rates),
                "wall_s": wall,
            }
        )
    base = rows[0]["images_per_s_total"] if rows else 1.0
    for row in rows:
        row["total_vs_first"] = row["images_per_s_total"] / base
    return rows


def _plain(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def _job(spec_path: str, out_dir: str) -> None:
    """One concurrent job (``python -m meddap.bench.classifier SPEC OUT``): prints {images, seconds}."""
    import argparse

    spec = json.loads(Path(spec_path).read_text())
    args = argparse.Namespace(**spec["args"])
    if args.threads:
        torch.set_num_threads(args.threads)
    from meddap.runtime.devices import pick_device

    device = pick_device(args.device)
    runner = MeddapClassifier(
        args, [tuple(r) for r in spec["train"]], [tuple(r) for r in spec["val"]], device, Path(out_dir)
    )
    seconds, _ = runner.timed(args.classifier_epochs)
    print(json.dumps({"images": runner.images, "seconds": seconds}))


if __name__ == "__main__":
    _job(sys.argv[1], sys.argv[2])
