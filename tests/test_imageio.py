"""dynface.imageio: every kind of input people have round-trips (generated images only)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dynface.imageio import (
    FACES_RESTORED,
    ImageReadError,
    capped_upscale,
    decode_image,
    image_size,
    is_image_name,
    output_ext,
    read_image,
    save_image,
    to_output_image,
    too_large,
    upscale_note,
    write_like_input,
)

DATA = Path(__file__).resolve().parent / "data"


def _rgb(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2).astype(np.int32)
    return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("ext,tol", [("png", 0), ("bmp", 0), ("tiff", 0), ("webp", 12), ("jpg", 12)])
def test_rgb_formats_round_trip(tmp_path, ext, tol):
    a = _rgb()
    p = tmp_path / f"x.{ext}"
    Image.fromarray(a).save(p, **({"quality": 95} if ext in ("jpg", "webp") else {}))
    im = read_image(p)
    assert im.rgb.dtype == np.uint8 and im.rgb.shape == a.shape
    assert not im.was_gray and im.alpha is None and im.bit_depth == 8
    assert np.abs(im.rgb.astype(int) - a).mean() <= max(tol / 2, 0)
    out = tmp_path / "out" / f"y.{ext}"
    write_like_input(im.rgb, im, out)
    back = np.asarray(Image.open(out).convert("RGB"))
    assert back.shape == a.shape
    assert np.abs(back.astype(int) - im.rgb).mean() <= max(tol / 2, 0)
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")], "temporary file left behind"


def test_gray_stays_gray(tmp_path):
    g = _rgb()[:, :, 0]
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    im = read_image(p)
    assert im.was_gray and im.mode == "L" and im.rgb.shape == (*g.shape, 3)
    assert np.array_equal(im.rgb[:, :, 0], g) and np.array_equal(im.rgb[:, :, 1], g)
    out = tmp_path / "o.png"
    write_like_input(im.rgb, im, out)
    back = Image.open(out)
    assert back.mode == "L" and np.array_equal(np.asarray(back), g)
    # bilevel images are gray too
    Image.fromarray(g > 128).save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").was_gray


def test_rgba_keeps_alpha_and_resizes_it(tmp_path):
    a = _rgb()
    alpha = np.zeros(a.shape[:2], np.uint8)
    alpha[10:40, 8:56] = 255
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    assert im.alpha is not None and np.array_equal(im.alpha, alpha) and np.array_equal(im.rgb, a)
    up = cv2.resize(im.rgb, (128, 96), interpolation=cv2.INTER_LANCZOS4)  # the "upscaled photo"
    assert output_ext("auto", "a.png", True) == "png"
    write_like_input(up, im, tmp_path / "o.png")
    back = Image.open(tmp_path / "o.png")
    assert back.mode == "RGBA" and back.size == (128, 96)
    ba = np.asarray(back.getchannel("A"))
    assert ba[40, 60] == 255 and ba[5, 5] == 0 and ba[90, 120] == 0
    # gray + alpha
    Image.fromarray(np.dstack([a[:, :, 1], alpha]), "LA").save(tmp_path / "la.png")
    im2 = read_image(tmp_path / "la.png")
    assert im2.was_gray and im2.alpha is not None
    write_like_input(im2.rgb, im2, tmp_path / "la_out.png")
    assert Image.open(tmp_path / "la_out.png").mode == "LA"
    # a format without alpha: auto picks png; an explicit jpg drops it with a note
    assert output_ext("auto", "a.jpg", True) == "png" and output_ext("auto", "a.jpg", False) == "jpg"
    notes: list[str] = []
    assert to_output_image(im.rgb, im, "jpg", notes).mode == "RGB" and notes


def test_16bit_png_gray_and_rgb(tmp_path):
    g16 = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")  # mode I;16
    im = read_image(tmp_path / "g16.png")
    assert im.bit_depth == 16 and im.was_gray and im.rgb.dtype == np.uint8
    assert np.abs(im.rgb[:, :, 0].astype(int) - np.round(g16 / 257.0)).max() <= 1
    assert any("16-bit" in n for n in im.notes)
    write_like_input(im.rgb, im, tmp_path / "g16_out.png")
    with Image.open(tmp_path / "g16_out.png") as back:  # gray, and 16-bit: the input's own levels (nothing restored)
        assert back.mode == "I;16" and np.array_equal(np.asarray(back), g16)
    write_like_input(im.rgb, im, tmp_path / "g16_out.jpg")
    assert Image.open(tmp_path / "g16_out.jpg").mode == "L"

    rgb16 = (_rgb().astype(np.uint16) * 257 + 100).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])
    im = read_image(tmp_path / "c16.png")
    assert im.bit_depth == 16 and not im.was_gray
    assert np.abs(im.rgb.astype(int) - np.round(rgb16 / 257.0)).max() <= 1  # channel order kept, rounded
    assert any("16-bit" in n for n in im.notes)

    rgba16 = np.dstack([rgb16, np.full(rgb16.shape[:2], 65535, np.uint16)])
    cv2.imwrite(str(tmp_path / "c16a.png"), rgba16[:, :, [2, 1, 0, 3]])
    im = read_image(tmp_path / "c16a.png")
    assert im.alpha is not None and im.alpha.min() == 255 and np.abs(im.rgb.astype(int) - np.round(rgb16 / 257.0)).max() <= 1


def test_cmyk_jpeg(tmp_path):
    a = _rgb()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    im = read_image(tmp_path / "c.jpg")
    assert im.mode == "CMYK" and im.rgb.shape == a.shape and not im.was_gray
    assert np.abs(im.rgb.astype(int) - a).mean() < 8
    assert any("CMYK" in n for n in im.notes)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg(tmp_path, orientation):
    a = np.full((40, 60, 3), 40, np.uint8)
    a[:10, :10] = (255, 0, 0)  # red corner at the stored top-left
    src = Image.fromarray(a)
    exif = src.getexif()
    exif[0x0112] = orientation
    p = tmp_path / "r.jpg"
    src.save(p, exif=exif.tobytes(), quality=95)
    im = read_image(p)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    assert im.rgb.shape == expected.shape and im.orientation == orientation
    assert np.abs(im.rgb.astype(int) - expected).max() <= 1
    if orientation in (6, 8):
        assert im.rgb.shape[:2] == (60, 40)
    write_like_input(im.rgb, im, tmp_path / "r_out.jpg")
    back = Image.open(tmp_path / "r_out.jpg")
    assert back.size == (im.rgb.shape[1], im.rgb.shape[0]) and back.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("gray", [False, True])
def test_exif_rotated_16_bit_tiff_is_turned_once(tmp_path, orientation, gray):
    """A 16-bit TIFF is decoded by OpenCV, which (5.x) applied the orientation tag itself before _orient did it
    again: a helper's scans came back sideways, with "no face found" and the note saying they were upright."""
    import tifffile

    a = np.zeros((40, 60, 3), np.uint16)
    a[:10, :10] = (65535, 0, 0) if not gray else 65535  # a bright corner at the stored top-left
    a[30:, 50:, 1] = 30000
    if gray:
        a = a[:, :, 0]
    p = tmp_path / "r.tif"
    tifffile.imwrite(p, a, photometric="minisblack" if gray else "rgb", extratags=[(274, "H", 1, orientation, True)])
    im = read_image(p)
    eight = Image.fromarray((a // 257).astype(np.uint8)).convert("RGB")  # the same picture, 8-bit, as a JPEG says it
    exif = eight.getexif()
    exif[0x0112] = orientation
    eight.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "r.jpg")).convert("RGB")).astype(int)
    assert im.orientation == orientation and im.rgb.shape == want.shape
    assert np.abs(im.rgb.astype(int) - want).mean() < 3  # JPEG's rounding; a wrong turn moves the corners
    assert np.abs(im.rgb[:8, :8].astype(int) - want[:8, :8]).max() < 40 and np.abs(im.rgb[-8:, -8:].astype(int) - want[-8:, -8:]).max() < 40


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_exif_metadata_is_carried_without_what_no_longer_holds(tmp_path, ext):
    """Date taken, camera and GPS go to the written photo (a TIFF too: it carried none); orientation, pixel
    dimensions, the maker note, the change date and the unique ID do not; Software names dynfacerestore. A photo
    without EXIF carries nothing of its own, but the output still says it was altered (Software); a TIFF's own tags
    (its layout) are not taken for EXIF."""
    import dynface

    a = _rgb()
    src = Image.fromarray(a)
    exif = src.getexif()
    exif[0x010F], exif[0x0110], exif[0x0112], exif[0x0132] = "Kodak", "Brownie", 6, "1999:01:01 00:00:00"
    exif[0x8769] = {0x9003: "1962:07:14 10:00:00", 0xA002: a.shape[1], 0xA003: a.shape[0], 0x927C: b"\x01private",
                    0xA005: {1: "R98"}, 0xA420: "0123456789abcdef0123456789abcdef"}
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    p = tmp_path / f"old.{ext}"
    src.save(p, exif=exif.tobytes(), **({"quality": 95} if ext != "png" else {}))
    im = read_image(p)
    assert im.info()["exif_kept"]
    out = tmp_path / f"new.{ext}"
    write_like_input(np.ascontiguousarray(np.repeat(np.repeat(im.rgb, 2, 0), 2, 1)), im, out)
    with Image.open(out) as back:
        e = back.getexif()
        sub, gps = e.get_ifd(0x8769), e.get_ifd(0x8825)
    assert (e.get(0x010F), e.get(0x0110), e.get(0x0112, 1)) == ("Kodak", "Brownie", 1)
    assert e.get(0x0131) == f"dynfacerestore {dynface.__version__} ({FACES_RESTORED})"
    assert sub.get(0x9003) == "1962:07:14 10:00:00" and not {0xA002, 0xA003, 0x927C, 0xA420} & set(sub)
    if ext != "tif":  # (Pillow's TIFF writer points the input's Interop IFD into the EXIF block, not the file)
        assert e.get_ifd(0xA005).get(1) == "R98"  # the Interop IFD written anew (its pointer is the new file's)
    assert 0x0132 not in e
    assert gps.get(1) == "N" and tuple(float(v) for v in gps.get(2)) == (48.0, 51.0, 24.0)
    for name in ("plain.jpg", "plain.tif"):
        Image.fromarray(a).save(tmp_path / name)
        im = read_image(tmp_path / name)
        assert im.exif is None and not im.info()["exif_kept"]  # a TIFF's own tags (size, strips) are no EXIF
        write_like_input(im.rgb, im, tmp_path / f"w_{name}")
        with Image.open(tmp_path / f"w_{name}") as back:
            e = {t: v for t, v in back.getexif().items() if name.endswith(".jpg") or t in (0x010F, 0x0131, 0x8769)}
            assert e == {0x0131: f"dynfacerestore {dynface.__version__} ({FACES_RESTORED})"}


