"""Small image helpers shared by training, the pipeline and the CLI (tensors ↔ PIL, grids, atomic writes)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dynface.atomicfile import atomic_write_bytes


def refuse_path(obj, what: str) -> None:
    """A TypeError when ``obj`` is a path where images are expected, with how to read it instead."""
    if isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"{what} takes images, not a path ({str(obj)[:80]!r}): read it with "
                        "dynface.imageio.read_image(path).rgb, or use dynface.jobs.run_job for files")


def as_rgb_uint8(img, what: str = "image") -> np.ndarray:
    """A C-contiguous uint8 (H, W, 3) RGB array from a uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array (gray
    repeated, alpha dropped) or an 8-bit PIL image of any mode (turned upright by its EXIF orientation, as
    ``ImageOps.exif_transpose``; palette, CMYK, gray and 1-bit converted to RGB: their raw numbers would be palette
    indices, inverted inks or one channel). Anything else is refused, never cast: a TypeError for another dtype (a
    float image would otherwise come out black) or a 16/32-bit PIL image, a ValueError for another shape or an empty
    image; ``what`` names it."""
    refuse_path(img, what)
    if isinstance(img, Image.Image):
        if img.mode.startswith("I") or img.mode == "F":
            raise TypeError(f"{what}: a {img.mode} (16/32-bit) PIL image; convert it to 8 bits first "
                            "(dynface.imageio.read_image(path).rgb reads such files)")
        from PIL import ImageOps

        img = (ImageOps.exif_transpose(img) or img).convert("RGB")
    a = np.asarray(img)
    if a.dtype != np.uint8:
        hint = (" (for floats in [0, 1]: (img * 255).round().astype(np.uint8))" if a.dtype.kind == "f" else
                " (16-bit: (img // 257).astype(np.uint8))" if a.dtype == np.uint16 else "")
        raise TypeError(f"{what}: expected a uint8 image, got {a.dtype}{hint}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"{what}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what}: empty image (shape {a.shape})")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def tensor_to_uint8(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(B,C,H,W) or (C,H,W) float → uint8 (B,H,W,C)/(H,W,C), rounding to nearest."""
    lo, hi = value_range
    y = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)
    return y.movedim(-3, -1).numpy()


def lanczos_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize to ``size`` (w, h): OpenCV's Lanczos-4 when enlarging (no extra copies of a big photo; uint8
    or uint16), Pillow's antialiased Lanczos when shrinking. The photo's background (``faces.upscale_background``)
    and a 16-bit input's (``imageio.deepened``) are enlarged by this one function: the 16-bit output is exact outside
    the faces only if both are enlarged alike."""
    import cv2

    h, w = img.shape[:2]
    if size[0] >= w and size[1] >= h:
        return cv2.resize(img, size, interpolation=cv2.INTER_LANCZOS4)
    return np.array(Image.fromarray(img).resize(size, Image.LANCZOS))  # a writable copy


def make_grid(x: np.ndarray, nrow: int = 8, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 images (B,H,W,C) into one picture with ``nrow`` columns."""
    b, h, w, c = x.shape
    ncol = min(nrow, b)
    nr = (b + ncol - 1) // ncol
    out = np.full((nr * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(b):
        r, q = divmod(i, ncol)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    return out


def atomic_save_image(img: Image.Image | np.ndarray, path: str | Path, after: Callable[[bytes], bytes] | None = None,
                      **save_kwargs) -> None:
    """Write an image to ``path`` atomically (:func:`dynface.atomicfile.atomic_write_bytes`). Encoded in memory
    first: Pillow's JPEG encoder ignores a short write to a file (a full disk, a file-size limit), so a cut-off JPEG
    was renamed into place as if whole; Python's own write raises instead. ``after``: applied to the encoded bytes
    (what Pillow cannot write itself, e.g. a JPEG's IPTC segment)."""
    path = Path(path)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    fmt = (save_kwargs.pop("format", None) or Image.registered_extensions().get(path.suffix.lower()) or "PNG")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kwargs)
    atomic_write_bytes(buf.getvalue() if after is None else after(buf.getvalue()), path)


def save_grid(x: torch.Tensor, path: str | Path, nrow: int = 8, value_range=(-1.0, 1.0)) -> None:
    atomic_save_image(make_grid(tensor_to_uint8(x, value_range), nrow=nrow), path)
