"""PSNR and SSIM on uint8 RGB images, on all three RGB channels or on the BT.601 Y channel.

Conventions (the same as BasicSR's ``calculate_psnr`` / ``calculate_ssim``, which most face-restoration
papers use):

* data range 255; images are compared as float64 in [0,255] (uint8 input, no rescaling);
* ``*_y``: Y of BT.601 YCbCr on the [16,235] scale (``rgb_to_y``: BasicSR ``rgb2ycbcr(y_only=True)``),
  not rounded, still with data range 255;
* PSNR = 10 log10(255² / MSE), MSE over every pixel (and channel); identical images give ``inf``;
* SSIM = Wang et al. (2004) with an 11×11 Gaussian window, σ = 1.5 (separable, normalised over the 11
  taps), K1 = 0.01, K2 = 0.03, C1 = (K1·255)², C2 = (K2·255)². Local means, variances and covariance are
  Gaussian-weighted *population* moments (no N/(N−1) "sample covariance" correction). The SSIM map is
  computed only where the whole window fits ("valid": the 5 pixels at each border are dropped) and then
  averaged; for RGB the per-channel SSIMs are averaged. This equals skimage's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``
  and BasicSR's ``_ssim``.

``crop_border`` pixels are removed at each edge before either metric (BasicSR's ``crop_border``).
Each function takes (H,W,3) pairs and returns a float, or (N,H,W,3) batches and returns an (N,) array.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d

from ._util import as_rgb_uint8, rgb_to_y

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = as_rgb_uint8(a, "img1")
    b = as_rgb_uint8(b, "img2")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _crop(x: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return x
    return x[..., border:-border, border:-border, :]


def _batched(fn, a: np.ndarray, b: np.ndarray):
    if a.ndim == 4:
        return np.array([fn(x, y) for x, y in zip(a, b, strict=True)], dtype=np.float64)
    return float(fn(a, b))


def _psnr_arrays(x: np.ndarray, y: np.ndarray) -> float:
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two 2-D float64 arrays (valid region, Gaussian population moments)."""
    g = gaussian_window_1d()
    pad = (SSIM_WINDOW - 1) // 2
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got {x.shape}")

    def filt(z):
        z = correlate1d(z, g, axis=0, mode="reflect")
        z = correlate1d(z, g, axis=1, mode="reflect")
        return z[pad:-pad, pad:-pad]

    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def _ssim_rgb(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return float(np.mean([_ssim_channel(x[..., c], y[..., c]) for c in range(3)]))


def _ssim_y(x: np.ndarray, y: np.ndarray) -> float:
    return _ssim_channel(rgb_to_y(x), rgb_to_y(y))


def _psnr_y(x: np.ndarray, y: np.ndarray) -> float:
    return _psnr_arrays(rgb_to_y(x), rgb_to_y(y))


def psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0):
    """PSNR (dB) over the three RGB channels, data range 255. ``inf`` for identical images."""
    a, b = _pair(img1, img2)
    return _batched(_psnr_arrays, _crop(a, crop_border), _crop(b, crop_border))


def psnr_y(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0):
    """PSNR (dB) on the BT.601 Y channel ([16,235] scale, unrounded), data range 255."""
    a, b = _pair(img1, img2)
    return _batched(_psnr_y, _crop(a, crop_border), _crop(b, crop_border))


def ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0):
    """SSIM averaged over the R, G, B channels (Gaussian 11/1.5 window, K1 .01, K2 .03, range 255; see module doc)."""
    a, b = _pair(img1, img2)
    return _batched(_ssim_rgb, _crop(a, crop_border), _crop(b, crop_border))


def ssim_y(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0):
    """SSIM on the BT.601 Y channel (same window and constants as :func:`ssim`)."""
    a, b = _pair(img1, img2)
    return _batched(_ssim_y, _crop(a, crop_border), _crop(b, crop_border))


CONVENTIONS = {
    "psnr": "PSNR over RGB, data range 255, float64 MSE over all pixels and channels; inf if identical",
    "psnr_y": "PSNR on BT.601 Y ([16,235] scale, BasicSR rgb2ycbcr y_only, unrounded), data range 255",
    "ssim": "SSIM (Wang 2004), Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 255, population "
    "moments (no sample-covariance correction), valid region (5 px border dropped), mean of R,G,B SSIMs",
    "ssim_y": "SSIM as 'ssim' but on BT.601 Y ([16,235] scale, unrounded)",
}
