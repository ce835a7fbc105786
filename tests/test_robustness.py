import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from meddap.classify.robustness import (
    CORRUPTIONS,
    PARAMETERS,
    SEVERITIES,
    balanced_error,
    corrupt,
    corrupt_images,
    evaluate_corruptions,
    normalised_balanced_error,
    pooled_relative_balanced_error,
    pooled_robustness,
    relative_balanced_error,
    robustness_summary,
)


def ultrasound_like(size=96, seed=0) -> np.ndarray:
    """Speckled tissue brightening with depth and a dark oval lesion (uint8, H x W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    speckle = gaussian_filter(rng.rayleigh(1.0, (size, size)), 1.0)
    image = (0.3 + 0.4 * yy / size) * speckle / speckle.mean()
    image[((yy - size / 2) / (size / 6)) ** 2 + ((xx - size / 2) / (size / 4)) ** 2 < 1] *= 0.2
    return np.clip(image * 200, 0, 255).astype(np.uint8)


def test_parameter_tables_are_medmnistc_breast():
    assert (
        set(CORRUPTIONS)
        == set(PARAMETERS)
        == {
            "speckle_noise",
            "motion_blur",
            "brightness_up",
            "brightness_down",
            "contrast_down",
            "jpeg_compression",
            "pixelate",
        }
    )
    assert all(len(values) == 5 for values in PARAMETERS.values())


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("rgb", [False, True])
def test_severity_is_monotone_and_shape_kept(corruption, rgb):
    clean = ultrasound_like()
    if rgb:
        clean = np.repeat(clean[..., None], 3, axis=2)
    distances = []
    for severity in SEVERITIES:
        out = corrupt(clean, corruption, severity, np.random.default_rng(1))
        assert out.dtype == np.uint8 and out.shape == clean.shape
        if rgb:
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # grey stays grey
        distances.append(np.abs(out.astype(float) - clean).mean())
    assert distances[0] > 0.5
    assert all(b > a for a, b in zip(distances, distances[1:])), distances


def test_corruptions_change_what_they_say():
    clean = ultrasound_like()
    rng = np.random.default_rng(0)
    assert corrupt(clean, "brightness_up", 3, rng).mean() > clean.mean()
    assert corrupt(clean, "brightness_down", 3, rng).mean() < clean.mean()
    assert corrupt(clean, "contrast_down", 3, rng).std() < clean.std()
    pixelated = corrupt(clean, "pixelate", 5, rng)
    assert len(np.unique(pixelated[:10, :10])) <= 4  # 96 x 0.1 -> 9 blocks of ~10 px
    assert np.array_equal(corrupt(clean, "pixelate", 0, rng), clean)
    with pytest.raises(ValueError):
        corrupt(clean, "pixelate", 6, rng)
    with pytest.raises(ValueError):
        corrupt(clean, "fog", 1, rng)


def test_corrupt_images_is_reproducible(tmp_path):
    images = [ultrasound_like(64, seed) for seed in range(3)]
    path = tmp_path / "a.png"
    Image.fromarray(images[0]).save(path)
    first = corrupt_images(images, "speckle_noise", 2, seed=11)
    again = corrupt_images(images, "speckle_noise", 2, seed=11)
    other = corrupt_images(images, "speckle_noise", 2, seed=12)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # each image its own noise
    from_path = corrupt_images([path], "speckle_noise", 2, seed=11, size=64)[0]
    assert from_path.shape == (64, 64, 3) and np.array_equal(from_path[..., 0], first[0])
    # the same draws at every severity: speckle grows pixel by pixel
    mild, strong = (corrupt_images(images[:1], "speckle_noise", s, seed=11)[0].astype(int) - images[0] for s in (1, 5))
    assert (np.abs(strong) >= np.abs(mild) - 1).all()


def test_balanced_error_by_hand():
    truth = ["a", "a", "a", "a", "b", "b"]
    pred = ["a", "a", "a", "b", "b", "a"]
    assert balanced_error(truth, pred) == pytest.approx(1 - (3 / 4 + 1 / 2) / 2)
    assert balanced_error([0, 0, 1], [0, 0, 1]) == 0.0
    assert balanced_error([0, 0, 0], [0, 1, 2]) == pytest.approx(2 / 3)  # absent classes are not averaged


def test_relative_and_normalised_error_by_hand():
    model = [0.15, 0.20, 0.25, 0.30, 0.35]  # degrades 0.75 in total over a clean 0.10
    reference = [0.30, 0.40, 0.50, 0.60, 0.70]  # degrades 1.50 in total over a clean 0.20
    assert relative_balanced_error(model, 0.10, reference, 0.20) == pytest.approx(0.75 / 1.5)
    assert normalised_balanced_error(model, reference) == pytest.approx(1.25 / 2.5)
    # MedMNIST-C's eval.py form: (mean_s BE - clean) / (mean_s BE_ref - clean_ref)
    assert relative_balanced_error(model, 0.10, reference, 0.20) == pytest.approx(
        (np.mean(model) - 0.10) / (np.mean(reference) - 0.20)
    )
    assert math.isnan(relative_balanced_error([0.3], 0.1, [0.2], 0.2))  # reference does not degrade
    with pytest.raises(ValueError):
        relative_balanced_error([0.1, 0.2], 0.1, [0.1], 0.1)


def test_robustness_summary_uses_same_fold_original():
    rows = []
    for variant, clean, errors in (
        ("original", 0.2, [0.3, 0.4, 0.5, 0.6, 0.7]),
        ("bright_x1", 0.1, [0.15, 0.2, 0.25, 0.3, 0.35]),
    ):
        rows.append(
            {
                "variant": variant,
                "arch": "resnet18",
                "fold": 0,
                "corruption": "clean",
                "severity": 0,
                "balanced_error": clean,
            }
        )
        for corruption in ("pixelate", "motion_blur"):
            rows += [
                {
                    "variant": variant,
                    "arch": "resnet18",
                    "fold": 0,
                    "corruption": corruption,
                    "severity": s,
                    "balanced_error": e,
                }
                for s, e in zip(SEVERITIES, errors)
            ]
    table = robustness_summary(pd.DataFrame(rows)).set_index(["variant", "corruption"])
    assert table.loc[("bright_x1", "pixelate"), "rbe"] == pytest.approx(0.5)
    assert table.loc[("bright_x1", "pixelate"), "nbe"] == pytest.approx(0.5)
    assert table.loc[("bright_x1", "mean"), "rbe"] == pytest.approx(0.5)
    assert table.loc[("original", "motion_blur"), "rbe"] == pytest.approx(1.0)
    assert table.loc[("bright_x1", "pixelate"), "be_mean"] == pytest.approx(0.25)


def test_evaluate_corruptions_runs_a_classifier(tmp_path, request):
    import torch

    from meddap.classify.classifier import IMAGENET_MEAN, IMAGENET_STD, build_classifier

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny forward pass: one thread avoids oversubscribed cores
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    model = build_classifier("resnet18", 2).eval()
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(ultrasound_like(48, i)).save(paths[-1])
    meta = {
        "classes": ["benign", "malignant"],
        "input_size": 32,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    table = evaluate_corruptions(
        model,
        meta,
        [str(p) for p in paths],
        ["benign", "malignant"] * 2,
        corruptions=["pixelate"],
        severities=[1, 5],
        seed=0,
    )
    assert list(table["corruption"]) == ["clean", "pixelate", "pixelate"]
    assert list(table["severity"]) == [0, 1, 5]
    assert table["balanced_error"].between(0, 1).all() and (table["n_images"] == 4).all()


def _errors(variant, fold, clean, per_corruption, arch="resnet18"):
    key = {"variant": variant, "arch": arch, "fold": fold}
    rows = [{**key, "corruption": "clean", "severity": 0, "balanced_error": clean}]
    for corruption, errors in per_corruption.items():
        rows += [
            {**key, "corruption": corruption, "severity": s, "balanced_error": e} for s, e in zip(SEVERITIES, errors)
        ]
    return rows


def test_pooled_rbe_does_not_blow_up_where_the_mean_of_ratios_does():
    # brightness_up barely moves the original (0.001 in total over its clean 0.2); pixelate moves it by 1.5
    original = {"brightness_up": [0.201, 0.2, 0.2, 0.2, 0.2], "pixelate": [0.3, 0.4, 0.5, 0.6, 0.7]}
    model = {"brightness_up": [0.15] * 5, "pixelate": [0.15, 0.2, 0.25, 0.3, 0.35]}  # +0.25 and +0.75 over 0.1
    errors = pd.DataFrame(_errors("original", 0, 0.2, original) + _errors("bright_x1", 0, 0.1, model))
    summary = robustness_summary(errors).set_index(["variant", "corruption"])
    assert summary.loc[("bright_x1", "brightness_up"), "rbe"] == pytest.approx(250.0)  # 0.25 / 0.001
    assert summary.loc[("bright_x1", "mean"), "rbe"] == pytest.approx((250.0 + 0.5) / 2)  # mean of ratios
    pooled = pooled_robustness(errors).set_index("variant")
    assert pooled.loc["bright_x1", "rbe_pooled"] == pytest.approx((0.25 + 0.75) / (0.001 + 1.5))  # 0.666
    assert pooled.loc["bright_x1", "n_cells"] == 10
    assert pooled.loc["bright_x1", "degradation"] == pytest.approx(1.0 / 10)
    assert pooled.loc["bright_x1", "reference_degradation"] == pytest.approx(1.501 / 10)
    assert not pooled.loc["bright_x1", "small_reference"]
    assert pooled.loc["original", "rbe_pooled"] == pytest.approx(1.0)
    # the original alone under brightness_up degrades 0.0002 per cell: flagged
    bright_only = errors[errors["corruption"].isin(["clean", "brightness_up"])]
    flagged = pooled_robustness(bright_only).set_index("variant").loc["bright_x1"]
    assert flagged["small_reference"] and flagged["rbe_pooled"] == pytest.approx(250.0)
    per_corruption = pooled_robustness(errors, by=("variant", "arch", "fold", "corruption"))
    flags = per_corruption.set_index(["variant", "corruption"])["small_reference"]
    assert flags[("bright_x1", "brightness_up")] and not flags[("bright_x1", "pixelate")]


def test_pooled_rbe_by_hand_and_over_folds():
    result = pooled_relative_balanced_error([[0.2, 0.3], [0.25, 0.25]], 0.1, [[0.4, 0.5], [0.3, 0.3]], 0.2)
    assert result["rbe_pooled"] == pytest.approx((0.1 + 0.2 + 0.15 + 0.15) / (0.2 + 0.3 + 0.1 + 0.1))
    assert result["n_cells"] == 4 and not result["small_reference"]
    no_change = pooled_relative_balanced_error([0.3, 0.3], 0.1, [0.2, 0.2], 0.2)
    assert math.isnan(no_change["rbe_pooled"]) and no_change["small_reference"]
    with pytest.raises(ValueError):
        pooled_relative_balanced_error([0.1, 0.2], 0.1, [0.1], 0.1)
    # two folds pooled: each fold against its own original and its own clean errors
    rows = (
        _errors("original", 0, 0.2, {"pixelate": [0.3] * 5})
        + _errors("mixed_x1", 0, 0.1, {"pixelate": [0.15] * 5})
        + _errors("original", 1, 0.1, {"pixelate": [0.4] * 5})
        + _errors("mixed_x1", 1, 0.3, {"pixelate": [0.4] * 5})
    )
    by_arch = pooled_robustness(pd.DataFrame(rows), by=("variant", "arch")).set_index("variant")
    assert by_arch.loc["mixed_x1", "rbe_pooled"] == pytest.approx((5 * 0.05 + 5 * 0.1) / (5 * 0.1 + 5 * 0.3))
    by_fold = pooled_robustness(pd.DataFrame(rows)).set_index(["variant", "fold"])
    assert by_fold.loc[("mixed_x1", 0), "rbe_pooled"] == pytest.approx(0.5)
    # a fold whose original lacks the corruption: NaN, not a ratio over fewer cells
    partial = pd.DataFrame(rows[:-6] + _errors("mixed_x1", 1, 0.3, {"pixelate": [0.4] * 5, "motion_blur": [0.5] * 5}))
    assert math.isnan(pooled_robustness(partial).set_index(["variant", "fold"]).loc[("mixed_x1", 1), "rbe_pooled"])
