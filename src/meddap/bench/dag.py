"""Per-rule wall times of a workflow run, from the benchmark files its rules write
(``results/benchmarks/<rule>[/...].tsv``, Snakemake's ``benchmark:`` table: ``s`` is the job's
wall-clock seconds).

    python -m meddap.bench.dag RESULTS/benchmarks OUT_DIR    # OUT_DIR/rules.csv and rules.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["rule", "jobs", "total_s", "median_s", "max_s"]


def summarize_benchmarks(root: str | Path) -> pd.DataFrame:
    """One row per rule: its jobs (benchmark files), total, median and largest wall seconds; the
    rule is the first path part under ``root`` (``split.tsv`` -> split). Rules in order of total
    seconds, largest first. A file with several rows (``benchmark: repeat(...)``) counts its mean."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of benchmark files (results/benchmarks)")
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if "s" not in table.columns or table.empty:
            raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column or no row)")
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        rows.append({"rule": rule, "s": float(table["s"].mean())})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.DataFrame(rows).groupby("rule")["s"].agg(jobs="count", total_s="sum", median_s="median", max_s="max")
    return frame.reset_index().sort_values(["total_s", "rule"], ascending=[False, True], ignore_index=True)[COLUMNS]


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| rule | jobs | total s | median s | max s |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {row.rule} | {row.jobs} | {row.total_s:.1f} | {row.median_s:.1f} | {row.max_s:.1f} |"
        for row in frame.itertuples()
    ]
    lines.append(f"| total | {int(frame['jobs'].sum())} | {frame['total_s'].sum():.1f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m meddap.bench.dag BENCHMARKS_DIR OUT_DIR", file=sys.stderr)
        return 2
    frame = summarize_benchmarks(args[0])
    out = Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "rules.csv", index=False)
    (out / "rules.md").write_text(markdown(frame))
    print(markdown(frame), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
