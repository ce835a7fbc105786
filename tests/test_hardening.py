"""Bad input, interruption, reproducibility, read-only inputs, no pickles."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, REPO, TINY, digest_tree, snakemake, snakemake_command
from PIL import Image

from meddap.data.phantom import DEFAULT_DEVICES, simulate_case
from meddap.provenance.lineage import path_digest


def write_dataset(root: Path, per_class: int = 8, size: int = 64) -> Path:
    for cls in ("benign", "malignant", "normal"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            case = simulate_case(cls, DEFAULT_DEVICES["linear-L12"], seed=100 * len(cls) + i, image_size=size)
            Image.fromarray(case.image).save(root / cls / f"{cls} ({i}).png")
    return root


def user_config(tmp_path: Path, dataset: Path, **extra) -> Path:
    config = {
        "phantom": {"enabled": False},
        "dataset": {"root": str(dataset), "classes": ["benign", "malignant", "normal"]},
        "unseen": [],
        # No simulated corpus without the phantom: the tiny base model pretrains on the data (asked for).
        "base_model": {"pretrain": {"corpus": "dataset"}},
    }
    config.update(extra)
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def corrupt(kind: str, root: Path) -> str:
    """Apply one kind of bad (or unusual but valid) input; return the file it concerns."""
    target = root / "benign" / "benign (0).png"
    if kind == "truncated png":
        target.write_bytes(target.read_bytes()[:100])
    elif kind == "random bytes":
        target = root / "benign" / "noise.png"
        target.write_bytes(np.random.default_rng(0).bytes(2048))
    elif kind == "same image in two classes":
        target = root / "normal" / "copy of benign.png"
        target.write_bytes((root / "benign" / "benign (1).png").read_bytes())
    elif kind == "16-bit grey":
        Image.fromarray(np.asarray(Image.open(target), dtype=np.uint16) * 257).save(target)
    elif kind == "rgba":
        Image.open(target).convert("RGBA").save(target)
    elif kind == "palette":
        Image.open(target).convert("P").save(target)
    elif kind == "cmyk jpeg":
        target.unlink()
        target = root / "benign" / "benign (0).jpg"
        Image.fromarray(simulate_case("benign", DEFAULT_DEVICES["linear-L12"], seed=1, image_size=64).image).convert(
            "CMYK"
        ).save(target)
    elif kind == "small image":
        Image.open(target).resize((20, 20)).save(target)
    elif kind == "mask and non-image files":
        Image.open(target).save(root / "benign" / "benign (0)_mask.png")
        (root / "benign" / "README.txt").write_text("notes")
        (root / "benign" / "Thumbs.db").write_bytes(b"\0\1")
    return target.name


@pytest.mark.parametrize(
    ("kind", "valid"),
    [
        ("truncated png", False),
        ("random bytes", False),
        ("same image in two classes", False),
        ("16-bit grey", True),
        ("rgba", True),
        ("palette", True),
        ("cmyk jpeg", True),
        ("small image", True),
        ("mask and non-image files", True),
    ],
)
def test_dataset_inputs(tmp_path, kind, valid):
    dataset = write_dataset(tmp_path / "data")
    name = corrupt(kind, dataset)
    config = user_config(tmp_path, dataset)
    result = snakemake(
        tmp_path, "--cores", "1", "results/splits/manifest.csv", configs=(DEFAULT, TINY, config), check=False
    )
    output = result.stdout + result.stderr
    manifest = tmp_path / "results" / "splits" / "manifest.csv"
    if valid:
        assert result.returncode == 0, output[-3000:]
        paths = pd.read_csv(manifest)["path"]
        assert not paths.map(lambda p: Path(p).name).str.contains("_mask|README|Thumbs").any()
        assert len(paths) == 24
        if kind == "small image":
            assert "smaller than the model resolution" in (tmp_path / "results" / "logs" / "split.log").read_text()
    else:
        assert result.returncode != 0
        assert name in output, output[-3000:]
        assert not manifest.exists()  # nothing that looks complete


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing class folder", "normal"),
        ("empty class folder", "holds no images"),
        ("base model not a diffusers folder", "model_index.json"),
        ("unseen set with a foreign class", "cyst"),
    ],
)
def test_parse_time_errors_name_the_path(tmp_path, setup, expected):
    dataset = write_dataset(tmp_path / "data", per_class=4)
    extra = {}
    if setup == "missing class folder":
        for f in (dataset / "normal").iterdir():
            f.unlink()
        (dataset / "normal").rmdir()
    elif setup == "empty class folder":
        for f in (dataset / "normal").iterdir():
            f.unlink()
    elif setup == "base model not a diffusers folder":
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "weights.ckpt").write_bytes(b"x")
        extra["base_model"] = {"path": str(tmp_path / "model"), "pretrain": {"enabled": False}}
    elif setup == "unseen set with a foreign class":
        write_dataset(tmp_path / "other", per_class=1)
        (tmp_path / "other" / "cyst").mkdir()
        Image.new("L", (8, 8)).save(tmp_path / "other" / "cyst" / "c.png")
        extra["unseen"] = [{"name": "other", "root": str(tmp_path / "other")}]
    config = user_config(tmp_path, dataset, **extra)
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, TINY, config), check=False)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Traceback (most recent call last)" not in result.stdout + result.stderr


# A slice of the DAG that holds every kind of long job (diffusion, generation, classic augmentation,
# classifier training): the interrupted run builds only this, the uninterrupted one is ``tiny_run``.
KILL_TARGETS = (
    "results/datasets/bright_x1/fold0.csv",
    "results/datasets/classic_x1/fold0.csv",
    "results/classifiers/bright_x1/squeezenet1_1/fold0/rep0",
)


def run_and_kill_during(workdir: Path, rule: str, timeout: float = 600) -> bool:
    """Start the workflow; SIGKILL its whole process group once a job of ``rule`` is running."""
    log_dir = workdir / "results" / "logs" / rule

    def logs() -> set[tuple[Path, int]]:
        # A job's log is (re)written when it starts: a rerun job's log is the same path, a new mtime.
        return {(p, p.stat().st_mtime_ns) for p in log_dir.rglob("*.log")} if log_dir.exists() else set()

    seen = logs()
    snakemake(workdir, "--unlock")  # a killed Snakemake leaves its lock behind (documented recovery)
    process = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2", "--rerun-incomplete", *KILL_TARGETS),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if logs() - seen:
            # Inside the job now: its log is opened by its start (meddap.runtime.rulescript), and a warm
            # job (meddap.runtime.warm) of the tiny config may be done within a second.
            time.sleep(0.3)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.1)
    process.wait()
    return False


def assert_nothing_looks_complete_but_is_not(results: Path) -> None:
    """Every output folder a killed job may have left is either absent or whole. A job killed while
    writing leaves its hidden temporary (``.<name>.<random>.partial``, meddap.runtime.atomic), which
    never looks complete and which the job's next attempt removes."""
    for lora in (results / "lora").glob("[!.]*/[!.]*"):
        assert (lora / "pytorch_lora_weights.safetensors").is_file(), lora
    for shard in (results / "synthetic").glob("*/*/*/shard[0-9][0-9][0-9]"):
        metadata = pd.read_csv(shard / "metadata.csv")
        assert all((shard / name).is_file() for name in metadata["file"]), shard
    for model in (results / "classifiers").glob("*/*/fold*/rep*"):
        assert (model / "model.json").is_file() and (model / "model.safetensors").is_file(), model


