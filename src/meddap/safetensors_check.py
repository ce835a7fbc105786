"""Is a .safetensors file complete? Read its header only (no weights), so a truncated or
half-written file is found in microseconds, whatever its size.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header (each
tensor's dtype, shape and ``data_offsets`` into the data that follows), then the data: a
complete file is exactly ``8 + N + the largest end offset`` bytes long.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100_000_000  # the safetensors format's own limit on the header


class SafetensorsError(ValueError):
    """A .safetensors file is truncated, padded or has no readable header; the message names it."""


def read_header(path: str | Path) -> dict:
    """The file's JSON header (tensor name -> dtype, shape, data_offsets; ``__metadata__``),
    after checking that the file's size is the one the header describes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            if length is None or length > min(MAX_HEADER, size - 8):
                raise SafetensorsError(
                    f"{path} is not a complete safetensors file ({size} bytes: too short for its header)"
                )
            header = json.loads(stream.read(length))
    except OSError as error:
        raise SafetensorsError(f"{path} cannot be read ({error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{path} is not a safetensors file: its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path} is not a safetensors file: its header is not a JSON object")
    try:
        end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise SafetensorsError(f"{path} is not a safetensors file: a header entry has no data_offsets") from None
    expected = 8 + length + end
    if size != expected:
        state = "truncated (or still being written)" if size < expected else "longer than its header says"
        raise SafetensorsError(f"{path} is {state}: {size} bytes, its header describes {expected}")
    return header


def check_safetensors(path: str | Path) -> None:
    """Raise SafetensorsError (naming ``path``) unless it is a complete, consistent safetensors file."""
    read_header(path)
    from safetensors import safe_open  # its own checks: offsets contiguous, shapes match dtypes

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as error:  # safetensors raises its own error types for an inconsistent header
        raise SafetensorsError(f"{path} is not a readable safetensors file ({error})") from None


def tensor_names(path: str | Path) -> list[str]:
    """The tensors a complete file holds (from its header)."""
    return [key for key in read_header(path) if key != "__metadata__"]