def test_phone_formats_heic_and_avif(tmp_path):
    """iPhones' HEIC (pi-heif) and AVIF (Pillow) photos are read upright, with their EXIF and ICC profile, and come
    back as JPEG (PNG when they have alpha) carrying both; the fixtures: ``tests/data/make_heif_fixtures.py``."""
    from _helpers import load_script

    upright = np.asarray(load_script("make_heif_fixtures", "tests/data").upright()).astype(int)
    heic = DATA / "phone_o6.heic"  # stored turned a quarter (HEIF irot), EXIF orientation 6
    im = read_image(heic)
    assert (im.format, im.orientation, im.rgb.shape) == ("HEIF", 6, upright.shape)
    assert np.abs(im.rgb - upright).mean() < 5  # HEVC at quality 50; a wrong turn is > 100
    assert im.notes == ["EXIF orientation 6 applied; the output is stored upright"]
    assert image_size(heic) == (288, 336)  # from the header, turned as libheif shows it
    assert all(is_image_name(f"a{s}") for s in (".HEIC", ".heif", ".hif", ".AVIF"))  # picked up from folders
    ext = output_ext("auto", heic)
    assert ext == "jpg" and [output_ext("auto", f"x{s}") for s in (".HEIC", ".heif", ".hif", ".avif")] == ["jpg"] * 4
    write_like_input(im.rgb, im, tmp_path / f"out.{ext}")
    with Image.open(tmp_path / "out.jpg") as back:
        e, icc = back.getexif(), back.info.get("icc_profile")
        assert back.size == (288, 336)
    assert (e.get(0x010F), e.get(0x0110), e.get(0x0112, 1)) == ("Apple", "iPhone 15", 1)
    assert e.get_ifd(0x8769).get(0x9003) == "2024:08:15 18:30:00" and e.get_ifd(0x8825).get(1) == "N"
    assert icc is not None and icc == im.icc_profile

    im = read_image(DATA / "alpha.heic")
    y, x = np.mgrid[0:24, 0:32]
    assert im.alpha is not None and np.abs(im.alpha.astype(int) - (40 + x * 6)).max() <= 3
    assert output_ext("auto", DATA / "alpha.heic", has_alpha=True) == "png"

    from PIL import features

    if features.check("avif"):  # Pillow's wheels have it
        src = Image.fromarray(upright.astype(np.uint8)).transpose(Image.ROTATE_90)
        exif = src.getexif()
        exif[0x010F], exif[0x0112] = "Pixel", 6
        src.save(tmp_path / "p.avif", quality=90, exif=exif.tobytes())
        im = read_image(tmp_path / "p.avif")
        assert (im.format, im.orientation, im.rgb.shape) == ("AVIF", 6, upright.shape)
        assert np.abs(im.rgb - upright).mean() < 5 and im.exif is not None

    data = heic.read_bytes()
    with pytest.raises(ImageReadError, match="corrupt|damaged|truncated") as err:
        decode_image(data[: len(data) // 2], name="cut.heic")
    assert "\n" not in str(err.value) and str(err.value).startswith("cut.heic: ")


@pytest.mark.parametrize("ext", ["jpg", "png", "tif"])
def test_print_resolution_is_kept_and_scaled_with_the_upscale(tmp_path, ext):
    """A 600-dpi scan upscaled ×2 comes back at 1200 dpi (it prints at its old size); EXIF's own resolution tags
    are not carried stale; a file without a stated resolution gets none."""
    a = _rgb()
    exif = Image.Exif()
    exif[0x011A], exif[0x011B], exif[0x0128], exif[0x010F] = 600.0, 600.0, 2, "Epson"
    kw = {"exif": exif.tobytes()} if ext != "tif" else {}
    Image.fromarray(a).save(tmp_path / f"scan.{ext}", dpi=(600, 300), **kw)
    im = read_image(tmp_path / f"scan.{ext}")
    assert im.dpi == pytest.approx((600, 300), abs=0.1) and im.info()["dpi"] == pytest.approx([600, 300], abs=0.1)
    write_like_input(np.repeat(np.repeat(im.rgb, 2, 0), 2, 1), im, tmp_path / f"out.{ext}")
    with Image.open(tmp_path / f"out.{ext}") as back:
        assert back.info["dpi"] == pytest.approx((1200, 600), abs=0.1)
        assert ext == "tif" or (0x011A not in back.getexif() and back.getexif().get(0x010F) == "Epson")
    Image.fromarray(a).save(tmp_path / f"plain.{ext}")
    im = read_image(tmp_path / f"plain.{ext}")
    assert im.dpi is None  # none stated (a TIFF's 1:1 placeholder does not count)
    write_like_input(im.rgb, im, tmp_path / f"plain_out.{ext}")


def test_palette_and_transparency(tmp_path):
    a = _rgb()
    Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    im = read_image(tmp_path / "p.png")
    assert im.mode == "P" and im.alpha is None and im.rgb.shape == a.shape
    p = Image.fromarray(a).convert("P", palette=Image.ADAPTIVE, colors=16)
    p.info["transparency"] = 0
    p.save(tmp_path / "pt.png", transparency=0)
    im = read_image(tmp_path / "pt.png")
    assert im.alpha is not None
    p.save(tmp_path / "p.gif")
    assert read_image(tmp_path / "p.gif").rgb.shape == a.shape


def test_16bit_tiff(tmp_path):
    g16 = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "t.tif")
    im = read_image(tmp_path / "t.tif")
    assert im.was_gray and im.bit_depth == 16
    assert np.abs(im.rgb[:, :, 0].astype(int) - np.round(g16 / 257.0)).max() <= 1


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format="JPEG", quality=90)
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    buf = io.BytesIO()
    Image.fromarray(_rgb(50, 50)).save(buf, format="PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[:-40])
    cases = {
        "empty.jpg": "empty",
        "text.png": "not an image",
        "trunc.jpg": "corrupt",
        "trunc.png": "corrupt",
        "missing.png": "no such file",
    }
    for name, words in cases.items():
        with pytest.raises(ImageReadError) as ei:
            read_image(tmp_path / name)
        msg = str(ei.value)
        assert words in msg and name in msg and "\n" not in msg
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(_png_bytes(), name="big.png", max_pixels=100)


def _png_bytes():
    buf = io.BytesIO()
    Image.fromarray(_rgb(20, 20)).save(buf, format="PNG")
    return buf.getvalue()


def test_output_ext_and_cap():
    assert output_ext("auto", "x.JPEG") == "jpg" and output_ext("auto", "x.webp") == "webp"
    assert output_ext("auto", "x.gif") == "png" and output_ext("png", "x.jpg") == "png" and output_ext("jpeg", None) == "jpg"
    assert capped_upscale(1000, 1000, 4) == 4
    s = capped_upscale(10_000, 8_000, 4, max_pixels=160_000_000)
    assert 1 <= s < 4 and 10_000 * 8_000 * s * s <= 160_000_000 * 1.0001


def test_save_image_formats(tmp_path):
    a = _rgb()
    for ext in ("png", "jpg", "webp"):
        p = save_image(a, tmp_path / f"s.{ext}")
        assert Image.open(p).format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[ext]
    rgba = np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])
    save_image(rgba, tmp_path / "s2.jpg")  # alpha cannot go into JPEG: dropped, no crash
    assert Image.open(tmp_path / "s2.jpg").mode == "RGB"


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but holds almost no data: enough for a header-size check."""
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


TOO_LARGE = r"too large \((\d+x\d+ = )?[\d.]+ MP; the limit is [\d.]+ MP\)"


def test_too_large_messages_share_one_wording(tmp_path):
    """Issue 11 B9: the read limit (all decoder paths), the header check, the upscale cap's note and degrade's
    --size limit say "too large (W x H = N MP; the limit is L MP)"; no Pillow bomb warning leaks."""
    import re
    import warnings

    big = tmp_path / "big.png"  # 90 MP: over MAX_PIXELS, under Pillow's own error threshold (warning only)
    big.write_bytes(_png_header_only(10_000, 9_000))
    huge = tmp_path / "huge.png"  # 400 MP: Pillow raises DecompressionBombError itself
    huge.write_bytes(_png_header_only(20_000, 20_000))
    msgs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (big, huge):
            for fn in (read_image, image_size):
                with pytest.raises(ImageReadError) as ei:
                    fn(path)
                msgs.append(str(ei.value))
    msgs.append(str(pytest.raises(ImageReadError, decode_image, _png_bytes(), "small.png", 100).value))
    assert msgs[0] == f"{big}: image too large (10000x9000 = 90 MP; the limit is 80 MP)"
    assert msgs[2] == f"{huge}: image too large (400 MP; the limit is 80 MP)"
    assert msgs[-1] == "small.png: image too large (20x20 = 0.0004 MP; the limit is 0.0001 MP)"
    note = upscale_note(10_000, 8_000, 4, capped_upscale(10_000, 8_000, 4))
    assert note.startswith("upscale reduced from 4 to 1.414: output too large (40000x32000 = 1280 MP")
    msgs.append(note)
    msgs.append(too_large(20_000, 20_000, 2048 * 2048, what="output"))
    for m in msgs:
        assert re.search(TOO_LARGE, m), m
    save_image(_rgb(), tmp_path / "ok.png")
    assert image_size(tmp_path / "ok.png") == (64, 48)  # under the limit: the size, from the header


def test_a_raised_limit_admits_what_pillows_own_check_refuses(tmp_path, monkeypatch):
    """``restore --max-megapixels 500``: Pillow refuses twice its own limit (179 MP) by itself, so a larger limit of
    ours was still "too large (400 MP ...)". Pillow's limit is raised to ours (never lowered: serve lowers it)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # undone after the test
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(20_000, 20_000))
    assert image_size(huge, max_pixels=500_000_000) == (20_000, 20_000)
    assert Image.MAX_IMAGE_PIXELS == 500_000_000
    with pytest.raises(ImageReadError, match=r"20000x20000 = 400 MP; the limit is 80 MP"):  # now with its size
        image_size(huge)
    assert Image.MAX_IMAGE_PIXELS == 500_000_000


