"""Hardening, round three: the data folder is checked at parse time (`snakemake -n`), from the listing
and the digests computed there. One case per kind of fault: exit code, the message names the file
or folder, nothing is written into the data and no job runs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import yaml
from conftest import DEFAULT, TINY, digest_tree, snakemake
from PIL import Image

from meddap.data.folder_checks import MIN_IMAGE_SIDE, check_image_files

CLASSES = ("benign", "malignant", "normal")


@pytest.fixture
def data(tmp_path, busi_root):
    """Eight BUSI images per class and an unseen set of four other images per class."""
    root, unseen = tmp_path / "data", tmp_path / "device-b"
    for cls in CLASSES:
        images = sorted((busi_root / cls).glob("*.png"))
        images = [p for p in images if "_mask" not in p.name]
        (root / cls).mkdir(parents=True)
        (unseen / cls).mkdir(parents=True)
        for path in images[:8]:
            shutil.copy(path, root / cls / path.name)
        for path in images[8:12]:
            shutil.copy(path, unseen / cls / path.name)
    return root, unseen


def run(tmp_path, root, unseen, **dataset):
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "phantom": {"enabled": False},
                "dataset": {"root": str(root), "classes": None, **dataset},
                "unseen": [{"name": "device-b", "root": str(unseen)}],
                "base_model": {"pretrain": {"corpus": "dataset"}},
            }
        )
    )
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, TINY, config), check=False)
    return result.returncode, result.stdout + result.stderr


def first_image(folder):
    return sorted(folder.glob("*.png"))[0]


def dangling_link(root, unseen):
    link = root / "benign" / "x.png"
    os.symlink(root / "benign" / "gone.png", link)
    return link


def zero_byte(root, unseen):
    empty = root / "malignant" / "empty.png"
    empty.write_bytes(b"")
    return empty


def text_named_png(root, unseen):
    text = root / "normal" / "notes.png"
    text.write_text("not an image\n")
    return text


def one_pixel(root, unseen):
    tiny = root / "benign" / "tiny (1).png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tiny)
    return tiny


def root_one_level_too_high(root, unseen):
    inner = root / "Dataset_BUSI_with_GT"
    inner.mkdir()
    for cls in CLASSES:
        shutil.move(root / cls, inner / cls)
    return inner


def copy_in_unseen(root, unseen):
    source = first_image(root / "benign")
    shutil.copy(source, unseen / "benign" / "renamed copy.png")
    return unseen / "benign" / "renamed copy.png"


@pytest.mark.parametrize(
    ("make_fault", "expected"),
    [
        (dangling_link, "is a link to a missing file"),
        (zero_byte, "is empty (0 bytes)"),
        (text_named_png, "not an image PIL can read"),
        (one_pixel, f"under {MIN_IMAGE_SIDE} px on a side"),
        (root_one_level_too_high, "holds the class folders: set dataset.root to it"),
        (copy_in_unseen, "byte-identical copie(s) of dataset images"),
    ],
)
def test_a_faulty_data_folder_stops_the_parse_naming_the_file(tmp_path, data, make_fault, expected):
    root, unseen = data
    named = make_fault(root, unseen)
    before = digest_tree(root), digest_tree(unseen)
    code, output = run(tmp_path, root, unseen)
    assert code != 0
    assert expected in output and str(named) in output, output[-2000:]
    assert (digest_tree(root), digest_tree(unseen)) == before
    assert not (tmp_path / "results").exists()


def test_small_images_are_named_in_a_warning_and_the_parse_goes_on(tmp_path, data):
    root, unseen = data
    small = root / "normal" / "small.png"
    Image.fromarray(np.full((12, 14), 90, np.uint8)).save(small)  # under half of the tiny config's 32 px
    code, output = run(tmp_path, root, unseen)
    assert code == 0, output[-2000:]
    assert "image(s) under half the model's resolution (32 px)" in output and str(small) in output


def test_phantom_enabled_with_your_own_root_is_refused(tmp_path, data):
    root, _ = data
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"root": str(root)}}))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, TINY, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "phantom.enabled: true simulates dataset.root" in output and "set phantom.enabled: false" in output
    assert not (tmp_path / "results").exists()


def test_image_headers_are_read_once_and_cached_with_the_digest(tmp_path):
    from meddap.provenance.lineage import DigestCache

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(image)
    cache = DigestCache(tmp_path / "digests.json")
    assert check_image_files([str(image)], 32, cache).sizes == {str(image): (30, 20)}
    cache.save()
    reread = DigestCache(tmp_path / "digests.json")
    assert next(iter(reread.entries.values()))[3] == {"image_size": [30, 20]}
    # A rewritten file (new size and mtime) is read again, not taken from the cache.
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(image)
    os.utime(image, ns=(1, 1))
    with pytest.raises(ValueError, match="under 8 px"):
        check_image_files([str(image)], 32, reread)
