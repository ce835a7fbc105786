"""Command line: ``meddap init`` (check a data folder and base model, write a study config),
``meddap plan`` (a config's jobs, work and device-hours before a run, see meddap.planning.cost),
``meddap predict`` (classify a folder), ``meddap phantom`` (simulate images), ``meddap audit`` (the
lineage audit of a results folder) and ``meddap verify`` (missing or changed intermediates, see
meddap.audit.verify)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meddap.audit.verify import add_parser as add_verify_parser
from meddap.data.images import IMAGE_EXTENSIONS
from meddap.planning.cost import add_parser as add_plan_parser
from meddap.runtime.outputs import check_output


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def init(args: argparse.Namespace) -> int:
    from meddap.config.study import init_study

    check_output("--out", args.out, {"--data": args.data, "--base-model": args.base_model}, args.overwrite)
    _, lines = init_study(args.data, args.base_model, args.out)
    print("\n".join(lines))
    return 0


def predict(args: argparse.Namespace) -> int:
    from meddap.classify.evaluate import classification_metrics, predictions_frame
    from meddap.classify.predict import (
        PredictError,
        ensemble_members,
        image_labels,
        load_members,
        metrics_table,
        pick_device,
        predict_ensemble,
        small_image_warnings,
    )

    folder, out = Path(args.images), Path(args.out)
    try:
        if not folder.is_dir():
            raise PredictError(f"--images {folder} is not a folder")
        if out.is_dir():
            raise PredictError(f"--out {out} is a folder; give the path of the CSV to write")
        inputs = {"--images": args.images, "--model": args.model}
        check_output("--out", out, inputs, args.overwrite)
        if args.metrics_out:
            check_output("--metrics-out", args.metrics_out, {**inputs, "--out": out}, args.overwrite)
        if args.batch_size < 1:
            raise PredictError(f"--batch-size {args.batch_size}: give a positive number")
        device = pick_device(args.device)
        members = ensemble_members(args.model)
        models, meta = load_members(members, device)
        paths = [p for p in _list_images(folder) if not any(p.match(pattern) for pattern in args.exclude)]
        if not paths:
            raise PredictError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) under {folder}")
        labels = image_labels(folder, paths, meta["classes"], args.unlabelled)
        labelled = labels is not None
        if args.metrics_out and not labelled:
            raise PredictError(
                f"--metrics-out needs labelled images: subfolders of {folder} named after the model's classes "
                f"{meta['classes']}" + (" (and no --unlabelled)" if args.unlabelled else "")
            )
        for warning in small_image_warnings(paths, meta["input_size"]):
            print(f"warning: {warning}", file=sys.stderr)
        probabilities = predict_ensemble(models, meta, [str(p) for p in paths], args.batch_size)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frame = predictions_frame([str(p) for p in paths], labels or [""] * len(paths), probabilities, meta["classes"])
    if not labelled:
        frame = frame.drop(columns="class")
    frame["ensemble_members"] = len(members)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(
        f"wrote {len(frame)} predictions to {out} ({len(members)} classifier{'s' if len(members) > 1 else ''}: "
        f"{', '.join(map(str, members))})"
    )
    if labelled:
        metrics = classification_metrics(labels, probabilities, meta["classes"])
        print(metrics_table(metrics, meta["classes"]))
        if args.metrics_out:
            Path(args.metrics_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.metrics_out).write_text(json.dumps({**metrics, "ensemble_members": len(members)}, indent=2))
            print(f"metrics written to {args.metrics_out}")
    return 0


def phantom(args: argparse.Namespace) -> int:
    import difflib
    import re

    from meddap.data.phantom import CLASSES, DEFAULT_DEVICES, device_from_config, simulate_device_dataset

    out = Path(args.out)
    # Checked before anything is written: a bad value would otherwise fail mid-run with a numpy
    # traceback, or (negative --per-class) "write" nothing and report success.
    for flag, value in (("--per-class", args.per_class), ("--image-size", args.image_size)):
        if value < 1:
            raise ValueError(f"{flag} {value}: give a positive number")
    overrides = None
    if args.params:
        example = "'{\"center_frequency_mhz\": 6}'"
        try:
            overrides = json.loads(args.params)
        except json.JSONDecodeError as error:
            raise ValueError(f"--params is not valid JSON ({error}); give an object such as {example}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--params {args.params} is not a JSON object; give one such as {example}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.device):
        raise ValueError(f"--device {args.device!r}: a device name is letters, digits, '_', '.' and '-'")
    if args.device not in DEFAULT_DEVICES and not overrides:
        # A new name without parameters is linear-L12's defaults under another name: most likely a typo.
        close = difflib.get_close_matches(args.device, DEFAULT_DEVICES, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(
            f"--device {args.device}: not a known device ({', '.join(DEFAULT_DEVICES)}); {hint}"
            "a new device needs --params with its acquisition parameters"
        )
    device = device_from_config(args.device, overrides, where="--params")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    existing = _list_images(out) if out.is_dir() else []
    # Refuse to replace images silently: the folder may be a data set, or another device's phantom.
    if existing and not args.overwrite:
        raise ValueError(
            f"--out {out} already holds {len(existing)} images; give --overwrite to replace them, or an empty folder"
        )
    counts = {cls: args.per_class for cls in CLASSES}
    simulate_device_dataset(out, device, counts, args.seed, args.image_size)
    print(f"wrote {sum(counts.values())} images of device {device.name} to {args.out}")
    return 0


def audit(args: argparse.Namespace) -> int:
    import os

    from meddap.audit.leaks import AcceptedLeaks, AuditError, run_audit
    from meddap.classify.classifier import META_NAME, ROWS_NAME
    from meddap.settings.kinds import INTERNAL

    if args.findings:
        check_output("--findings", args.findings, {"--results": args.results}, args.overwrite)
    findings_out = Path(args.findings).resolve() if args.findings else None
    results = Path(args.results).resolve()
    # The workflow records paths relative to its working directory: the results folder's parent.
    os.chdir(results.parent)
    results = Path(results.name)
    manifest = results / "splits" / "manifest.csv"
    if not manifest.is_file():
        print(
            f"error: {manifest} is missing: --results must be a meddap results folder (after the split rule)",
            file=sys.stderr,
        )
        return 2
    # A classifier folder is one with a rows.csv or model.json, at whatever depth (what it is: its model.json).
    classifiers = sorted({p.parent for name in (ROWS_NAME, META_NAME) for p in (results / "classifiers").rglob(name)})
    if not classifiers:
        print(f"error: no trained classifiers under {results / 'classifiers'}", file=sys.stderr)
        return 2
    # Every indexed test set but the internal split is an unseen set (the synthetic images lie in a subfolder).
    unseen = {p.stem: p for p in sorted((results / "test_sets").glob("*.csv")) if p.stem != INTERNAL.name}
    try:
        findings, summary, text = run_audit(
            classifiers,
            manifest,
            unseen,
            args.near_duplicate_distance,
            AcceptedLeaks.from_settings(args.lora_scope, args.pretrain_corpus),
        )
    except AuditError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        summary[
            ["variant", "arch", "fold", "replicate", "influencing_images", "findings", "accepted", "status"]
        ].to_string(index=False)
    )
    print(text)
    if findings_out:
        findings.to_csv(findings_out, index=False)
    return 1 if (~findings["accepted"].astype(bool)).any() else 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line that names the problem, exit code 2 (no usage dump)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="meddap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser(
        "init", help="check a data folder (and base model), write a complete study config from the paper's protocol"
    )
    i.add_argument("--data", required=True, help="folder with one subfolder of images per class")
    i.add_argument("--base-model", help="a diffusers SD v1.x folder (model_index.json) or one .safetensors checkpoint")
    i.add_argument("--out", default="study.yaml", help="the study config to write (default: study.yaml)")
    i.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    i.set_defaults(func=init)
    p = sub.add_parser("predict", help="classify a folder of images with a trained classifier")
    p.add_argument(
        "--model",
        required=True,
        help="a classifier folder (results/classifiers/<variant>/<arch>/fold<k>/rep<r>), or a folder above "
        "classifiers (<variant>/<arch>: every fold and replicate; <variant>/<arch>/fold<k>: the fold's "
        "replicates) for their ensemble (probabilities averaged)",
    )
    p.add_argument("--images", required=True, help="folder of images; class subfolders give metrics")
    p.add_argument("--out", required=True, help="CSV of predictions and class probabilities")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--exclude", nargs="*", default=["*_mask*"], help="file-name patterns to skip")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--metrics-out", help="write the metrics as JSON here (labelled images only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out or --metrics-out")
    p.add_argument(
        "--unlabelled",
        action="store_true",
        help="classify images in subfolders that are not the model's classes (no metrics); without it such "
        "subfolders are an error",
    )
    p.set_defaults(func=predict)
    s = sub.add_parser("phantom", help="simulate breast-ultrasound phantom images (class subfolders)")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="linear-L12", help="linear-L12, linear-L7, convex-C5 or a new name")
    s.add_argument("--params", help="JSON of acquisition parameters overriding the device's")
    s.add_argument("--per-class", type=int, default=20)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out that already holds images (those of the same names are replaced)",
    )
    s.set_defaults(func=phantom)
    a = sub.add_parser(
        "audit", help="lineage audit: did an image that shaped a classifier's training reach its evaluation?"
    )
    a.add_argument("--results", default="results", help="the workflow's results folder")
    a.add_argument("--near-duplicate-distance", type=int, default=10, help="as dataset.near_duplicate_distance")
    a.add_argument(
        "--lora-scope",
        choices=["fold", "split"],
        default="fold",
        help="split: accept (and report) the validation leaks that lora.scope: split causes",
    )
    a.add_argument(
        "--pretrain-corpus",
        choices=["phantom", "dataset"],
        default="phantom",
        help="dataset: accept (and report) the validation leaks of a base model pretrained on the dataset",
    )
    a.add_argument("--findings", help="write every finding to this CSV")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --findings")
    a.set_defaults(func=audit)
    add_verify_parser(sub)
    add_plan_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        # User errors (bad values, unreadable or unwritable files): one line, no traceback. OSError's
        # message names the file ("[Errno 13] Permission denied: 'x'").
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
