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
        ({"phantom": {"enabled": False}, "base_model": {"pretrain": {"enabled": False}, "path": "/no/such/model"}}, "/no/such/model"),
        ({"phantom": {"enabled": False}, "base_model": {"pretrain": {"corpus": "phantom"}}}, "base_model.pretrain.corpus"),
        ({"lora": {"scope": "per_fold"}}, "scope"),
        ({"dataset": {"mixed_label_groups": "merge"}}, "mixed_label_groups"),
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
