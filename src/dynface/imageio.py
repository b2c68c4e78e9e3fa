"""Reading and writing the photographs people actually have.

:func:`read_image` turns any JPEG / PNG / WebP / BMP / TIFF / HEIC / AVIF (and whatever else Pillow opens: GIF,
PPM, …) into a :class:`LoadedImage`: an upright 8-bit RGB array for processing plus what is needed to give the
result back in the same shape:

* **Phone formats.** HEIC / HEIF (iPhones' default; decoded by ``pi-heif``, libheif's decoder-only Pillow plugin,
  registered on import) and AVIF (Pillow's own plugin) are read like JPEGs, 10-bit ones rounded to 8 bits; no
  installed library writes HEIC without a GPL encoder, so ``--ext auto`` writes them as JPEG (PNG with alpha), with
  their EXIF and ICC profile, as phones do when they share a photo.

* **EXIF orientation** is applied (``ImageOps.exif_transpose``), so phone photos come out upright; the
  written result is upright and carries no orientation tag.
* **EXIF metadata** of JPEG / PNG / WebP / HEIC / AVIF inputs (date taken, camera, GPS, ...: what photo managers sort and
  search by) is carried to the written photo (:func:`carried_exif`), without what no longer holds for it: the
  orientation, the pixel dimensions, the embedded thumbnail (it shows the unrestored photo) and the maker note
  (camera-private offsets that do not survive a rewrite), the file's change date and its unique ID (it is another
  image now); ``Software`` says dynfacerestore wrote it. A JPEG / PNG / WebP written from a photo without EXIF
  gets that ``Software`` tag alone, so every such output says it was altered. A TIFF output carries the EXIF and
  GPS IFDs, make and model (:func:`_tiff_with_exif`), and a TIFF input gives its own (not its layout tags). The
  Interop IFD is written anew: its "R03" is a camera's Adobe RGB setting when no ICC profile says it.
* **XMP and text** (captions, keywords, copyright: :func:`carried_xmp`, :func:`carried_text`) are carried too: the
  XMP packet without what describes the input file (orientation, pixel size, thumbnail, document IDs), a PNG's text
  chunks, a TIFF's ImageDescription / Artist / Copyright, a JPEG's comment. **IPTC-IIM** (captions, credits,
  keywords as news agencies, archives and older tools write them: a JPEG's Photoshop APP13 resource 0x0404, a
  TIFF's tag 33723) is carried into JPEG and TIFF outputs (:func:`carried_iptc`); PNG and WebP hold no IPTC-IIM, so
  there it is left out with a note.
* **Lossless WebP** is written back lossless (lossy WebP at quality 95).
* **Grayscale** (``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``) is remembered (``was_gray``); the face restorer
  sees three equal channels and :func:`to_output_image` turns the result back into gray.
* **Alpha** (``RGBA``, ``LA``, ``PA``, palette transparency) is split off and kept; it is resized with the
  photo (Lanczos) when the output is upscaled, and re-attached on writing (PNG / WebP keep it; JPEG cannot,
  so ``--ext auto`` writes PNG for such inputs, and an explicit ``jpg`` drops it with a note).
* **16-bit** PNG / TIFF is decoded at full depth (OpenCV) and rounded to 8 bits for processing; without alpha the
  16-bit picture is kept (``rgb16``) and a PNG / TIFF output is written at 16 bits (:func:`deepened`,
  :func:`write_16bit`): the input's levels outside the faces, the faces' 8-bit restoration; else 8-bit, with a note.
* **CMYK** (e.g. print JPEGs) is converted to RGB, through the embedded ICC profile when there is one.
* **Print resolution** (DPI, from JFIF / PNG pHYs / TIFF / EXIF) is kept for JPEG, PNG and TIFF outputs, scaled
  with the upscale so the photo prints at its old size (a 600-dpi scan restored with ``-s 2``: 1200 dpi).
* **Palette** images are expanded to RGB (RGBA with transparency); the output is RGB(A), not a palette.
* Multi-frame files (GIF, multi-page TIFF): the first frame, with a note.
* Files Pillow cannot open but OpenCV can (PAM, colour PFM, Radiance HDR, float / signed TIFF) are decoded
  with OpenCV (``format="OPENCV"``), after their header has passed the size limit (see :func:`_cv2_header`).

The SHA-256 of the bytes that were decoded is kept (``sha256``, in :meth:`LoadedImage.info`): the records of
``dynface restore`` name their input exactly (:mod:`dynface.provenance`).

Failures raise :class:`ImageReadError` with one clear sentence (missing, empty, not an image, corrupt or
truncated, too large).

**Size limit.** A decoded photo may have at most :data:`MAX_PIXELS` pixels (80 MP, e.g. 10 000 × 8 000,
240 MB as 8-bit RGB); larger files are refused from their header, before decoding, by every decoder (Pillow's
and the OpenCV fallback's; OpenCV's own cap, ``OPENCV_IO_MAX_IMAGE_PIXELS``, is set to the same 80 MP by
``import dynface`` unless the user set it). Face detection runs on a copy whose longest
side is at most ``dynface.faces.DETECT_MAX_SIDE`` (2000 px) and alignment and paste-back work on the face
regions only, so the memory needed is a small multiple of the photo itself: about three times the output photo
in bytes (measured: a 24 MP JPEG upscaled 2× to 96 MP peaks at ≈ 1.2 GB resident, 5 s for detection and
paste-back of two faces). Output photos are capped at :data:`MAX_OUTPUT_PIXELS` (160 MP, 480 MB as RGB): a
larger ``--upscale`` is reduced to fit, with a note (see :func:`capped_upscale`). Every size-limit message, on
reading or writing, has the one wording of :func:`too_large`: ``image too large (W x H = N MP; the limit is L MP)``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomicfile import atomic_write_bytes
from .imaging import atomic_save_image, lanczos_resize

try:  # HEIC / HEIF: libheif's decoder as a Pillow plugin (a core dependency; without it such files are refused)
    import pi_heif

    pi_heif.register_heif_opener()
    HEIF_READABLE = True
except ImportError:  # pragma: no cover
    HEIF_READABLE = False

MAX_PIXELS = 80_000_000
MAX_OUTPUT_PIXELS = 160_000_000
# the names a folder of inputs is searched for; GIF: the first frame is restored (with a note)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".hif",
              ".avif")
WRITE_EXTS = ("png", "jpg", "webp", "tif")  # the choices of --ext besides "auto"
_AUTO_KEEP = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".jpe": "jpg", ".jfif": "jpg", ".webp": "webp", ".bmp": "bmp", ".tif": "tif", ".tiff": "tiff",
              # phone formats come back as JPEG (.hif: Fujifilm's HEIF)
              ".heic": "jpg", ".heif": "jpg", ".hif": "jpg", ".avif": "jpg"}
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
    the :func:`too_large` wording) when it is over ``max_pixels`` or not an image Pillow or the OpenCV
    fallback (see :func:`_cv2_header`) can open."""
    name = str(path) if name is None else name
    _pillow_allows(max_pixels)
    try:
        with warnings.catch_warnings():  # our own limit applies, not Pillow's bomb warning; a damaged header's
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # UserWarnings ("Corrupt EXIF data") would
            warnings.simplefilter("ignore", UserWarning)  # print two lines on stderr: its outcome is what we report
            with Image.open(path) as im:
                w, h = im.size
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: {_bomb_message(e, max_pixels)}") from None
    except UnidentifiedImageError:
        head = _file_cv2_header(path, name, max_pixels)  # formats only OpenCV reads: their own header parser
        if head is None:
            raise ImageReadError(f"{name}: not an image, or a damaged one (unrecognised or unsupported format)") from None
        w, h = head.width, head.height
    except Exception as e:  # broken headers: Pillow raises several types
        raise ImageReadError(f"{name}: corrupt image header ({type(e).__name__}: {e})") from None
    if w * h > max_pixels:
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    return int(w), int(h)


