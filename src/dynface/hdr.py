"""HDR video to SDR: what a phone's HDR video (10-bit BT.2020, HLG or PQ) looks like on an ordinary (SDR) screen.

The restorer works on SDR faces (8-bit, BT.709 colours), so an HDR frame is brought to SDR before faces are
looked for, and the restored video is SDR BT.709 (:mod:`dynface.video` says so in the record). Read as if it were
SDR, an HLG frame comes out flat and pale, a PQ frame dark and grey, and both with BT.2020's primaries taken for
BT.709's (colours too weak).

The conversion is display-referred, as ITU-R BT.2408 describes for HDR to SDR:

1. Y'CbCr to R'G'B' with BT.2020's non-constant-luminance matrix (:func:`ycbcr_to_rgb`; limited or full range);
2. to display light in cd/m²: PQ by its EOTF (SMPTE ST 2084, :func:`pq_eotf`); HLG by its inverse OETF and the
   OOTF of a 1000 cd/m² display (BT.2100, :func:`hlg_display_light`); a BT.2020 SDR frame by BT.1886's gamma 2.4;
3. from BT.2020 to BT.709 primaries (:data:`BT2020_TO_BT709`, in linear light);
4. HDR reference white (:data:`REFERENCE_WHITE`, 203 cd/m²: HLG's 75 % signal, BT.2408) becomes SDR's white level
   1.0, and what lies above it is compressed into the top (:func:`tone_map`, on each pixel's largest channel, so
   hues stay): linear up to :data:`KNEE`, then an extended Reinhard curve that reaches 1.0 at the peak
   (1000 cd/m²; brighter is clipped);
5. BT.709 colours outside [0, 1] clipped, then BT.1886's inverse (gamma 1/2.4): what an SDR screen shows.

All functions take and return float arrays (``float32`` from :func:`hdr_to_sdr`); they are pure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PQ", "HLG", "REFERENCE_WHITE", "PEAK", "KNEE", "BT2020_TO_BT709", "ycbcr_to_rgb", "pq_eotf",
           "pq_inverse_eotf", "hlg_inverse_oetf", "hlg_oetf", "hlg_display_light", "tone_map", "hdr_to_sdr"]

PQ, HLG = 16, 18
"""FFmpeg's transfer characteristics (AVColorTransferCharacteristic) of HDR video: SMPTE ST 2084 and ARIB STD-B67."""
BT2020_PRIMARIES = 9

REFERENCE_WHITE = 203.0
"""cd/m² of HDR reference white (BT.2408): HLG's 75 % signal on a 1000 cd/m² display; SDR white after mapping."""
PEAK = 1000.0
"""cd/m² taken as the brightest an HDR video holds: HLG's nominal display peak, and the mastering peak of most PQ
(HDR10) phone videos; brighter PQ pixels are clipped."""
KNEE = 0.6
"""SDR linear level (0.6: 81 % signal) up to which light is kept as it is; above it, up to :data:`PEAK`, compressed."""

# BT.2020 non-constant luminance
KR, KB = 0.2627, 0.0593
BT2020_TO_BT709 = np.array([[1.660491, -0.587641, -0.072850],
                            [-0.124550, 1.132900, -0.008349],
                            [-0.018151, -0.100579, 1.118730]])
"""Linear RGB with BT.2020 primaries to linear RGB with BT.709's (same D65 white: each row sums to 1; BT.2087)."""

_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
_A, _B, _C = 0.17883277, 0.28466892, 0.55991073
_HLG_GAMMA = 1.2  # the OOTF's system gamma at 1000 cd/m² (BT.2100)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int, full_range: bool = False) -> np.ndarray:
    """R'G'B' (..., 3) in [0, 1] (a little beyond where the signal is) of integer Y'CbCr samples of ``bits`` bits
    with BT.2020's non-constant-luminance matrix; limited range: Y' 16..235 and Cb/Cr 16..240 scaled to the bits."""
    s = float(1 << (bits - 8))
    if full_range:
        top = (1 << bits) - 1
        yn, cbn, crn = y / top, (cb - 128 * s) / top, (cr - 128 * s) / top
    else:
        yn, cbn, crn = (y - 16 * s) / (219 * s), (cb - 128 * s) / (224 * s), (cr - 128 * s) / (224 * s)
    r = yn + 2 * (1 - KR) * crn
    b = yn + 2 * (1 - KB) * cbn
    g = (yn - KR * r - KB * b) / (1 - KR - KB)
    return np.stack([r, g, b], axis=-1)


