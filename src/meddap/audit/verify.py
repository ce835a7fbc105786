"""``meddap verify``: is every intermediate of a results folder still there and still what was recorded?

Snakemake reruns a job when its inputs are newer than its outputs or its params changed, but it does
not regenerate an intermediate that was deleted while its consumers are complete, and it cannot see
a file changed inside an output folder. This check walks what the workflow recorded:

* ``results/splits/manifest.csv``: present, and every image it lists still there;
* every ``lineage.json`` under the results folder (split, base model, LoRAs, shards, classic folders,
  classifiers): the folder's own ``files`` (e.g. a shard's PNGs) present with the recorded sha256;
  the ``images`` it was made from unchanged; each input present and with the digest recorded in
  ``input_digests`` (a folder's digest covers its files' relative paths and sha256s; the split's
  dataset digest covers its class images);
* the tables that list files (dataset variants, classifiers' ``rows.csv``, test sets): every file
  there.

Each finding names the missing or changed (or stale) intermediate and the command that regenerates
it and everything downstream (``snakemake --cores all --forcerun <target>``). Paths are as the
workflow recorded them: relative to its working directory, the results folder's parent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from meddap.provenance.lineage import DEFAULT_CACHE, LINEAGE_FILE, DigestCache, path_digest

MANIFEST = "splits/manifest.csv"
# Folders of the results tree that no lineage or manifest of an intermediate lives in.
NOT_INTERMEDIATE = {"logs", "benchmarks", "report"}
# Recorded path -> what rule output regenerates it (the first group of the first match).
TARGETS = [
    re.compile(r"^(results/(?:synthetic|guided)/[^/]+/[^/]+/[^/]+/shard\d{3})(/.*)?$"),
    re.compile(r"^(results/lora/[^/]+/[^/]+)(/.*)?$"),
    re.compile(r"^(results/classic/fold\d+)(/.*)?$"),
    re.compile(r"^(results/classifiers/[^/]+/[^/]+/fold\d+/rep\d+)(/.*)?$"),
    re.compile(r"^(results/evaluation/[^/]+/[^/]+/fold\d+/rep\d+)(/.*)?$"),
    re.compile(r"^(results/base_model)(/.*)?$"),
    re.compile(r"^(results/datasets/[^/]+/fold\d+\.csv)$"),
    re.compile(r"^(results/test_sets/.+\.csv)$"),
    re.compile(r"^(results/quality/[^/]+)(/.*)?$"),
    re.compile(r"^(resources/phantom/[^/]+)(/.*)?$"),
]
SPLIT_TARGET = "results/splits/manifest.csv"


class VerifyError(ValueError):
    """Not a results folder that can be checked (a user error; ``meddap verify`` exits 2)."""


def regenerate_target(path: str) -> str | None:
    """The rule output (file or folder) whose forced rerun regenerates ``path``; None for a file the
    workflow does not make (your dataset, your base model)."""
    path = Path(path).as_posix()
    if path.startswith("results/splits/"):
        return SPLIT_TARGET
    for pattern in TARGETS:
        found = pattern.match(path)
        if found:
            return found.group(1)
    return None


@dataclass(frozen=True)
class Finding:
    path: str  # the missing, changed or stale intermediate (or file)
    problem: str
    target: str | None  # what to force-rerun; None: restore the file, it is not made by the workflow
    # Stale only because what it was made from changed (images, an input artifact): a rerun of that
    # input (or, for your images, the params that digest them) makes Snakemake rerun it too.
    upstream: bool = False

    @property
    def command(self) -> str:
        if self.target is None:
            return "restore it (the workflow does not make it), then snakemake --cores all"
        return f"snakemake --cores all --forcerun {self.target}"

    def line(self) -> str:
        return f"{self.path}: {self.problem}; regenerate: {self.command}"


class _Check:
    """One pass over a results folder; paths resolve against its parent (the workflow's directory)."""

    def __init__(self, results: Path, cache: DigestCache | None):
        self.results = results
        self.base = results.resolve().parent
        self.cache = cache
        self.findings: dict[str, Finding] = {}
        self.digests: dict[str, str | None] = {}

    def local(self, path: str) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.base / path

    def add(self, path: str, problem: str, target: str | None, upstream: bool = False) -> None:
        self.findings.setdefault(path, Finding(path, problem, target, upstream))

    def digest(self, path: str) -> str | None:
        if path not in self.digests:
            self.digests[path] = path_digest(self.local(path), self.cache)
        return self.digests[path]

    def missing(self, path: str, listed_in: str) -> None:
        """A listed file that is not there: name its whole rule output when that is gone too."""
        target = regenerate_target(path)
        if target is None:
            # An original image (dataset, unseen set): the split or the index that lists it is stale.
            owner = regenerate_target(listed_in) or SPLIT_TARGET
            self.add(path, f"missing (renamed or deleted?), listed in {listed_in}", owner)
        elif not self.local(target).exists():
            self.add(target, "missing", target)
        else:
            self.add(path, f"missing, listed in {listed_in}", target)

    # ------------------------------------------------------------ the checks
    def manifest(self) -> None:
        manifest = self.results / MANIFEST
        name = self.relative_name(manifest)
        if not manifest.is_file():
            self.add(name, "missing", SPLIT_TARGET)
            return
        self.listed(manifest, ["path"])

    def relative_name(self, path: Path) -> str:
        return f"results/{path.relative_to(self.results).as_posix()}"

    def listed(self, table: Path, columns: list[str]) -> None:
        import pandas as pd

        frame = pd.read_csv(table)
        name = self.relative_name(table)
        for column in columns:
            if column not in frame:
                continue
            for path in dict.fromkeys(str(p) for p in frame[column].dropna() if str(p)):
                if not self.local(path).exists():
                    self.missing(path, name)

    def record(self, record_path: Path) -> None:
        folder = record_path.parent
        name = self.relative_name(folder)
        record = json.loads(record_path.read_text())
        kind = record.get("kind")
        artifact = SPLIT_TARGET if kind == "split" else name
        target = regenerate_target(artifact) or artifact
        for entry in record.get("files", []):
            path = folder / entry["path"]
            shown = f"{name}/{entry['path']}"
            if not path.is_file():
                self.add(shown, f"missing (recorded in {name}/{LINEAGE_FILE})", target)
            elif path_digest(path, self.cache) != entry["sha256"]:
                self.add(shown, f"changed since it was written (sha256 differs from {name}/{LINEAGE_FILE})", target)
        gone, changed = [], []
        for entry in record.get("images", []):
            path = self.local(entry["path"])
            if not path.is_file():
                gone.append(entry["path"])
            elif path_digest(path, self.cache) != entry["sha256"]:
                changed.append(entry["path"])
        if gone or changed:
            parts = [
                f"{len(gone)} missing (e.g. {gone[0]})" if gone else "",
                f"{len(changed)} changed (e.g. {changed[0]})" if changed else "",
            ]
            self.add(
                artifact,
                f"made from images of which {', '.join(p for p in parts if p)} since",
                target,
                upstream=True,
            )
        inputs = record.get("inputs", {})
        for role, recorded in record.get("input_digests", {}).items():
            if recorded is None or role not in inputs:
                continue
            path = inputs[role]
            if not self.local(path).exists():
                self.add(path, f"missing ({role} of {artifact})", regenerate_target(path))
                continue
            if kind == "split" and role == "dataset":
                from meddap.data.dataset import dataset_digest

                now = dataset_digest(self.local(path), record.get("classes"), record.get("exclude", []), self.cache)
            else:
                now = self.digest(path)
            if now != recorded:
                self.add(
                    artifact, f"its {role} {path} has changed since it was made (digest differs)", target, upstream=True
                )


def _records(results: Path) -> list[Path]:
    return sorted(
        path for path in results.rglob(LINEAGE_FILE) if path.relative_to(results).parts[0] not in NOT_INTERMEDIATE
    )


def verify_results(results: str | Path = "results", cache: DigestCache | None = None) -> list[Finding]:
    """Every missing, changed or stale intermediate of ``results`` (empty when consistent), sorted by path.

    ``cache``: file digests by path, size and mtime_ns (default: the workflow's, beside the results)."""
    results = Path(results)
    if not results.is_dir():
        raise VerifyError(f"{results} is not a folder: give the workflow's results folder")
    records = _records(results)
    tables = [
        *sorted(results.glob("datasets/*/fold*.csv")),
        *sorted(results.glob("classifiers/*/*/fold*/rows.csv")),
        *sorted(results.glob("test_sets/**/*.csv")),
    ]
    if not records and not tables and not (results / MANIFEST).is_file():
        raise VerifyError(f"{results} holds no meddap results (no manifest, lineage records or dataset tables)")
    if cache is None:
        cache = DigestCache(results.resolve().parent / DEFAULT_CACHE)
    check = _Check(results, cache)
    check.manifest()
    for record in records:
        check.record(record)
    for table in tables:
        check.listed(table, ["path", "derived_from"])
    cache.save()
    return sorted(check.findings.values(), key=lambda finding: finding.path)


def main(results: str | Path, out=None) -> int:
    """``meddap verify``: one line per finding; 0 consistent, 1 findings, 2 not a results folder."""
    import sys

    out = out or sys.stdout
    try:
        findings = verify_results(results)
    except VerifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding.line(), file=out)
    if findings:
        print(f"{len(findings)} finding(s): stale or missing intermediates in {results}", file=sys.stderr)
        return 1
    print(f"{results}: every recorded intermediate is present and unchanged", file=out)
    return 0


