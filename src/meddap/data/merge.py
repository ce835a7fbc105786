"""A classifier's dataset: one (variant, fold) as a manifest of its training and validation rows.

Validation rows are fold k's originals. Training rows are the other folds' originals plus the
variant's extra rows, all derived from those training originals only: synthetic images from the
fold's generative arm (LoRAs trained without fold k, with ``lora.scope: fold``) and classic copies
of the fold's training originals. No test row ever enters. Every extra row names what it was
derived from (``derived_from``: a text-to-image row's shard folder, a guided row's guide, a
classic copy's source image), so the lineage audit can walk back to the originals. A filtered
variant's synthetic rows also name the judge that let them through (``selected_by``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from meddap.settings.kinds import GUIDED_SOURCE, ORIGINAL_SOURCE, SYNTHETIC_SOURCE, SYNTHETIC_SOURCES, TRAIN_SPLIT
from meddap.settings.plan import CLASSIC, GUIDED, Plan, Variant

VARIANT_COLUMNS = ["path", "class", "source", "role", "adjective", "prompt", "seed", "derived_from", "selected_by"]
TRAIN_ROLE = "train"
VALIDATION_ROLE = "validation"


def _rows(
    paths, classes, source: str, role, adjective="", prompt="", seeds=None, derived_from="", selected_by=""
) -> pd.DataFrame:
    """Manifest rows; ``classes``, ``role``, ``adjective``, ``prompt`` and ``derived_from`` are one
    value for every row or a list with one per row (pandas broadcasts the single values)."""
    n = len(paths)
    return pd.DataFrame(
        {
            "path": list(paths),
            "class": classes,
            "source": source,
            "role": role,
            "adjective": adjective,
            "prompt": prompt,
            "seed": pd.array(list(seeds) if seeds is not None else [pd.NA] * n, dtype="Int64"),
            "derived_from": derived_from,
            "selected_by": selected_by,
        }
    )


def merge_fold(
    manifest: pd.DataFrame,
    fold: int,
    plan: Plan,
    variant: Variant,
    synthetic: pd.DataFrame | None = None,
    classic: pd.DataFrame | None = None,
    verdicts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows of ``variant`` for fold ``fold``: the training split's originals (role validation in
    the fold, train elsewhere) + the first N synthetic rows per (class, adjective) of the fold's
    arm (``synthetic``: ``read_shards`` of that arm's shards of the variant's stream) or the first
    N classic copies per class (``classic``: ``read_classic`` of the fold's folder). A filtered
    variant takes the first N that its filter kept (``verdicts``: ``meddap.classify.judge``'s table
    of the arm's stream)."""
    original = manifest[manifest["split"] == TRAIN_SPLIT]
    roles = [VALIDATION_ROLE if int(f) == fold else TRAIN_ROLE for f in original["fold"]]
    parts = [_rows(original["path"], list(original["class"]), ORIGINAL_SOURCE, roles)]
    for cls in plan.classes:
        for adjective, count in plan.counts_per_adjective(variant, cls).items():
            pool = (
                synthetic if synthetic is not None else pd.DataFrame(columns=["class", "adjective", "shard", "index"])
            )
            pool = pool[(pool["class"] == cls) & (pool["adjective"] == adjective)].sort_values(
                ["shard", "index"], kind="stable"
            )
            generated = plan.generated_per_adjective(variant, cls)[adjective]
            if len(pool) < generated:
                raise ValueError(
                    f"variant {variant.name} fold {fold}: needs {generated} synthetic {cls}/{adjective} images but the "
                    f"shards hold {len(pool)}. Regenerate the shards (the training counts changed?)."
                )
            selected_by: str | list[str] = ""
            if variant.filtered:
                pool, selected_by = _kept(pool.head(generated), verdicts, variant, fold, cls, adjective, count, plan)
            chosen = pool.head(count)
            if variant.kind == GUIDED:
                if "derived_from" not in chosen or chosen["derived_from"].isna().any():
                    raise ValueError(
                        f"variant {variant.name} fold {fold}: {cls}/{adjective} rows without a guide: the shards are "
                        "not guided shards; regenerate them"
                    )
                source, derived_from = GUIDED_SOURCE, list(chosen["derived_from"])
            else:
                source, derived_from = SYNTHETIC_SOURCE, [path.rsplit("/", 1)[0] for path in chosen["path"]]
            parts.append(
                _rows(
                    chosen["path"],
                    cls,
                    source,
                    TRAIN_ROLE,
                    adjective,
                    list(chosen["prompt"]),
                    chosen["seed"],
                    derived_from,
                    selected_by[: len(chosen)] if isinstance(selected_by, list) else selected_by,
                )
            )
    if variant.kind == CLASSIC:
        if classic is None:
            raise ValueError(f"variant {variant.name}: the classic-augmentation folder of fold {fold} is missing")
        if len(classic) and set(classic["fold"].astype(int)) != {fold}:
            raise ValueError(
                f"variant {variant.name}: classic copies of folds {sorted(set(classic['fold']))} given for fold {fold}"
            )
        for cls in plan.classes:
            count = plan.synthetic_count(cls, variant.ratio)
            pool = classic[classic["class"] == cls]
            if len(pool) < count:
                raise ValueError(
                    f"variant {variant.name}: needs {count} classic {cls} images for fold {fold}, "
                    f"the folder holds {len(pool)}."
                )
            chosen = pool.sort_values("index").head(count)
            parts.append(
                _rows(
                    chosen["path"],
                    cls,
                    CLASSIC,
                    TRAIN_ROLE,
                    seeds=chosen["seed"],
                    derived_from=list(chosen["source_path"]),
                )
            )
    return pd.concat(parts, ignore_index=True)[VARIANT_COLUMNS]


