"""Reading and writing the photographs people actually have.

:func:`read_image` turns any JPEG / PNG / WebP / BMP / TIFF (and whatever else Pillow opens: GIF, PPM, …)
into a :class:`LoadedImage`: an upright 8-bit RGB array for processing plus what is needed to give the
result back in the same shape:

* **EXIF orientation** is applied (``ImageOps.exif_transpose``), so phone photos come out upright; the
  written result is upright and carries no orientation tag.
* **Grayscale** (``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``) is remembered (``was_gray``); the face restorer
  sees three equal channels and :func:`to_output_image` turns the result back into gray.
* **Alpha** (``RGBA``, ``LA``, ``PA``, palette transparency) is split off and kept; it is resized with the
  photo (Lanczos) when the output is upscaled, and re-attached on writing (PNG / WebP keep it; JPEG cannot,
  so ``--ext auto`` writes PNG for such inputs, and an explicit ``jpg`` drops it with a note).
* **16-bit** PNG / TIFF is decoded at full depth (OpenCV) and rounded to 8 bits for processing; the output
  is 8-bit and a note says so.
* **CMYK** (e.g. print JPEGs) is converted to RGB, through the embedded ICC profile when there is one.
* **Palette** images are expanded to RGB (RGBA with transparency); the output is RGB(A), not a palette.
* Multi-frame files (GIF, multi-page TIFF): the first frame, with a note.

Failures raise :class:`ImageReadError` with one clear sentence (missing, empty, not an image, corrupt or
truncated, too large).

**Size limit.** A decoded photo may have at most :data:`MAX_PIXELS` pixels (80 MP, e.g. 10 000 × 8 000,
240 MB as 8-bit RGB); larger files are refused before decoding. Face detection runs on a copy whose longest
side is at most ``dynface.faces.DETECT_MAX_SIDE`` (2000 px) and alignment and paste-back work on the face
regions only, so the memory needed is a small multiple of the photo itself: about three times the output photo
in bytes (measured: a 24 MP JPEG upscaled 2× to 96 MP peaks at ≈ 1.2 GB resident, 5 s for detection and
paste-back of two faces). Output photos are capped at :data:`MAX_OUTPUT_PIXELS` (160 MP, 480 MB as RGB): a
larger ``--upscale`` is reduced to fit, with a note (see :func:`capped_upscale`). Every size-limit message, on
reading or writing, has the one wording of :func:`too_large`: ``image too large (W x H = N MP; the limit is L MP)``.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .imaging import atomic_save_image

MAX_PIXELS = 80_000_000
MAX_OUTPUT_PIXELS = 160_000_000
# the names a folder of inputs is searched for; GIF: the first frame is restored (with a note)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WRITE_EXTS = ("png", "jpg", "webp")  # the choices of --ext besides "auto"
_AUTO_KEEP = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp", ".bmp": "bmp", ".tif": "tif", ".tiff": "tiff"}
_NO_ALPHA = {"jpg", "bmp"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ORIENT_TAG = 0x0112


class ImageReadError(ValueError):
    """An input could not be used as an image; the message names the file and the reason in one line."""


def too_large(width: int | None, height: int | None, limit: int, what: str = "image", pixels: int | None = None) -> str:
    """The one wording of every size-limit message: ``image too large (12000x9000 = 108 MP; the limit is 80 MP)``.
    ``pixels`` stands in when only the pixel count is known (Pillow's decompression-bomb check)."""
    if width is not None and height is not None:
        size = f"{width}x{height} = {_mp(width * height)} MP"
    else:
        size = f"{_mp(pixels)} MP" if pixels else f"over {_mp(limit)} MP"
    return f"{what} too large ({size}; the limit is {_mp(limit)} MP)"


def _mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f}" if mp >= 100 else f"{mp:.3g}"


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS, name: str | None = None) -> tuple[int, int]:
    """(width, height) from the file's header without decoding the pixels; :class:`ImageReadError` (one line,
    the :func:`too_large` wording) when it is over ``max_pixels`` or not an image Pillow can open."""
    name = str(path) if name is None else name
    try:
        with warnings.catch_warnings():  # our own limit applies, not Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: {_bomb_message(e, max_pixels)}") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image, or a damaged one (unrecognised or unsupported format)") from None
    except Exception as e:  # broken headers: Pillow raises several types
        raise ImageReadError(f"{name}: corrupt image header ({type(e).__name__}: {e})") from None
    if w * h > max_pixels:
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    return int(w), int(h)