def test_tif_comes_back_as_tif(tmp_path):
    """Issue 11 B9: --ext auto keeps the input's spelling of TIFF (was .tif → .tiff)."""
    assert output_ext("auto", "scan.tif") == "tif" and output_ext("auto", "SCAN.TIF") == "tif"
    assert output_ext("auto", "scan.tiff") == "tiff"
    src = tmp_path / "in.tif"
    Image.fromarray(_rgb()).save(src)
    img = read_image(src)
    out = tmp_path / f"out.{output_ext('auto', src)}"
    write_like_input(img.rgb, img, out)
    assert out.name == "out.tif" and Image.open(out).format == "TIFF"


def test_image_size_opens_the_file_once(tmp_path, monkeypatch):
    """image_size reads the header with one Image.open (the size check and the size come from the same open),
    for a file under the limit and one over it (same message as before)."""
    import dynface.imageio as iio

    save_image(_rgb(), tmp_path / "ok.png")
    opened = []
    real_open = Image.open

    def counting_open(fp, *a, **kw):
        opened.append(fp)
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(iio.Image, "open", counting_open)
    assert image_size(tmp_path / "ok.png") == (64, 48) and len(opened) == 1
    with pytest.raises(ImageReadError, match=r"ok\.png: image too large \(64x48 = 0\.00307 MP; the limit is 0\.003 MP\)"):
        image_size(tmp_path / "ok.png", max_pixels=3000)
    assert len(opened) == 2


