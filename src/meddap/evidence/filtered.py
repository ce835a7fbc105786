"""What the filter of the filtered variants kept and dropped (``generation.filter``): per stream,
arm and class, the images generated, kept, and dropped for each reason
(``meddap.settings.stages.FilterSettings.reason``), from the verdict tables of rule filter_shards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from meddap.runtime.markdown import table as markdown_table
from meddap.settings.stages import NEAR_COPY, WRONG_CLASS

FILTER_COLUMNS = ["stream", "arm", "class", "generated", "kept", "dropped_wrong_class", "dropped_near_copy"]


def kept_images(rows: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """The rows (``read_shards``'s) of the images a filter kept (``verdicts``: its table), in order;
    an image the table does not judge is not kept."""
    kept = set(verdicts.loc[verdicts["kept"].astype(str) == "True", "path"])
    return rows[rows["path"].isin(kept)].reset_index(drop=True)


def mode_images(shard_dirs: list[str | Path], verdicts: str | Path | None = None) -> pd.DataFrame:
    """One generation mode's images in an arm: its shards' rows (``read_shards``), and for a filtered
    mode (``verdicts``: the arm's filter table) only the images its filter kept."""
    from meddap.diffusion.generate import read_shards

    rows = read_shards(list(shard_dirs))
    if verdicts:
        rows = kept_images(rows, pd.read_csv(verdicts, keep_default_na=False))
    return rows


def filter_summary(tables: list[str | Path]) -> pd.DataFrame:
    """One row per (stream, arm, class) of the verdict tables (``results/filter/<stream>/<arm>.csv``:
    the stream and arm are the folder and file names the workflow gives them)."""
    rows = []
    for path in map(Path, tables):
        verdicts = pd.read_csv(path, keep_default_na=False)
        for cls, group in verdicts.groupby("class", sort=True):
            reasons = group["reason"]
            rows.append(
                {
                    "stream": path.parent.name,
                    "arm": path.stem,
                    "class": cls,
                    "generated": len(group),
                    "kept": int((reasons == "").sum()),
                    "dropped_wrong_class": int((reasons == WRONG_CLASS).sum()),
                    "dropped_near_copy": int((reasons == NEAR_COPY).sum()),
                }
            )
    return pd.DataFrame(rows, columns=FILTER_COLUMNS)


def filter_lines(summary: pd.DataFrame) -> list[str]:
    """The Markdown section on the filter (none without filtered variants): per stream and class,
    summed over the arms."""
    if summary.empty:
        return []
    totals = summary.groupby(["stream", "class"], sort=True)[FILTER_COLUMNS[3:]].sum().reset_index()
    lines = [
        "",
        "## Filtered synthetic sets",
        "",
        f"Images of the filtered variants' shards, summed over the {summary['arm'].nunique()} arms: kept, or dropped "
        f"because the arm's judge (trained on the arm's training originals only) assigned them to another class with "
        f"the stated confidence ({WRONG_CLASS}), or because they are within the stated perceptual-hash distance of a "
        f"training original ({NEAR_COPY}). A filtered variant takes the first kept images. `filter.csv` has each arm.",
        "",
    ]
    lines += markdown_table(
        ["stream", "class", "generated", "kept", "dropped: other class", "dropped: near-copy"],
        [[r["stream"], r["class"], *(int(r[c]) for c in FILTER_COLUMNS[3:])] for _, r in totals.iterrows()],
    )
    return lines