def pq_eotf(e: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084: a PQ signal in [0, 1] to display light in cd/m² (0 to 10 000)."""
    p = np.power(np.clip(e, 0.0, 1.0), 1 / _M2)
    return 10000.0 * np.power(np.maximum(p - _C1, 0.0) / (_C2 - _C3 * p), 1 / _M1)


def pq_inverse_eotf(nits: np.ndarray) -> np.ndarray:
    """The PQ signal of display light ``nits`` (cd/m²): the inverse of :func:`pq_eotf`."""
    y = np.power(np.clip(nits / 10000.0, 0.0, 1.0), _M1)
    return np.power((_C1 + _C2 * y) / (1 + _C3 * y), _M2)


def hlg_inverse_oetf(e: np.ndarray) -> np.ndarray:
    """BT.2100 HLG: a signal in [0, 1] to normalised scene light in [0, 1]."""
    e = np.clip(e, 0.0, 1.0)
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - _C) / _A) + _B) / 12)


def hlg_oetf(light: np.ndarray) -> np.ndarray:
    """The HLG signal of normalised scene light in [0, 1]: the inverse of :func:`hlg_inverse_oetf`."""
    light = np.clip(light, 0.0, 1.0)
    return np.where(light <= 1 / 12, np.sqrt(3 * light), _A * np.log(np.maximum(12 * light - _B, 1e-12)) + _C)


def hlg_display_light(rgb_signal: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """HLG R'G'B' signals (..., 3; BT.2020) to display light in cd/m² on a ``peak`` display: the inverse OETF, then
    the OOTF ``peak * Ys**(gamma - 1) * E`` (Ys: the scene luminance; gamma 1.2 at 1000 cd/m²)."""
    e = hlg_inverse_oetf(rgb_signal)
    ys = e @ np.array([KR, 1 - KR - KB, KB], dtype=e.dtype)
    return np.power(np.maximum(ys, 1e-12), _HLG_GAMMA - 1)[..., None] * e * e.dtype.type(peak)


def tone_map(x: np.ndarray, peak: float = PEAK / REFERENCE_WHITE, knee: float = KNEE) -> np.ndarray:
    """SDR linear level of relative light ``x`` (1.0: reference white): ``x`` up to ``knee``; above it an extended
    Reinhard curve with slope 1 at the knee that reaches 1.0 at ``peak`` (monotone, continuous); 1.0 beyond."""
    t = np.maximum(x - knee, 0.0) / (1 - knee)
    w = (peak - knee) / (1 - knee)
    above = knee + (1 - knee) * t * (1 + t / (w * w)) / (1 + t)
    return np.where(x <= knee, x, np.minimum(above, 1.0))


def hdr_to_sdr(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int, transfer: int, full_range: bool = False,
               primaries: int = BT2020_PRIMARIES) -> np.ndarray:
    """An HDR (``transfer`` :data:`PQ` or :data:`HLG`) or BT.2020 SDR frame's Y'CbCr planes (full size each) to SDR
    BT.709 R'G'B' in [0, 1], float32 (..., 3): the steps of the module's docstring."""
    rgb = ycbcr_to_rgb(y.astype(np.float32), cb.astype(np.float32), cr.astype(np.float32), bits, full_range)
    if transfer == PQ:
        light = pq_eotf(rgb) * np.float32(1 / REFERENCE_WHITE)
    elif transfer == HLG:
        light = hlg_display_light(rgb) * np.float32(1 / REFERENCE_WHITE)
    else:  # SDR: BT.1886's display gamma
        light = np.power(np.clip(rgb, 0.0, 1.0), 2.4)
    if primaries == BT2020_PRIMARIES:
        light = light @ BT2020_TO_BT709.T.astype(light.dtype)
    light = np.maximum(light, 0.0)
    if transfer in (PQ, HLG):
        m = light.max(axis=-1, keepdims=True)
        light = light * (tone_map(m) / np.maximum(m, 1e-12)).astype(np.float32)
    return np.power(np.clip(light, 0.0, 1.0), 1 / 2.4).astype(np.float32)
