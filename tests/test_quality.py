import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meddap.classify.classifier import IMAGENET_MEAN, IMAGENET_STD, build_classifier, load_classifier, normalise
from meddap.evidence.features import extract_features, frechet_distance, head_module, precision_recall_knn
from meddap.evidence.quality import (
    adjective_effect,
    class_fidelity,
    image_measures,
    nearest_training_copies,
    synthetic_quality,
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny CPU forward passes: one thread avoids oversubscription when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)  # squared shift
    # 1-D: (mu_a - mu_b)^2 + (sd_a - sd_b)^2
    x = rng.normal(size=(300, 1))
    y = 3 * x + 2
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    # fewer samples than dimensions (singular covariances): exact low-rank path, same formula
    p, q = rng.normal(size=(5, 20)), rng.normal(size=(6, 20)) + 1
    assert frechet_distance(p, p) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(p, p + 2.0) == pytest.approx(20 * 4.0, rel=1e-9)
    small = frechet_distance(p, q)
    assert np.isfinite(small) and small > 0
    # the low-rank identity equals sqrtm on full-rank data
    u, v = rng.normal(size=(40, 6)), rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    cu, cv = u - u.mean(0), v - v.mean(0)
    low_rank_trace = np.linalg.svd(cu @ cv.T / np.sqrt(39 * 49), compute_uv=False).sum()
    by_formula = ((u.mean(0) - v.mean(0)) ** 2).sum() + (cu**2).sum() / 39 + (cv**2).sum() / 49 - 2 * low_rank_trace
    assert frechet_distance(u, v) == pytest.approx(by_formula, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :3])


