"""Face folders → preloaded uint8 tensors (small-resolution training fits in memory)."""

from __future__ import annotations

import hashlib
import sys
import time
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


def _says() -> bool:
    """Whether this process prints notes: torchrun's rank 0 only (every rank reads the same faces)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def read_faces(files: list[Path], size: int, progress_s: float = 10.0) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """The readable faces of ``files`` as uint8 (N, 3, size, size), in order, and ``(path, why)`` for each file
    that could not be read: one damaged file among thousands does not stop a training run
    (:class:`dynface.imageio.ImageReadError` when none is readable). Says how far it got every ``progress_s``
    seconds (a 20k-face folder takes about a minute on 2 cores)."""
    from dynface.imageio import ImageReadError

    faces, bad = [], []
    t0 = last = time.monotonic()
    for i, f in enumerate(files):
        try:
            faces.append(load_square(f, size))
        except (ImageReadError, OSError) as e:  # OSError: a file removed or unreadable since it was listed
            bad.append((f, str(e)))
        if time.monotonic() - last >= progress_s and _says():
            last = time.monotonic()
            print(f"reading faces: {i + 1}/{len(files)} ({last - t0:.0f} s)", file=sys.stderr, flush=True)
    if not faces:
        raise ImageReadError(f"none of the {len(files)} image(s) could be read; the first: {_why(*bad[0])}")
    return np.stack(faces).transpose(0, 3, 1, 2).copy(), bad


def _why(f: Path, why: str) -> str:
    return why if str(f) in why else f"{f}: {why}"


def unread_note(bad: list[tuple[Path, str]], total: int, folder: str | Path) -> str:
    """One line naming the unreadable files (the first five) that :func:`read_faces` left out."""
    shown = "; ".join(_why(f, why) for f, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"{len(bad)} of {total} image(s) in {folder} could not be read: {shown}"


def load_face_tensor(folder: str | Path, size: int, cache_dir: str | Path | None = None, limit: int | None = None) -> torch.Tensor:
    """All readable faces of a folder as a uint8 tensor (N, 3, size, size), cached as .npy when asked. Unreadable
    files are left out with a note naming them; :class:`dynface.imageio.ImageReadError` when none is readable."""
    files = list_images(folder)
    if limit:
        files = files[:limit]
    # the key follows each file's size and mtime too: a face replaced or mended in place is read again
    stats = [(str(f), *_stat(f)) for f in files]
    key = hashlib.sha1((repr(stats) + f"|{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"faces_{size}_{len(files)}_{key}.npy" if cache_dir else None
    if cache is not None and cache.exists():
        return torch.from_numpy(np.load(cache))
    arr, bad = read_faces(files, size)
    if bad and _says():
        print(f"note: {unread_note(bad, len(files), folder)}; left out of training", file=sys.stderr, flush=True)
    if cache is not None:
        # each process writes its own temporary file: torchrun's ranks fill the same cache at once
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    return torch.from_numpy(arr)


def _stat(f: Path) -> tuple[int, int]:
    try:
        st = f.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [−1, 1]."""
    return x_uint8.float() / 127.5 - 1.0
