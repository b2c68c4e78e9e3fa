"""Grain matched at the paste-back (``dynface restore --grain match``).

A restored face is clean; the photo around it keeps its film grain, scanner noise or sensor noise. A face pasted
whole (one not larger than the model: :func:`dynface.faces.keeps_detail`) then shows as a smooth patch whose edge
follows the crop's square across the neck and hairline (a family-photo audit: cheek grain 19 levels in the scan, 3-10
inside the pasted crop and 11 just outside it). Matching the grain is the compositor's answer: measure the grain of
the photo just around the face and of the pasted face, and add the difference to the face as fresh grain, so that
the face is no grainier than the photo and no cleaner. The photo's grain is measured in a margin of half the crop's
side around it (:func:`dynface.faces.paste_face`), outside the pasted face. The damage itself (dust, scratches, the
old grain's pattern) is not brought back.

Grain is measured as the typical local standard deviation of the luma's high band (the image minus a Gaussian blur
of :data:`GRAIN_BLUR` px at the photo's own resolution) over blocks of 8 photo pixels, taking the
:data:`GRAIN_QUANTILE` quantile over the blocks so that edges and texture (hair, eyes) count less than flat skin and
sky. The added grain is white noise at the photo's own resolution upscaled like the photo (Lanczos), so that it is as
fine as the photo's; it is the same in the three channels (a gray photo stays gray) and seeded by the face's seed.
numpy/OpenCV only.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["GRAIN_MODES", "GRAIN_BLUR", "GRAIN_QUANTILE", "MIN_GRAIN", "check_grain_mode", "grain_level", "match_grain"]

GRAIN_MODES = ("none", "match")

GRAIN_BLUR = 1.0  # σ (photo pixels) of the blur the high band is taken against
GRAIN_QUANTILE = 0.1  # of the blocks' standard deviations: flat blocks, whatever texture the region has
MIN_GRAIN = 0.5  # levels: a smaller shortfall is left alone (rounding)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def check_grain_mode(mode: str) -> str:
    if mode not in GRAIN_MODES:
        raise ValueError(f"unknown grain mode {mode!r}; choose from {', '.join(GRAIN_MODES)}")
    return mode


def _luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x @ _LUMA if x.ndim == 3 else x


def _high(y: np.ndarray, scale: float) -> np.ndarray:
    return y - cv2.GaussianBlur(y, (0, 0), GRAIN_BLUR * scale)


def grain_level(img: np.ndarray, where: np.ndarray, scale: float = 1.0) -> float | None:
    """The grain of ``img`` (H, W[, 3]) over the pixels ``where`` (H, W bool): the :data:`GRAIN_QUANTILE` quantile of
    the high band's standard deviation over blocks of ``8 * scale`` px that lie at least three quarters in ``where``
    (``scale``: the output's pixels per photo pixel). None with fewer than 4 such blocks."""
    h = _high(_luma(img), scale)
    b = max(4, round(8 * scale))
    H, W = (h.shape[0] // b) * b, (h.shape[1] // b) * b
    if H == 0 or W == 0:
        return None
    blocks = h[:H, :W].reshape(H // b, b, W // b, b).swapaxes(1, 2).reshape(-1, b * b)
    inside = where[:H, :W].reshape(H // b, b, W // b, b).swapaxes(1, 2).reshape(-1, b * b).mean(1) >= 0.75
    if inside.sum() < 4:
        return None
    return float(np.quantile(blocks[inside].std(1), GRAIN_QUANTILE))


def match_grain(pasted: np.ndarray, photo: np.ndarray, weight: np.ndarray, around: np.ndarray, scale: float,
                seed: int) -> tuple[np.ndarray, float]:
    """``pasted`` (H, W, 3 uint8: a region of the output with a face pasted by ``weight``, H x W in [0, 1]) with grain
    added where its face is cleaner than ``photo`` (the same region before the paste) is ``around`` (H x W bool: the
    photo just around the face). Returns (the region, the grain added in levels: 0 when none was missing)."""
    target = grain_level(photo, around, scale)
    face = weight >= 0.95
    have = grain_level(pasted, face, scale)
    if target is None or have is None or target**2 - have**2 < MIN_GRAIN**2:
        return pasted, 0.0
    add = float(np.sqrt(target**2 - have**2))
    rng = np.random.default_rng(seed)
    H, W = weight.shape
    small = (max(1, round(H / scale)), max(1, round(W / scale)))
    noise = rng.standard_normal(small).astype(np.float32)
    if small != (H, W):
        noise = cv2.resize(noise, (W, H), interpolation=cv2.INTER_LANCZOS4)
    level = grain_level(noise, np.ones_like(face), scale)  # the same measure, so that the face ends at the target
    if not level:
        return pasted, 0.0
    noise *= add / level
    out = pasted.astype(np.float32) + (weight * noise)[:, :, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), add
