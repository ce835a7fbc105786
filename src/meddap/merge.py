"""Dataset variants as manifests: original training rows + the variant's synthetic rows.

A variant manifest never holds a test row, and every synthetic row has fold -1 ("train only"),
so synthetic images can reach neither validation nor test.
"""

from __future__ import annotations

import pandas as pd

from meddap.plan import Plan, Variant

VARIANT_COLUMNS = ["path", "class", "source", "fold", "adjective", "prompt", "seed"]
TRAIN_ONLY_FOLD = -1


def merge_variant(manifest: pd.DataFrame, synthetic: pd.DataFrame, plan: Plan, variant: Variant) -> pd.DataFrame:
    """Rows of ``variant``: all original training rows (with folds) + the first N synthetic per adjective."""
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
    return pd.concat(parts, ignore_index=True)[VARIANT_COLUMNS]


def fold_rows(variant_rows: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of ``fold``: validation is that fold's originals only."""
    is_original = variant_rows["source"] == "original"
    validation = variant_rows[is_original & (variant_rows["fold"] == fold)]
    training = variant_rows[~(is_original & (variant_rows["fold"] == fold))]
    return training.reset_index(drop=True), validation.reset_index(drop=True)
