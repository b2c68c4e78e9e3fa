"""Printed photos: the halftone screen of a newspaper, magazine or yearbook picture, found and smoothed away before
faces are looked for and restored (``restore --descreen``).

A printed photo is a grid of ink dots (AM halftone: one dot per cell of a regular screen, its size the tone). Scanned
finely enough to see the dots, a face is a pattern of dots to the detector and the restorer, which were trained on
blur, noise, downsampling and JPEG, not on dots: it is found less often and comes back with its dots (or, with
``--detail keep``, as it went in). The screen's period is fixed over the whole print, so it stands out in the scan's
spectrum as sharp peaks; what the print shows of the photo lies below the screen's frequency (a screen samples the
photo once a cell).

1. :func:`find_screen`: the luma's power spectrum, averaged over tiles of :data:`TILE` px (Welch's method, a Hann
   window), on a log scale minus its median over each ring of equal frequency (what a photo's spectrum has at that
   frequency in every direction). A screen is a local peak at least :data:`MIN_DB` dB above that, between periods of
   :data:`MIN_PERIOD` and :data:`MAX_PERIOD` px, with a second such peak at about the same frequency about 90° away
   (a screen's cells are square; a row of stripes, a fence, a fabric or a scanner's streaks run one way only). The
   spectrum of a JPEG's 8×8 blocks (multiples of 1/8 cycle a pixel on both axes) is not a screen. The screen's
   period is that of its lowest such peak (its fundamental), refined to a fraction of a bin.
2. :func:`descreen`: a Gaussian low-pass of σ = :data:`SIGMA_PER_PERIOD` × the period, which leaves
   :data:`RESIDUAL` of the screen's fundamental. What remains is a blurred photo, the degradation the restorer was
   trained on; Gaussian, not a sharper cut: a sharper low-pass rings around every edge.

Off by default (a photo's own regular pattern is left as it is): the record's ``descreen`` says what was found
(period, angle, lines per inch when the scan's dpi is known, strength), and a photo asked for without a screen is
said to be left as it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Screen", "find_screen", "descreen", "screen_sigma"]

TILE = 256  # px: the tiles the spectrum is averaged over (a screen's period of 24 px is 10 bins out)
MIN_PERIOD, MAX_PERIOD = 1.6, 24.0  # px: from a magazine's 175 lpi at 300 dpi (diagonal) to 65 lpi at 1600 dpi
MIN_DB = 20.0  # dB above the spectrum's median at that frequency
ISOLATION_DB = 10.0  # dB above the spectrum ISOLATION_BINS nearer and farther along the same direction
ISOLATION_BINS = (3, 4, 5)
AXIS_MIN_PERIOD, AXIS_DEG = 3.0, 5.0  # peaks this near the axes at a shorter period are an enlargement's, not a screen
PARTNER_DEG = 15.0  # the second peak's angle from 90° of the first, at most
PARTNER_RATIO = 0.12  # ... and its frequency's relative difference, at most
RESIDUAL = 0.02  # the share of the screen's fundamental left by descreen
SIGMA_PER_PERIOD = math.sqrt(math.log(1.0 / RESIDUAL) / (2.0 * math.pi**2))  # 0.445: exp(-2π²σ²f²) = RESIDUAL


@dataclass(frozen=True)
class Screen:
    """A halftone screen found in a scan: its period (px along the screen's rows), the angle of its rows (degrees,
    0-90), how far its peak stands above the spectrum (dB) and the Gaussian σ (px) :func:`descreen` smooths with."""

    period_px: float
    angle_deg: float
    strength_db: float
    sigma_px: float

    def record(self, dpi: float | None = None) -> dict:
        """The record's ``descreen`` entry; with the scan's dpi, the screen's ruling in lines per inch."""
        d = {k: round(v, 2) for k, v in asdict(self).items()}
        if dpi:
            d["lpi"] = round(dpi / self.period_px, 1)
        return d


def screen_sigma(period_px: float) -> float:
    """The Gaussian σ (px) that leaves :data:`RESIDUAL` of a screen of this period."""
    return SIGMA_PER_PERIOD * period_px


def _luma(rgb: np.ndarray) -> np.ndarray:
    x = np.asarray(rgb, dtype=np.float32)
    return x if x.ndim == 2 else x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)


