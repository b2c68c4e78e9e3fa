"""dynface.imageio: every kind of input people have round-trips (generated images only)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dynface.imageio import (
    ImageReadError,
    capped_upscale,
    decode_image,
    image_size,
    output_ext,
    read_image,
    save_image,
    to_output_image,
    too_large,
    upscale_note,
    write_like_input,
)


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
    assert Image.open(tmp_path / "g16_out.png").mode == "L"

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
