"""The lineage audit: did any image that shaped a classifier's training reach its evaluation?

For every classifier the audit collects the original images that influenced its training, by
walking the lineage records (``meddap.provenance.lineage``):

* directly: the original rows it trained on (``rows.csv``, role train);
* through a classic copy: the copy's source image;
* through a synthetic image: the shard's LoRA (its training images) and base model (its
  pretraining images);
* through a guided image: also its guide (the row's ``derived_from``) and every guide its shard
  lists; each guide must moreover be one of the classifier's own training originals (a finding
  ``outside training rows`` otherwise);
* through a filtered variant's judge (the rows' ``selected_by``): the originals it trained on,
  which decided which synthetic images the classifier sees.

Each of them is then compared with the images the classifier is judged on: its validation fold
(which selects its epoch), the held-out test split and every unseen set, by path, by
near-duplicate group (the split's perceptual-hash groups) and, for images outside the dataset
(a pretraining corpus, unseen sets), by perceptual-hash distance. A match is a finding.

Findings that follow from a setting the user chose knowingly (``lora.scope: split``: LoRAs see
the validation folds; ``base_model.pretrain.corpus: dataset``: so does the base model) are
reported as accepted; every other finding fails the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from meddap.provenance.lineage import lineage_images, read_lineage
from meddap.settings.kinds import GUIDED_SOURCE, INTERNAL_TEST, ORIGINAL_SOURCE, SYNTHETIC_SOURCE, TEST_SPLIT
from meddap.settings.plan import CLASSIC

VALIDATION = "validation"
GUIDE = "guide"  # the via of a guided image's guide: guide:<shard folder>
JUDGE = "judge"  # the via of a filter judge's training image: judge:<judge folder>
# A guide that is not one of the classifier's own training originals (the arm's training rows).
OUTSIDE_TRAINING = "outside training rows"
UNSEEN_PREFIX = "unseen:"
DIRECT = "direct"
FINDING_COLUMNS = [
    "variant",
    "arch",
    "fold",
    "replicate",
    "classifier",
    "image",
    "via",
    "protected_set",
    "protected_image",
    "match",
    "accepted",
    "reason",
]
SUMMARY_COLUMNS = [
    "variant",
    "arch",
    "fold",
    "replicate",
    "classifier",
    "influencing_images",
    "findings",
    "accepted",
    "unaccepted",
    "status",
]


class AuditError(RuntimeError):
    """A classifier's training was influenced by an image it is evaluated on."""


@dataclass(frozen=True)
class AcceptedLeaks:
    """Leaks a config declares knowingly: (protected set, influence kind) -> the setting's words."""

    rules: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, lora_scope: str, pretrain_corpus: str | None) -> AcceptedLeaks:
        from meddap.settings.choices import DATASET_CORPUS, SPLIT_SCOPE

        rules = {}
        if lora_scope == SPLIT_SCOPE:
            rules[(VALIDATION, "lora")] = (
                "lora.scope: split (one LoRA per class for every fold, trained on the validation folds too)"
            )
        if pretrain_corpus == DATASET_CORPUS:
            rules[(VALIDATION, "base_model")] = (
                "base_model.pretrain.corpus: dataset (the base model saw every fold's validation images)"
            )
        return cls(rules)

    def reason(self, protected_set: str, via: str) -> str:
        return self.rules.get((protected_set, via.split(":", 1)[0]), "")


def _key(path: str) -> str:
    return str(Path(path).resolve())