# ------------------------------------------------------------------ formats only OpenCV reads (no Pillow plugin)
def _pam(w: int, h: int, depth: int = 3, body: bytes = b"", tupltype: str = "RGB") -> bytes:
    tt = f"TUPLTYPE {tupltype}\n" if tupltype else ""
    return f"P7\nWIDTH {w}\nHEIGHT {h}\nDEPTH {depth}\nMAXVAL 255\n{tt}ENDHDR\n".encode() + body


def _hdr(w: int, h: int, body: bytes = b"") -> bytes:
    return f"#?RADIANCE\n# a comment\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode() + body


def _pfm(w: int, h: int, body: bytes = b"") -> bytes:
    return f"PF\n{w} {h}\n-1\n".encode() + body


def _patch_tiff(data: bytes, tags: dict[int, int], count: dict[int, int] | None = None) -> bytes:
    """``data`` (a little-endian TIFF, classic or BigTIFF) with the inline values of ``tags`` in its first directory
    set (SHORT / LONG entries), and the counts of ``count`` set."""
    import struct

    out = bytearray(data)
    big = out[2] == 43
    (ifd,) = struct.unpack_from("<Q" if big else "<I", out, 8 if big else 4)
    (n,) = struct.unpack_from("<Q" if big else "<H", out, ifd)
    size, first, cfmt = (20, ifd + 8, "<HHQ") if big else (12, ifd + 2, "<HHI")
    for i in range(n):
        e = first + size * i
        tag, typ, _ = struct.unpack_from(cfmt, out, e)
        if tag in tags:
            struct.pack_into("<H" if typ == 3 else "<I", out, e + size - (8 if big else 4), tags[tag])
        if count and tag in count:
            struct.pack_into(cfmt[-1], out, e + 4, count[tag])
    return bytes(out)


