"""Nothing stale survives: the split follows the dataset's files, lineage records carry digests and
`meddap verify` names every missing or changed intermediate with the command that regenerates it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import digest_tree, planned_jobs, snakemake
from PIL import Image

from meddap.audit.verify import Finding, main, regenerate_target, verify_results
from meddap.data.dataset import AS_SIMULATED, dataset_digest, dataset_state
from meddap.diffusion.generate import read_shards
from meddap.provenance.lineage import DigestCache, path_digest, write_lineage


def png(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------ a hand-made results folder
@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """A miniature run: dataset, split (+ lineage), base model, one LoRA, one shard, one dataset
    variant table, written with the library's own lineage records; paths relative to tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDDAP_DIGEST_CACHE", raising=False)
    originals = [
        png(Path("data") / cls / f"{cls}{i}.png", 10 * i + (100 if cls == "b" else 0)) for cls in "ab" for i in range(3)
    ]
    manifest = pd.DataFrame(
        {"path": originals, "class": [Path(p).parent.name for p in originals], "split": "train", "fold": [0, 1, 0] * 2}
    )
    Path("results/splits").mkdir(parents=True)
    manifest.to_csv("results/splits/manifest.csv", index=False)
    write_lineage(
        "results/splits",
        "split",
        images=originals,
        inputs={"dataset": "data"},
        digests={"dataset": dataset_digest("data", ["a", "b"], [])},
        classes=["a", "b"],
        exclude=[],
    )
    Path("results/base_model").mkdir()
    Path("results/base_model/unet.safetensors").write_bytes(b"base weights")
    write_lineage("results/base_model", "base_model")
    lora = Path("results/lora/fold0/a")
    lora.mkdir(parents=True)
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"lora weights")
    write_lineage(lora, "lora", images=originals[:2], inputs={"base_model": "results/base_model"})
    shards = [Path(f"results/synthetic/fold0/a/bright/shard00{i}") for i in range(2)]
    for shard in shards:
        names = [Path(png(shard / f"a_bright_{i}.png", 200 + i)).name for i in range(2)]
        pd.DataFrame({"file": names, "class": "a", "adjective": "bright", "shard": 0, "index": [0, 1]}).to_csv(
            shard / "metadata.csv", index=False
        )
        write_lineage(shard, "shard", inputs={"lora": str(lora), "base_model": "results/base_model"})
    synthetic = read_shards(shards)
    rows = pd.DataFrame(
        {
            "path": [*originals, *synthetic["path"]],
            "derived_from": [""] * len(originals) + [str(Path(p).parent) for p in synthetic["path"]],
        }
    )
    Path("results/datasets/bright_x1").mkdir(parents=True)
    rows.to_csv("results/datasets/bright_x1/fold0.csv", index=False)
    return Path("results")


def lines(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.path: finding for finding in findings}


def test_a_consistent_folder_has_no_findings_and_exits_0(results, capsys):
    assert verify_results(results) == []
    assert main(results) == 0
    assert "present and unchanged" in capsys.readouterr().out


def test_records_carry_input_digests_and_a_shards_pngs(results):
    record = json.loads(Path("results/synthetic/fold0/a/bright/shard000/lineage.json").read_text())
    assert record["input_digests"] == {
        "lora": path_digest("results/lora/fold0/a"),
        "base_model": path_digest("results/base_model"),
    }
    assert {entry["path"] for entry in record["files"]} == {"a_bright_0.png", "a_bright_1.png", "metadata.csv"}
    assert record["inputs"]["lora"] == "results/lora/fold0/a"  # role -> path, as the lineage audit reads it


def test_every_deleted_intermediate_is_named_with_its_regenerate_command(results, capsys):
    shutil.rmtree("results/lora/fold0/a")
    shutil.rmtree("results/synthetic/fold0/a/bright/shard001")
    Path("results/synthetic/fold0/a/bright/shard000/a_bright_1.png").unlink()
    Path("results/splits/manifest.csv").unlink()
    found = lines(verify_results(results))
    expected = {
        "results/splits/manifest.csv": "results/splits/manifest.csv",
        "results/lora/fold0/a": "results/lora/fold0/a",
        "results/synthetic/fold0/a/bright/shard001": "results/synthetic/fold0/a/bright/shard001",
        "results/synthetic/fold0/a/bright/shard000/a_bright_1.png": "results/synthetic/fold0/a/bright/shard000",
    }
    assert set(found) == set(expected)
    for path, target in expected.items():
        assert found[path].command == f"snakemake --cores all --forcerun {target}"
    assert main(results) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(expected)  # one line per finding
    assert all("snakemake --cores all --forcerun results/" in line for line in out)


