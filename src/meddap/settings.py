"""Resolve a schema-validated config into what the DAG needs: classes, counts, plan, test sets.

Checks that JSON Schema cannot express live here, each failing with a message that names the
config key and what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from meddap.dataset import list_class_images, split_counts
from meddap.plan import Plan

INTERNAL_TEST = "test"
SYNTHETIC_TEST = "synthetic"
PRETRAINED_BASE_DIR = "results/base_model"


class ConfigError(ValueError):
    """The config is invalid; the message names the key."""


@dataclass
class Settings:
    classes: list[str]
    class_counts: dict[str, int]
    train_counts: dict[str, int]
    plan: Plan
    unseen: dict[str, str]
    base_model: str
    pretrain: bool
    phantom: bool
    architectures: list[str]

    @property
    def test_sets(self) -> list[str]:
        return [INTERNAL_TEST, *self.unseen, SYNTHETIC_TEST]

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "class_counts": self.class_counts,
            "train_counts": self.train_counts,
            "variants": [v.name for v in self.plan.variants()],
            "shards_per_class": {c: self.plan.shards(c) for c in self.classes},
            "unseen": self.unseen,
            "base_model": self.base_model,
        }


def resolve(config: dict, check_architectures: bool = True) -> Settings:
    dataset, phantom = config["dataset"], config["phantom"]
    # The base model first: a wrong path should not wait for a dataset scan.
    base = config["base_model"]
    pretrain = bool(base["pretrain"]["enabled"])
    if pretrain:
        base_model = base["path"] or PRETRAINED_BASE_DIR
    elif base["path"]:
        base_model = base["path"]
        if not config["allow_hub"]:
            from meddap.diffusion import check_base_model_folder

            check_base_model_folder(base_model)
    else:
        raise ConfigError("base_model.path is not set and base_model.pretrain.enabled is false: set one of them")

    if phantom["enabled"]:
        counts = dict(phantom["images_per_class"])
        classes = list(dataset["classes"] or sorted(counts))
        missing = [c for c in classes if c not in counts]
        if missing:
            raise ConfigError(f"dataset.classes {missing} have no count in phantom.images_per_class")
        from meddap.phantom import CLASSES as PHANTOM_CLASSES

        unknown = [c for c in classes if c not in PHANTOM_CLASSES]
        if unknown:
            raise ConfigError(f"phantom.images_per_class: the phantom simulates {list(PHANTOM_CLASSES)}, not {unknown}")
        if phantom["train_device"] not in phantom["devices"]:
            raise ConfigError(f"phantom.train_device {phantom['train_device']!r} is not in phantom.devices {sorted(phantom['devices'])}")
        class_counts = {c: int(counts[c]) for c in classes}
    else:
        # Real data: index the folder now, so a missing or empty dataset.root stops the run at once.
        images = list_class_images(dataset["root"], dataset["classes"], dataset["exclude"])
        classes = list(images)
        class_counts = {c: len(paths) for c, paths in images.items()}
    if config["lora"]["mode"] == "shared" and "shared" in classes:
        raise ConfigError("lora.mode: shared stores its LoRA as results/lora/shared, but a class is named 'shared'; rename the class folder")
    train_counts = {c: split_counts(n, dataset["test_fraction"])[1] for c, n in class_counts.items()}
    for cls, n_train in train_counts.items():
        if n_train < dataset["folds"]:
            raise ConfigError(
                f"dataset.folds={dataset['folds']} but class {cls!r} has only {n_train} training images; lower dataset.folds or add images"
            )

    generation = config["generation"]
    for adjective in generation["adjectives"]:
        if adjective in ("original", "mixed", "classic"):
            raise ConfigError(f"generation.adjectives: {adjective!r} is reserved for a variant name; rename it")
    for ratio in generation["ratios"]:
        if not (ratio > 0 and math.isfinite(ratio)):
            raise ConfigError(f"generation.ratios: {ratio!r} must be a positive number")
    plan = Plan(
        classes=classes,
        train_counts=train_counts,
        adjectives=list(generation["adjectives"]),
        ratios=[float(r) for r in generation["ratios"]],
        shard_size=int(generation["shard_size"]),
        families=tuple(generation["variant_families"]),
    )

    unseen = {}
    for entry in config["unseen"]:
        if entry["name"] in (INTERNAL_TEST, SYNTHETIC_TEST) or entry["name"] in unseen:
            raise ConfigError(f"unseen: the name {entry['name']!r} is reserved or repeated; give each unseen set its own name")
        unseen[entry["name"]] = entry["root"]
        root = Path(entry["root"])
        if root.is_dir():  # checkable now (a simulated set appears only when its rule runs)
            extra = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in classes)
            if extra:
                raise ConfigError(
                    f"unseen set {entry['name']!r} ({root}) has class folder(s) {extra} that are not training classes "
                    f"{classes}; an unseen set may hold a subset of the classes only. Remove or rename them."
                )

    architectures = list(config["classifier"]["architectures"])
    if check_architectures:
        from meddap.architectures import classification_architectures

        known = set(classification_architectures())
        unknown = [a for a in architectures if a not in known]
        if unknown:
            raise ConfigError(f"classifier.architectures: unknown {unknown}; use torchvision names such as densenet121, resnet34, squeezenet1_1, resnet18")
    return Settings(
        classes=classes,
        class_counts=class_counts,
        train_counts=train_counts,
        plan=plan,
        unseen=unseen,
        base_model=str(base_model),
        pretrain=pretrain,
        phantom=bool(phantom["enabled"]),
        architectures=architectures,
    )


def library_versions() -> dict:
    """Versions of the libraries that decide results, written next to models and shards."""
    import importlib.metadata as metadata
    import platform

    versions = {"python": platform.python_version()}
    for name in ("meddap", "torch", "torchvision", "diffusers", "peft", "transformers", "numpy", "scikit-learn", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict, seed: int | None = None) -> dict:
    return {"seed": config["seed"] if seed is None else seed, "versions": library_versions(), "config": config}


def repo_relative(path: str | Path) -> str:
    return str(Path(path))
