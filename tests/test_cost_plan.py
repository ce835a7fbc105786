"""`meddap plan`: jobs per rule as Snakemake plans them, work, and device-hours only from measured rates."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEFAULT, REPO, TINY, snakemake

from meddap.cli import main
from meddap.config.loading import load_config
from meddap.config.resolve import ConfigError, resolve
from meddap.planning.cost import RATES_FILE, Work, estimate, load_rates, make_plan

BUSI_CONFIG = REPO / "config" / "busi.yaml"


def dry_run_jobs(workdir: Path, configs, *args: str) -> dict[str, int]:
    """Jobs per rule from `snakemake --dry-run`'s job-stats table."""
    result = snakemake(workdir, "--dry-run", "--quiet", "rules", *args, configs=configs)
    table = result.stdout.split("Job stats:")[-1].split("Reasons:")[0]
    rows = re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)
    jobs = {rule: int(count) for rule, count in rows}
    assert jobs.pop("total") == sum(jobs.values())
    return jobs


def fake_sd_folder(root: Path) -> Path:
    """What parse time checks of a diffusers SD folder (a dry run loads no weights)."""
    components = {name: ["diffusers", "X"] for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    for name in components:
        (root / name).mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", **components}))
    return root


@pytest.fixture
def busi_overlay(tmp_path, busi_root) -> Path:
    overlay = tmp_path / "busi-here.yaml"
    model = fake_sd_folder(tmp_path / "sd")
    overlay.write_text(yaml.safe_dump({"dataset": {"root": str(busi_root)}, "base_model": {"path": str(model)}}))
    return overlay


def test_tiny_jobs_per_rule_equal_the_dry_run(tmp_path):
    plan = make_plan([DEFAULT, TINY])
    assert plan.jobs == dry_run_jobs(tmp_path, (DEFAULT, TINY))
    assert sum(plan.jobs.values()) == 72


def test_busi_jobs_per_rule_equal_the_dry_run(tmp_path, busi_overlay):
    workdir = tmp_path / "run"
    workdir.mkdir()
    plan = make_plan([BUSI_CONFIG, busi_overlay])
    assert plan.jobs == dry_run_jobs(workdir, (BUSI_CONFIG, busi_overlay))
    assert plan.jobs["train_classifier"] == 37 * 3 * 5 * 3  # 37 variants, 3 architectures, 5 folds, 3 replicates


SHIPPED = {
    "the embedded default": [DEFAULT],
    "the tiny test config": [DEFAULT, TINY],
    "busi_small over busi": [DEFAULT, BUSI_CONFIG, REPO / "tests" / "configs" / "busi_small.yaml"],
    "busi_embedded over busi": [DEFAULT, BUSI_CONFIG, REPO / "config" / "busi_embedded.yaml"],
    "busi_modes over busi_embedded": [
        DEFAULT,
        BUSI_CONFIG,
        REPO / "config" / "busi_embedded.yaml",
        REPO / "config" / "busi_modes.yaml",
    ],
    "every family and ratio": [DEFAULT, TINY, "every-family.yaml"],
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_meddap_plan_and_the_dry_run_agree_on_every_shipped_config(tmp_path, busi_root, name):
    """Round three: `meddap plan` said 127 jobs where `snakemake -n` planned 115 (two ratios with one
    name). Now each shipped config, and one with every variant family at three ratios, agree."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"dataset": {"root": str(busi_root)}}))
    (tmp_path / "every-family.yaml").write_text(
        yaml.safe_dump(
            {
                "generation": {
                    "ratios": [0.5, 1, 2],
                    "variant_families": ["adjective", "mixed", "guided", "classic"],
                    "shard_size": 3,  # several guided shards per class, the last one smaller
                    "filter": {"families": ["adjective", "mixed", "guided"], "oversample": 1.5},  # every filtered twin
                }
            }
        )
    )
    configs = [tmp_path / c if isinstance(c, str) else c for c in SHIPPED[name]]
    if "busi" in name:
        configs.append(overlay)
    workdir = tmp_path / "run"
    workdir.mkdir()
    plan = make_plan(configs)
    assert plan.jobs == dry_run_jobs(workdir, configs)
    if name == "every family and ratio":
        assert plan.jobs["generate_guided_shard"] > 2 * 3 and "guided generation" in {w.part for w in plan.work}
        assert plan.jobs["train_judge"] == 2 and plan.jobs["filter_shards"] == 2 * 2  # 2 arms x 2 streams


def test_max_jobs_checks_the_same_count():
    config = load_config([DEFAULT, TINY])
    total = sum(resolve(config).jobs_per_rule().values())
    config["limits"]["max_jobs"] = total
    resolve(config)
    config["limits"]["max_jobs"] = total - 1
    with pytest.raises(ConfigError, match=f"plans {total} jobs"):
        resolve(config)


def test_images_and_image_passes_follow_the_plan():
    plan = make_plan([DEFAULT, TINY])
    settings = plan.settings
    # Every image generated is in one generate_shard job: the shard sizes of every arm.
    shard_images = sum(settings.plan.shard_sizes(cls)[shard] for cls, _, shard in settings.plan.all_shards())
    assert plan.generated_images == len(settings.arms) * shard_images == 36  # 2 arms x 3 classes x 2 adjectives x 3
    work = {item.part: item for item in plan.work}
    # tiny: 6 training images per class, 2 folds -> a fold trains on 3 per class (9); 4 variants (original,
    # none_x1, bright_x1, classic_x1), the three with extra images add 9 each; 2 folds x 2 epochs.
    assert work["classifier training, squeezenet1_1"].amount == 2 * 2 * (9 + 3 * 18)
    assert work["LoRA training"].amount == 6 * 4 * 4  # 6 LoRAs (2 arms x 3 classes) x 4 steps x batch 4


def test_hours_are_work_over_the_measured_rate(busi_overlay):
    plan = make_plan([BUSI_CONFIG, busi_overlay], device="nvidia-h100")
    estimates = {e.work.part: e for e in plan.estimates}
    generation = estimates["generation"]
    measured = pd.read_csv(REPO / "docs/bench/gpu-h100/eager/generation.csv").set_index("method")
    assert generation.hours == pytest.approx(plan.generated_images / measured.loc["meddap", "images_per_s"] / 3600)
    per_adjective = sum(plan.settings.plan.images_per_adjective(c) for c in plan.settings.classes)
    assert plan.generated_images == 5 * 10 * per_adjective  # 5 arms x 10 adjectives
    lora = estimates["LoRA training"]
    assert lora.rate["upper_bound"] and lora.hours == pytest.approx(15 * 3000 * 1 / lora.rate["rate"] / 3600)
    # The classifier's GPU rates were never measured: reported, not invented.
    for arch in ("densenet121", "resnet34", "squeezenet1_1"):
        for part in ("training", "evaluation"):
            unknown = estimates[f"classifier {part}, {arch}"]
            assert unknown.hours is None and "not measured on nvidia-h100" in unknown.missing
    assert plan.known_hours == pytest.approx(sum(e.hours for e in plan.estimates if e.hours is not None))


def test_a_rate_applies_only_at_its_settings():
    rates = {
        "dev": {
            "rates": [
                {
                    "operation": "generation",
                    "rate": 10.0,
                    "unit": "images/s",
                    "match": {"resolution": 224, "steps": 30},
                    "source": {"file": "f", "method": "m"},
                }
            ]
        }
    }
    work = Work("generation", "generation", 7200, "images", {"resolution": 224, "steps": 30}, "")
    assert estimate(work, "dev", rates).hours == pytest.approx(0.2)
    other = Work("generation", "generation", 7200, "images", {"resolution": 224, "steps": 50}, "")
    assert estimate(other, "dev", rates).hours is None
    assert "measured only at resolution 224, steps 30" in estimate(other, "dev", rates).missing
    unknown = estimate(work, "tpu-v9", rates)
    assert unknown.hours is None and "no measured rates for device 'tpu-v9'" in unknown.missing


def test_every_rate_is_the_figure_in_its_source_file():
    rates = load_rates(RATES_FILE)
    assert {"nvidia-h100", "nvidia-h200", "cpu"} <= set(rates)
    for device, entry in rates.items():
        for rate in entry["rates"]:
            source = rate["source"]
            table = pd.read_csv(REPO / source["file"]).set_index("method")
            assert table.loc[source["method"], source["column"]] == pytest.approx(rate["rate"]), (device, source)
            assert rate["command"] and rate["operation"] != "classifier_training"  # none measured yet


def test_cli_prints_jobs_total_and_unknown_parts(capsys, busi_overlay):
    assert main(["plan", "--configfile", str(BUSI_CONFIG), str(busi_overlay), "--device", "nvidia-h100"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  train_classifier\s+1,665$", out, flags=re.MULTILINE)
    assert re.search(r"^  total\s+4,949$", out, flags=re.MULTILINE)
    assert "total: 2.10 device-hours measured (LoRA training, LoRA validation images, generation)" in out
    assert "not measured on nvidia-h100: classifier training, densenet121" in out


def test_cli_unknown_device_and_bad_config(capsys, tmp_path):
    assert main(["plan", "--configfile", str(DEFAULT), str(TINY), "--device", "tpu-v9"]) == 0
    out = capsys.readouterr().out
    assert "total: no part has a measured rate on this device" in out and "not measured on tpu-v9" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("classifier: {epochs: ten}\n")
    assert main(["plan", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "dataset: 'root' is a required property" in err and len(err.strip().splitlines()) == 1, err
    bad.write_text("dataset: {root: x}\nclassifier: {epochs: ten}\n")
    assert main(["plan", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "classifier.epochs: 'ten' is not of type 'integer'" in err and len(err.strip().splitlines()) == 1, err


def test_usage_doc_shows_the_commands_output(capsys, tmp_path, monkeypatch, busi_root):
    """docs/usage.md's "Cost plan" block is what the command prints for busi.yaml on the BUSI set and the H100."""
    (tmp_path / "config").symlink_to(REPO / "config")
    (tmp_path / "busi-here.yaml").write_text(yaml.safe_dump({"dataset": {"root": str(busi_root)}}))
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--configfile", "config/busi.yaml", "busi-here.yaml", "--device", "nvidia-h100"]) == 0
    assert capsys.readouterr().out.strip() in (REPO / "docs" / "usage.md").read_text()
