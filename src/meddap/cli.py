"""Command line: ``meddap predict`` (classify a folder), ``meddap phantom`` (simulate images) and
``meddap audit`` (the lineage audit of a results folder)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddap.images import IMAGE_EXTENSIONS


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def predict(args: argparse.Namespace) -> int:
    from meddap.classifier import load_classifier, predict_paths
    from meddap.evaluate import classification_metrics, predictions_frame

    folder = Path(args.images)
    if not folder.is_dir():
        print(f"error: --images {folder} is not a folder", file=sys.stderr)
        return 2
    model, meta = load_classifier(args.model)
    paths = [p for p in _list_images(folder) if not any(p.match(pattern) for pattern in args.exclude)]
    if not paths:
        print(f"error: no images ({'/'.join(IMAGE_EXTENSIONS)}) under {folder}", file=sys.stderr)
        return 2
    # Labelled when every image sits in a subfolder named after one of the model's classes.
    labels = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else None for p in paths]
    labelled = all(label in meta["classes"] for label in labels)
    probabilities = predict_paths(model, meta, [str(p) for p in paths], batch_size=args.batch_size)
    frame = predictions_frame([str(p) for p in paths], labels if labelled else [""] * len(paths), probabilities, meta["classes"])
    if not labelled:
        frame = frame.drop(columns="class")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"wrote {len(frame)} predictions to {out}")
    if labelled:
        metrics = classification_metrics(labels, probabilities, meta["classes"])
        print(json.dumps(metrics, indent=2))
    return 0


def phantom(args: argparse.Namespace) -> int:
    from meddap.phantom import CLASSES, device_from_config, simulate_device_dataset

    device = device_from_config(args.device, json.loads(args.params) if args.params else None)
    counts = {cls: args.per_class for cls in CLASSES}
    simulate_device_dataset(Path(args.out), device, counts, args.seed, args.image_size)
    print(f"wrote {sum(counts.values())} images of device {device.name} to {args.out}")
    return 0


def audit(args: argparse.Namespace) -> int:
    import os

    from meddap.audit import AcceptedLeaks, AuditError, run_audit

    findings_out = Path(args.findings).resolve() if args.findings else None
    results = Path(args.results).resolve()
    # The workflow records paths relative to its working directory: the results folder's parent.
    os.chdir(results.parent)
    results = Path(results.name)
    manifest = results / "splits" / "manifest.csv"
    if not manifest.is_file():
        print(f"error: {manifest} is missing: --results must be a meddap results folder (after the split rule)", file=sys.stderr)
        return 2
    classifiers = sorted(p for p in (results / "classifiers").glob("*/*/fold*") if p.is_dir())
    if not classifiers:
        print(f"error: no trained classifiers under {results / 'classifiers'}", file=sys.stderr)
        return 2
    unseen = {p.stem: p for p in sorted((results / "test_sets").glob("*.csv")) if p.stem != "test"}
    try:
        findings, summary, text = run_audit(
            classifiers, manifest, unseen, args.near_duplicate_distance, AcceptedLeaks.from_settings(args.lora_scope, args.pretrain_corpus)
        )
    except AuditError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary[["variant", "arch", "fold", "influencing_images", "findings", "accepted", "status"]].to_string(index=False))
    print(text)
    if findings_out:
        findings.to_csv(findings_out, index=False)
    return 1 if (~findings["accepted"].astype(bool)).any() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meddap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify a folder of images with a trained classifier")
    p.add_argument("--model", required=True, help="classifier folder (results/classifiers/<variant>/<arch>/fold<k>)")
    p.add_argument("--images", required=True, help="folder of images; class subfolders give metrics")
    p.add_argument("--out", required=True, help="CSV of predictions and class probabilities")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--exclude", nargs="*", default=["*_mask*"], help="file-name patterns to skip")
    p.set_defaults(func=predict)
    s = sub.add_parser("phantom", help="simulate breast-ultrasound phantom images (class subfolders)")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="linear-L12", help="linear-L12, linear-L7, convex-C5 or a new name")
    s.add_argument("--params", help="JSON of acquisition parameters overriding the device's")
    s.add_argument("--per-class", type=int, default=20)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=42)
    s.set_defaults(func=phantom)
    a = sub.add_parser("audit", help="lineage audit: did an image that shaped a classifier's training reach its evaluation?")
    a.add_argument("--results", default="results", help="the workflow's results folder")
    a.add_argument("--near-duplicate-distance", type=int, default=10, help="as dataset.near_duplicate_distance")
    a.add_argument("--lora-scope", choices=["fold", "split"], default="fold",
                   help="split: accept (and report) the validation leaks that lora.scope: split causes")
    a.add_argument("--pretrain-corpus", choices=["phantom", "dataset"], default="phantom",
                   help="dataset: accept (and report) the validation leaks of a base model pretrained on the dataset")
    a.add_argument("--findings", help="write every finding to this CSV")
    a.set_defaults(func=audit)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