@pytest.mark.slow
def test_kill_9_then_rerun_incomplete_equals_an_uninterrupted_run(tiny_run, tmp_path):
    workdir = tmp_path / "interrupted"
    workdir.mkdir()
    for rule in ("train_lora", "generate_shard", "train_classifier"):
        assert run_and_kill_during(workdir, rule), f"the run ended before {rule} started"
        assert_nothing_looks_complete_but_is_not(workdir / "results")
    unlock = snakemake(workdir, "--unlock", check=False)
    assert unlock.returncode == 0
    snakemake(workdir, "--cores", "2", "--rerun-incomplete", *KILL_TARGETS)
    # Reproducibility as well as recovery: identical split, manifests, PNG bytes and classifier weights.
    for relative in (
        "results/splits/manifest.csv",
        *KILL_TARGETS[:2],
        f"{KILL_TARGETS[2]}/model.safetensors",
        "results/lora/fold0/benign/pytorch_lora_weights.safetensors",
    ):
        assert (workdir / relative).read_bytes() == (tiny_run / relative).read_bytes(), relative
    synthetic = digest_tree(tiny_run / "results" / "synthetic")
    bright = {name: digest for name, digest in synthetic.items() if name.startswith("fold0/") and "/bright/" in name}
    resumed = digest_tree(workdir / "results" / "synthetic")
    # Images, metadata and provenance byte for byte. A shard's lineage.json records its LoRA folder's
    # digest, and a LoRA killed after a checkpoint says so in its lora_info.json ("resumed_from_step",
    # whose weights are identical, checked above): there the lineage names the folder it really read.
    assert bright and set(resumed) == set(bright)
    assert {n: d for n, d in resumed.items() if not n.endswith("lineage.json")} == {
        n: d for n, d in bright.items() if not n.endswith("lineage.json")
    }
    lora_info = json.loads((workdir / "results/lora/fold0/benign/lora_info.json").read_text())
    for name in (n for n in resumed if n.endswith("lineage.json")):
        record = json.loads((workdir / "results/synthetic" / name).read_text())
        reference = json.loads((tiny_run / "results/synthetic" / name).read_text())
        lora = workdir / record["inputs"]["lora"]
        assert record["input_digests"]["lora"] == path_digest(lora)
        if json.loads((lora / "lora_info.json").read_text())["resumed_from_step"] == 0:
            assert record == reference, name
        else:
            del record["input_digests"]["lora"], reference["input_digests"]["lora"]
            assert record == reference, name
    assert lora_info["resumed_from_step"] in (0, 2)  # checkpoint_every: 2 of its 4 steps
    assert not list((workdir / "results").rglob("*.partial"))


