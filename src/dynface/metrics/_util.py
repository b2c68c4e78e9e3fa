"""Shared helpers for the metrics: input checking, colour conversion, resizing, image loading, the standard error."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dynface.imageio import IMAGE_EXTS  # noqa: F401  (the files restore reads: load_rgb reads them as it does)


def as_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Check that ``img`` is a uint8 RGB image (H,W,3) or batch (N,H,W,3); a grey (H,W) image is stacked to RGB."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise TypeError(f"{name}: expected uint8 RGB in [0,255], got dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (H,W,3) or (N,H,W,3), got {a.shape}")
    return a


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma on the [16,235] scale, exactly BasicSR's ``rgb2ycbcr(img/255, y_only=True) * 255``.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with R,G,B in [0,255]; returned as float64, not
    rounded (BasicSR's ``to_y_channel`` does not round either). Works on (...,3) arrays.
    """
    x = np.asarray(img, dtype=np.float64)
    return x @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0


def rgb_to_gray_skvideo(img: np.ndarray) -> np.ndarray:
    """Grey level as scikit-video's ``rgb2gray``: 0.2989 R + 0.5870 G + 0.1140 B (range [0,255], float64)."""
    x = np.asarray(img, dtype=np.float64)
    return x @ np.array([0.2989, 0.5870, 0.1140])


def resize_uint8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 RGB image to ``size`` = (height, width) with PIL bicubic (antialiased when shrinking)."""
    from PIL import Image

    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def upscale_to_min_side(img: np.ndarray, min_side: int) -> np.ndarray:
    """Upscale a uint8 RGB image (PIL bicubic, aspect ratio kept) so that its shorter side is at least ``min_side``."""
    import math

    h, w = img.shape[:2]
    if min(h, w) >= min_side:
        return img
    s = min_side / min(h, w)
    return resize_uint8(img, (max(min_side, math.ceil(h * s - 1e-9)), max(min_side, math.ceil(w * s - 1e-9))))


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB (H,W,3), read as ``dynface restore`` reads it (:func:`dynface.imageio.read_image`:
    upright by its EXIF orientation, 16-bit scaled to 8 bits, gray / CMYK / palette to RGB, alpha dropped), so a
    restored image is scored against the HQ image a viewer shows; ValueError with the one-line reason otherwise."""
    from dynface.imageio import ImageReadError, read_image

    try:
        return read_image(path).rgb
    except ImageReadError as e:
        raise ValueError(str(e).removeprefix(f"{path}: ")) from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name; hidden files are skipped."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def package_dir(dist_module: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it (``None`` if not installed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(dist_module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mean_se(values: Iterable[float]) -> tuple[float, float | None]:
    """The mean of ``values`` and its standard error, the sample standard deviation (n − 1) over √n; the error is
    None for a single value. Of per-face differences between two runs on the same faces, this is the paired
    standard error: how far a mean Δ stands from noise."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_se: no values")
    m = statistics.fmean(v)
    return m, (statistics.stdev(v, m) / math.sqrt(len(v)) if len(v) > 1 else None)
