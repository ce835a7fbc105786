"""User errors end in one line that names the file (or flag) and what to do: ``meddap predict`` and
``meddap phantom`` (exit code 2, no traceback), damaged classifier and LoRA safetensors files in the
workflow's jobs, and images that are too large to decode or EXIF-rotated."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEFAULT, TINY, snakemake
from PIL import Image, ImageOps

from meddap.cli import main

CLASSES = ["benign", "malignant", "normal"]
ARCH = "squeezenet1_1"  # the smallest torchvision classifier: building one takes a second


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """An untrained classifier folder as the workflow writes it (model.safetensors + model.json)."""
    from safetensors.torch import save_file

    from meddap.classify.classifier import IMAGENET_MEAN, IMAGENET_STD, WEIGHTS_NAME, build_classifier

    folder = tmp_path_factory.mktemp("classifier") / "results" / "classifiers" / "original" / ARCH / "fold0" / "rep0"
    folder.mkdir(parents=True)
    model = build_classifier(ARCH, len(CLASSES))
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, folder / WEIGHTS_NAME)
    meta = {"arch": ARCH, "classes": CLASSES, "input_size": 32, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def copy_classifier(source: Path, tmp_path: Path) -> Path:
    """A copy that keeps the workflow's results/classifiers/<variant>/<arch>/fold<k>/rep<r> path (for --forcerun)."""
    target = tmp_path / source.relative_to(source.parents[5])
    shutil.copytree(source, target)
    return target


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def damage_classifier(kind: str, folder: Path) -> Path:
    """Apply one kind of damage; return the file the error must name."""
    weights, meta = folder / "model.safetensors", folder / "model.json"
    if kind == "truncated weights":
        truncate(weights)
        return weights
    if kind == "class count differs from the weights":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "classes": CLASSES + ["cyst"]}))
        return meta
    if kind == "weights missing":
        weights.unlink()
        return weights
    if kind == "corrupt header":
        weights.write_bytes(struct.pack("<Q", 20) + b"{not json at all!!!}" + b"\0" * 64)
        return weights
    raise AssertionError(kind)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ------------------------------------------------------------------ 1. meddap predict
@pytest.mark.parametrize(
    "kind", ["truncated weights", "class count differs from the weights", "weights missing", "out is a folder"]
)
def test_predict_user_errors_are_one_line_with_exit_code_2(classifier_dir, tmp_path, capsys, kind):
    folder = copy_classifier(classifier_dir, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16), 100 * i, np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "predictions.csv"
    if kind == "out is a folder":
        out.mkdir()
        named, remedy = f"--out {out}", "CSV"
    else:
        named, remedy = (
            str(damage_classifier(kind, folder)),
            f"snakemake --cores all --forcerun results/classifiers/original/{ARCH}/fold0/rep0",
        )
    code = main(["predict", "--model", str(folder), "--images", str(images), "--out", str(out), "--device", "cpu"])
    assert code == 2
    line = one_error_line(capsys)
    assert named in line and remedy in line, line
    if kind == "class count differs from the weights":
        assert "4 classes" in line and "has 3" in line, line


