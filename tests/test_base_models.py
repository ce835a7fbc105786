"""Base models from a single-file checkpoint or a pinned hub id become one local diffusers folder:
converted or downloaded once, by one rule, and read offline by every other job."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DEFAULT, TINY, snakemake
from safetensors.torch import save_file

from meddap.diffusion.base_models import (
    BASE_MODEL_DIR,
    FOLDER,
    HUB,
    HUB_FILES,
    PRETRAIN,
    SINGLE_FILE,
    SOURCE_FILE,
    BaseModelError,
    base_model_source,
    clip_vit_l14_tokenizer,
    convert_single_file,
    download_base_model,
)
from meddap.diffusion.sd15 import build_sd15_pipeline, write_single_file


@pytest.fixture(scope="module")
def sd15_checkpoint(tmp_path_factory):
    """A random-weight SD v1.5-architecture model (width / 10) as a diffusers folder and as one
    original-layout .safetensors file (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*)."""
    root = tmp_path_factory.mktemp("single-file")
    folder = build_sd15_pipeline(root / "sd15", width_divisor=10, seed=3)
    return folder, write_single_file(folder, root / "my fine-tune (v1.5).safetensors")


def pretrain_off(**base) -> dict:
    return {"path": None, "revision": None, "tokenizer": None, "pretrain": {"enabled": False}, **base}


def test_clip_tokenizer_is_built_offline_with_clips_own_ids():
    tokenizer = clip_vit_l14_tokenizer()
    assert len(tokenizer) == 49408
    # Reference ids of openai/clip-vit-large-patch14 (SD v1.x's tokenizer).
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("Hello, world!").input_ids == [49406, 3306, 267, 1002, 256, 49407]
    assert tokenizer.model_max_length == 77


def test_single_file_converts_exactly_and_generates(sd15_checkpoint, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from meddap.diffusion.base_models import load_pipeline

    folder, checkpoint = sd15_checkpoint
    with safe_open(str(checkpoint), framework="pt") as handle:
        keys = set(handle.keys())
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in keys  # diffusers' SD v1 marker
    assert (
        "first_stage_model.decoder.up.0.upsample.conv.weight" not in keys
        and "first_stage_model.decoder.up.3.upsample.conv.weight" in keys
    )
    assert not any(key.startswith(("unet.", "vae.", "text_encoder.")) for key in keys)

    source = convert_single_file(checkpoint, tmp_path / "base_model")
    assert source["kind"] == SINGLE_FILE and source["unet_block_out_channels"] == [32, 64, 128, 128]
    assert json.loads((tmp_path / "base_model" / SOURCE_FILE).read_text())["sha256"] == source["sha256"]
    lineage = json.loads((tmp_path / "base_model" / "lineage.json").read_text())
    assert lineage["kind"] == "base_model" and lineage["inputs"]["checkpoint"] == str(checkpoint)

    # Every weight of every component comes back bit for bit.
    original = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    converted = load_pipeline(tmp_path / "base_model", torch.device("cpu"))
    for name in ("unet", "vae", "text_encoder"):
        expected, found = getattr(original, name).state_dict(), getattr(converted, name).state_dict()
        assert set(expected) == set(found), name
        assert all(torch.equal(expected[key], found[key]) for key in expected), name
    assert converted.scheduler.config.prediction_type == "epsilon"
    assert converted.tokenizer("a photo of a cat").input_ids[:3] == [49406, 320, 1125]

    image = converted(
        "a bright ultrasound photo of benign tumor in breast",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and float(image.std()) > 0


def test_a_user_tokenizer_folder_is_used(sd15_checkpoint, tmp_path):
    folder, checkpoint = sd15_checkpoint
    convert_single_file(checkpoint, tmp_path / "base_model", tokenizer_folder=folder / "tokenizer")
    from transformers import CLIPTokenizer

    mine = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    converted = CLIPTokenizer.from_pretrained(str(tmp_path / "base_model" / "tokenizer"))
    assert converted.get_vocab() == mine.get_vocab() and len(converted) != 49408


def write_keys(path: Path, keys: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in keys.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "keys, expected",
    [
        (
            {
                "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (4, 2),
                "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            },
            "SDXL",
        ),
        (
            {
                "cond_stage_model.model.token_embedding.weight": (4, 2),
                "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
            },
            "SD 2.x",
        ),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 8)}, "no Stable Diffusion UNet"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3)}, "9 input channels"),
        (
            {
                "model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
                "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3),
            },
            "no CLIP text encoder",
        ),
    ],
)
def test_other_single_files_are_refused_at_parse_time(tmp_path, keys, expected):
    checkpoint = write_keys(tmp_path / "model.safetensors", keys)
    with pytest.raises(BaseModelError, match=expected) as error:
        base_model_source(pretrain_off(path=str(checkpoint)), allow_hub=False)
    assert "base_model.path" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "base, allow_hub, expected",
    [
        (dict(path="model.ckpt"), False, "pickled checkpoint"),
        (dict(path="missing.safetensors"), False, "does not exist"),
        (dict(path="stable-diffusion-v1-5/stable-diffusion-v1-5"), False, "needs allow_hub: true"),
        (dict(path="stable-diffusion-v1-5/stable-diffusion-v1-5"), True, "base_model.revision is not set"),
        (dict(path="folder-that-exists", revision="main"), False, "not a hub id"),
        (dict(path="model.safetensors", tokenizer="tok"), False, "does not exist"),
        (dict(path="folder-that-exists", tokenizer="tok"), False, "only read for a single-file"),
    ],
)
def test_bad_base_model_settings_are_one_line_errors(tmp_path, monkeypatch, base, allow_hub, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder-that-exists").mkdir()
    (tmp_path / "model.ckpt").write_bytes(b"not unpickled")
    with pytest.raises(BaseModelError, match=expected) as error:
        base_model_source(pretrain_off(**base), allow_hub=allow_hub)
    assert "\n" not in str(error.value)


def test_kinds_and_the_folder_every_job_reads(sd15_checkpoint):
    folder, checkpoint = sd15_checkpoint
    assert base_model_source(pretrain_off(path=str(folder)), False).folder == str(folder)
    assert base_model_source(pretrain_off(path=str(folder)), False).kind == FOLDER
    single = base_model_source(pretrain_off(path=str(checkpoint)), False)
    assert (single.kind, single.folder, single.built_here) == (SINGLE_FILE, BASE_MODEL_DIR, True)
    hub = base_model_source(pretrain_off(path="stable-diffusion-v1-5/stable-diffusion-v1-5", revision="abc123"), True)
    assert (hub.kind, hub.folder, hub.revision) == (HUB, BASE_MODEL_DIR, "abc123")
    pretrained = base_model_source({**pretrain_off(), "pretrain": {"enabled": True}}, False)
    assert (pretrained.kind, pretrained.folder) == (PRETRAIN, BASE_MODEL_DIR)


def test_hub_download_pins_the_commit_and_takes_only_safetensors(sd15_checkpoint, tmp_path, monkeypatch):
    """The hub is stubbed (no network here): the download asks for the pinned commit and the
    pipeline's configs and safetensors weights only, and records where the folder came from."""
    import huggingface_hub

    folder, _ = sd15_checkpoint
    calls = []

    class Info:
        sha = "0123456789abcdef0123456789abcdef01234567"

    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        calls.append((repo_id, revision, list(allow_patterns)))
        shutil.copytree(folder, local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, revision: Info())
    source = download_base_model("someone/sd15", "v1.0", tmp_path / "base_model")
    assert calls == [("someone/sd15", Info.sha, HUB_FILES)]
    assert not any(pattern.endswith((".bin", ".ckpt")) or "fp16" in pattern for pattern in HUB_FILES)
    assert source == {"kind": HUB, "repo_id": "someone/sd15", "revision": "v1.0", "commit": Info.sha}
    assert json.loads((tmp_path / "base_model" / SOURCE_FILE).read_text())["commit"] == Info.sha

    # A revision without safetensors weights is refused, and nothing is left at the target.
    def pickles_only(repo_id, revision, local_dir, allow_patterns):
        shutil.copytree(folder, local_dir)
        (Path(local_dir) / "unet" / "diffusion_pytorch_model.safetensors").unlink()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", pickles_only)
    with pytest.raises(BaseModelError, match="no safetensors weights"):
        download_base_model("someone/sd15", "old", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_workflow_converts_once_and_every_job_reads_the_folder(sd15_checkpoint, tmp_path):
    """A single file in the config: rule convert_base_model writes results/base_model, LoRA
    training reads it, and a rerun converts nothing."""
    _, checkpoint = sd15_checkpoint
    config = tmp_path / "single_file.yaml"
    config.write_text(yaml.safe_dump({"base_model": {"path": str(checkpoint), "pretrain": {"enabled": False}}}))
    configs = (DEFAULT, TINY, config)
    dry = snakemake(tmp_path, "-n", "--forceall", configs=configs).stdout
    assert "convert_base_model" in dry and "pretrain_base" not in dry
    snakemake(tmp_path, "--cores", "2", BASE_MODEL_DIR, configs=configs)
    assert json.loads((tmp_path / BASE_MODEL_DIR / SOURCE_FILE).read_text())["checkpoint"] == str(checkpoint)
    assert (tmp_path / "results" / "logs" / "convert_base_model.log").is_file()
    assert "Nothing to be done" in snakemake(tmp_path, "-n", BASE_MODEL_DIR, configs=configs).stdout
    lora = snakemake(tmp_path, "-n", "results/lora/fold0/benign", configs=configs).stdout
    assert "convert_base_model" not in lora and BASE_MODEL_DIR in lora


def test_workflow_with_a_hub_id_downloads_once_and_lora_reads_the_folder(tmp_path):
    config = tmp_path / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "allow_hub": True,
                "base_model": {
                    "path": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                    "revision": "main",
                    "pretrain": {"enabled": False},
                },
            }
        )
    )
    dry = snakemake(tmp_path, "-n", "results/lora/fold0/benign", configs=(DEFAULT, TINY, config)).stdout
    assert dry.count("rule download_base_model:") == 1 and "pretrain_base" not in dry
    lora_job = dry[dry.index("rule train_lora:") :]
    assert f"input: {BASE_MODEL_DIR}," in lora_job.split("\n")[1]
