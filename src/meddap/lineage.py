"""Lineage records: what every artifact was derived from, so leak-freedom can be checked.

Each artifact folder that images can influence a classifier through holds ``lineage.json``:

* base model (``pretrain_base``): the pretraining images (``images``);
* LoRA (``train_lora``): its training images and the base model (``inputs.base_model``);
* shard (``generate_shard``): the LoRA and base model it was generated with;
* classic-augmentation folder: the source image of every copy (also in its metadata.csv);
* classifier: the rows it trained and was validated on (``rows.csv``: path, class, source,
  role, derived_from) and the dataset manifest it read.

Images are listed with their sha256, so a changed file is seen as changed. ``meddap.audit``
walks these records from each classifier back to the original images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from meddap.atomic import write_json

LINEAGE_FILE = "lineage.json"


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_lineage(
    folder: str | Path, kind: str, images: Iterable[str] = (), inputs: dict[str, str] | None = None, **extra
) -> dict:
    """Write ``folder/lineage.json``: the artifact's kind, the images it was derived from (with
    sha256) and the artifacts it was made from (``inputs``: role -> path)."""
    record = {
        "kind": kind,
        "images": [{"path": str(path), "sha256": file_digest(path)} for path in images],
        "inputs": {role: str(path) for role, path in (inputs or {}).items()},
        **extra,
    }
    write_json(Path(folder) / LINEAGE_FILE, record)
    return record


def read_lineage(folder: str | Path) -> dict | None:
    """The lineage record of an artifact folder, or None when it has none (e.g. a downloaded
    Stable Diffusion checkpoint, whose pretraining data meddap cannot know)."""
    path = Path(folder) / LINEAGE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def lineage_images(record: dict | None) -> list[str]:
    return [entry["path"] for entry in (record or {}).get("images", [])]
