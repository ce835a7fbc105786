"""python -m meddap.bench at a tiny size: both methods measured, CSVs written, ratios consistent."""

import json

import pandas as pd
import pytest
import torch

from meddap import bench
from meddap.bench.measure import interleave


def test_bench_writes_both_methods_with_ratios(tmp_path, capsys):
    out = tmp_path / "bench"
    code = bench.main(
        [
            "--out",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--resolution",
            "32",
            "--images",
            "2",
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--batch-size",
            "2",
            "--lora-steps",
            "2",
            "--lora-warmup",
            "1",
            "--lora-batch-size",
            "2",
            "--train-images",
            "2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Generation" in printed and "LoRA training" in printed

    for name, rate, unit in (
        ("generation.csv", "images_per_s", "images"),
        ("lora_training.csv", "samples_per_s", "samples"),
    ):
        frame = pd.read_csv(out / name)
        assert sorted(frame["method"]) == ["baseline", "meddap"], name
        rows = frame.set_index("method")
        assert (rows[rate] > 0).all(), name
        assert (rows["seconds"] > 0).all(), name
        assert rows.loc["baseline", "ratio_vs_baseline"] == pytest.approx(1.0)
        assert rows.loc["meddap", "ratio_vs_baseline"] == pytest.approx(
            rows.loc["meddap", rate] / rows.loc["baseline", rate]
        )
        assert list(rows[rate]) == pytest.approx(list(rows[unit] / rows["seconds"])), name
        assert (rows["cpu_s"] > 0).all(), name
        per_cpu = rows[unit] / rows["cpu_s"]
        assert rows.loc["meddap", "cpu_ratio_vs_baseline"] == pytest.approx(per_cpu["meddap"] / per_cpu["baseline"])
        assert rows["peak_mem_mib"].notna().all(), name

    generation = pd.read_csv(out / "generation.csv").set_index("method")
    assert generation.loc["baseline", "scheduler"] == "pndm"
    assert (
        (generation["steps"] == 2).all()
        and (generation["resolution"] == 32).all()
        and (generation["images"] == 2).all()
    )
    training = pd.read_csv(out / "lora_training.csv").set_index("method")
    assert training.loc["baseline", "batch_size"] == 1 and training.loc["meddap", "batch_size"] == 2
    assert training.loc["baseline", "samples"] == 2 and training.loc["meddap", "samples"] == 4

    info = json.loads((out / "bench.json").read_text())
    assert info["device_type"] == "cpu" and info["versions"]["diffusers"]
    assert info["settings"]["steps"] == 2


def test_bench_on_the_sd15_architecture_with_a_smaller_baseline_count(tmp_path, capsys):
    """The GPU benchmark's path (bench/gpu.sh) at a tenth of SD v1.5's width: the baseline may
    generate fewer images than meddap; each row's rate counts its own images."""
    out = tmp_path / "bench"
    code = bench.main(
        [
            "--out",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--sd15",
            "--sd15-width-divisor",
            "10",
            "--resolution",
            "32",
            "--images",
            "4",
            "--baseline-images",
            "2",
            "--steps",
            "2",
            "--warmup-steps",
            "1",
            "--batch-size",
            "2",
            "--skip-training",
            "--guidance-reference",
            "lora",
        ]
    )
    assert code == 0
    generation = pd.read_csv(out / "generation.csv").set_index("method")
    assert generation.loc["baseline", "images"] == 2 and generation.loc["meddap", "images"] == 4
    assert list(generation["images_per_s"]) == pytest.approx(list(generation["images"] / generation["seconds"]))
    assert (generation["warmup_s"] > 0).all()
    # CFG: two UNet rows per image and step (PNDM runs one step more than asked).
    assert generation.loc["meddap", "unet_samples_per_image"] == 4
    assert not (out / "lora_training.csv").exists()
    info = json.loads((out / "bench.json").read_text())
    assert info["model"].startswith("SD v1.5 architecture")


def test_interleave_needs_the_same_rounds_for_every_runner():
    with pytest.raises(ValueError, match="same number of rounds"):
        interleave({"a": lambda: None, "b": lambda: None}, {"a": [[1]], "b": [[1], [2]]}, torch.device("cpu"))


def test_bench_classifier_part_compares_meddap_with_the_original_loop(tmp_path, capsys):
    """The classifier part, tiny: the script's loop as written, with DataLoader workers, and meddap's
    train_classifier, each with a positive rate over the images it trained; concurrency rows per job count."""
    out = tmp_path / "bench"
    code = bench.main(
        [
            "--out",
            str(out),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--parts",
            "classifier",
            "--classifier-resolution",
            "32",
            "--classifier-images",
            "5",
            "--classifier-epochs",
            "1",
            "--classifier-warmup",
            "0",
            "--classifier-batch-size",
            "4",
            "--classifier-workers",
            "1",
            "--rounds",
            "1",
            "--concurrent",
            "1,2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Classifier training" in printed and "Concurrent meddap classifier jobs" in printed
    assert "Generation" not in printed and not (out / "generation.csv").exists()

    frame = pd.read_csv(out / "classifier_training.csv").set_index("method")
    assert sorted(frame.index) == ["baseline", "baseline_workers1", "meddap"]
    for column in (
        "arch",
        "resolution",
        "batch_size",
        "epochs",
        "images",
        "seconds",
        "images_per_s",
        "ratio_vs_baseline",
        "cpu_s",
        "setup_s",
        "peak_mem_mib",
    ):
        assert column in frame.columns, column
    assert (frame["images_per_s"] > 0).all() and (frame["seconds"] > 0).all()
    assert (frame["arch"] == "resnet18").all() and (frame["resolution"] == 32).all()
    # 3 classes x 5 images, every 5th validates: 12 training images; the baseline drops the last partial batch.
    assert frame.loc["baseline", "images"] == frame.loc["baseline_workers1", "images"] == 12
    assert frame.loc["meddap", "images"] == 12
    assert list(frame["images_per_s"]) == pytest.approx(list(frame["images"] / frame["seconds"]))
    assert frame.loc["meddap", "ratio_vs_baseline"] == pytest.approx(
        frame.loc["meddap", "images_per_s"] / frame.loc["baseline", "images_per_s"]
    )

    concurrency = pd.read_csv(out / "classifier_concurrency.csv")
    assert list(concurrency["jobs"]) == [1, 2]
    assert (concurrency["images_per_s_per_job"] > 0).all()
    assert list(concurrency["images_per_s_total"]) == pytest.approx(
        list(concurrency["images_per_s_per_job"] * concurrency["jobs"])
    )
    info = json.loads((out / "bench.json").read_text())
    assert info["classifier"]["train_images"] == 12 and info["classifier"]["val_images"] == 3
    assert info["classifier"]["train_flops_per_image"] > 0


def test_classifier_peak_table_knows_the_h100_and_h200_and_not_other_devices():
    from meddap.bench.classifier import peak_bf16_tflops

    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("Some Future GPU") is None