def labelled_folder(root: Path, names: list[str], size: int = 32) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((size, size), 60 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("folders", "named"),
    [
        (["benign", "malignant", "Normal"], "['Normal'] match the classes only up to case (rename to ['normal'])"),
        (["benign", "cysts"], "['cysts'] are not classes of the model"),
    ],
)
def test_predict_refuses_class_folders_that_are_not_the_models_classes(
    classifier_dir, tmp_path, capsys, folders, named
):
    images = labelled_folder(tmp_path / "images", folders)
    out = tmp_path / "predictions.csv"
    args = ["predict", "--model", str(classifier_dir), "--images", str(images), "--out", str(out), "--device", "cpu"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert named in line and str(CLASSES) in line and "--unlabelled" in line, line
    assert not out.exists()
    # Asked for explicitly: every image classified, no class column, no metrics.
    assert main([*args, "--unlabelled"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 2 * len(folders) and "class" not in frame.columns
    capsys.readouterr()  # the progress bars
    assert main([*args, "--unlabelled", "--overwrite", "--metrics-out", str(tmp_path / "m.json")]) == 2
    assert "--metrics-out needs labelled images" in one_error_line(capsys)


def test_predict_names_images_far_below_the_models_input_size(classifier_dir, tmp_path, capsys):
    images = labelled_folder(tmp_path / "images", CLASSES)
    for side in (1, 3):
        Image.fromarray(np.zeros((side, side), np.uint8)).save(images / "benign" / f"tiny{side}.png")
    out = tmp_path / "predictions.csv"
    args = ["predict", "--model", str(classifier_dir), "--images", str(images), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 image(s) under half the model's input size (32 px)" in err
    assert f"{images / 'benign' / 'tiny1.png'} (1x1)" in err and f"{images / 'benign' / 'tiny3.png'} (3x3)" in err


# ------------------------------------------------------------------ 2. meddap phantom
def tree_bytes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


PHANTOM = ["phantom", "--per-class", "1", "--image-size", "16"]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ([], "already holds 3 images"),  # a valid call into a folder that holds images: no silent overwrite
        (["--device", "linear-l12"], "--device linear-l12"),  # a typo, not a new device
        (["--device", "../x"], "--device '../x'"),
        (["--params", "{center_frequency_mhz: 6}"], "--params is not valid JSON"),
        (["--params", "[6]"], "--params [6] is not a JSON object"),
        (["--params", '{"center_frequency_mhz": "six"}'], "--params: center_frequency_mhz"),
        (["--params", '{"field_of_view_mm": 0}'], "--params: field_of_view_mm is 0; it must be positive"),
        (["--per-class", "-1"], "--per-class -1"),
        (["--image-size", "0"], "--image-size 0"),
    ],
    ids=[
        "out holds images",
        "device typo",
        "device not a name",
        "params not json",
        "params not an object",
        "param not a number",
        "param not positive",
        "negative count",
        "zero image size",
    ],
)
def test_phantom_user_errors_leave_existing_images_untouched(tmp_path, capsys, arguments, named):
    out = tmp_path / "phantom"
    assert main([*PHANTOM, "--out", str(out), "--seed", "1"]) == 0  # a folder that already holds 3 images
    before = tree_bytes(out)
    capsys.readouterr()
    code = main([*PHANTOM, "--out", str(out), "--seed", "2", *arguments])
    assert code == 2
    line = one_error_line(capsys)
    assert named in line, line
    if not arguments:
        assert str(out) in line and "--overwrite" in line, line
    assert tree_bytes(out) == before  # byte-identical: nothing rewritten


def test_phantom_writes_into_a_missing_or_empty_folder_and_overwrites_only_when_asked(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*PHANTOM, "--out", str(empty)]) == 0
    assert main([*PHANTOM, "--out", str(tmp_path / "new" / "folder")]) == 0
    before = tree_bytes(empty)
    assert len(before) == 3
    assert main([*PHANTOM, "--out", str(empty), "--seed", "7", "--overwrite"]) == 0
    after = tree_bytes(empty)
    assert after.keys() == before.keys() and after != before  # same names, other seed: replaced


# ------------------------------------------------------------------ 3. safetensors in the workflow's jobs
@pytest.mark.parametrize(
    "kind",
    [
        "truncated weights",
        "class count differs from the weights",
        "weights missing",
        "corrupt header",
        "truncated LoRA",
    ],
)
def test_damaged_safetensors_name_the_file_and_the_rerun_command(classifier_dir, tmp_path, kind):
    """What the evaluate (and synthetic_quality) job calls, and generate_shard's LoRA loading."""
    from meddap.classify.classifier import ClassifierError
    from meddap.classify.evaluate import evaluate_classifier
    from meddap.diffusion.lora import LORA_WEIGHT_NAME, apply_lora
    from meddap.provenance.file_checks import SafetensorsFileError

    if kind == "truncated LoRA":
        import torch
        from safetensors.torch import save_file

        lora = tmp_path / "results" / "lora" / "fold0" / "benign"
        lora.mkdir(parents=True)
        save_file(
            {"unet.a.lora_A.weight": torch.zeros(2, 64), "unet.a.lora_B.weight": torch.zeros(64, 2)},
            lora / LORA_WEIGHT_NAME,
        )
        truncate(lora / LORA_WEIGHT_NAME, 0.9)
        with pytest.raises(SafetensorsFileError) as caught:
            apply_lora(None, lora)  # fails on the file, before the pipeline is touched
        named, rerun = (
            lora / LORA_WEIGHT_NAME,
            "snakemake --cores all --forcerun results/lora/fold0/benign (rule train_lora)",
        )
    else:
        folder = copy_classifier(classifier_dir, tmp_path)
        named = damage_classifier(kind, folder)
        expected = SafetensorsFileError if kind in ("truncated weights", "corrupt header") else ClassifierError
        with pytest.raises(expected) as caught:
            evaluate_classifier(folder, {}, tmp_path / "evaluation")
        rerun = (
            f"snakemake --cores all --forcerun results/classifiers/original/{ARCH}/fold0/rep0 (rule train_classifier)"
        )
        assert not (tmp_path / "evaluation").exists()
    message = str(caught.value)
    assert "\n" not in message and str(named) in message and rerun in message, message
    if isinstance(caught.value, SafetensorsFileError):
        assert caught.value.path == named


@pytest.mark.parametrize("cut", [-1, 1])  # one byte short, one byte too many
def test_check_safetensors_compares_the_size_with_the_header(tmp_path, cut):
    import torch
    from safetensors.torch import save_file

    from meddap.provenance.file_checks import SafetensorsFileError, check_safetensors

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(2, dtype=torch.int64)}, path)
    assert check_safetensors(path) == {"a": (3, 4), "b": (2,)}
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut < 0 else data + b"\0" * cut)
    with pytest.raises(SafetensorsFileError, match="truncated" if cut < 0 else "trailing bytes"):
        check_safetensors(path, "do this")


