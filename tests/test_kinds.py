"""Kinds are values: test sets carry a kind, and the names "test"/"synthetic" are spelt in
meddap.settings.kinds only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from meddap.config.resolve import Settings
from meddap.settings.kinds import INTERNAL, SYNTHETIC, TestSet, TestSetKind, unseen_test_set
from meddap.settings.plan import Plan

KINDS_MODULE = REPO / "src" / "meddap" / "settings" / "kinds.py"
LITERAL = re.compile(r"""["'](test|synthetic)["']""")


def _code_files() -> list[Path]:
    workflow = REPO / "workflow"
    files = [*(REPO / "src" / "meddap").rglob("*.py"), *workflow.rglob("*.py"), *workflow.rglob("*.smk")]
    return sorted([*files, REPO / "Snakefile"])


def test_the_literals_test_and_synthetic_live_in_the_kinds_module_only():
    found = []
    for path in _code_files():
        if path == KINDS_MODULE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # A seed's salt is no name of anything: changing it would change every synthetic image.
            if LITERAL.search(line) and "derive_seed(" not in line:
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "compare kinds, not names (meddap.settings.kinds):\n" + "\n".join(found)
    assert LITERAL.search(KINDS_MODULE.read_text())  # the scan itself finds them


def test_no_name_parsing_of_variants_or_evaluation_folders():
    package = REPO / "src" / "meddap"
    for module in ("evidence/stats.py", "evidence/bootstrap.py", "classify/metrics.py"):
        stats = (package / module).read_text()
        assert "_RATIO_SUFFIX" not in stats and "re.compile" not in stats and "classic_x" not in stats, module
    report_script = (REPO / "workflow" / "scripts" / "report.py").read_text()
    assert ".parts[" not in report_script and 'removeprefix("fold")' not in report_script


def test_settings_expose_test_sets_with_their_kinds():
    plan = Plan(["a", "b"], {"a": 4, "b": 4}, ["none"], [1.0], 4)
    settings = Settings(
        ["a", "b"], {"a": 6, "b": 6}, {"a": 4, "b": 4}, plan, {"deviceB": "/data/b"}, "base", False, False, ["resnet18"]
    )
    assert settings.test_sets == [INTERNAL, TestSet("deviceB", TestSetKind.UNSEEN, "/data/b"), SYNTHETIC]
    assert [t.kind for t in settings.test_sets] == [TestSetKind.INTERNAL, TestSetKind.UNSEEN, TestSetKind.SYNTHETIC]
    assert settings.indexed_test_sets == settings.test_sets[:2]
    assert settings.test_set("deviceB").root == "/data/b"
    with pytest.raises(KeyError, match="unknown test set"):
        settings.test_set("deviceC")


def test_a_test_set_travels_through_rule_params_as_plain_data():
    deviceb = unseen_test_set("deviceB", "/data/b")
    params = deviceb.as_params()
    assert params == {"name": "deviceB", "kind": "unseen", "root": "/data/b"}
    assert type(params["kind"]) is str  # Snakemake params: no enum objects (pickled, compared by repr)
    assert TestSet(**params) == deviceb and TestSet(**params).kind is TestSetKind.UNSEEN
    with pytest.raises(ValueError):
        TestSet("x", "external")
