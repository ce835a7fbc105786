"""config/README.md's config-key table, generated from the config schema.

    python -m meddap.config.schema_docs            # rewrite config/README.md's table (make config-table)
    python -m meddap.config.schema_docs --check    # exit 1 when config/README.md's table is not the schema's

Run from the repository root, or pass --schema and --markdown. The table sits between the marker
comments ``<!-- config-table:start -->`` and ``<!-- config-table:end -->`` of the Markdown file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from meddap.runtime.markdown import table

SCHEMA = Path("workflow/schemas/config.schema.yaml")
MARKDOWN = Path("config/README.md")
START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
COLUMNS = ["key", "type", "default", "description"]


def load(path: str | Path = SCHEMA) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def keys(schema: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, schema node) of every property at every level, parents before children; the
    properties of an array's object items are `<array>[].<key>`."""
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        yield path, node
        yield from keys(node, path + ".")
        items = node.get("items")
        if isinstance(items, dict) and "properties" in items:
            yield from keys(items, path + "[].")


def missing_descriptions(schema: dict) -> list[str]:
    """The keys without a (non-empty) description."""
    return [path for path, node in keys(schema) if not str(node.get("description", "")).strip()]


def _plain(text: str) -> bool:
    """Whether YAML reads the string back unquoted (in a flow sequence or mapping too)."""
    if not text or text.strip() != text or set(text) & set(",[]{}#"):
        return False
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _value(value) -> str:
    """A default as YAML flow style (one line)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if _plain(value) else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _bounds(node: dict) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    return " " + ", ".join(parts) if parts else ""


def _type(node: dict) -> str:
    kinds = node.get("type", "")
    text = " or ".join(kinds) if isinstance(kinds, list) else str(kinds)
    if "enum" in node:
        text += ": " + ", ".join(_value(v) for v in node["enum"])
    text += _bounds(node)
    items = node.get("items")
    if isinstance(items, dict) and "properties" not in items:
        text += f" of {_type(items)}"
    return text


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (pipes, HTML-like <placeholders>, emphasis stars)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _default(node: dict) -> str:
    if "default" not in node:
        return "required" if node.get("_required") else "—"
    if "properties" in node and node["default"] == {}:
        return ""
    return "`" + _value(node["default"]).replace("|", "\\|") + "`"


def _mark_required(schema: dict) -> dict:
    """A copy of the schema whose required properties carry `_required` (for the default column)."""

    def mark(node):
        if not isinstance(node, dict):
            return node
        node = {k: mark(v) for k, v in node.items()}
        for name in node.get("required", []):
            if name in node.get("properties", {}):
                node["properties"][name] = {**node["properties"][name], "_required": True}
        return node

    return mark(schema)


def config_table(schema: dict) -> list[str]:
    """The Markdown lines of the config-key table: key, type, default, description."""
    rows = [
        [f"`{path}`", _cell(_type(node)), _default(node), _cell(node.get("description", ""))]
        for path, node in keys(_mark_required(schema))
    ]
    return table(COLUMNS, rows)


def with_table(markdown: str, lines: list[str]) -> str:
    """The Markdown text with the part between the markers replaced by the table."""
    if markdown.count(START) != 1 or markdown.count(END) != 1 or markdown.index(START) > markdown.index(END):
        raise ValueError(f"the Markdown file needs one {START} line followed by one {END} line")
    head, rest = markdown.split(START)
    _, tail = rest.split(END)
    return head + START + "\n" + "\n".join(lines) + "\n" + END + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meddap.config.schema_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=str(SCHEMA), help="the config schema (default: %(default)s)")
    parser.add_argument("--markdown", default=str(MARKDOWN), help="the Markdown file to update (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only check the file's table; exit 1 if it differs")
    args = parser.parse_args(argv)
    schema = load(args.schema)
    missing = missing_descriptions(schema)
    if missing:
        print(f"{args.schema}: keys without a description: {', '.join(missing)}", file=sys.stderr)
        return 1
    markdown = Path(args.markdown).read_text()
    updated = with_table(markdown, config_table(schema))
    if args.check:
        if updated != markdown:
            message = f"{args.markdown}: the config table differs from {args.schema}; run make config-table"
            print(message, file=sys.stderr)
            return 1
        return 0
    if updated != markdown:
        Path(args.markdown).write_text(updated)
        print(f"{args.markdown}: config table rewritten from {args.schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
