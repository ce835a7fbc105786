"""The config's error and the checks of ``meddap.config.resolve`` that JSON Schema cannot express
(seed range, prompt template, repeated entries, unseen sets apart from the dataset, job limit),
each failing with a ``ConfigError`` that names the config key and what to do."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """The config is invalid; the message names the key."""


SEED_RANGE = (0, 2**32 - 1)  # numpy's and torch's generators take seeds in this range
TEMPLATE_FIELDS = {"article", "adjective", "subject", "cls"}


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ConfigError(f"seed: {seed!r} must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}")


def check_template(template: str, adjectives: list[str]) -> None:
    """prompts.template: only the known fields, and {adjective} when adjectives are to tell shards apart."""
    import string

    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"prompts.template {template!r} is not a valid template ({error})") from None
    unknown = sorted(fields - TEMPLATE_FIELDS)
    if unknown:
        raise ConfigError(
            f"prompts.template: unknown field(s) {unknown}; use {{article}}, {{adjective}}, {{subject}} or {{cls}}"
        )
    if "adjective" not in fields and len(set(adjectives)) > 1:
        raise ConfigError(
            f"prompts.template has no {{adjective}} but generation.adjectives has {len(set(adjectives))}: "
            "every adjective's shards would get the same prompt; add {adjective} to the template"
        )


def check_unique(key: str, values: list) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"{key}: {repeated} listed more than once; list each once")


def check_unseen_is_apart(name: str, root: Path, dataset_images: set[Path]) -> None:
    """An unseen set must not hold the dataset's own files (a folder or a CSV of paths)."""
    import pandas as pd

    from meddap.data.images import IMAGE_EXTENSIONS

    if root.is_dir():
        files = {p.resolve() for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    else:
        files = {Path(p).resolve() for p in pd.read_csv(root)["path"]} if root.suffix == ".csv" else set()
    shared = files & dataset_images
    if shared:
        raise ConfigError(
            f"unseen set {name!r} ({root}) holds {len(shared)} image(s) of dataset.root, e.g. {sorted(shared)[0]}; "
            "an unseen set must come from elsewhere (another device or site)"
        )


def check_job_limit(jobs: dict[str, int], limit: int) -> None:
    total = sum(jobs.values())
    if total > limit:
        raise ConfigError(
            f"the config plans {total:,} jobs ({jobs.get('generate_shard', 0):,} shards, "
            f"{jobs.get('train_classifier', 0):,} classifier trainings), more than limits.max_jobs ({limit:,}); "
            "lower generation.ratios, adjectives, architectures, classifier.replicates or dataset.folds, "
            "raise generation.shard_size, or raise the limit (`meddap plan` shows every rule's jobs)"
        )