class _Influences:
    """Original images behind each artifact, read once per lineage record."""

    def __init__(self) -> None:
        self._cache: dict[str, list[tuple[str, str]]] = {}

    def of_shard(self, shard_dir: str) -> list[tuple[str, str]]:
        if shard_dir not in self._cache:
            record = read_lineage(shard_dir)
            if record is None:
                raise AuditError(
                    f"{shard_dir} has no lineage.json: regenerate the shard (rule generate_shard) so it can be audited"
                )
            # A guided shard lists its guides as its images; a text-to-image shard has none.
            found = [(image, f"{GUIDE}:{shard_dir}") for image in lineage_images(record)]
            for role in ("lora", "base_model"):
                source = record["inputs"].get(role)
                if source:
                    found += [(image, f"{role}:{source}") for image in lineage_images(read_lineage(source))]
            self._cache[shard_dir] = found
        return self._cache[shard_dir]

    def of_judge(self, judge_dir: str) -> list[tuple[str, str]]:
        if judge_dir not in self._cache:
            record = read_lineage(judge_dir)
            if record is None:
                raise AuditError(
                    f"{judge_dir} has no lineage.json: retrain the judge (rule train_judge) so it can be audited"
                )
            self._cache[judge_dir] = [(image, f"{JUDGE}:{judge_dir}") for image in lineage_images(record)]
        return self._cache[judge_dir]


LABELS = ("variant", "arch", "fold", "replicate")


def read_classifier_labels(classifier_dir: str | Path) -> dict:
    """What a classifier is (variant, arch, fold, replicate), as its model.json records it (never
    read from folder names)."""
    from meddap.classify.classifier import META_NAME

    meta_path = Path(classifier_dir) / META_NAME
    remedy = "retrain the classifier (rule train_classifier) so it can be audited"
    try:
        meta = json.loads(meta_path.read_text())
        return {
            "variant": meta["variant"],
            "arch": meta["arch"],
            "fold": int(meta["fold"]),
            "replicate": int(meta["replicate"]),
        }
    except FileNotFoundError:
        raise AuditError(f"{meta_path} is missing: {remedy}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise AuditError(
            f"{meta_path} does not say which variant, arch, fold and replicate it is ({error!r}): {remedy}"
        ) from None


def read_classifier_rows(classifier_dir: str | Path) -> pd.DataFrame:
    """The rows that trained (role train) and selected (role validation) a classifier."""
    from meddap.classify.classifier import ROWS_NAME

    rows_path = Path(classifier_dir) / ROWS_NAME
    if not rows_path.is_file():
        raise AuditError(f"{rows_path} is missing: retrain the classifier (rule train_classifier) so it can be audited")
    return pd.read_csv(rows_path, keep_default_na=False)


def classifier_influences(rows: pd.DataFrame, influences: _Influences | None = None) -> pd.DataFrame:
    """(image, via) of every original image that influenced the training of the classifier whose
    ``read_classifier_rows`` are ``rows``."""
    influences = influences or _Influences()
    train = rows[rows["role"] == "train"]
    found = [(path, DIRECT) for path in train.loc[train["source"] == ORIGINAL_SOURCE, "path"]]
    classic = train[train["source"] == CLASSIC]
    found += [
        (source, f"classic:{Path(path).parent.parent}")
        for path, source in zip(classic["path"], classic["derived_from"])
    ]
    for shard_dir in train.loc[train["source"] == SYNTHETIC_SOURCE, "derived_from"].unique():
        found += influences.of_shard(shard_dir)
    # A guided image: its guide itself, and its shard's LoRA, base model and listed guides.
    guided = train[train["source"] == GUIDED_SOURCE]
    shard_dirs = [str(Path(path).parent) for path in guided["path"]]
    found += [(guide, f"{GUIDE}:{shard_dir}") for guide, shard_dir in zip(guided["derived_from"], shard_dirs)]
    for shard_dir in dict.fromkeys(shard_dirs):
        found += influences.of_shard(shard_dir)
    # A filtered variant: the judge that chose its synthetic images, through what it trained on.
    if "selected_by" in train:
        for judge_dir in train["selected_by"].unique():
            if judge_dir:
                found += influences.of_judge(judge_dir)
    return pd.DataFrame(found, columns=["image", "via"]).drop_duplicates(ignore_index=True)