@pytest.mark.slow
def test_seed_versions_and_settings_are_written_next_to_models_and_shards(tiny_run):
    results = tiny_run / "results"
    records = {
        "lora": results / "lora" / "fold0" / "benign" / "lora_info.json",
        "shard": results / "synthetic" / "fold1" / "normal" / "none" / "shard000" / "provenance.json",
        "classifier": results / "classifiers" / "original" / "squeezenet1_1" / "fold0" / "rep0" / "model.json",
        "base_model": results / "base_model" / "meddap_pretrain.json",
    }
    for kind, path in records.items():
        record = json.loads(path.read_text())
        assert isinstance(record["seed"], int), path
        assert record["versions"]["torch"] and record["versions"]["diffusers"], path
        # The settings of the stage that made it, not a copy of the whole config.
        assert "config" not in record, path
        settings = {
            "lora": lambda r: r["lora"]["rank"],
            "shard": lambda r: r["steps"],
            "classifier": lambda r: r["classifier"]["epochs"],
            "base_model": lambda r: r["settings"]["unet_steps"],
        }[kind](record)
        assert settings == {"lora": 2, "shard": 2, "classifier": 2, "base_model": 4}[kind], path
    assert json.loads(records["shard"].read_text())["arm"] == "fold1"


def test_no_pickle_loading_in_the_package():
    """Checkpoints are read with safetensors or torch.load(weights_only=True) only."""
    for path in (REPO / "src" / "meddap").rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "pickle.load" not in text, path
