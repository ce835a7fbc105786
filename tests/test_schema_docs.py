"""The config schema documents every key, its defaults are the paper's protocol, and config/README.md's
config-key table is the one generated from it (python -m meddap.config.schema_docs, make config-table)."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from meddap.config import schema_docs

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
BUSI_CONFIG = REPO / "config" / "busi.yaml"
# busi.yaml keys whose schema default deliberately differs: the paths a study must set, and
# defaults that mean the same on BUSI (null alpha = rank = 4; null classes = every subfolder).
SET_BY_THE_USER = {"dataset.root", "base_model.path"}
SAME_MEANING = {"lora.alpha", "dataset.classes"}


def test_every_schema_key_has_a_description():
    missing = schema_docs.missing_descriptions(schema_docs.load(SCHEMA))
    assert not missing, f"keys without a description in {SCHEMA.relative_to(REPO)}: {', '.join(missing)}"


def test_config_readme_table_is_the_generated_one():
    markdown = (REPO / "config" / "README.md").read_text()
    expected = schema_docs.with_table(markdown, schema_docs.config_table(schema_docs.load(SCHEMA)))
    assert markdown == expected, "config/README.md's config table differs from the schema: run make config-table"
    assert schema_docs.MARKDOWN == Path("config/README.md")  # what make config-table rewrites by default


def _leaves(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_schema_defaults_are_the_paper_protocol():
    """A key config/busi.yaml sets has that value as its schema default, so a partial study config
    inherits the paper's protocol, not the embedded toy's values."""
    nodes = dict(schema_docs.keys(schema_docs.load(SCHEMA)))
    busi = yaml.safe_load(BUSI_CONFIG.read_text())
    differing = {
        key: (value, nodes[key].get("default", "<none>"))
        for key, value in _leaves(busi)
        if key not in SET_BY_THE_USER | SAME_MEANING and nodes[key].get("default", "<none>") != value
    }
    assert not differing, f"schema default != config/busi.yaml (busi, schema): {differing}"


def test_a_config_without_a_data_folder_names_the_key():
    with pytest.raises(Exception, match="'root' is a required property"):
        validate({}, str(SCHEMA), set_default=True)


def test_keys_walks_nested_objects_and_array_items():
    schema = {
        "properties": {
            "a": {"type": "object", "description": "a", "properties": {"b": {"type": "integer"}}},
            "c": {
                "type": "array",
                "description": "c",
                "items": {"type": "object", "properties": {"d": {"type": "string", "description": " "}}},
            },
        }
    }
    assert [path for path, _ in schema_docs.keys(schema)] == ["a", "a.b", "c", "c[].d"]
    assert schema_docs.missing_descriptions(schema) == ["a.b", "c[].d"]


def test_the_check_fails_on_a_stale_table_and_the_rewrite_fixes_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{schema_docs.START}\n| stale |\n{schema_docs.END}\n\nafter\n")
    args = ["--schema", str(SCHEMA), "--markdown", str(readme)]
    assert schema_docs.main([*args, "--check"]) == 1
    assert schema_docs.main(args) == 0
    assert schema_docs.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{schema_docs.END}\n\nafter\n")
    assert "| `classifier.epochs` | integer ≥ 1 | `100` |" in text


def test_the_table_needs_its_markers():
    with pytest.raises(ValueError, match="config-table:start"):
        schema_docs.with_table("no markers", ["| x |"])
