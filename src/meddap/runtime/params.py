"""Settings through Snakemake ``params``: frozen dataclasses as plain data (which Snakemake hashes, so
changing a setting reruns exactly the jobs that read it) and back."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound="StageSettings")


@dataclass(frozen=True)
class StageSettings:
    def params(self) -> dict[str, Any]:
        """Plain data for a rule's ``params`` (lists, not tuples: the YAML/JSON types Snakemake hashes)."""

        def plain(value):
            if isinstance(value, (tuple, list)):
                return [plain(item) for item in value]
            if isinstance(value, dict):
                return {key: plain(item) for key, item in value.items()}
            return value

        return plain(dataclasses.asdict(self))

    @classmethod
    def from_params(cls: type[T], data: Mapping[str, Any]) -> T:
        """Rebuild from ``params()`` or from the validated config section (keys of other stages ignored)."""
        hints = typing.get_type_hints(cls)
        values = {}
        for item in dataclasses.fields(cls):
            if item.name not in data:
                continue
            value, kind = data[item.name], hints[item.name]
            if isinstance(kind, type) and issubclass(kind, StageSettings):
                value = kind.from_params(value)
            elif isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            values[item.name] = value
        return cls(**values)
