"""Dataset variants as manifests: original training rows + the variant's synthetic rows.

A variant manifest never holds a test row, and every synthetic row has fold -1 ("train only"),
so synthetic images can reach neither validation nor test. Classic-augmentation rows (source
"classic") carry the fold whose *training* they belong to: they were made from that fold's
training originals and train only that fold's model.
"""

from __future__ import annotations

import pandas as pd

from meddap.plan import CLASSIC, Plan, Variant

VARIANT_COLUMNS = ["path", "class", "source", "fold", "adjective", "prompt", "seed"]
TRAIN_ONLY_FOLD = -1


def merge_variant(
    manifest: pd.DataFrame, synthetic: pd.DataFrame, plan: Plan, variant: Variant, classic: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Rows of ``variant``: all original training rows (with folds) + the first N synthetic per
    adjective, or for a classic variant the first N augmented images per (fold, class)."""
    original = manifest[manifest["split"] == "train"]
    rows = pd.DataFrame(
        {
            "path": original["path"].values,
            "class": original["class"].values,
            "source": "original",
            "fold": original["fold"].astype(int).values,
            "adjective": "",
            "prompt": "",
            "seed": pd.array([pd.NA] * len(original), dtype="Int64"),
        }
    )
    parts = [rows]
    for cls in plan.classes:
        for adjective, count in plan.counts_per_adjective(variant, cls).items():
            pool = synthetic[(synthetic["class"] == cls) & (synthetic["adjective"] == adjective)]
            pool = pool.sort_values(["shard", "index"], kind="stable")
            if len(pool) < count:
                raise ValueError(
                    f"variant {variant.name}: needs {count} synthetic {cls}/{adjective} images but the "
                    f"shards hold {len(pool)}. Regenerate the shards (the training counts changed?)."
                )
            chosen = pool.head(count)
            parts.append(
                pd.DataFrame(
                    {
                        "path": chosen["path"].values,
                        "class": cls,
                        "source": "synthetic",
                        "fold": TRAIN_ONLY_FOLD,
                        "adjective": adjective,
                        "prompt": chosen["prompt"].values,
                        "seed": pd.array(chosen["seed"].values, dtype="Int64"),
                    }
                )
            )
    if variant.kind == CLASSIC:
        if classic is None:
            raise ValueError(f"variant {variant.name}: the classic-augmentation folders are missing")
        for (fold, cls), pool in classic.groupby(["fold", "class"], sort=True):
            count = plan.synthetic_count(cls, variant.ratio)
            if len(pool) < count:
                raise ValueError(f"variant {variant.name}: needs {count} classic {cls} images for fold {fold}, the folder holds {len(pool)}.")
            chosen = pool.sort_values("index").head(count)
            parts.append(
                pd.DataFrame(
                    {
                        "path": chosen["path"].values,
                        "class": cls,
                        "source": CLASSIC,
                        "fold": int(fold),
                        "adjective": "",
                        "prompt": "",
                        "seed": pd.array(chosen["seed"].values, dtype="Int64"),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)[VARIANT_COLUMNS]


def fold_rows(variant_rows: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of ``fold``: validation is that fold's originals only;
    training is the other folds' originals, every synthetic row and this fold's classic rows."""
    is_original = variant_rows["source"] == "original"
    in_fold = variant_rows["fold"] == fold
    validation = variant_rows[is_original & in_fold]
    other_folds_classic = (variant_rows["source"] == CLASSIC) & ~in_fold
    training = variant_rows[~(is_original & in_fold) & ~other_folds_classic]
    return training.reset_index(drop=True), validation.reset_index(drop=True)
