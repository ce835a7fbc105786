"""Config mistakes stop the run before any job, with a message that names the key."""

import pytest
import yaml
from conftest import DEFAULT, snakemake


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"generation": {"shard_sizes": 4}}, "shard_sizes"),  # unknown key (typo)
        ({"classifier": {"epochs": "ten"}}, "epochs"),  # wrong type
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
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, override, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(override))
    result = snakemake(tmp_path, "-n", configs=(DEFAULT, config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert expected in output
    assert "Traceback" not in output or "Error" in output
    assert not (tmp_path / "results").exists()  # nothing ran


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