def _spectrum(rgb: np.ndarray, n: int, most_tiles: int = 64) -> np.ndarray:
    """Mean power spectrum (fftshift-ed, n×n) of the luma of up to ``most_tiles`` n×n tiles spread evenly over
    ``rgb`` (the luma of the tiles only: a 12-MP scan's whole luma took 0.6 s)."""
    h, w = rgb.shape[:2]
    rows = np.linspace(0, h - n, max(1, min(h // n, 8))).astype(int)
    cols = np.linspace(0, w - n, max(1, min(w // n, most_tiles // max(1, len(rows))))).astype(int)
    win = np.outer(np.hanning(n), np.hanning(n)).astype(np.float32)
    acc = np.zeros((n, n), np.float64)
    for r in rows:
        for c in cols:
            t = _luma(rgb[r : r + n, c : c + n])
            acc += np.abs(np.fft.fft2((t - t.mean()) * win)) ** 2
    return np.fft.fftshift(acc / (len(rows) * len(cols)))


def _ring_median(v: np.ndarray, ring: np.ndarray, rings: int) -> np.ndarray:
    order = np.argsort(ring, kind="stable")
    bounds = np.searchsorted(ring[order], np.arange(rings + 1))
    vals = v[order]
    return np.array([np.median(vals[a:b]) if b > a else 0.0 for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def _isolation(db: np.ndarray, r: int, c: int, n: int) -> float:
    """How far (dB) the spectrum at bin (r, c) stands above itself :data:`ISOLATION_BINS` bins nearer and farther
    along the same direction (the higher side): a screen's peak is a point, a photo's edges and lines make rays."""
    k = np.array([r - n // 2, c - n // 2], float)
    u = k / np.hypot(*k)
    sides = []
    for sign in (-1.0, 1.0):
        vals = []
        for d in ISOLATION_BINS:
            y, x = np.rint(k + sign * d * u).astype(int) + n // 2
            if 0 <= y < n and 0 <= x < n:
                vals.append(db[y, x])
        if vals:
            sides.append(float(np.mean(vals)))
    return float(db[r, c] - max(sides)) if sides else 0.0


def find_screen(rgb: np.ndarray, *, min_db: float = MIN_DB, isolation_db: float = ISOLATION_DB,
                min_period: float = MIN_PERIOD, max_period: float = MAX_PERIOD) -> Screen | None:
    """The halftone screen of a scanned print (``rgb``: H×W×3 or H×W, any range), or ``None`` when it has none that
    stands out (see the module's docstring for the test)."""
    n = min(TILE, *rgb.shape[:2]) // 2 * 2
    if n < 64:
        return None
    p = _spectrum(rgb, n)
    db = 10.0 * np.log10(p + 1e-12 * max(float(p.max()), 1e-30))
    k = np.arange(n) - n // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    rad = np.hypot(kx, ky)
    ring = np.minimum(np.rint(rad).astype(int), n // 2 + 1).ravel()
    excess = db - _ring_median(db.ravel(), ring, n // 2 + 2)[ring].reshape(n, n)
    lo, hi = n / max_period, n / min_period
    jpeg = (kx % (n // 8) == 0) & (ky % (n // 8) == 0) if n % 8 == 0 else np.zeros_like(rad, bool)
    pad = np.pad(excess, 1, mode="edge")
    local_max = np.ones_like(excess, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                local_max &= excess >= pad[1 + dy : 1 + dy + n, 1 + dx : 1 + dx + n]
    ok = local_max & (rad >= lo) & (rad <= hi) & (excess >= min_db) & ~jpeg & (ky >= 0)  # one of each ± pair
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    peaks = []  # (frequency in bins, angle of the peak's direction in [0, 180), excess dB), refined to a sub-bin
    for i in idx:
        r, c = divmod(int(i), n)
        if not (0 < r < n - 1 and 0 < c < n - 1) or _isolation(db, r, c, n) < isolation_db:
            continue
        wgt = np.maximum(p[r - 1 : r + 2, c - 1 : c + 2], 0.0)
        fy = float((wgt * ky[r - 1 : r + 2, c - 1 : c + 2]).sum() / wgt.sum())
        fx = float((wgt * kx[r - 1 : r + 2, c - 1 : c + 2]).sum() / wgt.sum())
        peaks.append((math.hypot(fx, fy), math.degrees(math.atan2(-fy, fx)) % 180.0, float(excess[r, c])))  # y up
    # not an enlarged photo's interpolation (rows and columns every 2-3 px); with a screen, though, such peaks are
    # its own (a 0° screen's, or a fine 45° screen's harmonic folded back): the screen's smoothing removes them too
    axis = [n / f for f, ang, _ in peaks if n / f < AXIS_MIN_PERIOD and min(ang % 90.0, 90.0 - ang % 90.0) <= AXIS_DEG]
    peaks = sorted(p for p in peaks if n / p[0] not in axis)
    for f, ang, e in peaks:  # the lowest peak with a partner about 90° away at about its frequency
        for f2, ang2, _ in peaks:
            turn = abs((ang2 - ang) % 180.0 - 90.0)
            if turn <= PARTNER_DEG and abs(f2 - f) <= PARTNER_RATIO * f:
                period = n / f
                return Screen(period_px=period, angle_deg=ang % 90.0, strength_db=e,
                              sigma_px=screen_sigma(max([period, *axis])))
    return None


def descreen(img: np.ndarray, screen: Screen) -> np.ndarray:
    """``img`` (H×W×C or H×W, uint8, uint16 or float) smoothed by the screen's Gaussian (:func:`screen_sigma`); the
    dtype kept (integers rounded)."""
    import cv2

    x = np.asarray(img)
    out = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=screen.sigma_px, sigmaY=screen.sigma_px,
                           borderType=cv2.BORDER_REFLECT)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(x.dtype)
    return out.astype(x.dtype)
