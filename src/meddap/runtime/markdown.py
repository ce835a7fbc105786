"""Markdown pieces of the report: numbers as text and tables."""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "n/a" for a missing or NaN value."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(columns: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table: header, rule, one line per row."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]