def test_precision_recall_knn_extremes():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 8))
    assert precision_recall_knn(real, real.copy(), k=3) == {"precision": 1.0, "recall": 1.0, "k": 3}
    far = precision_recall_knn(real, rng.normal(size=(150, 8)) + 1000, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # half realistic, half off-manifold: precision about one half, recall stays high-ish
    mixed = np.r_[rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 1000]
    result = precision_recall_knn(real, mixed, k=3)
    assert 0.35 < result["precision"] <= 0.5
    # collapsed synthetic set (all near one point): realistic but poor coverage
    collapsed = precision_recall_knn(real, rng.normal(size=(100, 8)) * 0.05, k=3)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2
    with pytest.raises(ValueError):
        precision_recall_knn(real[:3], real, k=3)


def test_class_fidelity_share():
    assert class_fidelity(["benign", "normal", "benign", "malignant"], ["benign"] * 4) == pytest.approx(0.5)
    assert np.isnan(class_fidelity([], []))


def _speckle(rng, size=32, scale=1.0, rgb=False):
    image = np.clip(rng.gamma(4.0, 20.0, (size, size)) * scale, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, 2) if rgb else image


def test_adjective_effect_verdicts():
    rng = np.random.default_rng(2)
    none = [_speckle(rng) for _ in range(12)]
    bright = [_speckle(rng, scale=1.6) for _ in range(12)]
    table = adjective_effect(bright, none, "bright").set_index("measure")
    assert table.loc["mean_intensity", "verdict"] == "as expected" and table.loc["mean_intensity", "difference"] > 0
    assert table.loc["rms_contrast", "verdict"] == "not targeted"
    assert adjective_effect(bright, none, "dark").set_index("measure").loc["mean_intensity", "verdict"] == "opposite"
    similar = adjective_effect([_speckle(rng) for _ in range(12)], none, "bright").set_index("measure")
    assert similar.loc["mean_intensity", "verdict"] == "no clear change"
    posterized = [(_speckle(rng) // 64) * 64 for _ in range(12)]
    assert (
        adjective_effect(posterized, none, "posterized").set_index("measure").loc["grey_levels", "verdict"]
        == "as expected"
    )
    flat = [np.clip((image.astype(float) - 80) * 0.3 + 80, 0, 255).astype(np.uint8) for image in none]
    assert (
        adjective_effect(flat, none, "low-contrast").set_index("measure").loc["rms_contrast", "verdict"]
        == "as expected"
    )
    tinted = [_speckle(rng, rgb=True) for _ in range(12)]
    for image in tinted:
        image[..., 0] = np.clip(image[..., 0].astype(int) + 60, 0, 255)
    assert (
        adjective_effect(tinted, [_speckle(rng, rgb=True) for _ in range(12)], "colorful")
        .set_index("measure")
        .loc["colorfulness", "verdict"]
        == "as expected"
    )
    assert set(adjective_effect(bright, none, "sheared")["verdict"]) == {"not measured"}


def test_image_measures_by_hand():
    image = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    measures = image_measures(image)
    assert measures["mean_intensity"] == pytest.approx(127.5)
    assert measures["rms_contrast"] == pytest.approx(0.5)
    assert measures["grey_levels"] == 2 and measures["colorfulness"] == 0


def test_nearest_training_copies_flags_copies():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(100, 32))  # in 32-D nearest-neighbour distances concentrate
    train_ids = [f"t{i}" for i in range(100)]
    copies = train[[4, 17, 33]] + rng.normal(scale=1e-2, size=(3, 32))
    novel = rng.normal(size=(5, 32))
    synth = np.r_[novel[:2], copies, novel[2:]]
    synth_ids = [f"s{i}" for i in range(8)]
    table = nearest_training_copies(synth, train, synth_ids, train_ids, top=2)
    flagged = table[table["near_copy"]]
    assert sorted(flagged["synthetic_id"]) == ["s2", "s3", "s4"]
    assert dict(zip(flagged["synthetic_id"], flagged["train_id"])) == {"s2": "t4", "s3": "t17", "s4": "t33"}
    assert len(table) == 3  # top 2, but no near copy is hidden
    everything = nearest_training_copies(synth, train, synth_ids, train_ids, top=None)
    assert len(everything) == 8 and everything["distance"].is_monotonic_increasing
    assert everything["near_copy"].sum() == 3 and list(everything["rank"]) == list(range(1, 9))


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("densenet121", 1024), ("squeezenet1_1", 512)])
def test_extract_features_is_the_head_input(arch, dim):
    torch.manual_seed(0)
    model = build_classifier(arch, 3).eval()
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)
    feats, logits = extract_features(model, images, batch_size=2, n_classes=3, progress=False, return_logits=True)
    assert feats.shape == (5, dim) and logits.shape == (5, 3)
    with torch.no_grad():
        expected = model(normalise(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    one_by_one = extract_features(model, images.permute(0, 2, 3, 1).numpy(), batch_size=1, n_classes=3, progress=False)
    np.testing.assert_allclose(one_by_one, feats, rtol=1e-4, atol=1e-5)  # NHWC arrays and batching agree
    name, head = head_module(model, 3)
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            np.testing.assert_allclose(head(torch.from_numpy(feats).float()).numpy(), expected, rtol=1e-4, atol=1e-4)
    else:
        assert name == "classifier.1"


def test_synthetic_quality_end_to_end(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    classes = ["benign", "malignant", "normal"]
    model = build_classifier("resnet18", 3)
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    meta = {
        "arch": "resnet18",
        "classes": classes,
        "input_size": 32,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    (folder / "model.json").write_text(json.dumps(meta))
    model, meta = load_classifier(folder)

    rng = np.random.default_rng(4)
    real_rows, synth_rows = [], []
    for cls in classes[:2]:
        for i in range(5):
            path = tmp_path / f"real_{cls}_{i}.png"
            Image.fromarray(_speckle(rng)).save(path)
            real_rows.append({"path": str(path), "class": cls})
            for adjective, scale in (("none", 1.0), ("bright", 1.5)):
                path = tmp_path / f"synth_{cls}_{adjective}_{i}.png"
                Image.fromarray(_speckle(rng, scale=scale)).save(path)
                synth_rows.append({"path": str(path), "class": cls, "adjective": adjective})
    table = synthetic_quality(model, meta, pd.DataFrame(real_rows), pd.DataFrame(synth_rows), k=3)
    assert len(table) == 2 * 3  # (class, none | bright | all)
    row = table.set_index(["class", "adjective"]).loc[("benign", "all")]
    assert row["n_synthetic"] == 10 and row["n_real"] == 5
    assert 0 <= row["fidelity"] <= 1 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    assert table["frechet_distance"].notna().all() and (table["frechet_distance"] >= 0).all()
