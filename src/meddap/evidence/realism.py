"""How far synthetic images are from real ones, and what bounds them.

Three measures, each on a fold's training originals only (``meddap.data.arms.arm_training_rows``:
the images the fold's LoRAs learnt from; never its validation fold, the test split or an unseen set):

* **the autoencoder ceiling**: the originals through the base model's VAE and back
  (``meddap.diffusion.autoencoder``): PSNR and SSIM (scikit-image) and a two-sample test real vs
  reconstructed. No synthetic image can be sharper than its autoencoder lets it be.
* **a classifier two-sample test, real vs synthetic** (``two_sample_auroc``): a classifier learns to
  tell the two sets apart from equal numbers of each; its 5-fold cross-validated AUROC is 0.5 when
  it cannot and 1.0 when it always can. Two feature sets:

  - *image statistics* (``image_statistics``, 64 px grey): the radially averaged log power
    spectrum (speckle grain, blur, periodic artefacts), a 16-bin intensity histogram, mean,
    standard deviation and mean absolute horizontal and vertical gradients (edge sharpness), with
    gradient-boosted trees. It sees texture, sharpness and grey-level distribution; it does not
    see anatomy, lesion shape or whether an image shows its class.
  - *judge features*: the penultimate layer of the fold's ``original`` classifier, with a linear
    probe. It sees what the classifiers use; the judge trained on these very originals, so it may
    also tell "seen in training" from "not seen", which makes this test stricter, not laxer.
* the figure per class: real images, their VAE reconstructions and synthetic images side by side.

The two-sample tests run per generation mode (``mode``): the text-to-image shards, and where they
are planned the guided shards and the images each filter kept, so the modes compared in the
report are also compared on how real their images are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURE_SIZE = 64  # px: the images are compared at this size whatever their resolution
HISTOGRAM_BINS = 16
CV_FOLDS = 5
IMAGE_STATISTICS = "image statistics"
TEXT_TO_IMAGE_MODE = "text-to-image"  # the text-to-image shards (meddap.evidence.modes names modes the same)


@dataclass(frozen=True)
class TwoSample:
    """A two-sample test's result: cross-validated AUROC of telling set B from set A, with a 95% interval."""

    auroc: float
    ci_low: float
    ci_high: float
    n_per_side: int

    def row(self) -> dict:
        return {"auroc": self.auroc, "ci_low": self.ci_low, "ci_high": self.ci_high, "n_per_side": self.n_per_side}


NOT_TESTED = TwoSample(math.nan, math.nan, math.nan, 0)


