"""`meddap init`: check a data folder and a base model, write a complete study config from the
paper's protocol; and a study's records hold only the settings it used."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import DEFAULT, REPO, SNAKEMAKE
from snakemake.utils import validate

from meddap.cli import main
from meddap.config.resolve import provenance, resolve, used_config
from meddap.config.study import inspect_base_model
from meddap.data.dataset import list_class_images

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def fake_diffusers_folder(root: Path, sample_size: int = 64, prediction_type: str = "epsilon") -> Path:
    """The config files of an SD v1.x diffusers folder (no weights): native 64 x 8 = 512 px."""
    root.mkdir(parents=True)
    components = {name: ["diffusers", "X"] for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **components}))
    for name in components:
        (root / name).mkdir()
    (root / "unet" / "config.json").write_text(json.dumps({"sample_size": sample_size}))
    (root / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction_type}))
    return root


def study_config(path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    validate(config, str(SCHEMA))
    return config


def test_init_on_busi_writes_a_complete_config_that_resolves(tmp_path, busi_root, capsys):
    model = fake_diffusers_folder(tmp_path / "sd15")
    out = tmp_path / "study.yaml"
    assert main(["init", "--data", str(busi_root), "--base-model", str(model), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = {cls: len(paths) for cls, paths in list_class_images(busi_root, None, ["*_mask*"]).items()}
    assert f"3 classes, {sum(expected.values())} images" in printed
    assert ", ".join(f"{cls} {n}" for cls, n in expected.items()) in printed
    assert "near-duplicates" in printed and "image sizes" in printed
    assert "native resolution 512 px, prediction type epsilon" in printed
    # The protocol's 224 px is far below SD v1.x's 512: said, not refused.
    assert "warning: lora.resolution 224 is far below the base model's native 512 px" in printed
    assert printed.rstrip().endswith(f"next: snakemake --cores all --configfile {out}")

    raw = yaml.safe_load(out.read_text())
    schema = yaml.safe_load(SCHEMA.read_text())
    # Every key the study uses is stated; of the unused phantom and pretraining, only `enabled: false`.
    for section in ("dataset", "lora", "generation", "classifier", "evaluation", "resources", "prompts", "limits"):
        assert set(raw[section]) == set(schema["properties"][section]["properties"]), section
    assert raw["phantom"] == {"enabled": False}
    assert raw["base_model"]["pretrain"] == {"enabled": False}
    assert raw["dataset"]["root"] == str(busi_root) and raw["base_model"]["path"] == str(model)
    busi = yaml.safe_load((REPO / "config" / "busi.yaml").read_text())
    for section in ("lora", "generation", "classifier"):  # the paper's protocol
        assert {key: raw[section][key] for key in busi[section]} == {
            key: {**raw[section][key], **value} if isinstance(value, dict) else value
            for key, value in busi[section].items()
        }, section
    assert "# " in out.read_text()  # commented

    settings = resolve(study_config(out))
    assert settings.classes == list(expected) and settings.class_counts == expected
    assert not settings.phantom and settings.pretraining is None and settings.base_model == str(model)


def test_init_with_the_small_diffusers_folder(small_pipeline_dir):
    summary = inspect_base_model(small_pipeline_dir)
    unet = json.loads((small_pipeline_dir / "unet" / "config.json").read_text())
    vae = json.loads((small_pipeline_dir / "vae" / "config.json").read_text())
    assert summary.pipeline == "StableDiffusionPipeline"
    assert summary.native_resolution == unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    scheduler = json.loads((small_pipeline_dir / "scheduler" / "scheduler_config.json").read_text())
    assert summary.prediction_type == scheduler.get("prediction_type", "epsilon")


def test_init_refuses_a_folder_with_one_class(tmp_path, busi_root, capsys):
    data = tmp_path / "one"
    (data / "benign").mkdir(parents=True)
    for path in sorted((busi_root / "benign").glob("*.png"))[:3]:
        shutil.copy(path, data / "benign" / path.name)
    assert main(["init", "--data", str(data), "--out", str(tmp_path / "study.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least two classes" in err[0] and "['benign']" in err[0]
    assert not (tmp_path / "study.yaml").exists()


def test_init_refuses_a_folder_that_is_not_a_base_model(tmp_path, busi_root, capsys):
    (tmp_path / "notamodel").mkdir()
    code = main(
        [
            "init",
            "--data",
            str(busi_root),
            "--base-model",
            str(tmp_path / "notamodel"),
            "--out",
            str(tmp_path / "study.yaml"),
        ]
    )
    assert code == 2
    assert "model_index.json" in capsys.readouterr().err


def test_a_studys_records_hold_no_phantom_or_pretraining_keys(tmp_path, busi_root):
    """provenance() records the used config: for real data and a user's model, no phantom or small-model key."""
    model = fake_diffusers_folder(tmp_path / "sd15")
    out = tmp_path / "study.yaml"
    assert main(["init", "--data", str(busi_root), "--base-model", str(model), "--out", str(out)]) == 0
    config = study_config(out)  # the schema fills every default, phantom and pretrain included
    assert "unet_steps" in config["base_model"]["pretrain"] and "devices" in config["phantom"]
    recorded = provenance(config)["config"]
    assert recorded["phantom"] == {"enabled": False}
    assert recorded["base_model"]["pretrain"] == {"enabled": False}
    assert "unet_steps" not in json.dumps(recorded) and "linear-L12" not in json.dumps(recorded)
    # The embedded default uses both: recorded whole.
    default = yaml.safe_load(DEFAULT.read_text())
    validate(default, str(SCHEMA))
    assert used_config(default) == default


def test_a_study_config_is_the_whole_config(tmp_path, busi_root):
    """`snakemake --configfile study.yaml` does not merge the embedded default under the study: a key
    the study leaves out takes the schema's default (folds 5), not the embedded default's (3)."""
    model = fake_diffusers_folder(tmp_path / "sd15")
    out = tmp_path / "study.yaml"
    assert main(["init", "--data", str(busi_root), "--base-model", str(model), "--out", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    # Left out, folds takes the schema's 5; the embedded default (3) would set it if it were merged in.
    del config["dataset"]["folds"]
    config["generation"].update(adjectives=["none", "bright"], ratios=[1], variant_families=["mixed", "classic"])
    config["classifier"]["architectures"] = ["squeezenet1_1"]
    config["classifier"]["replicates"] = 1
    out.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    # A config/config.yaml in the working directory that fails validation if it is merged in.
    (work / "config" / "config.yaml").write_text(yaml.safe_dump({"phantom": {"image_size": "not a number"}}))
    result = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "-n", "--configfile", str(out)],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "simulate_phantom" not in result.stdout and "pretrain_base" not in result.stdout
    lora_jobs = re.search(r"^train_lora\s+(\d+)\s*$", result.stdout, flags=re.MULTILINE)
    assert lora_jobs and int(lora_jobs.group(1)) == 3 * 5, result.stdout[-3000:]  # 3 classes x the schema's 5 folds