class _Hashes:
    """Perceptual hashes: the manifest's, else computed once per image."""

    def __init__(self, manifest: pd.DataFrame) -> None:
        from meddap.data.near_duplicates import hex_to_hash

        self._known = {}
        if "phash" in manifest:
            self._known = {
                _key(p): hex_to_hash(h) for p, h in zip(manifest["path"], manifest["phash"]) if isinstance(h, str)
            }

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        from meddap.data.near_duplicates import HASH_BITS, perceptual_hash

        for path in paths:
            key = _key(path)
            if key not in self._known:
                self._known[key] = perceptual_hash(path)
        return np.stack([self._known[_key(p)] for p in paths]) if len(paths) else np.zeros((0, HASH_BITS), dtype=bool)


def audit_classifiers(
    classifier_dirs: Sequence[str | Path],
    manifest: pd.DataFrame,
    unseen: dict[str, pd.DataFrame],
    max_distance: int,
    accepted: AcceptedLeaks = AcceptedLeaks(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings, summary) for ``classifier_dirs`` (each with its model.json and rows.csv; what a
    classifier is comes from its model.json, ``read_classifier_labels``).

    ``manifest``: the split manifest (path, class, split, fold, group, phash); ``unseen``: name ->
    table with a path column; ``max_distance``: the near-duplicate distance (-1: by path and
    byte-identical content only)."""
    from meddap.data.near_duplicates import hamming_distances
    from meddap.provenance.lineage import file_digest

    group_of = {_key(p): g for p, g in zip(manifest["path"], manifest["group"])} if "group" in manifest else {}
    hashes = _Hashes(manifest)
    influences = _Influences()
    test_paths = list(manifest.loc[manifest["split"] == TEST_SPLIT, "path"])
    findings, summary = [], []
    for classifier_dir in map(Path, classifier_dirs):
        labels = read_classifier_labels(classifier_dir)
        variant, arch, fold, replicate = (labels[key] for key in LABELS)
        rows = read_classifier_rows(classifier_dir)
        influence = classifier_influences(rows, influences)
        protected = {VALIDATION: list(rows.loc[rows["role"] == VALIDATION, "path"]), INTERNAL_TEST: test_paths}
        protected.update({f"{UNSEEN_PREFIX}{name}": list(table["path"]) for name, table in unseen.items()})
        images = list(influence["image"])
        keys = [_key(p) for p in images]
        own = []
        for set_name, paths in protected.items():
            if not paths or not images:
                continue
            protected_keys = [_key(p) for p in paths]
            by_path = {k: p for k, p in zip(protected_keys, paths)}
            by_group = {}
            for k, p in zip(protected_keys, paths):
                if k in group_of:
                    by_group.setdefault(group_of[k], p)
            matched = np.zeros(len(images), dtype=bool)
            for i, key in enumerate(keys):
                if key in by_path:
                    own.append((i, set_name, by_path[key], "path"))
                    matched[i] = True
                elif key in group_of and group_of[key] in by_group:
                    own.append((i, set_name, by_group[group_of[key]], "near-duplicate group"))
                    matched[i] = True
            # Images outside the dataset (a pretraining corpus, unseen sets) have no group: compare hashes.
            outside = [
                i
                for i in range(len(images))
                if not matched[i] and (keys[i] not in group_of or set_name.startswith(UNSEEN_PREFIX))
            ]
            if not outside:
                continue
            if max_distance >= 0:
                distances = hamming_distances(hashes([images[i] for i in outside]), hashes(paths))
                for row, column in zip(*np.nonzero(distances <= max_distance)):
                    own.append((outside[row], set_name, paths[column], f"perceptual hash within {max_distance} bits"))
            else:
                digests = {file_digest(p): p for p in paths}
                for i in outside:
                    digest = file_digest(images[i])
                    if digest in digests:
                        own.append((i, set_name, digests[digest], "identical bytes"))
        # Every guide must be one of the classifier's own training originals: the arm's training rows.
        training = {_key(p) for p in rows.loc[(rows["role"] == "train") & (rows["source"] == ORIGINAL_SOURCE), "path"]}
        for i, via in enumerate(influence["via"]):
            if via.split(":", 1)[0] == GUIDE and keys[i] not in training:
                own.append((i, OUTSIDE_TRAINING, "", "a guide that is not one of its training originals"))
        seen = set()
        n_accepted = 0
        for i, set_name, protected_image, match in own:
            if (i, set_name) in seen:
                continue
            seen.add((i, set_name))
            via = influence["via"].iloc[i]
            reason = accepted.reason(set_name, via)
            n_accepted += bool(reason)
            findings.append(
                (
                    variant,
                    arch,
                    fold,
                    replicate,
                    str(classifier_dir),
                    images[i],
                    via,
                    set_name,
                    protected_image,
                    match,
                    bool(reason),
                    reason,
                )
            )
        n_findings = len(seen)
        unaccepted = n_findings - n_accepted
        status = "clean" if not n_findings else ("LEAK" if unaccepted else "accepted leak")
        summary.append(
            (
                variant,
                arch,
                fold,
                replicate,
                str(classifier_dir),
                len(set(images)),
                n_findings,
                n_accepted,
                unaccepted,
                status,
            )
        )
    return pd.DataFrame(findings, columns=FINDING_COLUMNS), pd.DataFrame(summary, columns=SUMMARY_COLUMNS)


def verdict(findings: pd.DataFrame, summary: pd.DataFrame) -> str:
    """One paragraph for the report and the log."""
    n = len(summary)
    leaking = findings[~findings["accepted"].astype(bool)]
    accepted = findings[findings["accepted"].astype(bool)]
    if leaking.empty and accepted.empty:
        return (
            f"Lineage audit: passed. None of the images that influenced the training of the {n} classifiers "
            "(directly, through a LoRA, the base model, a guide, a filter's judge or a classic copy) is in its "
            "validation fold, the test "
            "split or an unseen set, by path, near-duplicate group or perceptual hash."
        )
    parts = []
    if not leaking.empty:
        first = leaking.iloc[0]
        where = (
            f"but is not one of its training originals ({first['match']})"
            if first["protected_set"] == OUTSIDE_TRAINING
            else f"and is in its {first['protected_set']} set ({first['protected_image']}, {first['match']})"
        )
        parts.append(
            f"Lineage audit: FAILED. {len(leaking)} finding(s) in {leaking['classifier'].nunique()} of {n} "
            f"classifiers, e.g. {first['image']} influenced {first['classifier']} via {first['via']} {where}. "
            "See results/audit/findings.csv."
        )
    if not accepted.empty:
        reasons = "; ".join(sorted(set(accepted["reason"])))
        parts.append(
            f"Lineage audit: {len(accepted)} accepted finding(s) in {accepted['classifier'].nunique()} of {n} "
            f"classifiers, declared by the config: {reasons}. "
            "Scores selected on those validation folds are optimistic for the "
            "variants whose training they influenced."
        )
    return " ".join(parts)


def read_unseen_tables(paths: dict[str, str | Path]) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(path) for name, path in paths.items()}


def run_audit(
    classifier_dirs: Sequence[str | Path],
    manifest_path: str | Path,
    unseen_tables: dict[str, str | Path],
    max_distance: int,
    accepted: AcceptedLeaks,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The audit from files: (findings, summary, verdict). Raises AuditError only for an artifact
    without its lineage record; whether the findings fail the run is ``fail_on``'s call."""
    findings, summary = audit_classifiers(
        classifier_dirs, pd.read_csv(manifest_path), read_unseen_tables(unseen_tables), max_distance, accepted
    )
    return findings, summary, verdict(findings, summary)


def fail_on(findings: pd.DataFrame, text: str) -> None:
    """Raise AuditError when any finding is not accepted by the config."""
    if (~findings["accepted"].astype(bool)).any():
        raise AuditError(text)