def _bomb_message(e: Exception, max_pixels: int) -> str:
    m = re.search(r"\((\d+) pixels\)", str(e))  # "Image size (N pixels) exceeds limit of M pixels, ..."
    return too_large(None, None, max_pixels, pixels=int(m.group(1)) if m else None)


@dataclass
class LoadedImage:
    """A decoded photo, ready for processing, plus how to give the result back in the original's shape."""

    rgb: np.ndarray  # (H, W, 3) uint8, upright
    alpha: np.ndarray | None = None  # (H, W) uint8 or None
    was_gray: bool = False
    mode: str = "RGB"  # Pillow mode of the file as stored ("RGB", "L", "I;16", "CMYK", "P", ...)
    bit_depth: int = 8  # bits per channel in the file
    format: str | None = None  # "JPEG", "PNG", ...
    orientation: int = 1  # the EXIF orientation that was applied (1 = none)
    icc_profile: bytes | None = None  # kept for RGB(A)/gray outputs when the file had one
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def info(self) -> dict:
        """JSON-serialisable description (for records)."""
        w, h = self.size
        return {
            "width": w,
            "height": h,
            "format": self.format,
            "mode": self.mode,
            "bit_depth": self.bit_depth,
            "was_gray": self.was_gray,
            "has_alpha": self.alpha is not None,
            "exif_orientation": self.orientation,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------- reading
def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read an image file; raises :class:`ImageReadError` (one-line message) for anything unusable."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageReadError(f"{path}: is a folder, not an image file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except ImageReadError:
        raise
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    img = decode_image(data, name=str(path), max_pixels=max_pixels)
    img.path = path
    return img


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode the bytes of an image file (see the module docstring for what is handled)."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # our own limit (max_pixels) applies, not Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        fallback = _decode_cv2_only(data, name, max_pixels)  # formats only OpenCV reads
        if fallback is not None:
            return fallback
        raise ImageReadError(f"{name}: not an image, or a damaged one (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: {_bomb_message(e, max_pixels)}") from None
    except Exception as e:  # Pillow raises several types for broken headers
        raise ImageReadError(f"{name}: corrupt image header ({type(e).__name__}: {e})") from None
    try:
        return _decode_pil(im, data, name, max_pixels)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this image") from None
    except Exception as e:  # truncated / corrupt pixel data
        msg = str(e) or type(e).__name__
        raise ImageReadError(f"{name}: corrupt or truncated image data ({msg})") from None
    finally:
        im.close()


def _bit_depth(im: Image.Image, data: bytes) -> int:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int(data[24])
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return 16 if im.mode.startswith("I;16") else 32
    if im.format == "TIFF":
        bps = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        if bps is not None:
            return int(max(bps) if isinstance(bps, tuple) else bps)
    return 1 if im.mode == "1" else 8


def _png_gray(data: bytes) -> bool | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[25] in (0, 4)
    return None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) to an (H, W[, C]) array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    f = ops.get(orientation)
    return np.ascontiguousarray(f(arr)) if f else arr


