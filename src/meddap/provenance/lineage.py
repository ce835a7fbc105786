"""Lineage records: what every artifact was derived from, so leak-freedom can be checked.

Each artifact folder that images can influence a classifier through holds ``lineage.json``:

* base model (``pretrain_base``): the pretraining images (``images``);
* LoRA (``train_lora``): its training images and the base model (``inputs.base_model``);
* shard (``generate_shard``): the LoRA and base model it was generated with;
* classic-augmentation folder: the source image of every copy (also in its metadata.csv);
* classifier: the rows it trained and was validated on (``rows.csv``: path, class, source,
  role, derived_from) and the dataset manifest it read.

Images are listed with their sha256, so a changed file is seen as changed. ``meddap.audit.leaks``
walks these records from each classifier back to the original images.

Every record also carries digests: ``input_digests`` (role -> sha256 of each input as it was read: a
file's bytes, a folder's relative paths and file digests, see ``path_digest``) and ``files`` (the
artifact folder's own files with their sha256, e.g. a shard's PNGs). ``meddap.audit.verify`` compares
them with what is on disk now. Digests are cached by path, size and mtime_ns (``DigestCache``), so
re-reading a large base model or dataset costs a ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from meddap.runtime.atomic import write_json

LINEAGE_FILE = "lineage.json"
# Set by the rule scripts (and the Snakefile at parse time): where file digests are cached.
CACHE_VARIABLE = "MEDDAP_DIGEST_CACHE"
DEFAULT_CACHE = ".snakemake/meddap/digests.json"


class DigestCache:
    """sha256 of files keyed by absolute path, size and mtime_ns, kept in a JSON file.

    A file rewritten in place gets a new mtime (or size) and so a new digest; writes are atomic,
    and concurrent jobs at worst recompute a digest another one has just stored.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, list] = {}
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def digest(self, path: str | Path) -> str:
        path = Path(path)
        stat = path.stat()
        key = str(path.resolve())
        entry = self.entries.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns and entry[2] is not None:
            return entry[2]
        value = _sha256(path)
        if self.path:
            extras = entry[3] if entry and len(entry) > 3 and entry[:2] == [stat.st_size, stat.st_mtime_ns] else {}
            self.entries[key] = [stat.st_size, stat.st_mtime_ns, value, extras]
            self.dirty = True
        return value

    def remember(self, path: str | Path, name: str, compute: Callable[[Path], object]):
        """``compute(path)`` (a JSON value, e.g. an image's size read from its header), kept beside the
        file's digest under the same path, size and mtime_ns."""
        path = Path(path)
        stat = path.stat()
        key = str(path.resolve())
        entry = self.entries.get(key)
        fresh = bool(entry) and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns
        if fresh and len(entry) > 3 and name in entry[3]:
            return entry[3][name]
        value = compute(path)
        if self.path:
            if not fresh:
                entry = [stat.st_size, stat.st_mtime_ns, None, {}]
            elif len(entry) < 4:
                entry = [*entry[:3], {}]
            entry[3][name] = value
            self.entries[key] = entry
            self.dirty = True
        return value

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        try:
            write_json(self.path, self.entries)
            self.dirty = False
        except OSError:
            pass  # a read-only working directory: digests are recomputed next time


def default_cache() -> DigestCache:
    """The cache named by $MEDDAP_DIGEST_CACHE (set in workflow jobs), else none."""
    return DigestCache(os.environ.get(CACHE_VARIABLE) or None)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | Path, cache: DigestCache | None = None) -> str:
    return cache.digest(path) if cache is not None else _sha256(path)


def _bookkeeping(relative: Path) -> bool:
    """Files that are not an artifact's content: Snakemake's directory timestamps, partial writes."""
    return any(part.startswith(".snakemake") or part.endswith(".partial") for part in relative.parts)


def folder_files(folder: str | Path, own_record: bool = True) -> list[str]:
    """The files of a folder as sorted relative paths (``own_record`` False: without its lineage.json)."""
    folder = Path(folder)
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if not path.is_file() or _bookkeeping(relative):
            continue
        if not own_record and relative == Path(LINEAGE_FILE):
            continue
        files.append(relative.as_posix())
    return sorted(files)


def file_entries(folder: str | Path, cache: DigestCache | None = None, own_record: bool = True) -> list[dict]:
    """[{path, sha256}] of a folder's files, paths relative to it."""
    folder = Path(folder)
    return [{"path": name, "sha256": file_digest(folder / name, cache)} for name in folder_files(folder, own_record)]


def entries_digest(entries: Iterable[dict]) -> str:
    """One digest of (relative path, sha256) entries, whatever their order."""
    lines = sorted(f"{entry['path']}\t{entry['sha256']}" for entry in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def path_digest(path: str | Path, cache: DigestCache | None = None) -> str | None:
    """A file's sha256, a folder's digest of its files' relative paths and sha256s, None when the
    path is not there (or is not a local path, e.g. a hub id)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path, cache)
    if path.is_dir():
        return entries_digest(file_entries(path, cache))
    return None


def write_lineage(
    folder: str | Path,
    kind: str,
    images: Iterable[str] = (),
    inputs: dict[str, str] | None = None,
    digests: dict[str, str | None] | None = None,
    **extra,
) -> dict:
    """Write ``folder/lineage.json``: the artifact's kind, the images it was derived from (with
    sha256), the artifacts it was made from (``inputs``: role -> path) with their digests
    (``input_digests``: role -> ``path_digest``, or the one given in ``digests``) and the folder's
    own files with their sha256 (``files``; call it last, when the folder is complete)."""
    cache = default_cache()
    inputs = {role: str(path) for role, path in (inputs or {}).items()}
    given = digests or {}
    record = {
        "kind": kind,
        "images": [{"path": str(path), "sha256": file_digest(path, cache)} for path in images],
        "inputs": inputs,
        "input_digests": {
            role: given[role] if role in given else path_digest(path, cache) for role, path in inputs.items()
        },
        # Just written (often under a temporary name): hashed, not cached.
        "files": file_entries(folder, own_record=False),
        **extra,
    }
    cache.save()
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
