"""Kinds as values: what a test set is, and the labels of the split manifest's rows.

Everything else asks a ``TestSet`` for its ``kind`` instead of comparing names, so the names
"test" and "synthetic" (of the internal test split, of the synthetic images, of manifest rows)
are spelt here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The manifest's split column, and the source column of a classifier's rows (meddap.data.merge).
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"
ORIGINAL_SOURCE = "original"
SYNTHETIC_SOURCE = "synthetic"  # text-to-image: derived_from is its shard folder
GUIDED_SOURCE = "guided"  # image-to-image: derived_from is its guide, a training original
SYNTHETIC_SOURCES = (SYNTHETIC_SOURCE, GUIDED_SOURCE)  # rows of generated images
# The folder under results/ of the text-to-image shards (meddap.settings.plan's TEXT_TO_IMAGE stream).
TEXT_TO_IMAGE_SHARDS = "synthetic"

# Names of the two test sets every run has (results/test_sets/<name>.csv, evaluation folders).
INTERNAL_TEST = "test"
SYNTHETIC_TEST = "synthetic"


class TestSetKind(StrEnum):
    """What a test set's images are, and so what its scores mean."""

    __test__ = False  # not a pytest test class

    INTERNAL = "internal"  # the dataset's held-out test split: the headline scores
    UNSEEN = "unseen"  # images from another device or site (config `unseen`): generalisation
    SYNTHETIC = "synthetic"  # the fold's synthetic images, for `original` only: class fidelity


@dataclass(frozen=True)
class TestSet:
    """A test set: its name (file and folder names), its kind, and the image folder it is indexed
    from (``root``: an unseen set's folder; None for the sets the workflow builds itself)."""

    __test__ = False  # not a pytest test class

    name: str
    kind: TestSetKind
    root: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "kind", TestSetKind(self.kind))  # a plain string from rule params

    def as_params(self) -> dict:
        """Plain data for Snakemake params (rebuilt in the script with ``TestSet(**params)``)."""
        return {"name": self.name, "kind": str(self.kind), "root": self.root}


INTERNAL = TestSet(INTERNAL_TEST, TestSetKind.INTERNAL)
SYNTHETIC = TestSet(SYNTHETIC_TEST, TestSetKind.SYNTHETIC)
RESERVED_TEST_SET_NAMES = (INTERNAL_TEST, SYNTHETIC_TEST)


def unseen_test_set(name: str, root: str) -> TestSet:
    return TestSet(name, TestSetKind.UNSEEN, str(root))