# ------------------------------------------------------------------ 4. image decoding
def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` (its pixels are never decoded): a decompression bomb
    in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "case", ["bomb over 2x the limit", "bomb between 1x and 2x", "split hashing", "parse time", "exif rotation"]
)
def test_image_decoding(tmp_path, case):
    from meddap.data.dataset import check_images
    from meddap.data.images import ImageReadError, load_rgb
    from meddap.data.near_duplicates import hash_images

    if case == "exif rotation":
        pixels = np.zeros((10, 20, 3), np.uint8)
        pixels[:, :10] = 255  # left half white
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: the viewer rotates it 90 degrees clockwise
        path = tmp_path / "phone.jpg"
        Image.fromarray(pixels).save(path, exif=exif, quality=95)
        image = np.asarray(load_rgb(path), dtype=float)
        assert image.shape == (20, 10, 3)  # upright: portrait, as a viewer shows it
        assert image[:10].mean() > 200 and image[10:].mean() < 50  # the left half is now on top
        with Image.open(path) as handle:
            assert np.array_equal(np.asarray(ImageOps.exif_transpose(handle).convert("RGB")), image.astype(np.uint8))
        return
    side = 10_000 if case == "bomb between 1x and 2x" else 14_000  # Pillow's limit: 89.5 megapixels
    if case == "parse time":
        from test_hardening import user_config, write_dataset

        dataset = write_dataset(tmp_path / "data", per_class=4, size=32)
        bomb = png_header(dataset / "benign" / "huge scan.png", side, side)
        config = user_config(tmp_path, dataset)
        result = snakemake(
            tmp_path, "--cores", "1", "results/splits/manifest.csv", configs=(DEFAULT, TINY, config), check=False
        )
        # Refused at parse time, from its header (round three): before the split job, which refused it too.
        console = [line for line in (result.stdout + result.stderr).splitlines() if "Invalid data:" in line]
        assert result.returncode != 0 and len(console) == 1, result.stderr[-3000:]
        assert str(bomb) in console[0] and "too large to decode safely" in console[0] and "Downscale" in console[0]
        assert not (tmp_path / "results").exists()
        return
    bomb = png_header(tmp_path / "huge scan.png", side, side)
    read = {
        "split hashing": lambda: hash_images([str(bomb)]),
        "bomb over 2x the limit": lambda: check_images([str(bomb)]),
    }
    with pytest.raises(ImageReadError) as caught:
        read.get(case, lambda: load_rgb(bomb))()
    message = str(caught.value)
    assert str(bomb) in message and "Downscale" in message and "\n" not in message, message


# --------------------------------------------------------------- no command writes over a user's file


def small_dataset(root: Path) -> Path:
    for cls in ("benign", "normal"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / cls / f"{cls} ({i}).png")
    return root


def test_init_never_writes_over_a_study_config_or_into_its_data(tmp_path, capsys):
    data = small_dataset(tmp_path / "my data")
    study = tmp_path / "study.yaml"
    study.write_text("# my edited study\n")
    assert main(["init", "--data", str(data), "--out", str(study)]) == 2
    assert "give --overwrite" in one_error_line(capsys) and study.read_text() == "# my edited study\n"
    image = data / "benign" / "benign (1).png"
    before = image.read_bytes()
    assert main(["init", "--data", str(data), "--out", str(image), "--overwrite"]) == 2
    line = one_error_line(capsys)
    assert f"inside --data {data}" in line and image.read_bytes() == before
    assert main(["init", "--data", str(data), "--out", str(study), "--overwrite"]) == 0
    assert "data:" in study.read_text() or "dataset:" in study.read_text()
    # The printed next command runs as shown: a path with spaces is quoted.
    spaced = tmp_path / "my study (v2).yaml"
    assert main(["init", "--data", str(data), "--out", str(spaced)]) == 0
    assert f"--configfile '{spaced}'" in capsys.readouterr().out


def test_predict_never_writes_over_its_images_or_model(classifier_dir, tmp_path, capsys):
    folder = copy_classifier(classifier_dir, tmp_path)
    images = small_dataset(tmp_path / "images")
    target = images / "normal" / "normal (0).png"
    before = target.read_bytes()
    for out in (target, folder / "model.json"):
        args = ["predict", "--model", str(folder), "--images", str(images), "--out", str(out), "--device", "cpu"]
        assert main([*args, "--overwrite"]) == 2
        assert "meddap never writes into its inputs" in one_error_line(capsys)
    assert target.read_bytes() == before
    out = tmp_path / "predictions.csv"
    out.write_text("earlier\n")
    base = ["predict", "--model", str(folder), "--images", str(images), "--device", "cpu"]
    assert main([*base, "--out", str(out)]) == 2
    assert f"--out {out} exists" in one_error_line(capsys) and out.read_text() == "earlier\n"
    assert main([*base, "--out", str(tmp_path / "new.csv"), "--metrics-out", str(tmp_path / "new.csv")]) == 2
    assert "is --out" in one_error_line(capsys)


def test_audit_never_writes_its_findings_into_the_results(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "splits").mkdir(parents=True)
    assert main(["audit", "--results", str(results), "--findings", str(results / "findings.csv")]) == 2
    assert "inside --results" in one_error_line(capsys) and not (results / "findings.csv").exists()
