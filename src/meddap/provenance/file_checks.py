"""Check a ``.safetensors`` file before loading it, so a bad file is named instead of crashing a job.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (tensor name ->
dtype, shape, [begin, end) byte offsets into the data that follows), then the data. A copy cut
short (full disk, interrupted transfer, killed writer) keeps a readable header but loses data;
its size then differs from ``8 + N + the largest end offset``, which is checked without reading
the weights. The safetensors package then validates the header itself (dtypes, offsets that
tile the data) and gives every tensor's shape, which callers compare with the model they build.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# A header larger than this is not a safetensors header (the format caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsFileError(ValueError):
    """A safetensors file is missing, truncated or corrupt; ``path`` is the file, the message
    (one line) names it and says what to do (``remedy``)."""

    def __init__(self, path: str | Path, problem: str, remedy: str):
        self.path = Path(path)
        super().__init__(f"{self.path} {problem}; {remedy}")


def retrain_hint(folder: str | Path, rule: str) -> str:
    """What rebuilds a trained model's workflow output folder: ``snakemake --forcerun`` of its path as
    the workflow names it (from ``results/`` on: the workflow runs in the results folder's parent)."""
    parts = Path(folder).parts
    starts = [i for i, part in enumerate(parts) if part == "results"]
    target = Path(*parts[starts[-1] :]) if starts else Path(folder)
    return f"retrain it: snakemake --cores all --forcerun {target} (rule {rule})"


def _header(path: Path, size: int, remedy: str) -> tuple[int, dict]:
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise SafetensorsFileError(path, f"holds {size} bytes, too few for a safetensors header", remedy)
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise SafetensorsFileError(
                path, f"is not a safetensors file or is truncated (header of {length} bytes in {size})", remedy
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SafetensorsFileError(path, f"has a corrupt header ({error})", remedy) from None
    if not isinstance(header, dict):
        raise SafetensorsFileError(path, "has a corrupt header (not a JSON object)", remedy)
    return length, header


def check_safetensors(path: str | Path, remedy: str = "replace the file") -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the safetensors file ``path``, after checking that the file is whole.

    Raises SafetensorsFileError (naming ``path``, ending with ``remedy``) when the file is missing,
    shorter or longer than its header says, or its header is corrupt. Reads the header only.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SafetensorsFileError(path, "is missing", remedy)
    size = path.stat().st_size
    length, header = _header(path, size, remedy)
    try:
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (TypeError, KeyError, IndexError, ValueError):
        raise SafetensorsFileError(path, "has a corrupt header (a tensor without data_offsets)", remedy) from None
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        problem = "is truncated" if size < expected else "has trailing bytes (corrupt)"
        raise SafetensorsFileError(path, f"{problem}: {size} bytes, but its header describes {expected}", remedy)
    try:
        # numpy, not torch: the check stays light enough for a job that imports no torch (meddap.provenance.preflight).
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as error:  # safetensors raises its own (non-OSError) type for an invalid header
        raise SafetensorsFileError(path, f"is corrupt ({str(error).splitlines()[0][:200]})", remedy) from None
    return {name: tuple(int(n) for n in entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
