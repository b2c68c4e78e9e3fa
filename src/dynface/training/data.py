"""Face folders → preloaded uint8 tensors (small-resolution training fits in memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dynface.atomicfile import atomic_path
from dynface.imageio import IMAGE_EXTS  # the files restore reads (load_square reads them as it does)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {folder}")
    return files


def load_square(path: Path, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): the image as ``dynface restore`` reads it (:func:`dynface.imageio.read_image`:
    upright by its EXIF orientation, 16-bit scaled to 8 bits, gray / CMYK / palette to RGB), centre square crop,
    then an antialiased Lanczos resize. :class:`dynface.imageio.ImageReadError` for an unusable file."""
    from dynface.imageio import read_image

    im = Image.fromarray(read_image(path).rgb)
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def load_face_tensor(folder: str | Path, size: int, cache_dir: str | Path | None = None, limit: int | None = None) -> torch.Tensor:
    """All faces of a folder as a uint8 tensor (N, 3, size, size), cached as .npy when asked."""
    files = list_images(folder)
    if limit:
        files = files[:limit]
    key = hashlib.sha1(("|".join(str(f) for f in files) + f"|{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"faces_{size}_{len(files)}_{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        arr = np.load(cache)
    else:
        arr = np.stack([load_square(f, size) for f in files]).transpose(0, 3, 1, 2).copy()
        if cache is not None:
            # each process writes its own temporary file: torchrun's ranks fill the same cache at once
            with atomic_path(cache) as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
    return torch.from_numpy(arr)


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1]."""
    return x_uint8.float() / 127.5 - 1.0
