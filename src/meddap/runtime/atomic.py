"""Atomic writes: a killed job never leaves a file or folder that looks complete."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``target``.

    Works for a file or a folder written at the yielded path. On error the temporary is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed earlier attempt at this same target (one job owns a target at a time).
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    shutil.rmtree(temporary)  # callers create what they need at this path
    try:
        yield temporary
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(temporary, target)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


def json_text(payload: object) -> str:
    """Indented, key-sorted JSON; numpy scalars and paths become plain values."""
    return json.dumps(payload, indent=2, sort_keys=True, default=_jsonable) + "\n"


def write_json(target: str | Path, payload: object) -> None:
    write_text(target, json_text(payload))


def write_csv(target: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=False)


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
