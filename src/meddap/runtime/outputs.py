"""Where a command may write: never into its own inputs, never over an existing file unless asked.

Every ``--out``-like argument of ``meddap`` goes through ``check_output`` before anything is read
or written, so a typo cannot turn a user's image, study config or results folder into a CSV.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path


def check_output(flag: str, path: str | Path, inputs: Mapping[str, str | Path | None], overwrite: bool = False) -> Path:
    """``path`` for ``flag``, or ValueError (one line naming both) when it is one of ``inputs``
    (flag -> file or folder; None: not given) or lies inside one, or exists and ``overwrite`` is off."""
    out = Path(path)
    target = out.resolve()
    for name, source in inputs.items():
        if source is None:
            continue
        where = Path(source).resolve()
        if target == where or where in target.parents:
            raise ValueError(
                f"{flag} {path} is {'' if target == where else 'inside '}{name} {source}: meddap never writes "
                "into its inputs; give a path outside it"
            )
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give the path of the file to write")
    if out.exists() and not overwrite:
        raise ValueError(f"{flag} {path} exists; give --overwrite to replace it, or another path")
    return out


def quoted(path: str | Path) -> str:
    """``path`` as a shell word (a printed command must run as shown, spaces and parentheses included)."""
    return shlex.quote(str(path))