def test_a_changed_png_and_a_changed_input_make_their_consumers_stale(results):
    Path("results/synthetic/fold0/a/bright/shard000/a_bright_0.png").write_bytes(b"not the image")
    (Path("results/lora/fold0/a") / "pytorch_lora_weights.safetensors").write_bytes(b"retrained elsewhere")
    found = lines(verify_results(results))
    assert "changed since it was written" in found["results/synthetic/fold0/a/bright/shard000/a_bright_0.png"].problem
    assert "changed since it was written" in found["results/lora/fold0/a/pytorch_lora_weights.safetensors"].problem
    # Both shards were generated with the LoRA as it was: each is stale, named with its own command.
    for shard in ("shard000", "shard001"):
        finding = found[f"results/synthetic/fold0/a/bright/{shard}"]
        assert "its lora results/lora/fold0/a has changed" in finding.problem
        assert finding.target == f"results/synthetic/fold0/a/bright/{shard}"


def test_a_renamed_or_added_dataset_image_makes_the_split_stale(results):
    os.rename("data/a/a1.png", "data/a/renamed.png")
    found = lines(verify_results(results))
    assert found["data/a/a1.png"].target == "results/splits/manifest.csv"  # listed in the manifest, gone
    assert "1 missing" in found["results/splits/manifest.csv"].problem
    assert "results/lora/fold0/a" in found  # trained on it
    os.rename("data/a/renamed.png", "data/a/a1.png")
    assert verify_results(results) == []
    png(Path("data/b/new.png"), 7)
    found = lines(verify_results(results))
    assert (
        set(found) == {"results/splits/manifest.csv"}
        and "its dataset data has changed" in found["results/splits/manifest.csv"].problem
    )


def test_verify_user_errors_exit_2(tmp_path, capsys):
    assert main(tmp_path / "absent") == 2
    (tmp_path / "empty").mkdir()
    assert main(tmp_path / "empty") == 2
    assert "no meddap results" in capsys.readouterr().err


def test_verify_is_a_subcommand(results):
    Path("results/splits/manifest.csv").unlink()
    command = [sys.executable, "-m", "meddap.cli", "verify", "results"]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "results/splits/manifest.csv: missing; regenerate: snakemake --cores all --forcerun results/splits/manifest.csv"
    ]


def test_regenerate_targets():
    assert (
        regenerate_target("results/synthetic/fold1/normal/none/shard002/x.png")
        == "results/synthetic/fold1/normal/none/shard002"
    )
    assert (
        regenerate_target("results/guided/fold0/benign/bright/shard000/metadata.csv")
        == "results/guided/fold0/benign/bright/shard000"
    )
    assert regenerate_target("results/splits/counts.csv") == "results/splits/manifest.csv"
    assert (
        regenerate_target("results/classifiers/original/resnet18/fold0/rep1/model.safetensors")
        == "results/classifiers/original/resnet18/fold0/rep1"
    )
    assert regenerate_target("/data/busi/benign/a.png") is None


def test_merge_reading_a_shard_fails_naming_a_missing_png(results):
    Path("results/synthetic/fold0/a/bright/shard000/a_bright_1.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"a_bright_1\.png is listed in .*--forcerun results/synthetic/fold0/a/bright/shard000"
    ):
        read_shards([Path("results/synthetic/fold0/a/bright/shard000")])


def test_the_report_states_findings_and_fails_on_one_it_reads(results):
    from meddap.audit.verify import VerifyError, report_findings

    read = ["results/splits/manifest.csv", "results/synthetic/fold0/a/bright/shard000", "results/lora/fold0/a"]
    assert "every recorded intermediate is present and unchanged" in report_findings(results, read)[0]
    Path("results/base_model/unet.safetensors").write_bytes(b"edited")  # not read by the report, but its LoRA is
    with pytest.raises(VerifyError, match=r"results/lora/fold0/a: its base_model results/base_model has changed"):
        report_findings(results, read)
    paragraph = report_findings(results, read[:1])
    assert "results/base_model/unet.safetensors: changed" in "\n".join(paragraph)


