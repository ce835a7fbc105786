"""How much of the class-fidelity figure is the judge's seed? (the floor of `make check-results`)

Fidelity is the share of a fold's synthetic images that the fold's `original` classifier assigns
to their intended class. The workflow judges with replicate 0; this script judges the same shards
with every replicate present, so the spread over replicates is the judge's own seed noise.

    # in a finished run of the embedded default: two more judges per fold, then the table
    snakemake --cores all --configfile config/config.yaml replicates3.yaml \\
        results/classifiers/original/resnet18/fold{0,1,2}/rep{1,2}
    python bench/judge_noise.py [RESULTS_DIR] [--arch resnet18]

(replicates3.yaml: `classifier: {replicates: 3}`.) Prints fidelity per class, replicate and fold,
and per replicate the median over the folds (what the floor reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from meddap.classify.classifier import load_classifier, predict_paths
from meddap.evidence.quality import class_fidelity


def judge_fidelity(results: Path, arch: str) -> pd.DataFrame:
    """One row per (fold, replicate, class): fidelity of the fold's synthetic images (all adjectives)."""
    rows = []
    for judge in sorted((results / "classifiers" / "original" / arch).glob("fold*/rep*")):
        fold, replicate = int(judge.parent.name.removeprefix("fold")), int(judge.name.removeprefix("rep"))
        model, meta = load_classifier(judge)
        for class_dir in sorted(p for p in (results / "synthetic" / f"fold{fold}").iterdir() if p.is_dir()):
            paths = sorted(str(p) for p in class_dir.glob("*/shard*/*.png"))
            predicted = np.asarray(meta["classes"])[predict_paths(model, meta, paths).argmax(1)]
            fidelity = class_fidelity(predicted, [class_dir.name] * len(paths))
            rows.append({"fold": fold, "replicate": replicate, "class": class_dir.name, "fidelity": fidelity})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args(argv)
    table = judge_fidelity(args.results, args.arch)
    if table.empty:
        raise SystemExit(f"no original {args.arch} classifiers under {args.results}/classifiers")
    print(table.pivot_table(index=["class", "replicate"], columns="fold", values="fidelity").round(2).to_string())
    print("\nmedian over folds, per replicate (the floor reads replicate 0's):")
    print(table.groupby(["class", "replicate"])["fidelity"].median().unstack().round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