def _pillow_allows(max_pixels: int) -> None:
    """Raise Pillow's own decompression-bomb limit (it refuses twice its ``MAX_IMAGE_PIXELS``, 179 MP by default)
    to ``max_pixels`` when that is larger (``--max-megapixels 300``): our limit is the one that applies. It is
    never lowered here (``dynface serve`` lowers it on purpose)."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


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
    exif: bytes | None = None  # what the written photo carries of the input's EXIF (carried_exif)
    dpi: tuple[float, float] | None = None  # the print resolution the file states (JFIF / pHYs / TIFF / EXIF), if any
    path: Path | None = None
    sha256: str | None = None  # of the file's bytes as decoded (dynface.provenance)
    notes: list[str] = field(default_factory=list)
    lossless_webp: bool = False  # a lossless WebP (VP8L): written back lossless when the output is WebP
    xmp: bytes | None = None  # the input's XMP (captions, keywords, copyright), minus what no longer holds (carried_xmp)
    text: dict[str, str] = field(default_factory=dict)  # its captions and credits as text (carried_text)
    iptc: bytes | None = None  # its IPTC-IIM datasets (carried_iptc)
    rgb16: np.ndarray | None = None  # (H, W, 3) uint16, upright: a 16-bit PNG / TIFF without alpha as it is (written
    # back at 16 bits: write_like_input)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def info(self, keep_exif: bool = True, out_ext: str | None = None) -> dict:
        """JSON-serialisable description (for records); ``exif_kept``: whether the output carries the input's EXIF
        (it has one, and ``keep_exif``: not ``--strip-metadata``); ``iptc_kept`` also needs an output that holds
        IPTC-IIM (``out_ext``: the written photo's extension)."""
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
            "exif_kept": self.exif is not None and keep_exif,
            "xmp_kept": self.xmp is not None and keep_exif,
            "text_kept": sorted(self.text) if keep_exif else [],
            "iptc_kept": (self.iptc is not None and keep_exif
                          and (out_ext is None or iptc_fits(self.iptc, out_ext))),
            "dpi": list(self.dpi) if self.dpi else None,
            "sha256": self.sha256,
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------- reading
BYTES_PER_PIXEL_MOST = 8  # an uncompressed 16-bit RGBA image: the most bytes a pixel of an image file takes
HEADER_BYTES_MOST = 64 * 2**20  # and its metadata (thumbnails, ICC profiles, XMP)


class NotRegularFile(OSError):
    """An input that is not a regular file (a pipe, a device, a socket), or one larger than any image read."""


def open_regular_file(path: str | Path, most_bytes: int | None = None) -> int:
    """A read-only descriptor of ``path`` (links followed), checked to be a regular file of at most ``most_bytes``
    before anything is read: a pipe (or a link to one) blocked the whole run, ``/dev/zero`` filled the memory until
    the kernel killed the run (failure audit). Opened without blocking (a pipe's writer is not waited for), then
    switched back to blocking reads. Raises :class:`NotRegularFile` (or the ``OSError`` of opening it)."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                    or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise NotRegularFile(f"is {kind}, not a regular file: left out")
        if most_bytes is not None and st.st_size > most_bytes:
            raise NotRegularFile(f"a file of {st.st_size / 2**30:.1f} GB: larger than any image this run reads "
                                 f"(at most {most_bytes / 2**30:.1f} GB; --max-megapixels sets it)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read an image file; raises :class:`ImageReadError` (one-line message) for anything unusable."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ImageReadError(f"{path}: is a folder, not an image file")
        fd = open_regular_file(path, most_bytes=max_pixels * BYTES_PER_PIXEL_MOST + HEADER_BYTES_MOST)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except ImageReadError:
        raise
    except NotRegularFile as e:
        raise ImageReadError(f"{path}: {e}") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    img = decode_image(data, name=str(path), max_pixels=max_pixels)
    img.path = path
    return img


def _is_lossless_webp(data: bytes) -> bool:
    """A WebP whose image is lossless: a ``VP8L`` chunk (the simple format's first, or one of the extended format's;
    an animation's frames are in ``ANMF`` chunks, and it is read as its first frame)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    pos, end = 12, min(len(data), 12 + 64 * 2**10)  # the image chunk comes after a few small ones
    while pos + 8 <= end:
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag in (b"VP8L", b"VP8 "):
            return tag == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


def _with_sha256(img: LoadedImage, data: bytes) -> LoadedImage:
    img.sha256 = hashlib.sha256(data).hexdigest()
    img.lossless_webp = _is_lossless_webp(data)
    return img


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Decode the bytes of an image file (see the module docstring for what is handled)."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    _pillow_allows(max_pixels)
    try:
        with warnings.catch_warnings():  # as in image_size: our own limit applies; no Pillow UserWarnings on stderr
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        fallback = _decode_cv2_only(data, name, max_pixels)  # formats only OpenCV reads
        if fallback is not None:
            return _with_sha256(fallback, data)
        if not HEIF_READABLE and _is_heif(data):  # pragma: no cover
            raise ImageReadError(f"{name}: a HEIC/HEIF photo; reading it needs the pi-heif package (pip install pi-heif)") from None
        raise ImageReadError(f"{name}: not an image, or a damaged one (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{name}: {_bomb_message(e, max_pixels)}") from None
    except Exception as e:  # Pillow raises several types for broken headers
        raise ImageReadError(f"{name}: corrupt image header ({type(e).__name__}: {e})") from None
    try:
        return _with_sha256(_decode_pil(im, data, name, max_pixels), data)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this image") from None
    except Exception as e:  # truncated / corrupt pixel data
        msg = str(e) or type(e).__name__
        raise ImageReadError(f"{name}: corrupt or truncated image data ({msg})") from None
    finally:
        im.close()


def _is_heif(data: bytes) -> bool:
    """An ISO-BMFF ``ftyp`` box naming a HEIF brand (HEIC, HEIF, HEIF sequences; AVIF is Pillow's own)."""
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


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


@lru_cache(maxsize=1)
def _opencv_orients_tiff() -> bool:
    """Whether ``cv2.imdecode`` turns a TIFF by its orientation tag itself (OpenCV 5 does, even with
    IMREAD_IGNORE_ORIENTATION): then :func:`_decode_high_depth`'s pixels are upright already. Asked of a 2 x 1 TIFF
    with orientation 2 (mirrored), once."""
    try:
        import cv2
        import tifffile
    except ImportError:  # pragma: no cover
        return False
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.array([[0, 255]], np.uint8), photometric="minisblack", extratags=[(274, "H", 1, 2, True)])
    a = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    return a is not None and int(a.reshape(-1)[0]) == 255


def _decode_high_depth(im: Image.Image, data: bytes,
                       bits: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
    """Full-depth decoding with OpenCV → (rgb uint8, alpha uint8|None, rgb uint16|None: the 16-bit picture itself),
    or None when OpenCV cannot."""
    try:
        import cv2
    except ImportError:  # pragma: no cover
        return None
    try:  # Pillow checked the size; OpenCV may still refuse (its own cap, OPENCV_IO_MAX_IMAGE_PIXELS): Pillow decodes
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
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
    rgb = np.ascontiguousarray(rgb)
    rgb8 = _to8(rgb, bits)
    deep = rgb if rgb.dtype == np.uint16 and bits == 16 else None
    return rgb8, (None if alpha is None else _to8(np.ascontiguousarray(alpha), bits)), deep


# ------------------------------------------------------------------------- formats only OpenCV reads
# Pillow cannot open these, OpenCV can (measured with the pinned Pillow 12 / OpenCV 5): PAM (``P7``), colour PFM
# (``PF``; gray ``Pf`` is Pillow's), Radiance HDR (``#?RADIANCE`` / ``#?RGBE``) and TIFFs whose sample layout
# Pillow has no mode for (float or signed RGB(A), float64 gray, ...). OpenCV allocates the whole image from the
# header and only then decodes (an RLE-compressed HDR of 0.6 MB decodes to 108 MB of float32), so the fallback
# reads each format's header first (TIFF with tifffile; PAM / PFM / HDR itself, the way OpenCV's decoder reads
# them: no installed library reads their size without decoding) and refuses an image over ``max_pixels`` before
# any pixel is decoded; a file whose format is not one of these never reaches ``cv2.imdecode``.
# Backstop: ``dynface/__init__.py`` sets OPENCV_IO_MAX_IMAGE_PIXELS (unless the user did) to MAX_PIXELS before
# any dynface module imports cv2; OpenCV reads it once, when the library loads (its default is 2**30 pixels).
_WS = b" \t\n\v\f\r"  # C isspace() in the "C" locale
_HEAD_MAX = 1 << 16  # PAM / PFM / HDR headers are text lines; a longer header is refused
_INT_MAX = 2**31 - 1
_OPENCV_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"


class _BadHeader(Exception):
    """A format the fallback knows, with a header OpenCV would not accept (or that we do not trust)."""


@dataclass(frozen=True)
class _CvHeader:
    fmt: str  # "PAM", "PFM", "HDR", "TIFF"
    width: int
    height: int
    channels: int = 3
    tile: tuple[int, int] | None = None  # TIFF tile (width, height): OpenCV allocates a whole tile


def _cv2_header(buf) -> _CvHeader | None:
    """The header of a format only OpenCV reads, parsed as OpenCV's decoder parses it (same signature test, same
    fields, same number syntax), or None when ``buf`` (bytes or mmap) is none of them; :class:`_BadHeader` when it
    is one of them with a header OpenCV would reject or that we do not trust (then nothing is decoded)."""
    sig = bytes(buf[:10])
    if sig[:2] == b"P7" and sig[2:3] and sig[2] in _WS:
        return _pam_header(buf)
    if sig[:1] == b"P" and sig[1:2] in (b"f", b"F") and sig[2:3] and sig[2] in _WS:
        return _pfm_header(buf)
    if sig.startswith((b"#?RGBE", b"#?RADIANCE")):
        return _hdr_header(buf)
    if sig[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return _tiff_header(buf)
    return None


class _Bytes:
    """Byte-at-a-time reader over a header (OpenCV's RLByteStream: reading past the end is an error)."""

    def __init__(self, buf) -> None:
        self.data = bytes(buf[:_HEAD_MAX])
        self.pos = 0

    def get(self) -> int:
        if self.pos >= len(self.data):
            raise _BadHeader("header truncated or too long")
        self.pos += 1
        return self.data[self.pos - 1]


def _pam_int(value: bytes) -> int:
    """OpenCV's PAM ParseInt: ``-?digits`` up to the value's end (or a NUL), below INT_MAX."""
    m = re.fullmatch(rb"(-?)(\d*)", value.split(b"\0", 1)[0])
    if m is None or (m.group(1) and not m.group(2)):
        raise _BadHeader("bad PAM number")
    n = int(m.group(2) or b"0")
    if n >= _INT_MAX:
        raise _BadHeader("PAM number out of range")
    return -n if m.group(1) else n


def _pam_header(buf) -> _CvHeader:
    """PAM (``P7``), as OpenCV's PAMDecoder::readHeader: ``NAME value`` lines, ``#`` comments, up to ENDHDR."""
    s = _Bytes(buf)
    s.get(), s.get()
    if s.get() not in b"\n\r":
        raise _BadHeader("bad PAM signature")
    fields: dict[bytes, int] = {}
    tupltype = b""
    while True:
        c = s.get()
        while c in _WS:
            c = s.get()
        if c == ord("#"):  # a comment, to the end of the line
            while c not in b"\n\r":
                c = s.get()
            continue
        ident = bytearray()
        while len(ident) < 8 and c not in _WS:
            ident.append(c)
            c = s.get()
        if c not in _WS or b"\0" in ident:
            raise _BadHeader("bad PAM header line")
        value = b""
        if c not in b"\n\r":
            c = s.get()
            while c in _WS:
                c = s.get()
            v = bytearray()
            while len(v) < 255 and c not in b"\n\r":
                v.append(c)
                c = s.get()
            if c not in b"\n\r":
                raise _BadHeader("PAM header value too long")
            value = bytes(v).rstrip(_WS)
        key = bytes(ident)
        if key == b"ENDHDR":
            break
        if key == b"TUPLTYPE":
            tupltype = value.split(b"\0", 1)[0]
            if tupltype not in (b"", b"BLACKANDWHITE", b"GRAYSCALE", b"GRAYSCALE_ALPHA", b"RGB", b"RGB_ALPHA"):
                raise _BadHeader("unknown PAM TUPLTYPE")
            continue
        if key not in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL") or key in fields:
            raise _BadHeader("bad or repeated PAM header field")
        fields[key] = _pam_int(value)
    if len(fields) != 4:
        raise _BadHeader("PAM header lacks WIDTH, HEIGHT, DEPTH or MAXVAL")
    if not 1 <= fields[b"DEPTH"] <= 4 or not 1 <= fields[b"MAXVAL"] <= 65535:
        raise _BadHeader("unsupported PAM DEPTH or MAXVAL")  # more channels: more memory than the pixel count says
    if not tupltype and not (fields[b"MAXVAL"] < 256 and fields[b"DEPTH"] in (1, 3)):
        raise _BadHeader("PAM without TUPLTYPE is read only as 8-bit gray or RGB")  # OpenCV 5 refuses the others
    return _CvHeader("PAM", fields[b"WIDTH"], fields[b"HEIGHT"], fields[b"DEPTH"])


def _atoi(token: bytes) -> int:
    """C ``atoi`` on a whitespace-free token: a leading ``[+-]digits`` or 0; out of int range is refused."""
    m = re.match(rb"[+-]?\d+", token)
    n = int(m.group(0)) if m else 0
    if abs(n) > _INT_MAX:
        raise _BadHeader("number out of range")
    return n


def _pfm_header(buf) -> _CvHeader:
    """PFM (``PF`` colour / ``Pf`` gray), as OpenCV's PFMDecoder::readHeader: ``P?\\n``, then width, height and
    scale, each a token ended by one whitespace byte (at most 2048 bytes), read with atoi/atof."""
    s = _Bytes(buf)
    s.get()
    channels = 3 if s.get() == ord("F") else 1
    if s.get() != ord("\n"):
        raise _BadHeader("bad PFM signature")

    def token() -> bytes:
        t = bytearray()
        while len(t) < 2048:
            c = s.get()
            if c in _WS:
                break
            t.append(c)
        return bytes(t)

    w, h = _atoi(token()), _atoi(token())
    return _CvHeader("PFM", w, h, channels)


def _hdr_header(buf) -> _CvHeader:
    """Radiance HDR, as OpenCV's RGBE_ReadHeader: lines read with ``fgets(buf, 128)``; ``#`` comments; a
    ``FORMAT=32-bit_rle_rgbe`` line; a blank line; then ``-Y height +X width`` (sscanf)."""
    data = bytes(buf[:_HEAD_MAX])
    pos = 0

    def fgets() -> bytes:  # at most 127 bytes, up to and including a newline; the C string ends at a NUL
        nonlocal pos
        if pos >= len(data):
            raise _BadHeader("HDR header truncated or too long")
        end = data.find(b"\n", pos, pos + 127)
        end = min(pos + 127, len(data)) if end < 0 else end + 1
        line, pos = data[pos:end], end
        return line.split(b"\0", 1)[0]

    fgets()  # "#?RADIANCE" / "#?RGBE"
    has_format = False
    while True:
        line = fgets()
        if line[:1] == b"\n":
            break
        if line == b"FORMAT=32-bit_rle_rgbe\n":
            has_format = True
    if not has_format:
        raise _BadHeader("HDR header lacks FORMAT=32-bit_rle_rgbe")
    m = re.match(rb"-Y\s*([+-]?\d+)\s*\+X\s*([+-]?\d+)", fgets())
    if m is None:
        raise _BadHeader("HDR header lacks '-Y height +X width'")
    h, w = (int(g) for g in m.groups())
    if max(abs(h), abs(w)) > _INT_MAX:
        raise _BadHeader("HDR size out of range")
    return _CvHeader("HDR", w, h, 3)


def _tiff_header(buf) -> _CvHeader:
    """TIFF / BigTIFF: ImageWidth, ImageLength, SamplesPerPixel and the tile size of the first directory (the page
    OpenCV decodes), read by tifffile: only the header and that directory's tags, never the pixel data. Like
    libtiff, the first of repeated tags counts and each must be one integer; tifffile's own special-format loaders
    (LSM, ScanImage, NDPI: they read further pages) are off, and its log messages about a broken file are dropped
    (the caller reports one line)."""
    import mmap
    import struct

    import tifffile

    def quiet(record: logging.LogRecord) -> bool:  # a new filter per call: concurrent reads each remove their own
        return False

    stream = buf if isinstance(buf, mmap.mmap) else io.BytesIO(buf)  # BytesIO shares the bytes, no copy
    log = logging.getLogger("tifffile")
    log.addFilter(quiet)
    try:
        with (
            np.errstate(all="ignore"),
            tifffile.TiffFile(stream, offset=0, is_lsm=False, is_scanimage=False, is_ndpi=False) as tif,
        ):
            try:
                page = tif.pages[0]  # read when TiffFile opened; no further directory is read
            except IndexError:
                raise _BadHeader("TIFF file has no image directory") from None
            if 256 not in page.tags or 257 not in page.tags:
                raise _BadHeader("TIFF directory lacks the image size")
            w, h, spp = page.imagewidth, page.imagelength, page.samplesperpixel
            tile = (page.tilewidth, page.tilelength)
    except (ValueError, TypeError, IndexError, struct.error) as e:  # tifffile.TiffFileError is a ValueError
        raise _BadHeader(f"TIFF header unreadable, {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    finally:
        log.removeFilter(quiet)
    values = (w, h, spp, *tile)
    # each one integer >= 0 (not a tuple, i.e. a count over 1, nor a float, a rational or a negative number)
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0 for v in values):
        raise _BadHeader("TIFF image size, tile size or SamplesPerPixel is not one non-negative integer")
    w, h, spp, tw, tl = (int(v) for v in values)
    if not 1 <= spp <= 4:
        raise _BadHeader("unsupported TIFF SamplesPerPixel")  # more channels: more memory than the pixel count says
    return _CvHeader("TIFF", w, h, spp, (tw, tl) if tw and tl else None)


def _checked_cv2_header(buf, name: str, max_pixels: int) -> _CvHeader | None:
    """:func:`_cv2_header` with every problem as a one-line :class:`ImageReadError`: a header OpenCV would not
    take, no pixels, or more than ``max_pixels`` (the :func:`too_large` wording), all before any decoding."""
    try:
        head = _cv2_header(buf)
    except _BadHeader as e:
        raise ImageReadError(f"{name}: not an image, or a damaged one (unsupported or corrupt header: {e})") from None
    if head is None:
        return None
    w, h = head.width, head.height
    if w <= 0 or h <= 0:
        raise ImageReadError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    if head.tile is not None and head.tile[0] * head.tile[1] > max_pixels:
        raise ImageReadError(f"{name}: {too_large(*head.tile, max_pixels, what='TIFF tile')}")
    return head


def _file_cv2_header(path: str | Path, name: str, max_pixels: int) -> _CvHeader | None:
    """:func:`_checked_cv2_header` of a file, read through a memory map (only the header's pages are read)."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return _checked_cv2_header(m, name, max_pixels)
    except OSError:
        return None


def _opencv_pixel_limit() -> int:
    try:
        return int(os.environ.get(_OPENCV_ENV, 1 << 30))
    except ValueError:
        return 1 << 30


def _decode_cv2_only(data: bytes, name: str, max_pixels: int) -> LoadedImage | None:
    """Decode a format only OpenCV reads (see :func:`_cv2_header`), after its header passed the size check;
    None for any other format (nothing is decoded)."""
    head = _checked_cv2_header(data, name, max_pixels)
    if head is None:
        return None
    try:
        import cv2
    except ImportError:  # pragma: no cover
        return None
    try:
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode this image") from None
    except Exception as e:
        if "CV_IO_MAX_IMAGE" in str(e):  # OpenCV's own cap (OPENCV_IO_MAX_IMAGE_PIXELS) is below max_pixels
            limit = too_large(head.width, head.height, _opencv_pixel_limit())
            raise ImageReadError(f"{name}: {limit} (OpenCV's limit, {_OPENCV_ENV})") from None
        a = None
    if a is None or a.size == 0:
        raise ImageReadError(f"{name}: corrupt or truncated image data (OpenCV could not decode this {head.fmt} file)")
    h, w = a.shape[:2]
    if w * h > max_pixels:  # the header said otherwise: never expected, kept as a guard
        raise ImageReadError(f"{name}: {too_large(w, h, max_pixels)}")
    bits = 16 if a.dtype == np.uint16 else 8 if a.dtype == np.uint8 else 32
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    gray = c in (1, 2)
    rgb = np.repeat(a[:, :, :1], 3, axis=2) if gray else a[:, :, 2::-1]
    alpha = a[:, :, -1] if c in (2, 4) else None
    notes = [f"{head.fmt} decoded with OpenCV"] + ([f"{bits}-bit input converted to 8-bit for processing; the output is 8-bit"] if bits > 8 else [])
    return LoadedImage(
        rgb=np.ascontiguousarray(_to8(np.ascontiguousarray(rgb), bits)),
        alpha=None if alpha is None else np.ascontiguousarray(_to8(np.ascontiguousarray(alpha), bits)),
        was_gray=gray,
        mode="L" if gray else "RGB",
        bit_depth=bits,
        format="OPENCV",  # the decoder; the file format is in the note
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
    exif = carried_exif(im)
    xmp = carried_xmp(im.info.get("xmp"), notes)
    text = carried_text(im)
    iptc = carried_iptc(im)
    dpi = _stated_dpi(im.info.get("dpi")) if _says_dpi(im) else None
    if orientation not in range(1, 9):
        orientation = 1
    # HEIF: libheif turns the picture upright while decoding and pi-heif sets the EXIF value to 1, keeping the old one
    turned = im.info.get("original_orientation") if fmt == "HEIF" else None
    bits = _bit_depth(im, data)
    png_gray = _png_gray(data)
    was_gray = mode in _GRAY_MODES or mode.startswith("I;16") or bool(png_gray)
    icc = im.info.get("icc_profile")
    alpha: np.ndarray | None = None
    rgb: np.ndarray | None = None
    rgb16: np.ndarray | None = None

    if bits > 8 and mode not in ("F",):
        dec = _decode_high_depth(im, data, bits) if fmt in ("PNG", "TIFF") else None
        if dec is not None:
            rgb, alpha, rgb16 = dec
            if not (fmt == "TIFF" and _opencv_orients_tiff()):
                rgb, alpha = _orient(rgb, orientation), (None if alpha is None else _orient(alpha, orientation))
                rgb16 = None if rgb16 is None else _orient(rgb16, orientation)
            if rgb16 is not None and alpha is None:
                notes.append(f"{bits}-bit input: its faces are restored in 8 bits; a PNG or TIFF output keeps 16 bits")
            else:
                rgb16 = None
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
    if turned in range(2, 9):
        orientation = int(turned)
    if orientation != 1:
        notes.append(f"EXIF orientation {orientation} applied; the output is stored upright")
    if icc is not None and not (mode in ("RGB", "RGBA", "L", "LA", "P") or mode.startswith("I;16")):
        icc = None  # CMYK's was used for the conversion; 32-bit integer and float images carry none we can keep
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        was_gray=was_gray,
        mode=mode,
        bit_depth=bits,
        format=fmt,
        orientation=orientation,
        icc_profile=icc,
        exif=exif,
        dpi=None if dpi is None else (dpi[::-1] if orientation in (5, 6, 7, 8) else dpi),  # turned with the picture
        notes=notes,
        xmp=xmp,
        text=text,
        iptc=iptc,
        rgb16=None if rgb16 is None else np.ascontiguousarray(rgb16),
    )


def _says_dpi(im: Image.Image) -> bool:
    """Whether the file states a print resolution: Pillow gives a JPEG whose EXIF lacks one (and whose JFIF header
    gives only an aspect ratio) a placeholder 72 dpi, which an upscaled output then stated as 144."""
    if im.format not in ("JPEG", "MPO"):
        return True
    if im.info.get("jfif_unit") in (1, 2):
        return True
    try:
        return 0x011A in im.getexif()
    except Exception:  # noqa: BLE001 - damaged EXIF: no stated resolution
        return False


def _stated_dpi(v) -> tuple[float, float] | None:
    """Pillow's ``info["dpi"]`` as two numbers, else None: absent, damaged, or 1 or less (the 1:1 placeholder that
    files without a resolution carry, e.g. Pillow's own TIFFs)."""
    try:
        x, y = (float(a) for a in v)
    except (TypeError, ValueError):
        return None
    return (x, y) if 1 < x < 1e6 and 1 < y < 1e6 else None


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
    writable (png/jpg/webp/bmp/tif/tiff; ``.tif`` stays ``.tif``, ``.jpeg`` becomes ``.jpg``; HEIC/HEIF/AVIF
    become ``jpg``) and can hold the alpha channel, else ``png``."""
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


_EXIF_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "HEIF", "AVIF", "TIFF")
# a TIFF's first IFD is mostly its own layout (size, strips, compression): only these of its tags describe the photo
# (image description, make, model, artist, host computer, copyright), besides the EXIF and GPS IFDs it points to
_TIFF_DESCRIPTIVE = (0x010E, 0x010F, 0x0110, 0x013B, 0x013C, 0x8298)
_EXIF_EXTS = ("jpg", "jpeg", "png", "webp")
_EXIF_DROP = (0x0112, 0x0201, 0x0202,  # orientation; a thumbnail's offset and length (IFD1's, misplaced in IFD0)
              0x0132,  # DateTime, the file's change date: the input's (the date taken, DateTimeOriginal, stays)
              0x011A, 0x011B, 0x0128)  # X/Y resolution and its unit: written as the format's dpi, scaled (write_like_input)
_EXIF_SUB_DROP = (0xA002, 0xA003, 0x927C, 0xA005,  # Exif IFD: pixel X / Y dimension, maker note, Interop pointer (an
                  0xA420)  # offset into the old file: the Interop IFD is written anew), ImageUniqueID (asset managers
# would merge it with the input)
_INTEROP_IFD = 0xA005  # its "R03" says Adobe RGB in a camera's JPEG that has no ICC profile (ColorSpace 0xFFFF)
_SOFTWARE_TAG = 0x0131


# what each output's Software tag says was done to it: restored faces are a generative model's estimates, which
# anyone who later finds the file should be able to tell (an investigator's audit found nothing saying so)
FACES_RESTORED = "faces restored by a generative model: estimates, not a record of the person"
CROP_NOT_RESTORED = "aligned crop of the input: not restored"
SIDE_BY_SIDE = "input crop beside its restoration by a generative model"


def _software(altered: str = FACES_RESTORED) -> str:
    """The ``Software`` tag of every output: which software altered it, and how."""
    from dynface import __version__

    return f"dynfacerestore {__version__} ({altered})"


def _with_software(exif: bytes, altered: str) -> bytes:
    """``exif`` with its ``Software`` tag saying ``altered`` (the input's other tags unchanged)."""
    try:
        src = Image.Exif()
        src.load(exif)
        out = _exif_rebuilt(src)
        out[_SOFTWARE_TAG] = _software(altered)
        return out.tobytes()
    except Exception:  # unreadable: as it was
        return exif


def _exif_text(value):
    """An EXIF value as it is to be written: text that is not ASCII as its bytes. Pillow reads an ASCII tag as
    Latin-1 and writes text as ASCII, so a UTF-8 "Jürgen Müller" or "©" (as Lightroom and exiftool write them) came
    back "J??rgen M??ller"; its bytes are written as they were."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("latin-1", "replace")
    if isinstance(value, dict):
        return {t: _exif_text(v) for t, v in value.items()}
    return value


def _exif_rebuilt(src: Image.Exif, keep: Callable[[int], bool] = lambda tag: True, gps: bool = True) -> Image.Exif:
    """A new EXIF block with ``src``'s first-IFD tags that ``keep`` keeps, its EXIF IFD without
    :data:`_EXIF_SUB_DROP` (its Interop IFD written anew) and its GPS IFD (``gps``), each value through
    :func:`_exif_text`."""
    out = Image.Exif()
    for tag, value in src.items():
        if tag not in (0x8769, _GPS_IFD) and keep(tag):
            out[tag] = _exif_text(value)
    sub = {t: v for t, v in src.get_ifd(0x8769).items() if t not in _EXIF_SUB_DROP}
    try:  # a camera's Adobe RGB setting: without it a colour-managed viewer took the photo for sRGB (audit)
        interop = dict(src.get_ifd(_INTEROP_IFD))
    except Exception:  # noqa: BLE001  (a damaged Interop IFD: left out)
        interop = {}
    if interop:
        sub[_INTEROP_IFD] = interop
    if sub:
        out[0x8769] = _exif_text(sub)
    where = dict(src.get_ifd(_GPS_IFD)) if gps else {}
    if where:
        out[_GPS_IFD] = _exif_text(where)
    return out


def carried_exif(im: Image.Image) -> bytes | None:
    """The EXIF block a restored photo carries from ``im`` (see the module docstring), or None when ``im`` has none
    (or is not a JPEG / PNG / WebP / HEIF / AVIF / TIFF, or its EXIF cannot be read). A TIFF's: its descriptive
    first-IFD tags (:data:`_TIFF_DESCRIPTIVE`) and its EXIF and GPS IFDs."""
    if im.format not in _EXIF_FORMATS:
        return None
    try:
        src = im.getexif()
        if not len(src):
            return None
        tiff = im.format == "TIFF"
        out = _exif_rebuilt(src, lambda tag: tag not in _EXIF_DROP and (not tiff or tag in _TIFF_DESCRIPTIVE))
        if tiff and not len(out):
            return None  # nothing but its layout
        out[_SOFTWARE_TAG] = _software()
        return out.tobytes()
    except Exception:  # damaged EXIF: the photo is still restored, without it
        return None


# XMP properties that describe the input file, not the restored one: a second rotation, the old size, the old
# thumbnail, the old file's identity (asset managers would merge the two)
_XMP_DROP = ("tiff:Orientation", "tiff:ImageWidth", "tiff:ImageLength", "exif:PixelXDimension", "exif:PixelYDimension",
             "xmpMM:InstanceID", "xmpMM:DocumentID", "xmp:Thumbnails")
XMP_MOST_BYTES = 65_000  # a JPEG's XMP segment (extended XMP, split over several, is not written)


def carried_xmp(xmp: bytes | str | None, notes: list[str] | None = None) -> bytes | None:
    """The XMP packet a restored photo carries (captions, keywords, copyright, rating: what photo managers and
    photographers keep there), minus :data:`_XMP_DROP` (as attributes or elements); None when there is none, it is
    not UTF-8 text, or it is larger than :data:`XMP_MOST_BYTES` (then with a note)."""
    if not xmp:
        return None
    try:
        x = xmp.decode("utf-8") if isinstance(xmp, bytes) else str(xmp)
    except UnicodeDecodeError:
        return None
    out = _without_xmp_properties(x.rstrip("\x00"), "|".join(map(re.escape, _XMP_DROP))).encode("utf-8")
    if len(out) > XMP_MOST_BYTES:
        if notes is not None:
            notes.append(f"the XMP metadata ({len(out) // 1024} KB) is larger than one JPEG segment holds: left out")
        return None
    return out


_GPS_IFD = 0x8825
# where a photo was taken, in XMP: EXIF's GPS properties and the IPTC places
_XMP_PLACES = (r"exif:GPS\w*|photoshop:(?:City|State|Country)|Iptc4xmpCore:(?:Location|CountryCode)|"
               r"Iptc4xmpExt:Location(?:Created|Shown)")


def without_location(exif: bytes) -> bytes:
    """``exif`` without its GPS IFD (``--strip-location``); unreadable EXIF goes whole, as it cannot be checked."""
    try:
        src = Image.Exif()
        src.load(exif)
        return _exif_rebuilt(src, gps=False).tobytes()
    except Exception:  # noqa: BLE001
        return software_exif()


def xmp_without_location(xmp: bytes) -> bytes:
    """``xmp`` without :data:`_XMP_PLACES` (attributes or elements)."""
    return _without_xmp_properties(xmp.decode("utf-8"), _XMP_PLACES).encode("utf-8")


def _without_xmp_properties(x: str, names: str) -> str:
    """XMP text without the properties whose qualified names match the regular expression ``names``, written as
    attributes (``tiff:Orientation="6"``) or as elements (empty, or with content)."""
    x = re.sub(rf"""\s(?:{names})\s*=\s*(?:"[^"]*"|'[^']*')""", "", x)
    x = re.sub(rf"<(?:{names})\b[^>]*/>", "", x)
    return re.sub(rf"<((?:{names}))\b[^>]*>.*?</\1>", "", x, flags=re.S)


_PNG_TEXT = ("Title", "Author", "Description", "Copyright", "Creation Time", "Source", "Comment", "Disclaimer")
_TIFF_TEXT = {270: "Description", 315: "Author", 33432: "Copyright"}  # ImageDescription, Artist, Copyright


def _tiff_text(v) -> str:
    """A TIFF text tag as text: UTF-8 (what tools write into ASCII tags; Pillow reads it as Latin-1: "Ã©" for "©"),
    also when stored as bytes (a BYTE-typed Copyright came back as "b'\\xc2\\xa9 ...'"), NULs dropped."""
    if isinstance(v, bytes | bytearray):
        return bytes(v).rstrip(b"\x00").decode("utf-8", "replace")
    v = str(v).rstrip("\x00")
    try:
        return v.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return v


def carried_text(im: Image.Image) -> dict[str, str]:
    """A photo's captions and credits as text, under PNG's keywords: a PNG's text chunks of those keywords, a TIFF's
    ImageDescription / Artist / Copyright, a JPEG's comment (``Comment``)."""
    out: dict[str, str] = {}
    try:
        if im.format == "PNG":
            out = {k: str(v) for k, v in getattr(im, "text", {}).items() if k in _PNG_TEXT}
        elif im.format == "TIFF":
            out = {name: _tiff_text(im.tag_v2[tag]) for tag, name in _TIFF_TEXT.items() if im.tag_v2.get(tag)}
        elif im.format in ("JPEG", "MPO") and im.info.get("comment"):
            c = im.info["comment"]
            out = {"Comment": c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)}
    except Exception:  # noqa: BLE001  (unreadable text: left out)
        return {}
    return {k: v for k, v in out.items() if v.strip()}


IPTC_EXTS = ("jpg", "jpeg", "tif", "tiff")  # the outputs that hold IPTC-IIM
_IPTC_RESOURCE = 0x0404  # IPTC-NAA, in a JPEG's Photoshop image resources (APP13)
_IPTC_TIFF_TAG = 33723
_APP13_SIGNATURE = b"Photoshop 3.0\x00"
# where a photo was taken, in IPTC-IIM's application record (2): content location code and name, city, sub-location,
# province/state, country code, country name
_IIM_PLACES = frozenset({(2, 26), (2, 27), (2, 90), (2, 92), (2, 95), (2, 100), (2, 101)})


IPTC_JPEG_MOST = 65_000  # bytes of IPTC-IIM one JPEG APP13 segment holds (with its Photoshop resource header)


def iptc_fits(iptc: bytes, ext: str) -> bool:
    """Whether an output of extension ``ext`` can hold ``iptc``: JPEG (one segment's worth) or TIFF."""
    ext = ext.lower().lstrip(".")
    return ext in IPTC_EXTS and not (ext in ("jpg", "jpeg") and len(iptc) > IPTC_JPEG_MOST)


def iim_datasets(data: bytes) -> list[tuple[int, int, bytes]]:
    """(record, dataset, value) of each IPTC-IIM dataset in ``data`` (trailing NUL padding allowed); ValueError when
    ``data`` is not a whole sequence of datasets."""
    out: list[tuple[int, int, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        if data[i] != 0x1C:
            if not data[i:].strip(b"\x00"):
                break  # padding (Photoshop pads the TIFF tag to whole 4-byte words)
            raise ValueError(f"no IPTC-IIM dataset at byte {i}")
        if i + 5 > n:
            raise ValueError("a dataset's header is cut off")
        rec, ds, size = data[i + 1], data[i + 2], struct.unpack(">H", data[i + 3:i + 5])[0]
        i += 5
        if size & 0x8000:  # an extended dataset: the next (size & 0x7FFF) bytes hold its length
            k = size & 0x7FFF
            if not 1 <= k <= 4 or i + k > n:
                raise ValueError("a dataset's extended length is cut off")
            size = int.from_bytes(data[i:i + k], "big")
            i += k
        if i + size > n:
            raise ValueError("a dataset's value is cut off")
        out.append((rec, ds, bytes(data[i:i + size])))
        i += size
    return out


def iim_bytes(datasets: list[tuple[int, int, bytes]]) -> bytes:
    """The IPTC-IIM bytes of (record, dataset, value) triples (:func:`iim_datasets`' inverse)."""
    return b"".join(struct.pack(">BBBH", 0x1C, r, d, len(v)) + v if len(v) < 0x8000
                    else struct.pack(">BBBHI", 0x1C, r, d, 0x8004, len(v)) + v for r, d, v in datasets)


def carried_iptc(im: Image.Image) -> bytes | None:
    """A photo's IPTC-IIM datasets (a JPEG's Photoshop resource 0x0404, read by Pillow; a TIFF's tag 33723), checked
    to be a whole sequence of datasets; None when there are none or they cannot be read."""
    try:
        if im.format in ("JPEG", "MPO"):
            raw = (im.info.get("photoshop") or {}).get(_IPTC_RESOURCE)
        elif im.format == "TIFF":
            raw = im.tag_v2._tagdata.get(_IPTC_TIFF_TAG)  # raw bytes: Photoshop types the tag LONG  # noqa: SLF001
        else:
            return None
        datasets = iim_datasets(bytes(raw)) if raw else []
    except Exception:  # noqa: BLE001  (unreadable IPTC: left out)
        return None
    return iim_bytes(datasets) if datasets else None


def iptc_without_location(iptc: bytes) -> bytes | None:
    """``iptc`` without :data:`_IIM_PLACES` (``--strip-location``); None when nothing else is left."""
    kept = [d for d in iim_datasets(iptc) if d[:2] not in _IIM_PLACES]
    return iim_bytes(kept) if any(r == 2 for r, _, _ in kept) else None


def _jpeg_with_iptc(jpeg: bytes, iptc: bytes) -> bytes:
    """``jpeg`` with an APP13 segment holding ``iptc`` as Photoshop resource 0x0404, after its APPn segments (JFIF,
    EXIF, ICC, XMP), where Photoshop puts it. A block larger than one segment is left out (ValueError)."""
    body = (_APP13_SIGNATURE + b"8BIM" + struct.pack(">H", _IPTC_RESOURCE) + b"\x00\x00"  # an empty name, padded
            + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2))
    if len(body) + 2 > 0xFFFF:
        raise ValueError("the IPTC-IIM block is larger than one JPEG segment holds")
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF and 0xE0 <= jpeg[i + 1] <= 0xEF:
        i += 2 + struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    return jpeg[:i] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + jpeg[i:]


def software_exif(altered: str = FACES_RESTORED) -> bytes:
    """The EXIF block of an output whose input had none: the ``Software`` tag alone (the output says what was done
    to it: ``altered``)."""
    out = Image.Exif()
    out[_SOFTWARE_TAG] = _software(altered)
    return out.tobytes()


def save_image(img: Image.Image | np.ndarray, path: str | Path, quality: int = 95, icc_profile: bytes | None = None,
               exif: bytes | None = None, dpi: tuple[float, float] | None = None, lossless: bool = False,
               xmp: bytes | None = None, text: dict[str, str] | None = None, iptc: bytes | None = None) -> Path:
    """Write atomically (temporary file + rename) in the format of ``path``'s extension (``exif``: JPEG, PNG, WebP, TIFF;
    ``dpi``: JPEG, PNG, TIFF; ``lossless``: WebP; ``xmp``: JPEG, PNG, WebP, TIFF; ``text`` (:func:`carried_text`):
    PNG's text chunks, a TIFF's tags, a JPEG's comment; ``iptc`` (:func:`carried_iptc`): JPEG, TIFF)."""
    path = Path(path)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    ext = path.suffix.lower().lstrip(".")
    kw: dict = {}
    if ext in ("jpg", "jpeg"):
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        kw.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif ext == "webp" and lossless:  # a lossless input stays lossless (its background came back changed: audit)
        kw.update(lossless=True, quality=80, method=4)  # quality: the effort of lossless WebP
    elif ext == "webp":
        kw.update(quality=quality, method=4)
    elif ext == "png":
        kw.update(compress_level=4)
    elif ext in ("tif", "tiff"):
        kw.update(compression="tiff_lzw")  # lossless; uncompressed, an LZW scan came back five times its size
    if icc_profile and ext in ("jpg", "jpeg", "png", "webp", "tif", "tiff"):
        kw["icc_profile"] = icc_profile
    if exif and ext in _EXIF_EXTS:
        kw["exif"] = exif
    if dpi and ext in ("jpg", "jpeg", "png", "tif", "tiff"):
        kw["dpi"] = dpi
    text = text or {}
    if ext in ("jpg", "jpeg", "webp") and xmp:
        kw["xmp"] = xmp
    if ext in ("jpg", "jpeg") and text.get("Comment"):
        kw["comment"] = text["Comment"].encode("utf-8")
    if ext == "png" and (xmp or text):
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)  # UTF-8 (tEXt is Latin-1)
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
        kw["pnginfo"] = info
    if ext in ("tif", "tiff") and (xmp or text or iptc):
        kw["tiffinfo"] = {**{tag: text[name].encode("utf-8") for tag, name in _TIFF_TEXT.items() if text.get(name)},
                          **({700: xmp} if xmp else {}), **({_IPTC_TIFF_TAG: iptc} if iptc else {})}
    if ext in ("jpg", "jpeg") and iptc:
        kw["after"] = lambda data: _jpeg_with_iptc(data, iptc)
    if ext in ("tif", "tiff") and exif:
        kw["after"] = lambda data: _tiff_with_exif(data, exif)
    atomic_save_image(img, path, **kw)
    return path


def write_like_input(rgb: np.ndarray, src: LoadedImage, path: str | Path, quality: int = 95,
                     altered: str = FACES_RESTORED, keep_exif: bool = True, deep: bool = True,
                     keep_location: bool = True) -> list[str]:
    """Write a processed photo in the original's shape (gray / alpha / ICC / EXIF; its stated print resolution
    scaled with the picture, so that a 600-dpi scan upscaled ×2 prints at the same size: 1200 dpi); returns the
    notes it produced. ``altered``: what its ``Software`` tag says was done to it. ``keep_exif=False``
    (``--strip-metadata``): none of the input's EXIF (date, camera, GPS, ...), XMP or text (captions, credits), only
    the ``Software`` tag; the colour profile and the print resolution, which say how to show and print the pixels,
    are kept. A 16-bit input (``src.rgb16``) written as PNG or TIFF is written at 16 bits (:func:`deepened`; ``deep``:
    ``rgb`` is ``src.rgb`` enlarged by Lanczos where the faces were not restored; False for another upscaler)."""
    notes: list[str] = []
    path = Path(path)
    im = to_output_image(rgb, src, ext=path.suffix.lstrip("."), notes=notes)
    icc = fitting_profile(src.icc_profile, im.mode, path.suffix)
    if icc is None and src.icc_profile and bytes(src.icc_profile[16:20]) == b"GRAY" and not stored_gray(im.mode,
                                                                                                       path.suffix):
        im, icc = _gray_profile_to_srgb(im, src.icc_profile)
    dpi = None
    if src.dpi:
        (w, h), (w0, h0) = im.size, src.size
        dpi = (round(src.dpi[0] * w / w0, 3), round(src.dpi[1] * h / h0, 3))
    exif = (src.exif if keep_exif else None) or software_exif()
    xmp = src.xmp if keep_exif else None
    iptc = src.iptc if keep_exif else None
    if not keep_location:  # --strip-location: the date, camera and captions stay
        exif, xmp = without_location(exif), None if xmp is None else xmp_without_location(xmp)
        iptc = None if iptc is None else iptc_without_location(iptc)
    if altered != FACES_RESTORED:
        exif = _with_software(exif, altered)
    ext = path.suffix.lower().lstrip(".")
    if iptc and not iptc_fits(iptc, ext):
        if ext not in IPTC_EXTS:
            notes.append(f"its IPTC captions and credits (IPTC-IIM) cannot be stored in .{ext}: left out"
                         + (" (their XMP copy is kept)" if xmp else " (JPEG or TIFF keep them)"))
        else:
            notes.append(f"its IPTC captions and credits ({len(iptc) // 1024} KB) are larger than one JPEG segment "
                         "holds: left out")
        iptc = None
    if src.rgb16 is not None and deep and ext in ("png", "tif", "tiff"):
        deep16 = deepened(np.asarray(rgb, dtype=np.uint8), src)
        if deep16 is not None:
            write_16bit(deep16, path, gray=src.was_gray, icc_profile=icc, dpi=dpi,
                        exif=exif, xmp=xmp, text=src.text if keep_exif else None, iptc=iptc)
            return notes
    if src.rgb16 is not None:
        notes.append(f"the output is 8-bit: .{ext} holds no more (PNG or TIFF keep a 16-bit input's depth)"
                     if ext not in ("png", "tif", "tiff") else "the output is 8-bit (another background upscaler)")
    save_image(im, path, quality=quality, icc_profile=icc, exif=exif, dpi=dpi, lossless=src.lossless_webp, xmp=xmp,
               text=src.text if keep_exif else None, iptc=iptc)
    return notes


def deepened(out8: np.ndarray, src: LoadedImage, rows: int = 512) -> np.ndarray | None:
    """The restored photo ``out8`` (uint8, ``src.rgb`` enlarged by Lanczos to its size, faces pasted in) at 16 bits:
    ``src.rgb16`` enlarged alike, plus 257 × what restoring changed (``out8`` minus ``src.rgb`` enlarged). Where
    nothing changed, it is the 16-bit input itself (at ``-s 1`` bit-exact); a face holds its 8-bit restoration and
    the input's finer levels. None when ``out8`` is smaller than the input (not an enlargement). In slices of
    ``rows`` rows (a 48-MP output would need gigabytes at once)."""
    h, w = out8.shape[:2]
    h0, w0 = src.rgb.shape[:2]
    if h < h0 or w < w0 or src.rgb16 is None:
        return None
    same = (h, w) == (h0, w0)
    up8 = src.rgb if same else lanczos_resize(src.rgb, (w, h))
    up16 = src.rgb16 if same else lanczos_resize(src.rgb16, (w, h))
    out = np.empty((h, w, 3), np.uint16)
    for i in range(0, h, rows):
        d = out8[i : i + rows].astype(np.int32) - up8[i : i + rows]
        out[i : i + rows] = np.clip(up16[i : i + rows].astype(np.int32) + 257 * d, 0, 65535)
    return out


def write_16bit(rgb16: np.ndarray, path: str | Path, *, gray: bool = False, icc_profile: bytes | None = None,
                dpi: tuple[float, float] | None = None, exif: bytes | None = None, xmp: bytes | None = None,
                text: dict[str, str] | None = None, iptc: bytes | None = None) -> Path:
    """Write a 16-bit picture (H, W, 3 uint16; ``gray``: as one channel, by Pillow's luma weights) as PNG or TIFF,
    atomically, with the colour profile, print resolution, EXIF (PNG's ``eXIf``), XMP and text a :func:`save_image`
    output would carry (``iptc``: TIFF only). Pillow writes no 16-bit RGB: the PNG is OpenCV's with the chunks added after its header, the
    TIFF is tifffile's (deflate, lossless)."""
    import cv2

    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    a = rgb16
    if gray:  # as Image.convert("L"): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16
        a = ((a[..., 0].astype(np.uint64) * 19595 + a[..., 1].astype(np.uint64) * 38470
              + a[..., 2].astype(np.uint64) * 7471 + 32768) >> 16).astype(np.uint16)
    text = dict(text or {})
    if ext == "png":
        ok, buf = cv2.imencode(".png", a if gray else np.ascontiguousarray(a[..., ::-1]))
        if not ok:
            raise OSError(f"cannot encode {path.name} as a 16-bit PNG")
        data = bytes(buf)
        chunks = []
        if icc_profile:
            chunks.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
        if dpi:
            chunks.append((b"pHYs", struct.pack(">IIB", round(dpi[0] / 0.0254), round(dpi[1] / 0.0254), 1)))
        if exif:
            chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
        for k, v in text.items():
            chunks.append((b"iTXt", k.encode("latin-1", "replace")[:79] + b"\x00\x00\x00\x00\x00" + v.encode("utf-8")))
        if xmp:
            chunks.append((b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
        end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # after the signature and IHDR
        data = data[:end] + b"".join(_png_chunk(t, c) for t, c in chunks) + data[end:]
    elif ext in ("tif", "tiff"):
        import tifffile

        # UTF-8 in the ASCII tags, as exiftool and Lightroom write them (tifffile refused "©": the file failed)
        tags = [(tag, "s", 0, text[name].encode("utf-8"), True) for tag, name in _TIFF_TEXT.items() if text.get(name)]
        if xmp:
            tags.append((700, "B", len(xmp), xmp, True))
        if iptc:
            tags.append((_IPTC_TIFF_TAG, 7, len(iptc), iptc, True))  # UNDEFINED
        out = io.BytesIO()
        tifffile.imwrite(out, a, photometric="minisblack" if gray else "rgb", compression="zlib",
                         iccprofile=icc_profile, resolution=tuple(dpi) if dpi else None,
                         resolutionunit="INCH" if dpi else None, extratags=tags, metadata=None,
                         software=_software())
        data = out.getvalue() if not exif else _tiff_with_exif(out.getvalue(), exif)
    else:
        raise ValueError(f"16 bits are written as PNG or TIFF, not .{ext}")
    atomic_write_bytes(data, path)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _tiff_with_exif(data: bytes, exif: bytes) -> bytes:
    """A TIFF file's bytes with what ``exif`` (:func:`carried_exif`) says of the photo: its EXIF IFD (date taken,
    exposure, ...), GPS IFD, make, model, host computer and ``Software`` (the tags the writer gave it itself, such as
    a description or copyright from the input's text, stay). libtiff, under Pillow's compressed TIFFs, cannot write
    the EXIF IFD, nor can tifffile: the new IFDs (written by Pillow) are appended to the file, then a first IFD
    holding the old one's entries and theirs, and the header is pointed at it; the old first IFD stays behind, unread
    (a few hundred bytes). Unchanged when anything is unexpected (a BigTIFF, an unreadable EXIF block)."""
    from PIL import TiffImagePlugin

    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return data
    try:
        e = Image.Exif()
        e.load(exif)
        src = _exif_rebuilt(e)  # its EXIF and GPS IFDs (and the Interop IFD in the EXIF IFD) as dicts
        extra = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:8])
        for tag in (*_TIFF_DESCRIPTIVE, _SOFTWARE_TAG, 0x8769, _GPS_IFD):
            if src.get(tag) not in (None, "", b""):
                extra[tag] = src[tag]
        if not len(extra):
            return data
        bo = "<" if data[:2] == b"II" else ">"
        at = len(data) + len(data) % 2
        blob = extra.tobytes(at)  # its entries' offsets are absolute: it is written at ``at``

        def entries(buf: bytes, pos: int) -> tuple[dict[int, bytes], bytes]:
            n = struct.unpack(bo + "H", buf[pos:pos + 2])[0]
            raw = [buf[pos + 2 + 12 * i:pos + 14 + 12 * i] for i in range(n)]
            return {struct.unpack(bo + "H", r[:2])[0]: r for r in raw}, buf[pos + 2 + 12 * n:pos + 6 + 12 * n]

        old, next_ifd = entries(data, struct.unpack(bo + "I", data[4:8])[0])
        new, _ = entries(blob, 0)
        merged = {**old, **{t: r for t, r in new.items() if not (t in old and t in _TIFF_TEXT)}}
        first = at + len(blob) + len(blob) % 2
        ifd = struct.pack(bo + "H", len(merged)) + b"".join(merged[t] for t in sorted(merged)) + next_ifd
        out = bytearray(data.ljust(at, b"\x00") + blob.ljust(first - at, b"\x00") + ifd)
        struct.pack_into(bo + "I", out, 4, first)
        return bytes(out)
    except Exception:  # noqa: BLE001  (the photo is written without it rather than not at all)
        return data


def _gray_profile_to_srgb(im: Image.Image, gray_icc: bytes) -> tuple[Image.Image, bytes | None]:
    """A gray picture with a gray profile, for a file that stores RGB (WebP): its tones converted from the profile
    to sRGB, with sRGB's profile (photographer's audit: the gray profile was dropped and the gamma-1.8 tones then
    read as sRGB, 11.5 levels darker). Unchanged, without a profile, when littlecms cannot use the profile."""
    from PIL import ImageCms

    try:
        alpha = im.getchannel("A") if im.mode in ("LA", "RGBA") else None
        gray = im.convert("L")
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        out = ImageCms.profileToProfile(gray, ImageCms.ImageCmsProfile(io.BytesIO(gray_icc)), srgb, outputMode="RGB")
    except Exception:  # noqa: BLE001  (a profile littlecms refuses: as before)
        return im, None
    if alpha is not None:
        out.putalpha(alpha)
    return out, srgb.tobytes()


def stored_gray(mode: str, ext: str) -> bool:
    """Whether an image of PIL ``mode`` is stored gray in a file of extension ``ext`` (WebP stores RGB always)."""
    return mode in ("L", "LA") and ext.lower().lstrip(".") != "webp"


def fitting_profile(icc: bytes | None, mode: str, ext: str) -> bytes | None:
    """``icc`` when its colour space (the ICC header's, bytes 16-20: 'GRAY' or 'RGB ') is the one an image of
    ``mode`` is stored in as ``ext`` (:func:`stored_gray`), else None: a gray profile in an RGB file (a gray photo
    saved as WebP) made colour-managed viewers fail ("cannot build transform")."""
    if not icc or len(icc) < 20:
        return None
    space = bytes(icc[16:20])
    if space not in (b"GRAY", b"RGB "):
        return None
    return icc if (space == b"GRAY") == stored_gray(mode, ext) else None


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS
