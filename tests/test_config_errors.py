"""Config mistakes stop the run before any job, with a message that names the key."""

import subprocess

import pytest
import yaml
from conftest import DEFAULT, REPO, SNAKEMAKE, snakemake

# Checked when the DAG is built, not by `meddap plan` (which plans a base model not yet downloaded).
SNAKEMAKE_ONLY = {"/no/such/model"}


def snakemake_error_message(output: str) -> list[str]:
    """The lines of Snakemake's error block between its header ("WorkflowError in file ..., line N:")
    and its 'File ...' lines: what meddap said."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("WorkflowError in file"))
    message = []
    for line in lines[start + 1 :]:
        if line.startswith("  File "):
            break
        message.append(line)
    return message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"generation": {"shard_sizes": 4}}, "shard_sizes"),  # unknown key (typo)
        ({"classifier": {"epochs": "ten"}}, "classifier.epochs: 'ten' is not of type 'integer'"),  # wrong type
        ({"classifier": {"replicates": 0}}, "classifier.replicates: 0 is less than the minimum of 1"),
        ({"generation": {"ratios": [0]}}, "ratios"),
        ({"generation": {"ratios": [-1, 1]}}, "ratios"),
        ({"generation": {"shard_size": 0}}, "shard_size"),
        ({"classifier": {"architectures": ["resnet1000"]}}, "resnet1000"),
        ({"generation": {"adjectives": ["none", "../etc"]}}, "adjectives"),
        ({"generation": {"adjectives": ["none", "it's"]}}, "adjectives"),
        ({"generation": {"adjectives": ["none", "original"]}}, "reserved"),
        (
            {"phantom": {"enabled": False}, "base_model": {"pretrain": {"enabled": False}, "path": "/no/such/model"}},
            "/no/such/model",
        ),
        (
            {"phantom": {"enabled": False}, "base_model": {"pretrain": {"corpus": "phantom"}}},
            "base_model.pretrain.corpus",
        ),
        ({"lora": {"scope": "per_fold"}}, "scope"),
        ({"dataset": {"mixed_label_groups": "merge"}}, "mixed_label_groups"),
        # Hardening, round two: everything checkable before a job runs.
        ({"seed": -1}, "seed: -1"),
        ({"seed": 2**70}, "seed: 1180591620717411303424"),
        ({"prompts": {"template": "an ultrasound photo of {subject}"}}, "has no {adjective}"),
        ({"prompts": {"template": "{article} {adjective}photo of {subjct}"}}, "subjct"),
        ({"classifier": {"architectures": ["resnet18", "resnet18"]}}, "classifier.architectures: ['resnet18'] listed"),
        ({"dataset": {"classes": ["benign", "benign", "normal"]}}, "dataset.classes: ['benign'] listed"),
        ({"evaluation": {"positive_class": "malignent"}}, "evaluation.positive_class 'malignent'"),
        ({"generation": {"ratios": [0.001]}}, "rounds to 0 synthetic images"),
        ({"generation": {"ratios": [1000000]}}, "limits.max_synthetic_images"),
        ({"limits": {"max_jobs": 20}}, "more than limits.max_jobs (20)"),
        ({"resources": {"gpu_slots": {"classifier": 0}}}, "gpu_slots"),
        # Hardening, round three.
        ({"generation": {"ratios": [1, 1.0000001]}}, "generation.ratios: [1, 1.0000001] all name the variants *_x1"),
        (
            {"evaluation": {"primary_contrast": {"variant": "bright_x9"}}},
            "evaluation.primary_contrast.variant 'bright_x9'",
        ),
        # Guided generation (issue 28): guides come from a fold's training rows, strengths are fractions.
        (
            {"lora": {"scope": "split"}, "generation": {"variant_families": ["guided"]}},
            "generation.variant_families: guided needs lora.scope: fold",
        ),
        ({"generation": {"strength": 1.5}}, "generation.strength: 1.5 is greater than the maximum of 1"),
        ({"generation": {"strength": [0.25, -0.5]}}, "generation.strength.1: -0.5 is less than the minimum of 0"),
        ({"generation": {"strength": []}}, "generation.strength"),
        # Filtered sets (issue 28): the judge must leave out a fold, and there must be something to filter.
        (
            {
                "lora": {"scope": "split"},
                "generation": {"variant_families": ["mixed"], "filter": {"families": ["mixed"]}},
            },
            "generation.filter needs lora.scope: fold",
        ),
        (
            {"generation": {"variant_families": ["mixed", "classic"], "filter": {"families": ["guided"]}}},
            "generation.filter.families: ['guided'] not in generation.variant_families",
        ),
        (
            {"generation": {"adjectives": ["none"], "variant_families": ["mixed"], "filter": {"families": ["mixed"]}}},
            "generation.filter.families ['mixed'] plan no variant to filter (mixed needs two adjectives)",
        ),
        (
            {"generation": {"filter": {"families": ["classic"]}}},
            "generation.filter.families.0: 'classic' is not one of",
        ),
        (
            {"generation": {"filter": {"families": ["mixed"], "judge_architecture": "resnet19"}}},
            "generation.filter.judge_architecture: unknown 'resnet19'",
        ),
        ({"generation": {"filter": {"oversample": 0.5}}}, "generation.filter.oversample: 0.5 is less than the minimum"),
        ({"generation": {"filter": {"judge_confidence": 0}}}, "generation.filter.judge_confidence: 0 is less than"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, capsys, override, expected):
    """From `snakemake -n` (the message in Snakemake's error block is one line: no schema dump,
    no stack frames of meddap) and from `meddap plan` (one line on stderr, exit 2)."""
    from meddap.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(override))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    message = snakemake_error_message(output)
    assert len(message) == 1 and expected in message[0], output[-3000:]
    assert "Traceback" not in output and "src/meddap" not in output  # no stack frames from the package
    assert not (tmp_path / "results").exists()  # nothing ran
    if expected in SNAKEMAKE_ONLY:
        return
    assert main(["plan", "--configfile", str(DEFAULT), str(config)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and expected in stderr, stderr


def test_device_cuda_without_a_usable_gpu_stops_at_parse_time(tmp_path):
    """Before any job, so Snakemake deletes no previous output of a GPU job (a trained LoRA)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable CUDA device")
    lora = tmp_path / "results" / "lora" / "fold0" / "benign" / "pytorch_lora_weights.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"a LoRA trained before")
    config = tmp_path / "cuda.yaml"
    config.write_text("device: cuda\n")
    result = snakemake(tmp_path, "--cores", "1", "--forcerun", "train_lora", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    message = snakemake_error_message(output)
    assert len(message) == 1 and "device: cuda, but torch" in message[0] and "no usable CUDA device" in message[0]
    assert lora.read_bytes() == b"a LoRA trained before"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["lora"]


BROKEN_YAML = "classifier:\n  replicates: 2\n    epochs: 3\n"


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    """meddap plan: file:line:column. snakemake: the same for the workflow's config/config.yaml
    (read by the Snakefile); a --configfile is parsed by Snakemake's command line before any
    workflow code runs, so its message is Snakemake's own (docs/usage.md points to meddap plan)."""
    import shutil

    from meddap.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    assert main(["plan", "--configfile", str(DEFAULT), str(bad)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and f"{bad}:3:11: YAML syntax" in stderr, stderr

    workflow = tmp_path / "workflow-copy"
    workflow.mkdir()
    for part in ("Snakefile", "workflow", "config", "pyproject.toml"):
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workflow / part)
    edited = workflow / "config" / "config.yaml"
    edited.write_text(edited.read_text().replace("  rank: 3 ", "  rank 3 ", 1))
    line = next(i for i, text in enumerate(edited.read_text().splitlines(), 1) if text.startswith("  rank 3"))
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--snakefile", str(workflow / "Snakefile"), "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    message = snakemake_error_message(output)
    assert len(message) == 1 and f"{edited}:{line + 1}:3: YAML syntax" in message[0], output[-2000:]
    assert f"at line {line}, column 3" in message[0]
    assert not (tmp_path / "results").exists()


def test_an_unseen_set_holding_the_datasets_own_images_is_refused(tmp_path):
    from conftest import BUSI

    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "phantom": {"enabled": False},
                "dataset": {"root": str(BUSI)},
                "base_model": {"pretrain": {"corpus": "dataset"}},
                "unseen": [{"name": "same-device", "root": str(BUSI)}],
            }
        )
    )
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "unseen set 'same-device'" in output and "holds" in output
    assert not (tmp_path / "results").exists()


def test_a_dataset_with_one_class_folder_is_refused(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "data" / "benign").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / "data" / "benign" / f"b{i}.png")
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "phantom": {"enabled": False},
                "dataset": {"root": str(tmp_path / "data"), "classes": None},
                "base_model": {"pretrain": {"corpus": "dataset"}},
            }
        )
    )
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "at least two class folders" in output
    assert not (tmp_path / "results").exists()


def test_an_unseen_csv_with_a_header_only_is_refused(tmp_path):
    """It would index an empty test set, and evaluation would crash on it later."""
    empty = tmp_path / "device-b.csv"
    empty.write_text("path,class\n")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"unseen": [{"name": "device-b", "root": str(empty)}]}))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and f"unseen set 'device-b': {empty} lists no images" in output
    assert not (tmp_path / "results").exists()
