"""Kinds are values: test sets carry a kind (meddap.kinds)."""

from __future__ import annotations

import pytest

from meddap.kinds import INTERNAL, SYNTHETIC, TestSet, TestSetKind, unseen_test_set
from meddap.plan import Plan
from meddap.settings import Settings


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