def _grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, 3]) uint8 -> (N, FEATURE_SIZE, FEATURE_SIZE) float in [0, 1] (luma, area-resized)."""
    from PIL import Image

    out = []
    for image in images:
        picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
        picture = picture.convert("L").resize((FEATURE_SIZE, FEATURE_SIZE), Image.Resampling.BOX)
        out.append(np.asarray(picture, dtype=np.float64) / 255.0)
    return np.stack(out) if out else np.empty((0, FEATURE_SIZE, FEATURE_SIZE))


def _radial_index(size: int) -> np.ndarray:
    y, x = np.indices((size, size)) - size // 2
    return np.hypot(x, y).round().astype(int)


def image_statistics(images: np.ndarray) -> np.ndarray:
    """Per image: radially averaged log power spectrum (radii 1 .. size/2 - 1), a 16-bin intensity
    histogram, mean, standard deviation, mean |horizontal gradient|, mean |vertical gradient|."""
    grey = _grey(images)
    if not len(grey):
        return np.empty((0, FEATURE_SIZE // 2 - 1 + HISTOGRAM_BINS + 4))
    radius = _radial_index(FEATURE_SIZE).ravel()
    radii = np.arange(1, FEATURE_SIZE // 2)
    counts = np.bincount(radius)
    rows = []
    for image in grey:
        power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
        spectrum = np.bincount(radius, weights=np.log(power.ravel() + 1e-8)) / np.maximum(counts, 1)
        histogram, _ = np.histogram(image, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
        rows.append(
            np.concatenate(
                [
                    spectrum[radii],
                    histogram / image.size,
                    [
                        image.mean(),
                        image.std(),
                        np.abs(np.diff(image, axis=1)).mean(),
                        np.abs(np.diff(image, axis=0)).mean(),
                    ],
                ]
            )
        )
    return np.asarray(rows)


def two_sample_auroc(
    real: np.ndarray,
    other: np.ndarray,
    classifier: str = "boosted",
    seed: int = 0,
    folds: int = CV_FOLDS,
    n_bootstrap: int = 1000,
) -> TwoSample:
    """Can a classifier tell ``other`` from ``real`` (rows: feature vectors)?

    Equal numbers per side (the larger side subsampled, seeded); ``folds``-fold stratified cross-
    validation; the AUROC of the out-of-fold scores with a 95% percentile interval over stratified
    bootstrap resamples of the images. ``classifier``: "boosted" (scikit-learn's
    HistGradientBoostingClassifier) or "linear" (standardised logistic regression, a linear probe).
    NaN where a side has fewer than 2 images per fold, or where the classifier gives every image the
    same score (it found nothing to learn from; ``n_per_side`` then says how many it had).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(other))
    if n < 2 * folds:
        return NOT_TESTED
    seed = int(seed) % 2**32  # scikit-learn's random_state takes 32 bits; derive_seed gives 63
    rng = np.random.default_rng(seed)
    a = np.asarray(real)[np.sort(rng.choice(len(real), n, replace=False))]
    b = np.asarray(other)[np.sort(rng.choice(len(other), n, replace=False))]
    features = np.vstack([a, b])
    labels = np.repeat([0, 1], n)
    if classifier == "boosted":
        # scikit-learn's default leaf (20 images) cannot split the ~4n/5 training images of a small set,
        # and a tree that cannot split scores every image alike (AUROC 0.5 whatever the images are).
        leaf = max(2, min(20, (2 * n * (folds - 1) // folds) // 8))
        model = HistGradientBoostingClassifier(min_samples_leaf=leaf, random_state=seed)
    elif classifier == "linear":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:
        raise ValueError(f"classifier {classifier!r}: 'boosted' or 'linear'")
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=split, method="predict_proba")[:, 1]
    if np.ptp(scores) == 0:  # the classifier learnt nothing to score by: no verdict, not "indistinguishable"
        return dataclasses.replace(NOT_TESTED, n_per_side=n)
    auroc = float(roc_auc_score(labels, scores))
    # Stratified bootstrap of the images (each side resampled within itself), all resamples at once:
    # the AUROC of a resample is its Mann-Whitney U over n * n.
    from scipy.stats import rankdata

    index = np.concatenate([rng.integers(0, n, (n_bootstrap, n)), n + rng.integers(0, n, (n_bootstrap, n))], axis=1)
    ranks = rankdata(scores[index], axis=1)
    resampled = (ranks[:, n:].sum(axis=1) - n * (n + 1) / 2) / (n * n)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return TwoSample(auroc, float(low), float(high), n)


def reconstruction_errors(real: np.ndarray, reconstructed: np.ndarray) -> pd.DataFrame:
    """PSNR (dB) and SSIM of each reconstruction against its original, on luma (scikit-image)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def luma(image: np.ndarray) -> np.ndarray:
        return np.asarray(image, dtype=np.float64)[..., :3] @ np.array([0.299, 0.587, 0.114])

    rows = []
    for original, copy in zip(real, reconstructed):
        a, b = luma(original), luma(copy)
        with np.errstate(divide="ignore"):  # an exact copy has infinite PSNR
            rows.append(
                {
                    "psnr": peak_signal_noise_ratio(a, b, data_range=255.0),
                    "ssim": structural_similarity(a, b, data_range=255.0),
                }
            )
    return pd.DataFrame(rows, columns=["psnr", "ssim"])


# --------------------------------------------------------------------------- a run's realism tables


def _images(paths: list[str]) -> np.ndarray:
    from meddap.data.images import load_array

    return np.stack([load_array(path) for path in paths]) if paths else np.empty((0, 1, 1, 3), np.uint8)


def _judge_features(model_dir: str, paths: list[str]) -> np.ndarray:
    """Penultimate features of ``paths`` under one judge, loaded once for all of them."""
    from meddap.classify.classifier import load_classifier, load_image_tensor
    from meddap.evidence.features import extract_features

    model, meta = load_classifier(model_dir)
    images = load_image_tensor(paths, meta["input_size"])
    return extract_features(
        model, images, 64, meta["mean"], meta["std"], n_classes=len(meta["classes"]), progress=False
    )


def realism_tables(
    manifest: pd.DataFrame,
    arms: list[str],
    arm_shards: dict[str, list[str]],
    base_model: str,
    resolution: int,
    judges: dict[str, list[str]],
    seed: int,
    n_examples: int = 4,
    device: str = "cpu",
    grayscale: bool = False,
    other_modes: dict[str, dict[str, pd.DataFrame]] | None = None,
) -> dict:
    """Every realism table of a run, and the example images of its figure.

    ``arms[k]``: the generative arm whose synthetic images train fold k; ``arm_shards``: each arm's
    shard folders; ``base_model``: the diffusers folder every job reads; ``resolution``: the
    generation resolution (originals go through the VAE at it, in fp32 on ``device``, and their
    reconstructions are made grey as the synthetic images are with ``grayscale``);
    ``judges[arch][k]``: fold k's ``original`` classifier of ``arch`` (replicate 0). The real images
    of an arm are its training originals (``arm_training_rows``), listed in ``inputs`` so that a
    check can prove it. ``other_modes``: mode -> arm -> its synthetic rows (``read_shards``'s path,
    class, adjective): the guided shards, a filter's kept images; ``arm_shards`` are mode
    ``text-to-image``.

    Returns ``autoencoder`` (arm, class: PSNR, SSIM, two-sample AUROC real vs reconstruction),
    ``two_sample`` (mode, arm, class, adjective, features: AUROC real vs synthetic), ``inputs`` (arm,
    class, path of every real image used) and ``examples`` ({class: (real, reconstructed,
    {mode: synthetic})} uint8 arrays of the first arm).
    """
    from meddap.data.arms import arm_training_rows
    from meddap.diffusion.autoencoder import load_autoencoder, round_trip
    from meddap.diffusion.generate import read_shards
    from meddap.diffusion.sampling import to_grey_rgb
    from meddap.runtime.seeding import derive_seed

    vae = load_autoencoder(base_model, device)
    autoencoder, tests, inputs, examples = [], [], [], {}
    real_by_arm: dict[str, pd.DataFrame] = {}
    modes = {TEXT_TO_IMAGE_MODE: {arm: read_shards(list(arm_shards[arm])) for arm in dict.fromkeys(arms)}}
    modes.update(other_modes or {})
    real_statistics_by: dict[tuple[str, str], np.ndarray] = {}
    for arm in dict.fromkeys(arms):
        real = real_by_arm[arm] = arm_training_rows(manifest, arm).reset_index(drop=True)
        for cls in sorted(real["class"].unique()):
            paths = list(real.loc[real["class"] == cls, "path"])
            inputs += [{"arm": arm, "class": cls, "path": path} for path in paths]
            originals, reconstructed = round_trip(vae, paths, resolution)
            if grayscale:  # as generate_shard saves the synthetic images (generation.grayscale)
                reconstructed = np.stack([to_grey_rgb(image) for image in reconstructed])
            errors = reconstruction_errors(originals, reconstructed)
            real_statistics = real_statistics_by[(arm, cls)] = image_statistics(originals)
            ceiling = two_sample_auroc(
                real_statistics, image_statistics(reconstructed), seed=derive_seed(seed, "realism", arm, cls, "vae")
            )
            autoencoder.append(
                {
                    "arm": arm,
                    "class": cls,
                    "n_images": len(paths),
                    "psnr_mean": errors["psnr"].mean(),
                    "psnr_std": errors["psnr"].std(),
                    "ssim_mean": errors["ssim"].mean(),
                    "ssim_std": errors["ssim"].std(),
                    **ceiling.row(),
                }
            )
            for mode, by_arm in modes.items():
                synthetic = by_arm.get(arm, pd.DataFrame(columns=["path", "class", "adjective"]))
                own = synthetic[synthetic["class"] == cls]
                synthetic_images = _images(list(own["path"]))
                synthetic_statistics = image_statistics(synthetic_images)
                adjectives = sorted(own["adjective"].unique())
                for adjective in ["all", *(adjectives if len(adjectives) > 1 else [])]:
                    chosen = (
                        np.ones(len(own), bool) if adjective == "all" else (own["adjective"] == adjective).to_numpy()
                    )
                    # The text-to-image mode keeps its seeds from before modes were measured.
                    parts = (arm, cls, adjective) if mode == TEXT_TO_IMAGE_MODE else (arm, cls, adjective, mode)
                    result = two_sample_auroc(
                        real_statistics, synthetic_statistics[chosen], seed=derive_seed(seed, "realism", *parts)
                    )
                    tests.append(
                        {
                            "mode": mode,
                            "arm": arm,
                            "class": cls,
                            "adjective": adjective,
                            "features": IMAGE_STATISTICS,
                            **result.row(),
                        }
                    )
                if arm == arms[0] and len(own):  # the figure: the first arm's images, a row per mode
                    examples.setdefault(cls, (originals[:n_examples], reconstructed[:n_examples], {}))[2][mode] = (
                        synthetic_images[:n_examples]
                    )
    # The judges' view: fold k's original classifier embeds its arm's originals and synthetic images.
    for (arch, model_dirs), mode in ((item, mode) for item in judges.items() for mode in modes):
        for fold, (arm, model_dir) in enumerate(zip(arms, model_dirs)):
            real = real_by_arm[arm]
            synthetic = (
                modes[mode].get(arm, pd.DataFrame(columns=["path", "class", "adjective"])).reset_index(drop=True)
            )
            # One load of the judge and one pass over the arm's images; each class takes its rows.
            features = _judge_features(model_dir, [*real["path"], *synthetic["path"]])
            real_features, synthetic_features = features[: len(real)], features[len(real) :]
            for cls in sorted(real["class"].unique()):
                own = (synthetic["class"] == cls).to_numpy()
                if not own.any():
                    continue
                result = two_sample_auroc(
                    real_features[(real["class"] == cls).to_numpy()],
                    synthetic_features[own],
                    classifier="linear",
                    seed=derive_seed(
                        seed, "realism", arm, cls, arch, fold, *([] if mode == TEXT_TO_IMAGE_MODE else [mode])
                    ),
                )
                tests.append(
                    {
                        "mode": mode,
                        "arm": arm,
                        "class": cls,
                        "adjective": "all",
                        "features": f"{arch} judge (fold {fold})",
                        **result.row(),
                    }
                )
    return {
        "autoencoder": pd.DataFrame(autoencoder),
        "two_sample": pd.DataFrame(tests),
        "inputs": pd.DataFrame(inputs, columns=["arm", "class", "path"]),
        "examples": examples,
    }


def realism_by_class(autoencoder: pd.DataFrame, two_sample: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, class): means over the arms (and judges) of each measure, with their ranges
    (text-to-image first; a table without a mode column is text-to-image)."""
    if autoencoder.empty:
        return pd.DataFrame()
    if "mode" not in two_sample:
        two_sample = two_sample.assign(mode=TEXT_TO_IMAGE_MODE)
    modes = [TEXT_TO_IMAGE_MODE, *sorted(set(two_sample["mode"]) - {TEXT_TO_IMAGE_MODE})]
    rows = []
    for mode, (cls, ceiling) in ((mode, item) for mode in modes for item in autoencoder.groupby("class")):
        tests = two_sample[
            (two_sample["mode"] == mode) & (two_sample["class"] == cls) & (two_sample["adjective"] == "all")
        ]
        if tests.empty:
            continue
        statistics = tests[tests["features"] == IMAGE_STATISTICS]["auroc"]
        judge = tests[tests["features"] != IMAGE_STATISTICS]["auroc"]
        rows.append(
            {
                "mode": mode,
                "class": cls,
                "auroc_synthetic": statistics.mean(),
                "auroc_synthetic_min": statistics.min(),
                "auroc_synthetic_max": statistics.max(),
                "auroc_judge": judge.mean() if len(judge) else math.nan,
                "auroc_reconstruction": ceiling["auroc"].mean(),
                "psnr": ceiling["psnr_mean"].mean(),
                "ssim": ceiling["ssim_mean"].mean(),
                "n_arms": len(ceiling),
            }
        )
    return pd.DataFrame(rows)