def _kept(pool, verdicts, variant, fold, cls, adjective, count, plan) -> tuple[pd.DataFrame, list[str]]:
    """The images of ``pool`` (the generated ones, in order) that the filter kept, with the judge
    that kept each; fewer than ``count`` stops the merge, naming the key that fixes it."""
    if verdicts is None:
        raise ValueError(f"variant {variant.name} fold {fold}: the filter's verdicts are missing (rule filter_shards)")
    verdict = verdicts.set_index("path")
    unjudged = [path for path in pool["path"] if path not in verdict.index]
    if unjudged:
        raise ValueError(
            f"variant {variant.name} fold {fold}: {unjudged[0]} has no verdict: the filter table is older than the "
            "shards; rerun rule filter_shards"
        )
    kept = pool[[str(verdict.at[path, "kept"]) == "True" for path in pool["path"]]]
    if len(kept) < count:
        raise ValueError(
            f"variant {variant.name} fold {fold}: the filter kept {len(kept)} of {len(pool)} generated "
            f"{cls}/{adjective} images, fewer than the {count} planned; raise generation.filter.oversample "
            f"(now {plan.oversample:g}) "
            "or loosen generation.filter.judge_confidence / near_copy_bits (results/report/filter.csv says why)"
        )
    return kept, [str(verdict.at[path, "judge"]) for path in kept["path"]]


def fold_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of a (variant, fold) manifest."""
    training = rows[rows["role"] == TRAIN_ROLE]
    validation = rows[rows["role"] == VALIDATION_ROLE]
    return training.reset_index(drop=True), validation.reset_index(drop=True)


def effective_expansion_ratio(n_added: int, n_original_train: int) -> float:
    """Extra images of a class per original of that class that the fold's classifier trains on.

    The configured ratio counts against ``Plan.train_counts`` (the training split less one fold,
    the larger share); a fold's classifier trains on the originals of the other folds, which
    differ by fold (rounding, near-duplicate groups kept whole), so its effective ratio can differ
    from the nominal one. NaN without originals.
    """
    if n_added < 0 or n_original_train < 0:
        raise ValueError(f"counts must be >= 0, got {n_added} added and {n_original_train} originals")
    return n_added / n_original_train if n_original_train else math.nan


def expansion_table(variant_tables: Mapping[tuple[str, int], pd.DataFrame | str | Path]) -> pd.DataFrame:
    """Per (variant, fold, class): originals trained on, extra rows added and the effective ratio.

    ``variant_tables``: (variant, fold) -> its dataset-variant CSV (``merge_fold``'s rows: path,
    class, source, role, ...) or that table. Originals are rows of source ``original`` and role
    train (the fold's validation originals do not train); added rows are the training rows of any
    other source (synthetic images or classic copies). Columns: variant, fold, class,
    n_original_train, n_synthetic, n_classic, n_added, effective_ratio.
    """
    rows = []
    for (variant, fold), table in variant_tables.items():
        frame = pd.read_csv(table) if isinstance(table, (str, Path)) else table
        missing = {"class", "source", "role"} - set(frame.columns)
        if missing:
            raise ValueError(f"variant {variant} fold {fold}: the table lacks columns {sorted(missing)}")
        training = frame[frame["role"] == TRAIN_ROLE]
        for cls in sorted(frame["class"].unique()):
            sources = training.loc[training["class"] == cls, "source"]
            n_original = int((sources == ORIGINAL_SOURCE).sum())
            n_added = int((sources != ORIGINAL_SOURCE).sum())
            rows.append(
                {
                    "variant": variant,
                    "fold": int(fold),
                    "class": cls,
                    "n_original_train": n_original,
                    "n_synthetic": int(sources.isin(SYNTHETIC_SOURCES).sum()),
                    "n_classic": int((sources == CLASSIC).sum()),
                    "n_added": n_added,
                    "effective_ratio": effective_expansion_ratio(n_added, n_original),
                }
            )
    columns = ["variant", "fold", "class", "n_original_train", "n_synthetic", "n_classic", "n_added"]
    return pd.DataFrame(rows, columns=[*columns, "effective_ratio"])