def _retag_tiff(data: bytes, w: int, h: int) -> bytes:
    """``data`` (a little-endian TIFF) with ImageWidth / ImageLength in its first directory set to w, h."""
    return _patch_tiff(data, {256: w, 257: h})


def _float_tiff(a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".tiff", np.ascontiguousarray(a[:, :, ::-1]))
    assert ok
    return buf.tobytes()


_TIFF_LAYOUTS = {"tiled": {"tile": (16, 16)}, "big": {"bigtiff": True}, "bigbe": {"bigtiff": True, "byteorder": ">"}}


def _tifffile_bytes(a: np.ndarray, **kw) -> bytes:
    """``a`` (float RGB) as a TIFF written by tifffile (Pillow has no mode for it: the OpenCV fallback reads it)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, a, photometric="rgb", **kw)
    return buf.getvalue()


def _opencv_only_bombs() -> dict[str, bytes]:
    """Files whose header claims 30000 x 30000 pixels (900 MP) but that hold a few bytes of pixels."""
    small = _float_tiff(np.zeros((4, 5, 3), np.float32))
    return {
        "bomb.pam": _pam(30_000, 30_000, body=bytes(64)),
        "bomb.hdr": _hdr(30_000, 30_000, body=bytes([2, 2, 117, 48]) + bytes(60)),
        "bomb.pfm": _pfm(30_000, 30_000, body=bytes(64)),
        "bomb.tif": _retag_tiff(small, 30_000, 30_000),
    }


@pytest.fixture
def no_imdecode(monkeypatch):
    """cv2.imdecode fails the test when called (and records the call): nothing may be decoded."""
    calls = []

    def fail(*a, **kw):
        calls.append(a)
        pytest.fail("cv2.imdecode was called for a file that should have been refused from its header")

    monkeypatch.setattr(cv2, "imdecode", fail)
    return calls


def test_opencv_only_formats_are_size_checked_from_the_header_before_decoding(tmp_path, no_imdecode):
    """PAM, colour PFM, Radiance HDR and float TIFF are not Pillow's (the OpenCV fallback reads them). A file whose
    header claims 900 MP is refused with the too_large wording by read_image / decode_image / image_size, and
    cv2.imdecode is never called (before: decoded first, size checked after, e.g. 0.6 MB of RLE HDR -> 108 MB);
    the same under a web-app-like cap (a 49 MP header, max_pixels = 40 MP)."""
    from PIL import UnidentifiedImageError

    for name, data in _opencv_only_bombs().items():
        with pytest.raises(UnidentifiedImageError):
            Image.open(io.BytesIO(data))  # really the fallback's: Pillow cannot open it
        p = tmp_path / name
        p.write_bytes(data)
        for fn, arg in ((read_image, p), (image_size, p), (decode_image, data)):
            with pytest.raises(ImageReadError) as ei:
                fn(arg) if fn is not decode_image else fn(arg, name=str(p))
            assert str(ei.value) == f"{p}: image too large (30000x30000 = 900 MP; the limit is 80 MP)"
    for name, data in {"web.pam": _pam(7000, 7000, body=bytes(64)), "web.hdr": _hdr(7000, 7000, body=bytes(64))}.items():
        with pytest.raises(ImageReadError, match=r"web\.\w+: image too large \(7000x7000 = 49 MP; the limit is 40 MP\)$"):
            decode_image(data, name=name, max_pixels=40_000_000)
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError, match=r"image too large \(7000x7000 = 49 MP; the limit is 40 MP\)$"):
            image_size(tmp_path / name, max_pixels=40_000_000)
    # more channels than OpenCV's pixel cap accounts for (DEPTH 200), a broken header: refused, one line, no decoding
    for data, words in ((_pam(10, 10, depth=200, tupltype=""), "unsupported PAM DEPTH"), (b"P7\nWIDTH 10\nENDHDR\n", "lacks")):
        msg = str(pytest.raises(ImageReadError, decode_image, data, "odd.pam").value)
        assert msg.startswith("odd.pam: not an image, or a damaged one") and words in msg and "\n" not in msg
    assert not no_imdecode


def test_opencv_only_formats_under_the_cap_still_decode(tmp_path):
    """The same formats under the cap: the right size and pixels (RGB order), and image_size reads their size."""
    a = _rgb(21, 34)
    ok, pam = cv2.imencode(".pam", np.ascontiguousarray(a[:, :, ::-1]))
    assert ok
    f = np.random.default_rng(1).random((21, 34, 3), dtype=np.float32)
    ok, pfm = cv2.imencode(".pfm", np.ascontiguousarray(f[:, :, ::-1]))
    ok2, hdr = cv2.imencode(".hdr", np.ascontiguousarray(f[:, :, ::-1]))
    assert ok and ok2
    files = {"x.pam": pam.tobytes(), "x.pfm": pfm.tobytes(), "x.hdr": hdr.tobytes(), "x.tif": _float_tiff(f)}
    files |= {f"x_{k}.tif": _tifffile_bytes(f, **kw) for k, kw in _TIFF_LAYOUTS.items()}  # tiled, BigTIFF LE / BE
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert image_size(tmp_path / name) == (34, 21), name
        with pytest.raises(ImageReadError, match=r"image too large \(34x21 = 0\.000714 MP; the limit is 0\.0007 MP\)$"):
            image_size(tmp_path / name, max_pixels=700)
        im = read_image(tmp_path / name)
        assert im.size == (34, 21) and im.rgb.dtype == np.uint8 and im.format == "OPENCV" and not im.was_gray, name
    assert np.array_equal(read_image(tmp_path / "x.pam").rgb, a)
    exact = np.round(f.astype(np.float64) * 255).astype(np.uint8)  # float [0, 1] -> 8 bits
    assert np.array_equal(read_image(tmp_path / "x.pfm").rgb, exact)
    for name in ["x.tif"] + [f"x_{k}.tif" for k in _TIFF_LAYOUTS]:
        assert np.array_equal(read_image(tmp_path / name).rgb, exact), name
    hdr_rgb = read_image(tmp_path / "x.hdr").rgb  # RGBE keeps 8 bits of mantissa per pixel
    assert np.abs(hdr_rgb.astype(int) - exact).max() <= 2 and np.abs(hdr_rgb.astype(int) - exact).mean() < 0.6
    gray = _pam(3, 2, depth=1, tupltype="GRAYSCALE", body=bytes(range(6)))
    g = decode_image(gray, "g.pam")
    assert g.was_gray and np.array_equal(g.rgb[:, :, 1], np.arange(6, dtype=np.uint8).reshape(2, 3))


@pytest.mark.filterwarnings("error::UserWarning")  # Pillow's warnings on damaged headers stay off stderr
def test_opencv_only_tiff_headers_are_read_by_tifffile_without_pixels(tmp_path, no_imdecode, monkeypatch, caplog):
    """The fallback's TIFF / BigTIFF header check is tifffile's parse of the first directory, and only that: an
    over-cap tile (OpenCV allocates a whole tile) and SamplesPerPixel outside 1-4 are refused, and broken or
    truncated directories give the one-line "damaged" message through read_image / decode_image / image_size,
    with no tifffile log output, no tifffile pixel read and no cv2.imdecode."""
    import logging
    import struct

    import tifffile

    def no_pixels(*a, **kw):
        pytest.fail("tifffile read pixel data")

    for owner, attr in (
        (tifffile.TiffPage, "asarray"),
        (tifffile.TiffPage, "segments"),
        (tifffile.FileHandle, "read_segments"),
    ):
        monkeypatch.setattr(owner, attr, no_pixels)
    caplog.set_level(logging.DEBUG, logger="tifffile")
    f = np.zeros((32, 48, 3), np.float32)
    small = _float_tiff(np.zeros((4, 5, 3), np.float32))
    (ifd,) = struct.unpack_from("<I", small, 4)
    damaged = "not an image, or a damaged one (unsupported or corrupt header: "
    cases = {
        "tile.tif": (
            _patch_tiff(_tifffile_bytes(f, tile=(16, 16)), {322: 30_000, 323: 30_000}),
            "TIFF tile too large (30000x30000 = 900 MP; the limit is 80 MP)",
        ),
        "bigtile.tif": (
            _patch_tiff(_tifffile_bytes(f, tile=(16, 16), bigtiff=True), {322: 30_000, 323: 30_000}),
            "TIFF tile too large (30000x30000 = 900 MP; the limit is 80 MP)",
        ),
        "big.tif": (
            _patch_tiff(_tifffile_bytes(f, bigtiff=True), {256: 30_000, 257: 30_000}),
            "image too large (30000x30000 = 900 MP; the limit is 80 MP)",
        ),
        "spp5.tif": (_patch_tiff(small, {277: 5}), damaged + "unsupported TIFF SamplesPerPixel)"),
        "spp0.tif": (_patch_tiff(small, {277: 0}), damaged),  # tifffile itself fails on it (IndexError)
        "count2.tif": (_patch_tiff(small, {}, count={256: 2}), damaged),
        "nowidth.tif": (_patch_tiff(small, {}, count={256: 0}), damaged),
        "noifd.tif": (small[:4] + bytes(4), damaged + "TIFF file has no image directory)"),
        "cut.tif": (small[: ifd + 20], damaged + "TIFF header unreadable, TiffFileError: corrupted IFD structure)"),
        "header.tif": (small[:6], damaged + "TIFF header unreadable, "),
        "tags.tif": (small[:ifd] + struct.pack("<H", 5000) + small[ifd + 2 :], damaged + "TIFF header unreadable, "),
    }
    for name, (data, expected) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        for fn, arg in ((read_image, p), (image_size, p), (decode_image, data)):
            with pytest.raises(ImageReadError) as ei:
                fn(arg) if fn is not decode_image else fn(arg, name=str(p))
            msg = str(ei.value)
            assert msg.startswith(f"{p}: {expected}") and "\n" not in msg, (name, fn.__name__, msg)
            if not expected.endswith(" "):
                assert msg.endswith(")"), msg
    assert not no_imdecode
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]


def test_opencv_pixel_cap_is_set_before_cv2_loads():
    """The backstop: OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 is loaded (setting it later does
    nothing); `import dynface` sets it to MAX_PIXELS first, unless the user set it. Checked in fresh interpreters:
    a PAM header of 10000 x 9000 (90 MP) trips OpenCV's own cap after `import dynface`, not with the user's value."""
    import os
    import subprocess
    import sys

    code = (
        "import os, dynface, cv2, numpy as np\n"
        "from dynface.imageio import MAX_PIXELS\n"
        "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'] == str(MAX_PIXELS))\n"
        "data = b'P7\\nWIDTH 10000\\nHEIGHT 9000\\nDEPTH 3\\nMAXVAL 255\\nTUPLTYPE RGB\\nENDHDR\\n' + bytes(16)\n"
        "try:\n"
        "    cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)\n"
        "    print('uncapped')\n"
        "except cv2.error as e:\n"
        "    print('capped' if 'CV_IO_MAX_IMAGE_PIXELS' in str(e) else 'other')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["OPENCV_LOG_LEVEL"] = "SILENT"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "capped"], out.stderr[-2000:]
    env["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(2**31)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "uncapped"], out.stderr[-2000:]


def test_opencv_refusals_keep_one_line_messages(monkeypatch):
    """OpenCV's own cap (below a caller's larger max_pixels) in the fallback is reported in the too_large wording;
    in the 16-bit PNG path OpenCV refusing makes Pillow decode the file instead."""

    def capped(*a, **kw):
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp:79: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    g16 = (np.arange(6 * 8).reshape(6, 8) * 1000).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, format="PNG")
    monkeypatch.setattr(cv2, "imdecode", capped)
    monkeypatch.setenv("OPENCV_IO_MAX_IMAGE_PIXELS", "40")
    msg = str(pytest.raises(ImageReadError, decode_image, _pam(9, 7, body=bytes(189)), "c.pam").value)
    assert msg == "c.pam: image too large (9x7 = 6.3e-05 MP; the limit is 4e-05 MP) (OpenCV's limit, OPENCV_IO_MAX_IMAGE_PIXELS)"
    im = decode_image(buf.getvalue(), "g16.png")
    assert im.size == (8, 6) and np.abs(im.rgb[:, :, 0].astype(int) - np.round(g16 / 257.0)).max() <= 1


def test_a_jpeg_without_a_stated_resolution_gets_none(tmp_path):
    """Pillow gives a JPEG with EXIF but no resolution tags a placeholder 72 dpi; upscaled x2 it was written as a
    144-dpi photo the input never claimed. A stated resolution (JFIF in inches, EXIF) is still kept."""
    a = _rgb()
    exif = Image.fromarray(a).getexif()
    exif[0x010F] = "Kodak"
    Image.fromarray(a).save(tmp_path / "none.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "none.jpg").dpi is None
    Image.fromarray(a).save(tmp_path / "300.jpg", exif=exif.tobytes(), dpi=(300, 300))
    assert read_image(tmp_path / "300.jpg").dpi == (300.0, 300.0)


def test_tiff_outputs_are_compressed_losslessly(tmp_path):
    a = np.repeat(np.repeat(_rgb(), 4, 0), 4, 1)
    save_image(a, tmp_path / "o.tif")
    with Image.open(tmp_path / "o.tif") as im:
        assert im.info.get("compression") == "tiff_lzw" and np.array_equal(np.asarray(im), a)


def test_iptc_datasets_round_trip_and_what_is_not_iptc_is_refused():
    from dynface.imageio import iim_bytes, iim_datasets, iptc_without_location

    long_caption = "x" * 40_000  # over 32 KB: an extended dataset (its length in 4 more bytes)
    ds = [(1, 90, b"\x1b%G"), (2, 120, long_caption.encode()), (2, 25, b""), (2, 90, b"Lyon"), (2, 101, b"France")]
    data = iim_bytes(ds)
    assert data[:5] == b"\x1c\x01\x5a\x00\x03" and iim_datasets(data) == ds
    assert iim_datasets(data + b"\x00\x00\x00") == ds  # a TIFF tag's padding to whole words
    for bad in (b"\x1d" + data[1:], data[:-1], data[:3], b"\x1c\x02\x78\x80\x09abc"):
        with pytest.raises(ValueError):
            iim_datasets(bad)
    assert iim_datasets(iptc_without_location(data)) == ds[:3]
    assert iptc_without_location(iim_bytes([(1, 90, b"\x1b%G"), (2, 90, b"Lyon")])) is None  # nothing but places


def test_a_jpegs_iptc_segment_goes_after_its_app_segments_and_changes_no_pixel(tmp_path):
    from PIL import IptcImagePlugin

    from dynface.imageio import _jpeg_with_iptc, iim_bytes, read_image, save_image

    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010E] = "a caption in EXIF"
    save_image(img, tmp_path / "a.jpg", exif=exif.tobytes(), icc_profile=None, xmp=b"<x/>")
    plain = (tmp_path / "a.jpg").read_bytes()
    iptc = iim_bytes([(2, 120, b"caption"), (2, 5, b"title")])
    save_image(img, tmp_path / "b.jpg", exif=exif.tobytes(), xmp=b"<x/>", iptc=iptc)
    withit = (tmp_path / "b.jpg").read_bytes()
    assert withit == _jpeg_with_iptc(plain, iptc)
    i, markers = 2, []
    while withit[i] == 0xFF and withit[i + 1] != 0xDA:
        markers.append(withit[i + 1])
        i += 2 + int.from_bytes(withit[i + 2:i + 4], "big")
    assert markers.index(0xED) == max(k for k, m in enumerate(markers) if 0xE0 <= m <= 0xEF)  # the last APPn
    with Image.open(tmp_path / "b.jpg") as im:
        assert IptcImagePlugin.getiptcinfo(im) == {(2, 120): b"caption", (2, 5): b"title"}
        assert im.getexif()[0x010E] == "a caption in EXIF" and im.info["xmp"] == b"<x/>"
    assert np.array_equal(read_image(tmp_path / "b.jpg").rgb, read_image(tmp_path / "a.jpg").rgb)
    assert read_image(tmp_path / "b.jpg").iptc == iptc


def test_a_16_bit_tiff_keeps_its_iptc(tmp_path):
    from PIL import IptcImagePlugin

    from dynface.imageio import iim_bytes, read_image, write_16bit

    iptc = iim_bytes([(2, 116, "© Archiv".encode())])
    write_16bit(np.full((8, 8, 3), 40_000, np.uint16), tmp_path / "d.tif", iptc=iptc)
    with Image.open(tmp_path / "d.tif") as im:
        assert IptcImagePlugin.getiptcinfo(im) == {(2, 116): "© Archiv".encode()}
    assert read_image(tmp_path / "d.tif").iptc == iptc


def test_an_iptc_block_larger_than_a_jpeg_segment_is_said_left_out_in_the_record_too():
    from dynface.imageio import LoadedImage, iim_bytes, iptc_fits

    big = iim_bytes([(2, 120, b"x" * 70_000)])
    assert iptc_fits(big, "tif") and not iptc_fits(big, "jpg") and not iptc_fits(iim_bytes([(2, 5, b"t")]), ".png")
    img = LoadedImage(rgb=np.zeros((4, 4, 3), np.uint8), iptc=big)
    assert img.info(out_ext="jpg")["iptc_kept"] is False and img.info(out_ext="tif")["iptc_kept"] is True
