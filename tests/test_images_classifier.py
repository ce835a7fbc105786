import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meddap.classify.classifier import (
    ClassifierError,
    build_classifier,
    load_classifier,
    predict_paths,
    random_blur,
    train_classifier,
)
from meddap.data.images import ImageReadError, load_array
from meddap.settings.stages import ClassifierSettings


def test_image_modes_are_converted_not_rejected(tmp_path):
    grey16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    Image.new("RGBA", (40, 40), (200, 100, 50, 128)).save(tmp_path / "rgba.png")
    Image.new("P", (40, 40), 3).save(tmp_path / "p.png")
    Image.new("CMYK", (40, 40), (0, 128, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (10, 12), 77).save(tmp_path / "small.bmp")
    for name in ("g16.png", "rgba.png", "p.png", "cmyk.jpg", "small.bmp"):
        array = load_array(tmp_path / name, size=32)
        assert array.shape == (32, 32, 3) and array.dtype == np.uint8, name
    g16 = load_array(tmp_path / "g16.png")
    assert g16.min() == 0 and g16.max() == 255  # the 16-bit range is rescaled, not clipped


def test_corrupt_images_name_the_file(tmp_path):
    Image.new("L", (64, 64), 9).save(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    (tmp_path / "random.png").write_bytes(np.random.default_rng(0).bytes(500))
    for name in ("truncated.png", "random.png"):
        with pytest.raises(ImageReadError, match=name):
            load_array(tmp_path / name)


@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1", "densenet121", "mobilenet_v3_small"])
def test_any_torchvision_classifier_with_a_head_sized_to_the_classes(arch):
    model = build_classifier(arch, 3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ClassifierError, match="unknown architecture 'resnet1000'"):
        build_classifier("resnet1000", 3)


def test_architecture_names_read_from_sources_match_torchvision():
    import torchvision

    from meddap.classify.architectures import classification_architectures

    assert list(classification_architectures()) == sorted(torchvision.models.list_models(module=torchvision.models))


def test_config_validation_does_not_import_torch_or_scipy(tmp_path):
    """A no-op `make run` parses the workflow: validation must stay light (issue 2: < 10 s)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = (
        "import sys, yaml\n"
        "from snakemake.utils import validate\n"
        "from meddap.config.resolve import resolve\n"
        f"config = yaml.safe_load(open({str(repo / 'config/config.yaml')!r}))\n"
        f"validate(config, {str(repo / 'workflow/schemas/config.schema.yaml')!r})\n"
        "resolve(config)\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'scipy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_blur_keeps_shape_and_smooths():
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = random_blur(batch, generator, probability=1.0)
    assert out.shape == batch.shape
    assert out.float().std() < batch.float().std()


def test_train_save_load_predict_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for cls, value in (("dark", 40), ("bright", 200)):
        for i in range(6):
            path = tmp_path / f"{cls}{i}.png"
            Image.fromarray(np.clip(rng.normal(value, 10, (16, 16)), 0, 255).astype(np.uint8)).save(path)
            rows.append((str(path), cls, "original", i % 2))
    frame = pd.DataFrame(rows, columns=["path", "class", "source", "fold"])
    settings = ClassifierSettings(image_size=16, epochs=3, batch_size=4, lr=1e-3, intensity_augmentation=False)
    history = train_classifier(
        frame[frame.fold == 0],
        frame[frame.fold == 1],
        ["bright", "dark"],
        "resnet18",
        tmp_path / "model",
        settings,
        seed=0,
    )
    assert len(history) == 3 and history["selected"].sum() == 1
    best = history.loc[history["selected"], "val_macro_f1"].iloc[0]
    assert best == history["val_macro_f1"].max()
    model, meta = load_classifier(tmp_path / "model")
    assert meta["arch"] == "resnet18" and meta["classes"] == ["bright", "dark"] and meta["input_size"] == 16
    probabilities = predict_paths(model, meta, list(frame["path"]))
    assert probabilities.shape == (12, 2) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_atomic_path_leaves_nothing_on_failure_and_sweeps_stale_partials(tmp_path):
    from meddap.runtime.atomic import atomic_path

    target = tmp_path / "out"
    stale = tmp_path / ".out.abc.partial"
    stale.mkdir()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            (temporary / "half.txt").write_text("x")
            raise RuntimeError("killed")
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # neither the failed temporary nor the stale one
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "whole.txt").write_text("y")
    assert (target / "whole.txt").read_text() == "y"


def test_imagenet_weights_come_only_from_the_local_cache(tmp_path, monkeypatch):
    """pretrained: true with an empty torch cache is a clear error naming the expected file (no download)."""
    import torch

    from meddap.classify.classifier import ClassifierError, build_classifier

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ClassifierError, match=r"checkpoints/resnet18-[0-9a-f]+\.pth"):
        build_classifier("resnet18", 3, pretrained=True)


def test_intensity_jitter_is_seeded_bounded_and_changes_brightness():
    import math

    from meddap.classify.classifier import random_intensity

    batch = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    batch[:, :, :4] = 60  # some structure, so contrast has something to act on
    first = random_intensity(batch, torch.Generator().manual_seed(3))
    again = random_intensity(batch, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 255
    means = first.mean(dim=(1, 2, 3))
    base = batch.float().mean()
    # Gains both ways, within what a gamma of 1.4 can do to this image.
    assert means.max() > base + 10 and means.min() < base - 10
    assert means.max() <= 255 * (batch.float().max() / 255) ** (1 / 1.4) + 1e-3 + 255 * 0.3
    assert not math.isnan(float(means.mean()))


def test_augmentation_off_leaves_the_images_as_they_are_and_on_flips_and_shifts():
    """geometric_augmentation: false with blur and intensity off is the paper's "no augmentation"."""
    from meddap.classify.classifier import augment

    batch = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    plain = augment(batch, torch.Generator().manual_seed(0), blur=False, intensity=False, geometric=False)
    assert torch.equal(plain, batch.float())
    moved = augment(batch, torch.Generator().manual_seed(0), blur=False, intensity=False, geometric=True)
    assert moved.shape == plain.shape and not torch.equal(moved, plain)


def test_the_kept_epoch_follows_the_selection_metric(tmp_path):
    """selection_metric: accuracy keeps the first epoch of best validation accuracy, as the paper;
    macro_f1 (the default) the first of best macro-F1. The saved weights are that epoch's."""
    from meddap.classify.classifier import selected_epoch

    # An imbalanced validation fold: "all majority" wins accuracy, a balanced epoch wins macro-F1.
    history = pd.DataFrame(
        {"epoch": [1, 2, 3, 4], "val_accuracy": [0.83, 0.67, 0.83, 0.5], "val_macro_f1": [0.45, 0.65, 0.45, 0.65]}
    )
    assert selected_epoch(history, "accuracy") == 1 and selected_epoch(history, "macro_f1") == 2
    frame = pd.DataFrame(
        [
            (str(_png(tmp_path / f"{c}{i}.png", v)), c, "original", i % 2)
            for c, v in (("dark", 40), ("bright", 200))
            for i in range(4)
        ],
        columns=["path", "class", "source", "fold"],
    )
    settings = ClassifierSettings(
        image_size=16,
        epochs=2,
        batch_size=4,
        selection_metric="accuracy",
        intensity_augmentation=False,
        blur_augmentation=False,
    )
    trained = train_classifier(
        frame[frame.fold == 0],
        frame[frame.fold == 1],
        ["bright", "dark"],
        "resnet18",
        tmp_path / "model",
        settings,
        seed=0,
    )
    _, meta = load_classifier(tmp_path / "model")
    assert meta["selection_metric"] == "accuracy"
    assert (
        meta["best_epoch"] == selected_epoch(trained, "accuracy") == trained.loc[trained["selected"], "epoch"].iloc[0]
    )


def _png(path, value):
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)
    return path


def test_training_is_byte_identical_for_a_seed_on_the_cpu(tmp_path):
    """The on-device, batched loop keeps a seed's weights byte-identical (CPU: fp32, no compile)."""
    frame = pd.DataFrame(
        [
            (str(_png(tmp_path / f"{c}{i}.png", v + 7 * i)), c, "original", i % 2)
            for c, v in (("dark", 40), ("bright", 170))
            for i in range(6)
        ],
        columns=["path", "class", "source", "fold"],
    )
    settings = ClassifierSettings(image_size=16, epochs=2, batch_size=4)  # blur, intensity and geometric on
    weights = []
    for name in ("first", "again"):
        train_classifier(
            frame[frame.fold == 0],
            frame[frame.fold == 1],
            ["bright", "dark"],
            "resnet18",
            tmp_path / name,
            settings,
            seed=5,
        )
        weights.append((tmp_path / name / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    train_classifier(
        frame[frame.fold == 0],
        frame[frame.fold == 1],
        ["bright", "dark"],
        "resnet18",
        tmp_path / "other",
        settings,
        seed=6,
    )
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != weights[0]


def test_batched_blur_gives_each_image_its_own_kernel():
    """random_blur blurs the whole chosen subset in one grouped convolution: each image as a
    one-image blur of its own sigma (radius round(2.5 sigma), reflect padding) would."""
    import math

    from meddap.classify.classifier import _gaussian_blur

    images = torch.rand(3, 3, 12, 12) * 255
    sigmas = torch.tensor([0.3, 0.9, 1.5])
    batched = _gaussian_blur(images, sigmas)
    for i, sigma in enumerate(sigmas.tolist()):
        radius = max(1, round(2.5 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = kernel / kernel.sum()
        one = torch.nn.functional.pad(images[i : i + 1], (radius, radius, radius, radius), mode="reflect")
        one = torch.nn.functional.conv2d(one, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        one = torch.nn.functional.conv2d(one, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
        torch.testing.assert_close(batched[i], one[0], rtol=0, atol=1e-3)
        assert not math.isclose(float(batched[i].std()), float(images[i].std()))