def add_parser(subparsers) -> None:
    """Register ``meddap verify [results]`` on the command line's subcommands (meddap.cli)."""
    parser = subparsers.add_parser(
        "verify", help="name every intermediate that is missing or changed, with the command that regenerates it"
    )
    parser.add_argument("results", nargs="?", default="results", help="the workflow's results folder")
    parser.set_defaults(func=lambda args: main(args.results))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def report_findings(results: str | Path, read: list[str]) -> list[str]:
    """The provenance paragraph of the report (rule ``report``): the findings, one line each.

    Raises VerifyError naming them when a finding concerns a file the report reads (``read``: its
    inputs, files or folders): its numbers would come from a missing or changed intermediate."""
    findings = verify_results(results)
    if not findings:
        return ["**Provenance** (meddap verify): every recorded intermediate is present and unchanged."]
    read = [Path(path).as_posix() for path in read]
    touched = [f for f in findings if any(_within(f.path, path) or _within(path, f.path) for path in read)]
    if touched:
        raise VerifyError(
            f"{len(touched)} intermediate(s) the report reads are missing or changed: "
            + "; ".join(finding.line() for finding in touched)
        )
    return [
        f"**Provenance** (meddap verify): {len(findings)} recorded intermediate(s) are missing or changed "
        "(the report's own inputs are not among them):",
        *(f"- {finding.line()}" for finding in findings),
    ]
