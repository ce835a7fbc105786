"""A shard is never lost to a bad input: its LoRA and base model are checked (safetensors headers)
in a job before the shard job, which Snakemake would start by deleting the shard's old images."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import digest_tree, snakemake
from safetensors.numpy import save_file

from meddap.provenance.file_checks import SafetensorsFileError, check_safetensors
from meddap.provenance.preflight import GenerationInputError, check_generation_inputs


def test_check_safetensors_finds_a_truncated_file_from_its_header(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": np.zeros((4, 4), np.float32), "b": np.ones(3, np.float16)}, str(path))
    assert check_safetensors(path) == {"a": (4, 4), "b": (3,)}
    size = path.stat().st_size
    for cut in (size - 1, 20, 3, 0):
        os.truncate(path, cut)
        with pytest.raises(SafetensorsFileError, match=str(path)):
            check_safetensors(path)
    path.write_bytes(b"\x10" + b"\x00" * 7 + b"not json at all!")
    with pytest.raises(SafetensorsFileError, match="corrupt header"):
        check_safetensors(path)


def test_a_lora_for_another_base_model_is_named_with_the_command_that_retrains_it(tmp_path):
    base, lora = tmp_path / "base_model", tmp_path / "lora" / "fold0" / "benign"
    (base / "unet").mkdir(parents=True)
    lora.mkdir(parents=True)
    save_file({"down_blocks.0.attn1.to_q.weight": np.zeros((2, 2), np.float32)}, str(base / "unet" / "w.safetensors"))
    layer = "unet.down_blocks.0.attn1.to_q"
    save_file(
        {
            f"{layer}.lora.down.weight": np.zeros((1, 2), np.float32),
            f"{layer}.lora.up.weight": np.zeros((2, 1), np.float32),
        },
        str(lora / "pytorch_lora_weights.safetensors"),
    )
    assert len(check_generation_inputs(base, lora, base_built_here=True)) == 2
    save_file(
        {"unet.up_blocks.9.attn1.to_q.lora.down.weight": np.zeros((1, 2), np.float32)},
        str(lora / "pytorch_lora_weights.safetensors"),
    )
    with pytest.raises(GenerationInputError, match=f"up_blocks.9.attn1.to_q.*--forcerun {lora}"):
        check_generation_inputs(base, lora, base_built_here=True)
    os.truncate(base / "unet" / "w.safetensors", 10)
    with pytest.raises(GenerationInputError, match=f"base model file {base}.*--forcerun {base}"):
        check_generation_inputs(base, lora, base_built_here=True)
    with pytest.raises(GenerationInputError, match="your own folder"):
        check_generation_inputs(base, lora, base_built_here=False)


@pytest.mark.slow
def test_regenerating_a_shard_with_a_truncated_lora_keeps_the_shard_and_names_the_fix(tiny_run, tmp_path):
    """docs/usage.md's `make regenerate-shard` command after the shard's LoRA file was truncated:
    it fails, naming the file and the command that retrains it, and the shard is untouched."""
    run = tmp_path / "run"  # a copy (Snakemake's metadata and the files' times kept): tiny_run is shared
    shutil.copytree(
        tiny_run,
        run,
        copy_function=shutil.copy2,
        ignore=shutil.ignore_patterns("locks", "incomplete", "log", "conda", "singularity"),
    )
    shard, lora = "results/synthetic/fold0/benign/bright/shard000", "results/lora/fold0/benign"
    weights = f"{lora}/pytorch_lora_weights.safetensors"
    before = digest_tree(run / shard)
    assert any(name.endswith(".png") for name in before)
    os.truncate(run / weights, (run / weights).stat().st_size // 2)

    regenerate = snakemake(run, "--cores", "2", "--forcerun", shard, "--until", shard, check=False)
    out = regenerate.stdout + regenerate.stderr
    assert regenerate.returncode != 0, out[-3000:]
    assert weights in out and f"snakemake --cores all --forcerun {lora}" in out, out[-3000:]
    assert "rule generate_shard:" not in out, out[-3000:]  # the shard job never started
    assert digest_tree(run / shard) == before  # the good shard is byte-identical

    # The command the message gives would retrain that LoRA (dry run).
    retrain = snakemake(run, "-n", "--forcerun", lora)
    assert f"output: {lora}" in retrain.stdout + retrain.stderr