def _to8(a: np.ndarray, bits: int) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16 or bits == 16:  # rounded x·255/65535, in slices of rows to bound the temporaries
        out = np.empty(a.shape, np.uint8)
        step = max(1, 4_000_000 // max(1, a[0].size))
        for i in range(0, a.shape[0], step):
            out[i : i + step] = (a[i : i + step].astype(np.uint32) * 255 + 32767) // 65535
        return out
    is_float = np.issubdtype(a.dtype, np.floating)
    a = np.nan_to_num(a.astype(np.float64))
    hi = float(a.max()) if a.size else 1.0
    scale = 1.0 if (is_float and hi <= 1.0) else 255.0 if hi <= 255 else 65535.0 if hi <= 65535 else hi
    return np.clip(np.round(a * (255.0 / scale)), 0, 255).astype(np.uint8)


def _decode_high_depth(im: Image.Image, data: bytes, bits: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Full-depth decoding with OpenCV → (rgb uint8, alpha uint8|None), or None when OpenCV cannot."""
    try:
        import cv2
    except ImportError:  # pragma: no cover
        return None
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        return None
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    alpha = None
    if c == 1:
        rgb = np.repeat(a, 3, axis=2)
    elif c == 2:
        rgb, alpha = np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1]
    elif c == 3:
        rgb = a[:, :, ::-1]
    else:
        rgb, alpha = a[:, :, 2::-1], a[:, :, 3]
    rgb8 = _to8(np.ascontiguousarray(rgb), bits)
    return rgb8, (None if alpha is None else _to8(np.ascontiguousarray(alpha), bits))


def _decode_cv2_only(data: bytes, name: str, max_pixels: int) -> LoadedImage | None:
    try:
        import cv2

        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:
        return None
    if a is None or a.size == 0:
        return None
    h, w = a.shape[:2]
    if w * h > max_pixels:
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    bits = 16 if a.dtype == np.uint16 else 8 if a.dtype == np.uint8 else 32
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    gray = c in (1, 2)
    rgb = np.repeat(a[:, :, :1], 3, axis=2) if gray else a[:, :, 2::-1]
    alpha = a[:, :, -1] if c in (2, 4) else None
    notes = ["decoded with OpenCV"] + ([f"{bits}-bit input converted to 8-bit for processing; the output is 8-bit"] if bits > 8 else [])
    return LoadedImage(
        rgb=np.ascontiguousarray(_to8(np.ascontiguousarray(rgb), bits)),
        alpha=None if alpha is None else np.ascontiguousarray(_to8(np.ascontiguousarray(alpha), bits)),
        was_gray=gray,
        mode="L" if gray else "RGB",
        bit_depth=bits,
        format="OPENCV",
        notes=notes,
    )


def _decode_pil(im: Image.Image, data: bytes, name: str, max_pixels: int) -> LoadedImage:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    notes: list[str] = []
    n_frames = int(getattr(im, "n_frames", 1) or 1)
    if n_frames > 1:
        notes.append(f"{n_frames} frames/pages; only the first is restored")
    mode, fmt = im.mode, im.format
    try:
        orientation = int(im.getexif().get(_ORIENT_TAG, 1) or 1)
    except Exception:
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    bits = _bit_depth(im, data)
    png_gray = _png_gray(data)
    was_gray = mode in _GRAY_MODES or mode.startswith("I;16") or bool(png_gray)
    icc = im.info.get("icc_profile")
    alpha: np.ndarray | None = None
    rgb: np.ndarray | None = None

    if bits > 8 and mode not in ("F",):
        dec = _decode_high_depth(im, data, bits) if fmt in ("PNG", "TIFF") else None
        if dec is not None:
            rgb, alpha = dec
            rgb, alpha = _orient(rgb, orientation), (None if alpha is None else _orient(alpha, orientation))
            notes.append(f"{bits}-bit input converted to 8-bit for processing; the output is 8-bit")
            if png_gray is not None:
                was_gray = png_gray
    if rgb is None:
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        m = im.mode
        if m == "P" or m == "PA":
            im = im.convert("RGBA" if (m == "PA" or "transparency" in im.info) else "RGB")
        elif m in ("RGBa", "La"):
            im = im.convert("RGBA")
        elif m == "CMYK":
            im = _cmyk_to_rgb(im, icc)
            notes.append("CMYK converted to RGB" + (" (ICC profile)" if icc else ""))
            icc = None
        elif m == "1":
            im = im.convert("L")
        elif m.startswith("I") or m == "F":
            a8 = _to8(np.asarray(im), 16 if m.startswith("I;16") else bits)
            im = Image.fromarray(a8, "L")
            if bits > 8:
                notes.append(f"{bits}-bit input converted to 8-bit for processing; the output is 8-bit")
        m = im.mode
        if m in ("RGBA", "LA"):
            alpha = np.asarray(im.getchannel("A"), dtype=np.uint8).copy()
        if m in ("L", "LA"):
            g = np.asarray(im.getchannel("L") if m == "LA" else im, dtype=np.uint8)
            rgb = np.repeat(g[:, :, None], 3, axis=2)
        else:
            rgb = np.array(im if m == "RGB" else im.convert("RGB"), dtype=np.uint8)  # writable
            if bits > 8 and not any("bit input" in n for n in notes):
                notes.append(f"{bits}-bit input read as 8-bit; the output is 8-bit")
    if mode == "P":
        notes.append("palette image processed and saved as RGB" + ("A" if alpha is not None else ""))
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied; the output is stored upright")
    if icc is not None and mode not in ("RGB", "RGBA", "L", "LA", "P"):
        icc = None
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        was_gray=was_gray,
        mode=mode,
        bit_depth=bits,
        format=fmt,
        orientation=orientation,
        icc_profile=icc,
        notes=notes,
    )


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:
            pass
    return im.convert("RGB")


# ---------------------------------------------------------------------------------------------- writing
def output_ext(ext: str, input_path: str | Path | None, has_alpha: bool = False) -> str:
    """The file extension (no dot) to write: ``ext`` itself, or for ``auto`` the input's own format when it is
    writable (png/jpg/webp/bmp/tif/tiff; ``.tif`` stays ``.tif``, ``.jpeg`` becomes ``.jpg``) and can hold the
    alpha channel, else ``png``."""
    ext = ext.lower().lstrip(".")
    if ext == "jpeg":
        ext = "jpg"
    if ext != "auto":
        return ext
    suffix = Path(input_path).suffix.lower() if input_path is not None else ""
    out = _AUTO_KEEP.get(suffix, "png")
    if has_alpha and out in _NO_ALPHA:
        out = "png"
    return out


def capped_upscale(width: int, height: int, upscale: float, max_pixels: int = MAX_OUTPUT_PIXELS) -> float:
    """``upscale`` reduced (if needed) so the output has at most ``max_pixels`` pixels."""
    if width * height * upscale * upscale <= max_pixels:
        return float(upscale)
    return max(1.0, float(np.sqrt(max_pixels / (width * height)))) if width * height <= max_pixels else 1.0


def upscale_note(width: int, height: int, upscale: float, used: float, max_pixels: int = MAX_OUTPUT_PIXELS) -> str:
    """The note for an ``upscale`` that :func:`capped_upscale` reduced to ``used``, in :func:`too_large`'s wording:
    ``upscale reduced from 4 to 2.828: output too large (8000x6000 = 48 MP; the limit is 32 MP)``."""
    w, h = round(width * upscale), round(height * upscale)
    return f"upscale reduced from {upscale:g} to {used:.3f}: {too_large(w, h, max_pixels, what='output')}"


def to_output_image(rgb: np.ndarray, src: LoadedImage | None = None, ext: str = "png", notes: list[str] | None = None) -> Image.Image:
    """Give ``rgb`` (the processed, possibly upscaled photo) the original's shape: gray again when the input was
    gray, its alpha channel (resized with Lanczos to the output size) re-attached when the format can hold one."""
    im = Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB")
    if src is None:
        return im
    if src.was_gray:
        im = im.convert("L")
    if src.alpha is not None:
        if ext.lower() in _NO_ALPHA:
            if notes is not None:
                notes.append(f"alpha channel dropped: .{ext} cannot store transparency")
        else:
            a = Image.fromarray(src.alpha, "L")
            if a.size != im.size:
                a = a.resize(im.size, Image.LANCZOS)
            im.putalpha(a)
    return im


def save_image(img: Image.Image | np.ndarray, path: str | Path, quality: int = 95, icc_profile: bytes | None = None) -> Path:
    """Write atomically (temporary file + rename) in the format of ``path``'s extension."""
    path = Path(path)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    ext = path.suffix.lower().lstrip(".")
    kw: dict = {}
    if ext in ("jpg", "jpeg"):
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif ext == "webp":
        kw.update(quality=quality, method=4)
    elif ext == "png":
        kw.update(compress_level=4)
    if icc_profile and ext in ("jpg", "jpeg", "png", "webp", "tif", "tiff"):
        kw["icc_profile"] = icc_profile
    atomic_save_image(img, path, **kw)
    return path


def write_like_input(rgb: np.ndarray, src: LoadedImage, path: str | Path, quality: int = 95) -> list[str]:
    """Write a processed photo in the original's shape (gray / alpha / ICC); returns the notes it produced."""
    notes: list[str] = []
    path = Path(path)
    im = to_output_image(rgb, src, ext=path.suffix.lstrip("."), notes=notes)
    icc = src.icc_profile if (im.mode in ("L", "LA")) == (src.mode in ("L", "LA")) else None
    save_image(im, path, quality=quality, icc_profile=icc)
    return notes


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS
