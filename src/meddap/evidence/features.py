"""Features of images in a trained classifier's space, and distances between feature sets.

Features are the classifier's penultimate layer (the input of its classification head,
``extract_features``). Between two sets: ``frechet_distance`` (distance between Gaussian fits,
FID's formula) and ``precision_recall_knn`` (Kynkaanniemi et al. 2019 improved precision and
recall with k-NN manifolds). ``meddap.evidence.quality`` applies them to synthetic images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from meddap.classify.classifier import IMAGENET_MEAN, IMAGENET_STD, normalise

# --------------------------------------------------------------------------- features


def head_module(model: nn.Module, n_classes: int | None = None) -> tuple[str, nn.Module]:
    """The classification head: the last Linear/Conv2d whose output size is ``n_classes``.

    Covers torchvision's resnet (``fc``), densenet (``classifier``), squeezenet
    (``classifier.1``, a 1x1 conv), vgg/efficientnet/mobilenet (``classifier.N``), ... Without
    ``n_classes`` the last Linear/Conv2d is taken.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            size = module.out_features
        elif isinstance(module, nn.Conv2d):
            size = module.out_channels
        else:
            continue
        if n_classes is None or size == n_classes:
            found = (name, module)
    if found is None:
        raise ValueError(f"no Linear/Conv2d layer with {n_classes} outputs: cannot find the classification head")
    return found


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    batch_size: int = 64,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    n_classes: int | None = None,
    progress: bool = True,
    return_logits: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Penultimate-layer features (N, D) float64: the input of the classification head.

    ``images``: uint8 (N, 3, H, W) tensor as ``meddap.classify.classifier.load_image_tensor`` returns, or
    uint8 (N, H, W, 3) array; normalised with ``mean``/``std`` (``meta["mean"]``/``meta["std"]``)
    exactly as for prediction. A forward pre-hook on the head (``head_module``) captures its
    input; a spatial map (squeezenet's 1x1-conv head) is global-average pooled to one vector.
    Works for any torchvision classifier whose head is one Linear/Conv2d layer.
    ``return_logits`` also returns the model's outputs (N, C) from the same forward pass.
    """
    from tqdm import tqdm

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    _, head = head_module(model, n_classes)
    captured: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []

    def hook(_module, inputs):
        x = inputs[0]
        captured.append((x.mean(dim=(2, 3)) if x.ndim == 4 else x.flatten(1)).detach().float().cpu())

    handle = head.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="features", mininterval=5, disable=not progress):
            logits.append(model(normalise(images[start : start + batch_size], mean, std).to(device)).float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    feats = torch.cat(captured).numpy().astype(np.float64) if captured else np.zeros((0, 0))
    return (
        (feats, torch.cat(logits).numpy().astype(np.float64) if logits else np.zeros((0, 0)))
        if return_logits
        else feats
    )


# --------------------------------------------------------------------------- distribution distances


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussian fits (FID's formula).

    Full-rank covariances (more images than feature dimensions in both sets): the matrix square
    root is scipy.linalg.sqrtm; if it is not finite, ``eps`` is added to both diagonals and it is
    recomputed; a rounding-level imaginary part is dropped (real part), a large one (> 1e-3
    relative) is warned about. Rank-deficient covariances (the usual case per class and
    adjective: n <= D), where sqrtm is unreliable, use the exact identity
    Tr (S_a S_b)^(1/2) = sum of singular values of A B^T / sqrt((n_a - 1)(n_b - 1)), with A, B
    the centred feature matrices (the non-zero eigenvalues of S_a S_b are those of
    (A B^T)(A B^T)^T / ((n_a - 1)(n_b - 1))). Needs at least 2 rows per set.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D; got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Frechet distance needs at least 2 feature vectors per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    centred_a, centred_b = a - mu_a, b - mu_b
    trace_a = float((centred_a**2).sum() / (len(a) - 1))
    trace_b = float((centred_b**2).sum() / (len(b) - 1))
    if min(len(a), len(b)) - 1 < a.shape[1]:
        cross = centred_a @ centred_b.T / math.sqrt((len(a) - 1) * (len(b) - 1))
        trace_covmean = float(np.linalg.svd(cross, compute_uv=False).sum())
    else:
        trace_covmean = _trace_sqrtm(
            np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False)), eps
        )
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + trace_a + trace_b - 2.0 * trace_covmean))


def _trace_sqrtm(s_a: np.ndarray, s_b: np.ndarray, eps: float) -> float:
    """Tr (S_a S_b)^(1/2) with scipy.linalg.sqrtm, regularised when it fails."""
    from scipy import linalg

    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s_a)) * eps
        covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean).max()))
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            warnings.warn(
                f"sqrtm has a large imaginary component ({np.abs(covmean.imag).max():.3g}); "
                "the distance is approximate",
                stacklevel=2,
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(feats).kneighbors(feats)
    return distances[:, k]


def _inside_manifold(queries: np.ndarray, support: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each query: is it within radius_j of some support point j (a k-NN ball)?"""
    from sklearn.metrics import pairwise_distances

    inside = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(queries), chunk):
        distances = pairwise_distances(queries[start : start + chunk], support)
        inside[start : start + chunk] = (distances <= radii[None, :]).any(axis=1)
    return inside


def precision_recall_knn(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019, k-NN manifolds).

    The real manifold is the union of balls around each real feature with radius its distance to
    its k-th nearest real neighbour; likewise for the fake (synthetic) set.
    precision = share of fake points inside the real manifold (realism);
    recall = share of real points inside the fake manifold (coverage / diversity).
    The paper uses k = 3. Needs more than k points per set. Returns {precision, recall, k}.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D; got {real.shape} and {fake.shape}")
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"k = {k} needs more than {k} points per set; got {len(real)} real and {len(fake)} synthetic")
    precision = float(_inside_manifold(fake, real, _knn_radii(real, k)).mean())
    recall = float(_inside_manifold(real, fake, _knn_radii(fake, k)).mean())
    return {"precision": precision, "recall": recall, "k": k}