# ------------------------------------------------------------------ the split's view of the dataset
def test_dataset_state_follows_names_and_contents_and_caches(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for cls in "ab":
        for i in range(2):
            png(root / cls / f"{i}.png", i + (50 if cls == "b" else 0))
    (root / "a" / "0_mask.png").write_bytes(b"excluded")
    cache = DigestCache(tmp_path / "cache.json")
    state = dataset_state(root, ["a", "b"], ["*_mask*"], cache)
    cache.save()
    assert dataset_state(root, ["a", "b"], ["*_mask*"], DigestCache(tmp_path / "cache.json")) == state
    (root / "a" / "0_mask.png").write_bytes(b"excluded, edited")  # not read by the split
    assert dataset_state(root, ["a", "b"], ["*_mask*"]) == state
    # A warm cache reads no file: a stat per image.
    import meddap.provenance.lineage as lineage

    monkeypatch.setattr(lineage, "_sha256", lambda path: pytest.fail(f"hashed {path} again"))
    assert dataset_state(root, ["a", "b"], ["*_mask*"], DigestCache(tmp_path / "cache.json")) == state
    monkeypatch.undo()
    os.rename(root / "a" / "1.png", root / "a" / "2.png")
    renamed = dataset_state(root, ["a", "b"], ["*_mask*"])
    assert renamed != state
    png(root / "a" / "2.png", 99)  # same name, other content
    assert dataset_state(root, ["a", "b"], ["*_mask*"]) not in (state, renamed)


def test_a_simulated_dataset_is_as_simulated_until_edited(tmp_path):
    root = tmp_path / "phantom"
    assert dataset_state(root, ["a"], [], simulated=True) == AS_SIMULATED  # before its rule ran
    png(root / "a" / "0.png", 1)
    (root / "ground_truth.csv").write_text("path\n")
    write_lineage(root, "phantom")
    assert dataset_state(root, ["a"], [], simulated=True) == AS_SIMULATED
    png(root / "a" / "0.png", 2)
    assert dataset_state(root, ["a"], [], simulated=True) == dataset_digest(root, ["a"], [])


# ------------------------------------------------------------------ on a tiny run
@pytest.fixture(scope="module")
def settled(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run (Snakemake's metadata and the files' times kept), brought up to date."""
    copy = tmp_path_factory.mktemp("stale") / "run"
    shutil.copytree(
        tiny_run,
        copy,
        copy_function=shutil.copy2,
        symlinks=True,
        ignore=shutil.ignore_patterns("locks", "incomplete", "log", "conda", "singularity"),
    )
    snakemake(copy, "--cores", "2")
    return copy


@pytest.fixture
def run(settled, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(settled, copy, copy_function=shutil.copy2, symlinks=True)
    return copy


def verify(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meddap.cli", "verify", "results"],
        capture_output=True,
        text=True,
        cwd=run,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


# Everything the split reaches (the base model too: its corpus is decontaminated against the manifest);
# not the simulations nor the unseen sets' indexes.
AFTER_SPLIT = {
    "split",
    "index_test_set",
    "pretrain_base",
    "augment_classic",
    "train_lora",
    "check_generation_inputs",
    "generate_shard",
    "merge_dataset",
    "train_classifier",
    "evaluate",
    "index_synthetic",
    "synthetic_quality",
    "realism",
    "audit",
    "report",
    "all",
}


@pytest.mark.slow
def test_an_unchanged_run_has_nothing_to_do_and_verifies(run):
    dry = snakemake(run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    done = verify(run)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "Provenance** (meddap verify): every recorded intermediate is present"
        in (run / "results/report/summary.md").read_text()
    )


@pytest.mark.slow
@pytest.mark.parametrize("change", ["content", "rename"])
def test_a_changed_or_renamed_training_image_reruns_the_split_and_downstream(run, change):
    manifest = pd.read_csv(run / "results/splits/manifest.csv")
    image = run / manifest.loc[manifest["split"] == "train", "path"].iloc[0]
    if change == "content":
        png(image, 123)
    else:
        image.rename(image.with_name("renamed " + image.name))
    dry = snakemake(run, "-n")
    output = dry.stdout + dry.stderr
    assert re.search(r"params have changed since last execution:\n\s+split\n", output), output[-3000:]
    assert set(planned_jobs(output)) == AFTER_SPLIT
    # Every test set is reindexed: the internal split's, and the unseen sets', which are checked
    # against the new manifest for near-copies of its images.
    assert planned_jobs(output)["split"] == 1 and planned_jobs(output)["index_test_set"] == 3
    assert verify(run).returncode == 1  # the manifest and what trained on the image are stale


@pytest.mark.slow
def test_deleted_intermediates_are_named_by_verify_with_their_commands(run):
    shutil.rmtree(run / "results/lora/fold1/normal")
    shutil.rmtree(run / "results/synthetic/fold0/malignant/none/shard000")
    png_path = sorted((run / "results/synthetic/fold1/benign/bright/shard000").glob("*.png"))[0]
    png_path.unlink()
    (run / "results/splits/manifest.csv").unlink()
    done = verify(run)
    assert done.returncode == 1, done.stderr
    found = {line.split(": ", 1)[0]: line for line in done.stdout.splitlines()}
    expected = {
        "results/splits/manifest.csv": "results/splits/manifest.csv",
        "results/lora/fold1/normal": "results/lora/fold1/normal",
        "results/synthetic/fold0/malignant/none/shard000": "results/synthetic/fold0/malignant/none/shard000",
        str(png_path.relative_to(run)): "results/synthetic/fold1/benign/bright/shard000",
    }
    for path, target in expected.items():
        assert path in found, done.stdout
        assert found[path].endswith(f"regenerate: snakemake --cores all --forcerun {target}")
    # Snakemake alone would not see them (consumers complete): the next run stops before any job,
    # naming each with its command, and the command it gives for all of them plans their jobs.
    for args in (("-n",), ("--cores", "2")):
        stopped = snakemake(run, *args, check=False)
        output = stopped.stdout + stopped.stderr
        assert stopped.returncode != 0 and "missing or changed intermediate(s)" in output, output[-3000:]
        for path, target in expected.items():
            assert f"{path}: " in output and f"--forcerun {target}" in output
        assert "rule generate_shard:" not in output and "localrule split:" not in output  # no job ran
    command = re.search(r"regenerate them all: snakemake --cores all (--forcerun .*)$", output, re.M).group(1)
    forced = snakemake(run, "-n", *command.split())
    assert re.search(
        r"^\s*output: results/synthetic/fold1/benign/bright/shard000$", forced.stdout + forced.stderr, re.M
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["lora byte", "classifier truncated", "shard folder gone"])
def test_a_changed_or_missing_intermediate_stops_the_next_run(run, damage):
    """One byte of a LoRA changed (same size), a classifier truncated, or a shard folder gone (as after
    a kill -9 during its forced job): `snakemake --cores 2` stops before any job, naming it; its
    shard is never regenerated with the changed LoRA."""
    lora = "results/lora/fold0/benign"
    if damage == "lora byte":
        weights = run / lora / "pytorch_lora_weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        named, target = str(weights.relative_to(run)), lora
    elif damage == "classifier truncated":
        model = sorted((run / "results/classifiers").glob("*/*/fold0/rep0/*.safetensors"))[0]
        os.truncate(model, model.stat().st_size // 2)
        named, target = str(model.relative_to(run)), str(model.parent.relative_to(run))
    else:
        shard = run / "results/synthetic/fold0/benign/bright/shard000"
        shutil.rmtree(shard)
        named = target = str(shard.relative_to(run))
    before = digest_tree(run / "results")
    result = snakemake(run, "--cores", "2", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{named}: " in output and f"--forcerun {target}" in output, output[-3000:]
    assert digest_tree(run / "results") == before  # nothing ran, nothing was deleted


def test_the_generation_preflight_compares_the_recorded_digests(tmp_path):
    """A forced shard job (even with the default target's check bypassed) never uses a LoRA whose
    bytes or base model differ from its lineage record."""
    from meddap.provenance.preflight import GenerationInputError, check_recorded_digests

    base, lora = tmp_path / "base_model", tmp_path / "lora"
    base.mkdir()
    (base / "unet.safetensors").write_bytes(b"base weights")
    write_lineage(base, "base_model")
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"lora weights")
    write_lineage(lora, "lora", inputs={"base_model": str(base)})
    cache = DigestCache(tmp_path / "digests.json")
    assert check_recorded_digests(base, lora, True, cache) == 2
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"lora weightz")  # one byte, same size
    with pytest.raises(GenerationInputError, match="pytorch_lora_weights.safetensors changed"):
        check_recorded_digests(base, lora, True, cache)
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"lora weights")
    (base / "unet.safetensors").write_bytes(b"base weightz")
    with pytest.raises(GenerationInputError, match="base model file .*unet.safetensors changed"):
        check_recorded_digests(base, lora, True, cache)
    # Your own base model (no record of its files): the LoRA's record of it still tells.
    with pytest.raises(GenerationInputError, match="is not the one LoRA .* was trained on"):
        check_recorded_digests(base, lora, False, cache)


@pytest.mark.slow
def test_a_changed_unseen_image_reindexes_its_set_and_reruns_the_evaluations(run):
    image = sorted((run / "resources/phantom/linear-L7/benign").glob("*.png"))[0]
    png(image, 77)
    dry = snakemake(run, "-n")
    output = dry.stdout + dry.stderr
    assert re.search(r"params have changed since last execution:\n\s+index_test_set\n", output), output[-3000:]
    jobs = planned_jobs(output)
    # Its index, the evaluations on it and the base model (its corpus is decontaminated against the unseen
    # sets, and so what follows); not the split.
    assert jobs["index_test_set"] == 1 and jobs["evaluate"] == 8 and jobs["pretrain_base"] == 1 and "split" not in jobs
