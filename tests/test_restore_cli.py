"""``dynface restore``: whole photos, aligned crops, bad files, usage errors, a kill mid-batch and --skip-existing.

The restorer is a fake defined here, selected with the CLI's documented testing hook
``DYNFACE_RESTORER_FACTORY=test_restore_cli:make_fake_restorer``. ``FAKE_SLEEP`` (seconds per call) and
``FAKE_LOG`` (a file that gets one line per restored face) control it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _helpers import kill_after_records, start_restore_cli
from PIL import Image
from skimage import data

from dynface import jobs
from dynface.cli import main

HERE = Path(__file__).resolve().parent
FACTORY = "test_restore_cli:make_fake_restorer"


# ------------------------------------------------------------------------------------------ the fake
class FakeRestorer:
    """Stands in for DynFaceRestorer: slightly brightens each face; logs every face it restores."""

    def __init__(self, size=64, template_name="utkface64", sleep=0.0, log=None):
        self.size, self.template_name, self.name = size, template_name, "fake"
        self.sleep, self.log = sleep, log

    def restore(self, faces, seed=0, fidelity=None, return_maps=False):
        if self.sleep:
            time.sleep(self.sleep)
        imgs = []
        for f in faces:
            im = Image.fromarray(np.asarray(f, dtype=np.uint8)).convert("RGB")
            if im.size != (self.size, self.size):
                im = im.resize((self.size, self.size), Image.LANCZOS)
            imgs.append(np.clip(np.asarray(im).astype(int) + 10, 0, 255).astype(np.uint8))
        if self.log:
            with open(self.log, "a") as fh:
                for i, im in enumerate(imgs):
                    fh.write(f"{os.getpid()} seed={seed + i} mean={im.mean():.3f}\n")
        recs = [{"fake": True, "seed": seed + i, "fidelity": fidelity} for i in range(len(imgs))]
        maps = {"dgsa": [np.zeros_like(im) for im in imgs], "guide0": imgs} if return_maps else {}
        return SimpleNamespace(images=imgs, records=recs, maps=maps)

    def compiled(self):
        self.name = "fake-compiled"
        return self


def make_fake_restorer(name_or_path="embedded-64", device="cpu", mode="full", steps=None, precision="fp32"):
    if name_or_path == "missing-model":
        raise FileNotFoundError("no such model: missing-model")
    return FakeRestorer(sleep=float(os.environ.get("FAKE_SLEEP", "0")), log=os.environ.get("FAKE_LOG") or None)


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def _factory(monkeypatch):
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_LOG", raising=False)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


@pytest.fixture(scope="module")
def astro():
    return np.ascontiguousarray(data.astronaut())


def _folder(tmp_path, astro) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "astro.jpg", quality=92)
    Image.fromarray(np.full((120, 160, 3), 140, np.uint8)).save(d / "wall.png")  # no face
    jpg = (d / "astro.jpg").read_bytes()
    (d / "broken.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated
    (d / "fake.png").write_text("a text file with an image's name\n")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image, and not picked up from a folder\n")
    return d


def _restore(*argv) -> int:
    return main(["restore", "-q", *map(str, argv)])


# ------------------------------------------------------------------------------------------ tests
def test_folder_with_good_faceless_and_corrupt_files(tmp_path, astro, capsys):
    d = _folder(tmp_path, astro)
    out = tmp_path / "res"
    rc = _restore("-i", d, "-o", out, "-s", "2", "--save-maps", "--suffix", "v1")
    cap = capsys.readouterr()
    assert rc == 1
    summary = cap.out
    assert "5 input(s): 1 restored, 0 skipped (complete), 4 failed" in summary
    assert "wall.png: no face found" in summary
    assert "wall.png: --detector cnn (much slower) looks for blurred and dark faces" in summary  # what to try
    assert "broken.jpg: corrupt or truncated" in summary and "empty.jpg: empty file" in summary
    assert "fake.png: not an image" in summary
    assert "ignored 1 file(s)" in summary and "notes.txt" in summary
    assert "Traceback" not in cap.out + cap.err
    assert "FAILED" not in cap.err  # -q: each failure once, in the summary (it was printed as it happened too)
    assert (out / "cropped_faces" / "astro_00.png").is_file()
    assert Image.open(out / "cropped_faces" / "astro_00.png").size == (64, 64)
    assert (out / "restored_faces" / "astro_00_v1.png").is_file()
    assert Image.open(out / "cmp" / "astro_00.png").size == (128, 64)
    photo = Image.open(out / "restored_imgs" / "astro_v1.jpg")  # --ext auto keeps JPEG
    assert photo.format == "JPEG" and photo.size == (1024, 1024)
    assert (out / "maps" / "astro_00_dgsa.png").is_file() and (out / "maps" / "astro_00_guide0.png").is_file()
    rec = json.loads((out / "records" / "astro.json").read_text())
    assert rec["status"] == "ok" and rec["num_faces"] == 1 and rec["settings"]["seed"] == 0
    # provenance: the input's bytes, the software; a restorer built in memory (the fake) names no weight files
    import hashlib

    import dynface

    assert rec["image"]["sha256"] == hashlib.sha256((d / "astro.jpg").read_bytes()).hexdigest()
    assert rec["settings"]["software"]["dynfacerestore"] == dynface.__version__ and rec["settings"]["weights"] == {}
    assert rec["settings"]["alignment"] == "auto"
    face = rec["faces"][0]
    assert np.allclose(face["bbox"], (171, 79, 265, 173), atol=12) and len(face["landmarks5"]) == 5
    assert face["restorer"]["fake"] is True and "timing" in face and "restored_face" in face["files"]
    assert not list(out.glob("records/wall*")) and not list(out.glob("restored_imgs/wall*"))
    assert not [p for p in out.rglob(".*")], "temporary files left"
    assert sorted(p.name for p in d.iterdir()) == ["astro.jpg", "broken.jpg", "empty.jpg", "fake.png", "notes.txt", "wall.png"]


def test_keep_faceless(tmp_path, astro, capsys):
    """--keep-faceless: the photo without a face is written upscaled and counted in the head line (no note line per
    photo: an archive may hold thousands); the unreadable files still fail."""
    d = _folder(tmp_path, astro)
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "2", "--keep-faceless") == 1
    cap = capsys.readouterr()
    assert "5 input(s): 2 restored (1 without a face, written as they are), 0 skipped (complete), 3 failed" in cap.out
    assert "wall.png" not in cap.out and "Traceback" not in cap.out + cap.err
    with Image.open(out / "restored_imgs" / "wall.png") as im:
        assert im.size == (320, 240)
    rec = json.loads((out / "records" / "wall.json").read_text())
    assert rec["num_faces"] == 0 and rec["notes"] == [jobs.FACELESS_NOTE]


def test_summary_groups_a_note_many_files_share(tmp_path, astro, capsys):
    """Five gray photos share their note: one summary line with the count. The helper itself: notes of at most 3
    files keep a line per file; a note of 4 files is one line where its first file is, the others' own notes stay."""
    d = tmp_path / "in"
    d.mkdir()
    for k in range(5):
        Image.fromarray(astro).convert("L").save(d / f"g{k}.png")
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "1") == 0
    text = capsys.readouterr().out
    note = "grayscale input: restored in RGB, saved as grayscale"
    assert text.count(note) == 1 and f"note    5 files: {note} ({d / 'g0.png'}, {d / 'g1.png'}, ...)" in text
    from dynface.commands.restore import _note_lines
    from dynface.jobs import FileResult

    few = [FileResult(f"p{k}", f"p{k}", "done", notes=["a", f"own {k}"]) for k in range(3)]
    assert _note_lines(few) == [f"  note    p{k}: {n}" for k in range(3) for n in ("a", f"own {k}")]
    many = few + [FileResult("p3", "p3", "done", notes=["a"])]
    assert _note_lines(many) == ["  note    4 files: a (p0, p1, ...)", *[f"  note    p{k}: own {k}" for k in range(3)]]


def test_all_good_exit_0_gray_rgba_and_seed(tmp_path, astro, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).convert("L").save(d / "gray.png")
    Image.fromarray(np.dstack([astro, np.full(astro.shape[:2], 200, np.uint8)])).save(d / "alpha.png")
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "1", "--seed", "7", "--only-center-face", "--draw-box") == 0
    g = Image.open(out / "restored_imgs" / "gray.png")
    assert g.mode == "L" and g.size == (512, 512)
    for sub in ("cropped_faces", "restored_faces", "cmp"):  # the faces of a gray photo are gray too
        assert Image.open(out / sub / "gray_00.png").mode == "L", sub
    a = Image.open(out / "restored_imgs" / "alpha.png")
    assert a.mode == "RGBA" and np.asarray(a.getchannel("A")).min() == 200
    rec = json.loads((out / "records" / "gray.json").read_text())
    assert rec["image"]["was_gray"] and rec["faces"][0]["restorer"]["seed"] == 7
    assert "grayscale" in capsys.readouterr().out
    first = (out / "restored_faces" / "gray_00.png").read_bytes()
    assert _restore("-i", d / "gray.png", "-o", tmp_path / "res2", "-s", "1", "--seed", "7", "--only-center-face", "--draw-box") == 0
    assert (tmp_path / "res2" / "restored_faces" / "gray_00.png").read_bytes() == first
    crops = tmp_path / "crops"  # an aligned gray crop: its face and its side by side are gray too
    crops.mkdir()
    Image.fromarray(astro[60:200, 150:290]).convert("L").save(crops / "g.png")
    assert _restore("--aligned", "-i", crops, "-o", tmp_path / "res3") == 0
    for sub in ("restored_faces", "cmp"):
        assert Image.open(tmp_path / "res3" / sub / "g.png").mode == "L", sub


def test_iphone_heic_photo_comes_back_as_jpeg_with_its_metadata(tmp_path, capsys):
    """A HEIC photo in a folder is picked up, restored upright and written as JPEG with its EXIF and ICC profile."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "IMG_0001.HEIC").write_bytes((HERE / "data" / "phone_o6.heic").read_bytes())
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "1") == 0
    assert sorted(p.name for p in (out / "restored_imgs").iterdir()) == ["IMG_0001.jpg"]
    with Image.open(out / "restored_imgs" / "IMG_0001.jpg") as im:
        assert im.size == (288, 336) and im.getexif().get(0x010F) == "Apple" and im.info.get("icc_profile")
    rec = json.loads((out / "records" / "IMG_0001.json").read_text())
    assert rec["image"]["exif_orientation"] == 6 and rec["image"]["exif_kept"] and len(rec["faces"]) == 1


def _profile(space: bytes) -> bytes:
    """An ICC profile of colour space ``space`` (Pillow's sRGB one; for b"GRAY" its header says gray, which is all
    that the tool reads of it)."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20] = space
    return bytes(icc)


def test_every_output_keeps_the_inputs_colour_profile_where_the_file_can_hold_it(tmp_path, astro, capsys):
    """An Adobe RGB photo's restored_faces/, cropped_faces/ and cmp/ were saved without its profile (shown as sRGB:
    red -10 levels), an aligned crop's outputs too (and without its EXIF); a gray photo with a gray profile saved
    as WebP (which stores RGB) carried the gray profile, which colour-managed viewers refused."""
    rgb_icc, gray_icc = _profile(b"RGB "), _profile(b"GRAY")
    d = tmp_path / "in"
    d.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Nikon"
    Image.fromarray(astro).save(d / "photo.png", icc_profile=rgb_icc, exif=exif.tobytes())
    assert _restore("-i", d, "-o", tmp_path / "a", "-s", "1") == 0
    for f in ("restored_imgs/photo.png", "restored_faces/photo_00.png", "cropped_faces/photo_00.png", "cmp/photo_00.png"):
        with Image.open(tmp_path / "a" / f) as im:  # each output says which software altered it (forensics)
            assert im.info.get("icc_profile") == rgb_icc and "dynfacerestore" in im.getexif().get(0x0131, ""), f
    rec = json.loads((tmp_path / "a" / "records" / "photo.json").read_text())
    assert {"pillow", "numpy", "opencv", "git_commit"} <= set(rec["settings"]["software"]) and "batch_size" in rec["settings"]
    from dynface.provenance import file_sha256

    # each output's hash, so that an auditor can tell it is the one described
    assert len(rec["outputs_sha256"]) == 4 and all(file_sha256(tmp_path / "a" / rel) == h for rel, h in rec["outputs_sha256"].items())
    line = json.loads((tmp_path / "a" / "manifest.jsonl").read_text().splitlines()[-1])
    assert line["record"]["outputs_sha256"] == rec["outputs_sha256"]
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.fromarray(astro[60:200, 150:290]).save(crops / "c.png", icc_profile=rgb_icc, exif=exif.tobytes())
    assert _restore("--aligned", "--input-template", "utkface64", "-i", crops, "-o", tmp_path / "b") == 0
    with Image.open(tmp_path / "b" / "restored_faces" / "c.png") as im:
        assert im.info.get("icc_profile") == rgb_icc and im.getexif().get(0x010F) == "Nikon"
    assert Image.open(tmp_path / "b" / "cmp" / "c.png").info.get("icc_profile") == rgb_icc
    g = tmp_path / "gray"
    g.mkdir()
    Image.fromarray(astro).convert("L").save(g / "old.png", icc_profile=gray_icc)
    capsys.readouterr()
    assert _restore("-i", g, "-o", tmp_path / "c", "-s", "1", "--ext", "webp") == 0
    assert "saved as RGB (.webp has no grayscale)" in capsys.readouterr().out
    with Image.open(tmp_path / "c" / "restored_imgs" / "old.webp") as im:
        assert im.mode == "RGB" and not im.info.get("icc_profile")
    for f in ("restored_faces/old_00.png", "cmp/old_00.png"):  # PNGs: gray, with the gray profile
        with Image.open(tmp_path / "c" / f) as im:
            assert im.mode == "L" and im.info.get("icc_profile") == gray_icc, f


def test_a_cameras_adobe_rgb_setting_and_a_lossless_webp_come_back_as_they_went_in(tmp_path, astro):
    """Photographer's audit: a camera's Adobe RGB JPEG says so in EXIF (ColorSpace 0xFFFF, Interop "R03", no ICC
    profile); the Interop IFD was dropped, so colour-managed viewers took the restored photo for sRGB. And a lossless
    WebP came back lossy (its untouched background changed by up to 46 levels)."""
    import io

    d = tmp_path / "in"
    d.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x8769] = {0xA001: 0xFFFF, 0xA005: {1: "R03", 2: b"0100"}}
    Image.fromarray(astro).save(d / "adobe.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(astro).save(d / "lossless.webp", lossless=True)
    assert _restore("-i", d, "-o", tmp_path / "out", "-s", "1") == 0
    with Image.open(tmp_path / "out" / "restored_imgs" / "adobe.jpg") as im:
        ex = im.getexif()
        assert ex.get_ifd(0x8769).get(0xA001) == 0xFFFF and ex.get_ifd(0xA005).get(1) == "R03" and ex[0x010F] == "Canon"
    data = (tmp_path / "out" / "restored_imgs" / "lossless.webp").read_bytes()
    assert b"VP8L" in data[:64]
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rec = json.loads((tmp_path / "out" / "records" / "lossless.json").read_text())
    x0, y0, x1, y1 = (int(v) for v in rec["faces"][0]["bbox"])
    pad = 60  # the pasted face's blend reaches a little beyond its box
    keep = np.ones(astro.shape[:2], bool)
    keep[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
    assert np.array_equal(out[keep], astro[keep])  # the background is bit-exact


XMP = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" tiff:Orientation="1" xmpMM:InstanceID="xmp.iid:1234">'
       '<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© 1962 Studio Lumière</rdf:li></rdf:Alt></dc:rights>'
       '<tiff:ImageWidth>512</tiff:ImageWidth></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def test_captions_keywords_and_copyright_are_carried_unless_stripped(tmp_path, astro):
    """Photographer's audit: XMP (dc:rights, captions), a PNG's text chunks and a TIFF's Copyright / Artist /
    ImageDescription were dropped. They are carried now, without what describes the input file (XMP's orientation:
    a viewer would turn the upright output again; its size; its instance ID), and --strip-metadata drops them."""
    from PIL import PngImagePlugin

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "j.jpg", quality=95, xmp=XMP.encode(), comment=b"Grand-mere, 1962")
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Copyright", "© Studio Lumière")
    info.add_text("Description", "wedding")
    Image.fromarray(astro).save(d / "p.png", pnginfo=info)
    Image.fromarray(astro).save(d / "t.tif", tiffinfo={33432: "© Studio".encode(), 315: "A. Photographer", 270: "wedding"})
    assert _restore("-i", d, "-o", tmp_path / "out", "-s", "1") == 0
    o = tmp_path / "out" / "restored_imgs"
    with Image.open(o / "j.jpg") as im:
        x = im.info["xmp"].decode()
        assert "© 1962 Studio Lumière" in x and "Orientation" not in x and "InstanceID" not in x and "ImageWidth" not in x
        assert im.info.get("comment") == b"Grand-mere, 1962"
    with Image.open(o / "p.png") as im:
        assert im.text["Copyright"] == "© Studio Lumière" and im.text["Description"] == "wedding"
    with Image.open(o / "t.tif") as im:
        assert im.tag_v2[33432].encode("latin-1").decode() == "© Studio"  # UTF-8 kept (it came back "?? Studio")
        assert im.tag_v2[315] == "A. Photographer" and im.tag_v2[270] == "wedding"
    rec = json.loads((tmp_path / "out" / "records" / "j.json").read_text())
    assert rec["image"]["xmp_kept"] and rec["image"]["text_kept"] == ["Comment"]
    assert _restore("-i", d, "-o", tmp_path / "stripped", "-s", "1", "--strip-metadata") == 0
    o = tmp_path / "stripped" / "restored_imgs"
    with Image.open(o / "j.jpg") as im:
        assert "xmp" not in im.info and "comment" not in im.info
    with Image.open(o / "p.png") as im, Image.open(o / "t.tif") as t:
        assert "Copyright" not in im.text and 33432 not in t.tag_v2


# IPTC-IIM as Photo Mechanic or an archive's software writes it: record 1's coded character set (UTF-8), then
# caption, by-line, copyright, two keywords, city and country
IIM = [(1, 90, b"\x1b%G"), (2, 120, "Grand-mère et Jules, Noël 1962".encode()), (2, 80, b"A. Photographer"),
       (2, 116, "© Studio Lumière".encode()), (2, 25, b"family"), (2, 25, b"wedding"), (2, 90, b"Lyon"),
       (2, 101, b"France")]


def _iim(datasets) -> bytes:
    return b"".join(struct.pack(">BBBH", 0x1C, r, d, len(v)) + v for r, d, v in datasets)


def _jpeg_with_photoshop_block(jpeg: bytes, iim: bytes) -> bytes:
    """``jpeg`` with an APP13 as Photoshop writes it: the IPTC resource (0x0404), its digest (0x0425) and a thumbnail
    (0x040C: the old picture's, which must not be carried)."""
    def resource(rid: int, data: bytes) -> bytes:
        return b"8BIM" + struct.pack(">H", rid) + b"\x00\x00" + struct.pack(">I", len(data)) + data + b"\x00" * (len(data) % 2)

    body = (b"Photoshop 3.0\x00" + resource(0x040C, b"old thumbnail") + resource(0x0404, iim)
            + resource(0x0425, hashlib.md5(iim).digest()))
    return jpeg[:2] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_iptc_captions_and_credits_are_carried_into_jpeg_and_tiff(tmp_path, astro):
    """An archive's JPEGs and TIFFs often hold their captions, credits and keywords in IPTC-IIM only (older tools,
    news agencies); they were dropped. Carried into JPEG (APP13) and TIFF (tag 33723) outputs, read back by Pillow's
    own IPTC reader; --strip-location drops the city and country, --strip-metadata all; a PNG output says it cannot
    hold them."""
    import tifffile
    from PIL import IptcImagePlugin

    d = tmp_path / "in"
    d.mkdir()
    buf = io.BytesIO()
    Image.fromarray(astro).save(buf, "JPEG", quality=95)
    (d / "j.jpg").write_bytes(_jpeg_with_photoshop_block(buf.getvalue(), _iim(IIM)))
    data = _iim(IIM)
    data += b"\x00" * (-len(data) % 4)  # Photoshop types the TIFF tag LONG: whole 4-byte words
    tifffile.imwrite(d / "t.tif", astro, photometric="rgb",
                     extratags=[(33723, "I", len(data) // 4, np.frombuffer(data, "<u4"), True)])
    assert _restore("-i", d, "-o", tmp_path / "out", "-s", "1") == 0
    want = {(2, 120): IIM[1][2], (2, 80): IIM[2][2], (2, 116): IIM[3][2], (2, 25): [b"family", b"wedding"],
            (2, 90): b"Lyon", (2, 101): b"France"}
    for name in ("j.jpg", "t.tif"):
        with Image.open(tmp_path / "out" / "restored_imgs" / name) as im:
            got = IptcImagePlugin.getiptcinfo(im)
            assert {k: got.get(k) for k in want} == want and got[1, 90] == b"\x1b%G", name
            if name == "j.jpg":
                assert set(im.info["photoshop"]) == {0x0404}  # not the old thumbnail, nor a digest of other bytes
    rec = json.loads((tmp_path / "out" / "records" / "j.json").read_text())
    assert rec["image"]["iptc_kept"] is True
    assert _restore("-i", d / "j.jpg", "-o", tmp_path / "nowhere", "-s", "1", "--strip-location") == 0
    with Image.open(tmp_path / "nowhere" / "restored_imgs" / "j.jpg") as im:
        got = IptcImagePlugin.getiptcinfo(im)
        assert got[2, 120] == IIM[1][2] and (2, 90) not in got and (2, 101) not in got
    assert _restore("-i", d / "j.jpg", "-o", tmp_path / "stripped", "-s", "1", "--strip-metadata") == 0
    with Image.open(tmp_path / "stripped" / "restored_imgs" / "j.jpg") as im:
        assert "photoshop" not in im.info
    assert _restore("-i", d / "j.jpg", "-o", tmp_path / "png", "-s", "1", "--ext", "png") == 0
    rec = json.loads((tmp_path / "png" / "records" / "j.json").read_text())
    assert rec["image"]["iptc_kept"] is False
    assert any("IPTC-IIM) cannot be stored in .png" in n for n in rec["notes"]), rec["notes"]


def test_a_tiff_output_keeps_the_cameras_exif_and_utf8_credits_survive(tmp_path, astro):
    """An archivist restoring camera JPEGs into TIFF masters lost the date taken, camera, GPS and Adobe RGB setting:
    TIFF outputs carried no EXIF (libtiff cannot write its IFD). And a UTF-8 Artist / Copyright in EXIF (as
    Lightroom and exiftool write them) came back "J??rgen M??ller" in every output. Both kept now; a 16-bit TIFF too;
    --strip-location drops the GPS IFD from a TIFF as from a JPEG."""
    import tifffile

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Nikon", "D70"
    exif[0x013B], exif[0x8298] = "Jürgen Müller".encode(), "© 2004 Jürgen Müller".encode()
    exif[0x8769] = {0x9003: "2004:07:14 10:00:00", 0xA001: 0xFFFF, 0xA005: {1: "R03"}}  # Adobe RGB, no profile
    exif[0x8825] = {1: "N", 2: (45.0, 46.0, 0.0)}
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "cam.jpg", quality=95, exif=exif.tobytes())
    deep = astro.astype(np.uint16) * 257
    tifffile.imwrite(d / "deep.tif", deep, photometric="rgb")
    for ext, extra in (("tif", ()), ("jpg", ()), ("tif", ("--strip-location",))):
        out = tmp_path / f"{ext}{len(extra)}"
        assert _restore("-i", d / "cam.jpg", "-o", out, "-s", "1", "--ext", ext, *extra) == 0
        with Image.open(out / "restored_imgs" / f"cam.{ext}") as im:
            e = im.getexif()
            assert (e[0x010F], e[0x0110]) == ("Nikon", "D70") and e[0x0131].startswith("dynfacerestore")
            assert e[0x013B].encode("latin-1").decode() == "Jürgen Müller"
            assert e[0x8298].encode("latin-1").decode() == "© 2004 Jürgen Müller"
            assert e.get_ifd(0x8769)[0x9003] == "2004:07:14 10:00:00" and e.get_ifd(0xA005)[1] == "R03"
            assert dict(e.get_ifd(0x8825)) == ({} if extra else {1: "N", 2: (45.0, 46.0, 0.0)})
            picture = np.asarray(im.convert("RGB")).astype(int)  # the appended IFDs leave the picture readable
            assert picture.shape == astro.shape and np.abs(picture - astro).mean() < 10
    # a 16-bit TIFF master with the camera's EXIF (restored from a 16-bit TIFF carrying it)
    from dynface.imageio import read_image, write_like_input

    src = read_image(d / "deep.tif")
    src.exif = read_image(d / "cam.jpg").exif
    write_like_input(src.rgb, src, tmp_path / "deep_out.tif")
    with tifffile.TiffFile(tmp_path / "deep_out.tif") as t:
        assert t.pages[0].dtype == np.uint16 and np.array_equal(t.pages[0].asarray(), deep)
        assert t.pages[0].tags["Make"].value == "Nikon"
        assert t.pages[0].tags["ExifTag"].value["DateTimeOriginal"] == "2004:07:14 10:00:00"


def test_a_16_bit_gray_scan_keeps_its_gray_profile(tmp_path):
    from dynface.imageio import read_image

    a = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "scan.png", icc_profile=_profile(b"GRAY"))  # mode I;16
    im = read_image(tmp_path / "scan.png")
    assert im.was_gray and im.icc_profile == _profile(b"GRAY")


def test_a_16_bit_master_comes_back_16_bit_with_its_background_exact(tmp_path, astro, capsys):
    """Photographer's audit: 16-bit masters came back 8-bit (a channel's 49,765 levels to 255: a smooth sky bands).
    A 16-bit PNG or TIFF (RGB or gray) is now written at 16 bits: outside the faces the input itself (at -s 1
    bit-exact; at -s 2 its Lanczos enlargement at 16 bits), the faces their 8-bit restoration; the profile, print
    resolution, EXIF and text are carried as for 8-bit outputs. A JPEG asked for is 8-bit, with a note."""
    import cv2
    import tifffile

    rng = np.random.default_rng(0)
    deep = astro.astype(np.uint16) * 257 + rng.integers(0, 257, astro.shape, dtype=np.uint16)  # all 16 bits used
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "rgb.png"), deep[..., ::-1])
    gray = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + rng.integers(0, 257, astro.shape[:2],
                                                                                           dtype=np.uint16)
    tifffile.imwrite(d / "gray.tif", gray, photometric="minisblack", resolution=(600, 600), resolutionunit="INCH",
                     extratags=[(33432, "s", 0, "© 2024 Jürgen Müller".encode(), True)])  # UTF-8, as tools write it
    assert _restore("-i", d, "-o", tmp_path / "o", "-s", "1") == 0
    assert "a PNG or TIFF output keeps 16 bits" in capsys.readouterr().out
    for name, src in (("rgb.png", deep), ("gray.tif", gray)):
        back = cv2.imread(str(tmp_path / "o" / "restored_imgs" / name), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16 and back.shape[:2] == src.shape[:2], name
        back = back[..., ::-1] if back.ndim == 3 else back
        rec = json.loads((tmp_path / "o" / "records" / f"{Path(name).stem}.json").read_text())
        x0, y0, x1, y1 = (int(v) for v in rec["faces"][0]["bbox"])
        keep = np.ones(src.shape[:2], bool)
        keep[max(0, y0 - 60) : y1 + 60, max(0, x0 - 60) : x1 + 60] = False
        assert np.array_equal(back[keep], src[keep]), name  # not a level lost outside the face
        assert len(np.unique(back[keep])) > 10_000  # and 16 bits of them
    with Image.open(tmp_path / "o" / "restored_imgs" / "gray.tif") as im:
        assert tuple(float(v) for v in im.info["dpi"]) == (600.0, 600.0)
    with tifffile.TiffFile(tmp_path / "o" / "restored_imgs" / "gray.tif") as t:  # "©" failed the 16-bit file
        assert t.pages[0].tags[33432].value == "© 2024 Jürgen Müller"
    assert _restore("-i", d / "rgb.png", "-o", tmp_path / "o2", "-s", "2") == 0
    big = cv2.imread(str(tmp_path / "o2" / "restored_imgs" / "rgb.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    lanczos = cv2.resize(deep, (1024, 1024), interpolation=cv2.INTER_LANCZOS4)
    assert big.dtype == np.uint16 and np.array_equal(big[:100], lanczos[:100])  # the top rows: sky, no face
    capsys.readouterr()
    assert _restore("-i", d / "rgb.png", "-o", tmp_path / "o3", "-s", "1", "--ext", "jpg") == 0
    assert "the output is 8-bit: .jpg holds no more" in capsys.readouterr().out


BG_CALLS: list[float] = []


def bg_nearest(img, scale):
    BG_CALLS.append(scale)
    return np.asarray(Image.fromarray(img).resize((round(img.shape[1] * scale), round(img.shape[0] * scale)), Image.NEAREST))


def test_background_upsampler_hook_and_ext(tmp_path, astro):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "a.png"
    Image.fromarray(astro).save(src)
    BG_CALLS.clear()
    out = tmp_path / "res"
    hook = "test_restore_cli:bg_nearest"
    assert _restore("-i", src, "-o", out, "-s", "1.5", "--ext", "webp", "--bg-upsampler", hook) == 0
    assert BG_CALLS == [1.5]
    assert Image.open(out / "restored_imgs" / "a.webp").size == (768, 768)
    assert _restore("-i", src, "-o", out, "--bg-upsampler", "nosuchmodule:f") == 2


def test_aligned_inputs_batched(tmp_path, astro, monkeypatch, capsys):
    d = tmp_path / "crops"
    d.mkdir()
    for k in range(3):
        Image.fromarray(astro[60 + k * 5 : 200 + k * 5, 150:290]).save(d / f"c{k}.png")
    (d / "bad.png").write_text("nope")
    log = tmp_path / "log.txt"
    monkeypatch.setenv("FAKE_LOG", str(log))
    out = tmp_path / "res"
    rc = _restore("-i", str(d / "*.png"), "-o", out, "--aligned", "--batch-size", "2", "--seed", "3", "--save-maps")
    assert rc == 1  # bad.png
    for k in range(3):
        # issue 11 A2: a crop larger than the model (140 px > 64) comes back at its own size (was (64, 64))
        assert Image.open(out / "restored_faces" / f"c{k}.png").size == (140, 140)
        assert (out / "maps" / f"c{k}_dgsa.png").is_file()
        rec = json.loads((out / "records" / f"c{k}.json").read_text())
        assert rec["faces"][0]["restorer"]["seed"] == 3 + 1 + k  # seed + position in the sorted list (bad.png is 0)
    assert not (out / "restored_imgs").exists() and not (out / "records" / "bad.json").exists()
    assert len(log.read_text().splitlines()) == 3
    assert rec["settings"]["compile"] is False and rec["settings"]["model_name"] == "fake"
    assert _restore("-i", str(d / "c0.png"), "-o", tmp_path / "res2", "--aligned", "--compile",
                    "--precision", "fp16") == 0
    assert "fp16 on a CPU is emulated and slow" in capsys.readouterr().err
    rec = json.loads((tmp_path / "res2" / "records" / "c0.json").read_text())
    assert rec["settings"]["compile"] is True and rec["settings"]["model_name"] == "fake-compiled"


def test_aligned_ffhq_crops_are_reframed(tmp_path, astro):
    from dynface.faces import FaceDetector, estimate_affine, template_for, warp_face

    face = FaceDetector(upsample=0).detect(astro)[0]
    crop = warp_face(astro, estimate_affine(face.landmarks, template_for("ffhq512", 256)), 256)
    (tmp_path / "in").mkdir()
    Image.fromarray(crop).save(tmp_path / "in" / "f.png")
    out = tmp_path / "res"
    assert _restore("-i", tmp_path / "in", "-o", out, "--aligned", "--input-template", "ffhq512") == 0
    res = np.asarray(Image.open(out / "restored_faces" / "f.png"))
    assert res.shape == (256, 256, 3)
    d = res.astype(int) - crop.astype(int)
    assert np.abs(d[:20]).max() <= 1 and d[100:160, 100:160].mean() > 5  # border untouched, face brightened (+10)
    rec = json.loads((out / "records" / "f.json").read_text())
    assert rec["faces"][0]["input_template"] == "ffhq512"
    assert _restore("-i", tmp_path / "in", "-o", out, "--aligned", "--input-template", "nope") == 2
    assert _restore("-i", tmp_path / "in", "-o", out, "--input-template", "ffhq512") == 2


def test_usage_errors(tmp_path, astro, capsys):
    d = _folder(tmp_path, astro)
    assert _restore("-i", d, "-o", d) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert _restore("-i", d, "-o", d / "sub") == 2
    assert "--allow-input-dir" in capsys.readouterr().err
    assert _restore("-i", d / "astro.jpg", "-o", d / "sub", "-s", "1") == 0  # a file: only it is read, -o beside it is fine
    assert _restore("-i", d / "astro.jpg", "-o", d) == 2  # but not its own folder
    assert "is the input folder" in capsys.readouterr().err
    assert _restore("-i", tmp_path / "nothing_here", "-o", tmp_path / "o") == 2
    assert _restore("-i", str(tmp_path / "*.nomatch"), "-o", tmp_path / "o") == 2
    assert _restore("-i", d, "-o", tmp_path / "o", "--model", "missing-model") == 2
    assert "cannot load model" in capsys.readouterr().err
    capsys.readouterr()
    for bad in (["-w", "1.5"], ["-s", "0"], ["--mode", "nope"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as e:
            _restore("-i", d, "-o", tmp_path / "o", *bad)
        assert e.value.code == 2
        err = capsys.readouterr().err  # the reason and where the options are, not 27 lines of usage first
        assert err.startswith("dynface restore: error: ") and err.endswith("(all options: dynface restore -h)\n")
        assert len(err.splitlines()) == 2, err


def test_sigterm_ends_the_job_as_ctrl_c_does(tmp_path, astro):
    """timeout, systemd and Slurm stop jobs with SIGTERM: it used to end the process at once (exit 143, no summary, a
    temporary file and a face without its record left). Now the finished files are in the manifest, the summary says
    what was not processed, nothing half-written is left, and the exit status is 130, as for Ctrl-C."""
    d = tmp_path / "in"
    d.mkdir()
    for k in range(4):
        Image.fromarray(np.ascontiguousarray(astro[:, ::-1] if k % 2 else astro)).save(d / f"p{k}.png")
    out = tmp_path / "res"
    proc = start_restore_cli(FACTORY, ["-i", d, "-o", out, "-s", "1", "--exact"], {"FAKE_SLEEP": "1.5"})
    kill_after_records(proc, out, 1, timeout=60, sig=signal.SIGTERM)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr[-800:]
    assert "not processed (interrupted)" in stdout and "Traceback" not in stderr
    lines = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    records = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert sorted(d["stem"] for d in lines if d["status"] == "done") == records and 1 <= len(records) < 4
    assert not [p for p in out.rglob(".*")], "temporary files left"


def test_kill_mid_batch_then_skip_existing(tmp_path, astro):
    d = tmp_path / "in"
    d.mkdir()
    variants = [astro, astro[:, ::-1], np.clip(astro.astype(int) + 20, 0, 255).astype(np.uint8), astro[::-1, ::-1][::-1], astro[:, ::-1] // 2 + 60]
    for k, v in enumerate(variants):
        Image.fromarray(np.ascontiguousarray(v)).save(d / f"p{k}.png")
    out = tmp_path / "res"
    log1, log2 = tmp_path / "log1.txt", tmp_path / "log2.txt"
    proc = start_restore_cli(FACTORY, ["-i", d, "-o", out, "-s", "1"], {"FAKE_SLEEP": "1.5", "FAKE_LOG": str(log1)})
    kill_after_records(proc, out, 2, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_first = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert 2 <= len(done_first) < 5
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}

    proc = start_restore_cli(FACTORY, ["-i", d, "-o", out, "-s", "1", "--skip-existing"], {"FAKE_LOG": str(log2)})
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-1000:]
    assert f"{5 - len(done_first)} restored, {len(done_first)} skipped (complete), 0 failed" in stdout
    # every input complete, every file whole, no temporary files left
    for k in range(5):
        rec = json.loads((out / "records" / f"p{k}.json").read_text())
        assert rec["status"] == "ok" and rec["num_faces"] >= 1
        for f in [f"restored_imgs/p{k}.png"] + [v for face in rec["faces"] for v in face["files"].values()]:
            with Image.open(out / f) as im:
                im.load()
    assert not [p for p in out.rglob(".*")], "temporary files left"
    # finished inputs were not recomputed nor rewritten; the rest were restored once each
    for p, t in before.items():
        if p.parent.name == "records" or any(p.name.startswith(s + "_") or p.stem == s for s in done_first):
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    faces_second = len(log2.read_text().splitlines())
    expected = sum(json.loads((out / "records" / f"p{k}.json").read_text())["num_faces"] for k in range(5) if f"p{k}" not in done_first)
    assert faces_second == expected


def test_an_empty_input_is_a_usage_error(tmp_path, capsys):
    """``-i "$UNSET"`` meant no folder, not the current one (Path("") is "."): exit 2, nothing written."""
    assert _restore("-i", "", "-o", tmp_path / "out") == 2
    assert "an input is empty" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_link_to_a_file_restores_it_once_under_its_own_name(tmp_path, astro, capsys):
    """w/link.jpg -> w/plain.jpg: one restore, named plain (the link sorted first and took it, silently)."""
    d = tmp_path / "w"
    d.mkdir()
    Image.fromarray(astro[60:200, 150:290]).save(d / "plain.jpg")
    (d / "a_link.jpg").symlink_to(d / "plain.jpg")
    out = tmp_path / "res"
    assert _restore("--aligned", "-i", d, "-o", out) == 0
    std = capsys.readouterr()
    assert "1 input(s): 1 restored" in std.out and sorted(p.name for p in (out / "records").iterdir()) == ["plain.json"]
    assert f"{d / 'a_link.jpg'} is the same file as {d / 'plain.jpg'} (a link): restored once, as plain.jpg" in std.err


def test_a_file_keeps_its_name_when_a_namesake_joins_it(tmp_path, astro, capsys):
    """a.jpg restored as ``a``; a.png added beside it: a.jpg stays ``a`` (complete, skipped), a.png is ``a_png``;
    before, both were renamed (a_jpg, a_png) and a.jpg restored again beside its orphaned outputs."""
    d = tmp_path / "in"
    d.mkdir()
    crop = astro[60:200, 150:290]
    Image.fromarray(crop).save(d / "a.jpg", quality=95)
    out = tmp_path / "res"
    assert _restore("--aligned", "-i", d, "-o", out, "--skip-existing") == 0
    Image.fromarray(crop).save(d / "a.png")
    assert _restore("--aligned", "-i", d, "-o", out, "--skip-existing") == 0
    assert "2 input(s): 1 restored, 1 skipped (complete)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "records").iterdir()) == ["a.json", "a_png.json"]
    assert json.loads((out / "records" / "a_png.json").read_text())["input"].endswith("a.png")
    # a fresh output folder names them as before
    assert _restore("--aligned", "-i", d, "-o", tmp_path / "fresh") == 0
    assert sorted(p.name for p in (tmp_path / "fresh" / "records").iterdir()) == ["a_jpg.json", "a_png.json"]


def test_namesakes_from_another_folder_never_overwrite_an_earlier_run(tmp_path, astro, capsys):
    """Camera folders restored one at a time into one output folder: dB/img_0.jpg after dA/img_0.jpg was restored
    replaced dA's outputs silently (and each --skip-existing rerun swapped them back). It is named dB_img_0 now,
    with a note; reruns skip both; a byte-equal copy shares the name, and a moved folder takes its names over."""
    da, db, dc = tmp_path / "dA", tmp_path / "dB", tmp_path / "dC"
    for d in (da, db, dc):
        d.mkdir()
    Image.fromarray(astro[60:200, 150:290]).save(da / "img_0.jpg", quality=95)
    Image.fromarray(astro[70:210, 140:280]).save(db / "img_0.jpg", quality=95)
    shutil.copy2(da / "img_0.jpg", dc / "img_0.jpg")  # cp -p
    out = tmp_path / "out"

    def run(d):
        assert _restore("--aligned", "-i", d, "-o", out, "--skip-existing") == 0
        return capsys.readouterr()

    run(da)
    first = (out / "restored_faces" / "img_0.png").read_bytes()
    std = run(db)
    assert "1 restored" in std.out and "named apart from another file" in std.err and "as dB_img_0" in std.err
    assert (out / "restored_faces" / "img_0.png").read_bytes() == first  # dA's outputs kept
    assert json.loads((out / "records" / "dB_img_0.json").read_text())["input"].endswith("dB/img_0.jpg")
    for d in (da, db, dc):  # reruns: complete, nothing swapped; the copy in dC is dA's bytes
        std = run(d)
        assert "0 restored, 1 skipped" in std.out and "named apart" not in std.err, d
    (da / "img_0.jpg").rename(tmp_path / "gone.jpg")  # dA moved away: its name is free for a file of other bytes
    shutil.rmtree(dc)
    Image.fromarray(astro[80:220, 160:300]).save(db / "img_1.jpg", quality=95)
    moved = tmp_path / "moved"
    moved.mkdir()
    Image.fromarray(astro[50:190, 150:290]).save(moved / "img_0.jpg", quality=95)
    std = run(moved)
    assert "1 restored" in std.out and "named apart" not in std.err
    assert json.loads((out / "records" / "img_0.json").read_text())["input"].endswith("moved/img_0.jpg")


def test_long_non_ascii_names_are_cut_in_bytes(tmp_path, astro, capsys):
    """A legal name of 80 CJK characters (240 bytes) is restored under a stem cut to 180 bytes on a character
    boundary, maps, a 32-byte --suffix and a same-stem sibling included; a longer --suffix is a usage error."""
    d = tmp_path / "in"
    (d / ("字" * 40)).mkdir(parents=True)
    crop = astro[60:200, 150:290]
    long_name = "字" * 79 + ".jpg"
    for name in (long_name, "字" * 79 + ".png", ("字" * 40) + "/" + long_name):
        Image.fromarray(crop).save(d / name)
    out = tmp_path / "out"
    assert _restore("--aligned", "-r", "-i", d, "-o", out, "--save-maps", "--suffix", "s" * 32) == 0
    names = [p.name for p in (out / "restored_faces").iterdir()]
    assert len(names) == 3 and all(len(n.encode()) <= 240 for n in names)
    stems = {p.stem for p in (out / "records").iterdir()}
    assert len(stems) == 3 and all(len(s.encode()) <= 180 and s.startswith("字" * 40) for s in stems)
    assert all(len(p.name.encode()) <= 240 for p in out.rglob("*"))
    assert _restore("--aligned", "-i", d, "-o", tmp_path / "o2", "--suffix", "s" * 33) == 2
    assert "--suffix is too long (33 bytes; at most 32)" in capsys.readouterr().err


def test_skip_existing_is_complete_only_for_the_same_photo_and_flags(tmp_path, astro, capsys):
    """--skip-existing skips an output only when it was made from these bytes with these output flags: another file
    with the same name, size and mtime (a copy kept with ``cp -p``) or a changed -w / --ext is restored again, with
    a note naming the flags; a byte-equal copy elsewhere, or a changed --threads, is still complete."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    crop = astro[60:200, 150:290]
    Image.fromarray(crop).save(a / "x.tif")  # uncompressed: the same size for any content
    Image.fromarray(np.ascontiguousarray(crop[::-1])).save(b / "x.tif")
    (c / "x.tif").write_bytes((a / "x.tif").read_bytes())
    st = (a / "x.tif").stat()
    for p in (b / "x.tif", c / "x.tif"):
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (b / "x.tif").stat().st_size == (a / "x.tif").stat().st_size
    out = tmp_path / "out"

    def run(d, *flags):
        assert _restore("--aligned", "-i", d, "-o", out, "--skip-existing", *flags) == 0
        return capsys.readouterr()

    run(a)
    first = (out / "restored_faces" / "x.png").read_bytes()
    assert "0 skipped" not in run(c, "--threads", "1").out  # the same bytes from another folder: complete
    std = run(b)  # not complete: restored, under its own name (a's outputs stay)
    assert "1 restored, 0 skipped" in std.out and (out / "restored_faces" / "x.png").read_bytes() == first
    assert (out / "restored_faces" / "b_x.png").read_bytes() != first
    assert "0 restored, 1 skipped" in run(a).out  # a's photo: still complete
    std = run(a, "-w", "0.8", "--ext", "png")
    assert "1 restored, 0 skipped" in std.out
    assert "1 input(s) restored again" in std.err and "other --fidelity, --ext" in std.err
    rec = json.loads((out / "records" / "x.json").read_text())
    assert rec["settings"]["flags"]["fidelity"] == 0.8 and rec["settings"]["flags"]["ext"] == "png"
    std = run(a, "-w", "0.8", "--ext", "png")
    assert "0 restored, 1 skipped" in std.out and "restored again" not in std.err
    assert (out / "restored_faces" / "x.png").is_file()
    std = run(a, "-w", "0.8", "--ext", "jpg")  # the .png face it replaces is removed, not left beside the .jpg
    assert "1 restored, 0 skipped" in std.out
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent != out)
    assert [p for p in on_disk if "b_x" not in p] == ["cmp/x.png", "records/x.json", "restored_faces/x.jpg"]  # cmp/ is PNG


def test_stems_and_input_collection(tmp_path):
    from dynface.jobs import assign_stems, collect_inputs

    files = [Path("/a/x/00.jpg"), Path("/a/y/00.jpg"), Path("/a/x/01.jpg"), Path("/a/x/01.png"), Path("/b/q.png")]
    assert assign_stems(files) == ["x_00", "y_00", "01_jpg", "01_png", "q"]
    d = tmp_path / "d"
    d.mkdir()
    for n in ("b.png", "a.JPG", ".hidden.png", "c.txt"):
        (d / n).write_bytes(b"x")
    scan = collect_inputs([str(d), str(d / "c.txt")])
    assert [f.name for f in scan.files] == ["a.JPG", "b.png", "c.txt"] and scan.folders == [d]
    assert [f.name for f in scan.ignored] == ["c.txt"]
    # the same name in folders of the same name: as many folder names as it takes, the root never
    deep = [Path("/p/2019/x/00.jpg"), Path("/p/2020/x/00.jpg"), Path("/p/2020/y/00.jpg"), Path("/x/00.png")]
    assert assign_stems(deep) == ["2019_x_00", "2020_x_00", "2020_y_00", "x_00"]
    # found below a folder given (-r): the sub-folders lead the name, whatever else is there
    below = [("2019", "x"), ("2020",), ()]
    assert assign_stems(deep[:2] + [Path("/p/top.jpg")], below) == ["2019_x_00", "2020_00", "top"]
    assert assign_stems(deep[:1], below[:1]) == ["2019_x_00"]


def test_recursive_archive(tmp_path, astro, capsys, monkeypatch):
    """-r: every sub-folder's photos, depth first; hidden folders, links to folders, the output folder and an
    earlier run's output are left out (with a note); names that repeat across folders stay apart; the outputs
    are the same bytes in a second run; without -r the error says why nothing was found."""
    arc = tmp_path / "archive"
    face = Image.fromarray(astro[40:240, 120:320]).resize((64, 64), Image.LANCZOS)
    for rel in ("2019/party/00.png", "2020/party/00.png", "2020/01.png", "top.png", ".hidden/h.png", "2020/.h2.png"):
        (arc / rel).parent.mkdir(parents=True, exist_ok=True)
        face.save(arc / rel)
    (arc / "link").symlink_to(arc / "2019", target_is_directory=True)  # followed, it would restore 2019 twice
    (arc / "notes.txt").write_text("x")
    assert _restore("-i", arc / "2019", "-o", tmp_path / "none", "--aligned") == 2
    assert "(1 sub-folder(s), searched only with -r/--recursive)" in capsys.readouterr().err
    out = arc / "restored"  # inside the archive: needs --allow-input-dir, and is never read back as input
    assert _restore("-i", arc, "-o", out, "--aligned", "-r") == 2
    assert "--allow-input-dir" in capsys.readouterr().err
    assert _restore("-i", arc, "-o", out, "--aligned", "-r", "--allow-input-dir") == 0
    cap = capsys.readouterr()
    assert "4 input(s): 4 restored, 0 skipped (complete), 0 failed" in cap.out, cap.out
    took = re.search(r"0 failed; 4 face\(s\) in ([0-9.]+) s \(([0-9.]+) s/face, all included\) -> ", cap.out)
    # the run's time, said even with -q / in logs (each rounded: the seconds to 0.05, s/face to 0.005; 0.3 s and 0.09
    # s/face for 0.36 s failed a 0.01 tolerance)
    assert took and abs(float(took[1]) / 4 - float(took[2])) <= 0.05 / 4 + 0.005 + 1e-9
    assert f"left out 1 link(s) to folders (not followed; give the folder itself with -i to restore it): {arc / 'link'}" in cap.err
    names = sorted(p.name for p in (out / "restored_faces").iterdir())
    assert names == ["2019_party_00.png", "2020_01.png", "2020_party_00.png", "top.png"]  # named by their path
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [Path(x["path"]).relative_to(arc).as_posix() for x in lines] == [
        "2019/party/00.png", "2020/01.png", "2020/party/00.png", "top.png"]
    # the archive grows: the names do not change, so --skip-existing restores only the new photo
    (arc / "2021" / "party").mkdir(parents=True)
    face.save(arc / "2021" / "party" / "00.png")
    assert _restore("-i", arc, "-o", out, "--aligned", "-r", "--allow-input-dir", "--skip-existing") == 0
    assert "5 input(s): 1 restored, 4 skipped (complete), 0 failed" in capsys.readouterr().out
    (arc / "2021" / "party" / "00.png").unlink()
    # a second run elsewhere in the archive leaves the first run's output folder out, and says so
    out2 = arc / "again"
    assert _restore("-i", arc, "-o", out2, "--aligned", "-r", "--allow-input-dir") == 0
    cap = capsys.readouterr()
    assert "4 input(s): 4 restored" in cap.out and "left out 1 folder(s) written by dynface restore" in cap.err
    for n in names:
        assert (out / "restored_faces" / n).read_bytes() == (out2 / "restored_faces" / n).read_bytes()
    # an unreadable sub-folder is a note, not the end of the archive; an unreadable input folder is a usage error
    iterdir, is_file = Path.iterdir, Path.is_file

    def deny(self):
        if self.name in ("2020", "locked"):
            raise PermissionError(13, "Permission denied")
        return iterdir(self)

    def deny_stat(self):  # another user's private folder (mode 700): nothing inside it can even be stat'ed
        if self.parent.name == "2020":
            raise PermissionError(13, "Permission denied")
        return is_file(self)

    monkeypatch.setattr(Path, "iterdir", deny)
    monkeypatch.setattr(Path, "is_file", deny_stat)
    assert _restore("-i", arc, "-o", tmp_path / "o3", "--aligned", "-r") == 0
    cap = capsys.readouterr()
    assert "2 input(s): 2 restored" in cap.out and "cannot read the folder" in cap.err and "Permission denied" in cap.err
    (tmp_path / "locked").mkdir()
    assert _restore("-i", tmp_path / "locked", "-o", tmp_path / "o4", "--aligned") == 2
    assert "cannot read the input folder" in capsys.readouterr().err


def test_repeated_input_flags_add_up():
    """`-i A -i B` restores both (argparse's plain nargs="+" kept only the last -i, silently dropping A)."""
    from dynface.cli import build_parser

    args = build_parser().parse_args(["restore", "-i", "a.png", "b.png", "-i", "c", "-o", "out"])
    assert args.input == ["a.png", "b.png", "c"]


# ------------------------------------------------------------------------------------------ issue 11 B (restore)
KW_SEEN: list[dict] = []


def make_kw_restorer(**kw):
    """A factory that takes every keyword (like DynFaceRestorer.from_pretrained) and remembers them."""
    KW_SEEN.append(kw)
    return FakeRestorer()


def test_strip_metadata_leaves_the_inputs_exif_out(tmp_path, astro, capsys):
    """Restored photos carry the input's EXIF (date, camera, GPS) by default; --strip-metadata writes only the
    Software tag, keeps the colour profile and print resolution, says so in the record, and is an output flag:
    --skip-existing restores again when it changes."""
    d = tmp_path / "in"
    d.mkdir()
    src = Image.fromarray(astro)
    exif = src.getexif()
    exif[0x010F] = "Pixel"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    src.save(d / "phone.jpg", quality=92, exif=exif.tobytes(), dpi=(300, 300))
    kept, bare = tmp_path / "kept", tmp_path / "bare"
    assert _restore("-i", d, "-o", kept, "-s", "1") == 0
    assert _restore("-i", d, "-o", bare, "-s", "1", "--strip-metadata") == 0
    with Image.open(kept / "restored_imgs" / "phone.jpg") as im:
        assert im.getexif().get_ifd(0x8825).get(1) == "N" and im.getexif().get(0x010F) == "Pixel"
    with Image.open(bare / "restored_imgs" / "phone.jpg") as im:
        e = im.getexif()
        assert list(e) == [0x0131] and "dynfacerestore" in e[0x0131] and not e.get_ifd(0x8825)
        assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)
    rec = json.loads((bare / "records" / "phone.json").read_text())
    assert rec["image"]["exif_kept"] is False and rec["settings"]["flags"]["strip_metadata"] is True
    assert json.loads((kept / "records" / "phone.json").read_text())["image"]["exif_kept"] is True
    capsys.readouterr()
    assert _restore("-i", d, "-o", bare, "-s", "1", "--skip-existing") == 0
    assert "restored again" in capsys.readouterr().err
    with Image.open(bare / "restored_imgs" / "phone.jpg") as im:
        assert im.getexif().get_ifd(0x8825).get(1) == "N"


def test_without_a_terminal_each_input_gets_a_progress_line(tmp_path, astro, capsys):
    """An overnight run into a log file (stderr not a terminal) showed nothing until the end: tqdm draws no bar
    there. Now each input gets one line with the count and the time left; -q keeps it quiet."""
    import re

    d = _folder(tmp_path, astro)
    assert main(["restore", "-i", str(d), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert len(lines) == 5 and [ln.split("]")[0] for ln in lines] == [f"[{k}" for k in ("1/5", "2/5", "3/5", "4/5", "5/5")]
    assert any(re.fullmatch(r"\[\d/5\] done \S*astro\.jpg: 1 face\(s\), \d+\.\d s(; \d+:\d\d:\d\d left)?", ln) for ln in lines)
    assert any(re.match(r"\[\d/5\] NO FACE \S*wall\.png: no face found", ln) for ln in lines)
    assert sum(" FAILED " in ln for ln in lines) == 3 and "left" not in lines[-1]
    assert main(["restore", "-q", "-i", str(d), "-o", str(tmp_path / "q")]) == 1
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]


def _crop_dir(tmp_path, astro, sizes: dict[str, tuple[int, int]]) -> Path:
    d = tmp_path / "crops"
    d.mkdir(exist_ok=True)
    for name, (w, h) in sizes.items():
        Image.fromarray(astro[40:240, 120:320]).resize((w, h), Image.LANCZOS).save(d / name)
    return d


def test_b1_threads_flag_and_default(tmp_path, astro, monkeypatch):
    from dynface import jobs

    d = _crop_dir(tmp_path, astro, {"a.png": (64, 64)})
    for n in (1, 2):
        out = tmp_path / f"o{n}"
        assert _restore("-i", d, "-o", out, "--aligned", "--threads", n) == 0
        assert json.loads((out / "records" / "a.json").read_text())["settings"]["threads"] == n
    with pytest.raises(SystemExit) as e:
        _restore("-i", d, "-o", tmp_path / "o", "--threads", "0")
    assert e.value.code == 2
    # the default leaves busy cores alone (torch's own default takes them all and collapses: benchmarks/threads.py)
    monkeypatch.setattr(jobs, "usable_cpus", lambda: 4)
    for load, want in ((0.0, 4), (1.2, 3), (3.9, 1), (12.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert jobs.default_threads() == want


def test_b3_no_name_bearing_flag_escapes_the_output_folder(tmp_path, astro, capsys):
    d = _crop_dir(tmp_path, astro, {"a.png": (64, 64)})
    (tmp_path / "victim").mkdir()
    out = tmp_path / "res"
    for bad in ("x/../../../victim/0040", "../victim", "..", ".hidden", "a\\b", "a\x00b", "a\nb"):
        with pytest.raises(SystemExit) as e:
            _restore("-i", d, "-o", out, "--aligned", "--suffix", bad)
        assert e.value.code == 2
        assert "plain name" in capsys.readouterr().err
    for bad in ("../png", "png/../../x"):
        with pytest.raises(SystemExit) as e:
            _restore("-i", d, "-o", out, "--ext", bad)
        assert e.value.code == 2
    from dynface.jobs import RestoreSettings, UsageError, run_job

    with pytest.raises(UsageError, match="plain name"):  # front ends that build settings themselves
        run_job([d], out, RestoreSettings(aligned=True, suffix="../victim/x"), restorer=FakeRestorer())
    with pytest.raises(UsageError, match="--ext"):
        run_job([d], out, RestoreSettings(aligned=True, ext="../x"), restorer=FakeRestorer())
    # stems from file names: dots and leading dots cannot climb out
    src = (d / "a.png").read_bytes()
    odd = tmp_path / "odd"
    odd.mkdir()
    for n in ("..png", "...png", ".evil.png"):
        (odd / n).write_bytes(src)
    assert _restore("-i", *(odd / n for n in ("..png", "...png", ".evil.png")), "-o", out, "--aligned") == 0
    assert not list((tmp_path / "victim").iterdir()) and sorted(p.name for p in odd.iterdir()) == ["...png", "..png", ".evil.png"]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert not [p for p in (out / "restored_faces").iterdir() if p.name.startswith(".")]
    # a sub-folder of -o that is a symlink leading outside: every writer refuses it (dynface.outputs.output_path)
    out2 = tmp_path / "res2"
    out2.mkdir()
    (out2 / "restored_faces").symlink_to(tmp_path / "victim")
    assert _restore("-i", d, "-o", out2, "--aligned") == 1
    assert "outside the output folder" in capsys.readouterr().out
    assert not list((tmp_path / "victim").iterdir())


def test_b5_steps_checked_when_parsing(tmp_path, astro, monkeypatch, capsys):
    from dynface.cli import build_parser

    log = tmp_path / "log.txt"
    monkeypatch.setenv("FAKE_LOG", str(log))
    d = _crop_dir(tmp_path, astro, {"a.png": (64, 64)})
    for bad in ("nonsense", "0", "-5", "100000", "ddim0", "ddim3,4", "1001", ""):
        with pytest.raises(SystemExit) as e:
            _restore("-i", d, "-o", tmp_path / "o", "--aligned", f"--steps={bad}")
        assert e.value.code == 2, bad
        assert "steps" in capsys.readouterr().err
    assert not log.exists() and not (tmp_path / "o").exists()  # the model was never loaded, nothing written
    for ok in ("ddim25", "50", "10,10,5", "1000"):
        assert build_parser().parse_args(["restore", "-i", "x", "--steps", ok]).steps == ok


def _disk_full_for(monkeypatch, full):
    """``imageio.save_image`` raising ENOSPC for the paths ``full(path)`` is true of; returns what gives the space
    back."""
    import errno

    from dynface import imageio

    real = imageio.save_image

    def save(img, path, *a, **kw):
        if full(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(img, path, *a, **kw)

    monkeypatch.setattr(imageio, "save_image", save)
    return lambda: monkeypatch.setattr(imageio, "save_image", real)


def test_b6_a_failed_write_keeps_the_finished_files_of_its_batch(tmp_path, astro, monkeypatch, capsys):

    d = _crop_dir(tmp_path, astro, {f"c{k}.png": (64, 64) for k in range(3)})
    space_again = _disk_full_for(monkeypatch, lambda p: p.name.startswith("c1"))
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "--aligned", "--batch-size", "3") == 1
    txt = capsys.readouterr().out
    assert "3 input(s): 2 restored, 0 skipped (complete), 1 failed" in txt and "No space left" in txt
    assert f"c1.png: OutputFull: cannot write to {out}: No space left on device (free some space" in txt
    assert sorted(p.name for p in (out / "records").iterdir()) == ["c0.json", "c2.json"]
    assert not [p for p in out.rglob(".*")]
    space_again()  # the rerun completes exactly the missing one
    assert _restore("-i", d, "-o", out, "--aligned", "--skip-existing") == 0
    assert "1 restored, 2 skipped (complete), 0 failed" in capsys.readouterr().out


def test_a_full_disk_stops_the_run_after_the_file_it_failed_and_a_rerun_completes_it(tmp_path, astro, monkeypatch,
                                                                                     capsys):
    """A full disk fails every file after it, each restored for nothing (hours on an archive): the run stops after
    the first, says why, exits 1, and --skip-existing does the rest once there is space (failure audit)."""

    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(astro).save(d / name)
    space_again = _disk_full_for(monkeypatch, lambda p: p.parent.name == "restored_imgs" and p.name.startswith("b"))
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "1", "--exact") == 1
    txt = capsys.readouterr().out
    assert "3 input(s): 1 restored, 0 skipped (complete), 1 failed, 1 not processed (stopped: the output's disk is full)" in txt
    assert f"b.png: OutputFull: cannot write to {out}: No space left on device" in txt
    assert sorted(p.name for p in (out / "records").iterdir()) == ["a.json"]
    assert not [p for p in out.rglob("b*")] and not [p for p in out.rglob(".*")]
    space_again()
    assert _restore("-i", d, "-o", out, "-s", "1", "--exact", "--skip-existing") == 0
    assert "2 restored, 1 skipped (complete), 0 failed" in capsys.readouterr().out


def test_a_record_that_cannot_be_written_takes_its_outputs_with_it(tmp_path, astro, monkeypatch, capsys):
    """The outputs were written, the record (the last write) was not: the input fails and its outputs go, so that
    nothing is left that no record lists (they stood there, with a pending list, as if a run had been killed)."""
    import errno

    from dynface import atomicfile

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "a.png")
    real = atomicfile.atomic_write_text

    def full_disk(text, path, *a, **kw):
        if Path(path).parent.name == "records" and Path(path).suffix == ".json":  # the record, not its pending list
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        return real(text, path, *a, **kw)

    monkeypatch.setattr(atomicfile, "atomic_write_text", full_disk)
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "-s", "1") == 1
    assert "a.png: OutputFull: cannot write to" in capsys.readouterr().out
    assert not [p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.jsonl", "jobs.jsonl")]


def test_a_pipe_or_a_device_among_the_inputs_is_left_out_without_waiting(tmp_path, astro):
    """A FIFO (named, or behind a link in a folder) blocked the whole run in open(); /dev/zero filled the memory.
    Each is now one failed line, before anything is read, and the other files are restored."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "pipe.mp4")
    (d / "link.png").symlink_to(tmp_path / "pipe.png")
    proc = start_restore_cli(FACTORY, ["-i", d, tmp_path / "pipe.mp4", "/dev/zero", "-o", tmp_path / "res", "-s", "1"],
                             {})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "1 restored, 0 skipped (complete), 3 failed" in out
    assert "link.png: is a pipe (FIFO), not a regular file" in out and "pipe.mp4: is a pipe (FIFO)" in out
    assert "/dev/zero: is a device, not a regular file" in out and "Traceback" not in err


def test_a_photo_that_fails_to_write_leaves_no_face_files(tmp_path, astro, capsys):
    """The photo's own file cannot be written (a folder of its name): the faces' files it had written already are
    removed, so nothing is left that its (failed) manifest line does not list; the other photo is complete."""
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(astro).save(d / name)
    out = tmp_path / "res"
    (out / "restored_imgs" / "a.png").mkdir(parents=True)
    assert _restore("-i", d, "-o", out, "-s", "1", "--save-maps") == 1
    assert "1 restored, 0 skipped (complete), 1 failed" in capsys.readouterr().out
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name.startswith("a"))
    assert left == [] and (out / "restored_faces" / "b_00.png").is_file()


def test_b7_animated_gif_is_an_input_in_folders_too(tmp_path, astro, capsys):
    d = tmp_path / "in"
    d.mkdir()
    frames = [Image.fromarray(astro[40:240, 120:320]), Image.fromarray(astro[40:240, 120:320][:, ::-1].copy())]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "res"
    assert _restore("-i", d, "-o", out, "--aligned") == 0
    txt = capsys.readouterr().out
    assert "1 restored" in txt and "2 frames/pages; only the first is restored" in txt and "ignored" not in txt
    assert (out / "restored_faces" / "anim.png").is_file()
    assert _restore("-i", d / "anim.gif", "-o", tmp_path / "res2", "--aligned") == 0  # as with -i anim.gif


def test_b8_aligned_crops_far_from_square_or_tiny_are_refused(tmp_path, astro, capsys):
    d = _crop_dir(tmp_path, astro, {"wide.png": (300, 100), "dot.png": (1, 1), "small.png": (12, 12),
                                    "near.png": (130, 120), "big.png": (256, 256), "fit.png": (64, 64)})
    out = tmp_path / "res"
    own = ("--input-template", "utkface64")  # the crops taken in the model's own framing (auto aligns faces it finds)
    with warnings.catch_warnings():  # the Python API warns of a stretched crop; the command's note says it once
        warnings.filterwarnings("error", message=".*not square")
        assert _restore("-i", d, "-o", out, "--aligned", *own) == 1
    txt = capsys.readouterr().out
    assert "6 input(s): 3 restored, 0 skipped (complete), 3 failed" in txt
    assert "wide.png: not square (300x100)" in txt and "dot.png: too small" in txt and "small.png: too small" in txt
    assert "near.png: not square (130x120): stretched" in txt
    assert "big.png: restored at the model's 64 px (the crop is 256x256); returned at 256x256" in txt
    assert Image.open(out / "restored_faces" / "big.png").size == (256, 256)
    assert Image.open(out / "restored_faces" / "fit.png").size == (64, 64)
    face = json.loads((out / "records" / "big.json").read_text())["faces"][0]
    assert face["crop_side_px"] == 256 and face["model_px"] == 64 and face["scale_to_model"] == 0.25 and face["detail_kept"]
    # --detail restored: the restoration alone, upscaled; keep: the crop's own fine detail is back
    assert _restore("-i", d / "big.png", "-o", tmp_path / "r2", "--aligned", *own, "--detail", "restored") == 0
    src = np.asarray(Image.open(d / "big.png"), dtype=float)
    keep = np.asarray(Image.open(out / "restored_faces" / "big.png"), dtype=float)
    restored = np.asarray(Image.open(tmp_path / "r2" / "restored_faces" / "big.png"), dtype=float)

    def hf(a):
        return float(np.mean((a - np.asarray(Image.fromarray(a.astype(np.uint8)).resize((64, 64), Image.LANCZOS).resize((256, 256), Image.LANCZOS), dtype=float)) ** 2))

    assert hf(keep) > 2 * hf(restored) and hf(keep) == pytest.approx(hf(src), rel=0.35)


def test_b9_seed_message_and_looping_symlink(tmp_path, astro, capsys):
    d = _crop_dir(tmp_path, astro, {"a.png": (64, 64)})
    with pytest.raises(SystemExit) as e:
        _restore("-i", d, "-o", tmp_path / "o", "--seed", str(2**63))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "between 0 and 9223372036854775807" in err and ">= 0" not in err
    (d / "loop.png").symlink_to(d / "loop.png")
    (d / "gone.png").symlink_to(d / "nothing.png")
    assert _restore("-i", d, "-o", tmp_path / "o", "--aligned") == 1
    txt = capsys.readouterr().out
    assert "3 input(s): 1 restored, 0 skipped (complete), 2 failed" in txt
    assert "loop.png: cannot read file (Too many levels of symbolic links)" in txt and "gone.png: no such file" in txt


def test_precision_color_fix_and_detail_reach_the_restorer(tmp_path, astro, monkeypatch):
    d = _crop_dir(tmp_path, astro, {"a.png": (64, 64)})
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_restore_cli:make_kw_restorer")
    KW_SEEN.clear()
    assert _restore("-i", d, "-o", tmp_path / "o1", "--aligned") == 0
    # auto with --aligned on a CPU is built as exact fp32 (jobs._build_precision); the record keeps "auto"
    assert KW_SEEN[-1]["precision"] == "fp32" and "color_fix" not in KW_SEEN[-1]
    assert json.loads((tmp_path / "o1" / "records" / "a.json").read_text())["settings"]["precision"] == "auto"
    assert _restore("-i", d, "-o", tmp_path / "o2", "--aligned", "--precision", "bf16", "--color-fix", "adain") == 0
    assert KW_SEEN[-1]["precision"] == "bf16" and KW_SEEN[-1]["color_fix"] == "adain"
    rec = json.loads((tmp_path / "o2" / "records" / "a.json").read_text())
    assert rec["settings"]["precision"] == "bf16" and rec["settings"]["detail"] == "keep"
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)  # the old fake takes no color_fix: a clear usage error
    assert _restore("-i", d, "-o", tmp_path / "o3", "--aligned", "--color-fix", "adain") == 2



def test_aligned_crops_framing_is_told_from_their_landmarks(tmp_path, astro, capsys):
    """GFPGAN's, CodeFormer's and DifFace's aligned crops (and the BFR test sets') are FFHQ framings; taken as the
    model's own, tighter framing they came back blurrier (a helper's real crops: teeth merged, a catchlight lost),
    and a note asking for --input-template was all users got. --input-template auto (default) tells each crop's
    framing from its landmarks: an FFHQ crop is re-framed and pasted back, a crop in the model's framing is not,
    and a crop without a face is taken in the model's framing with the note. An explicit name still rules."""
    from dynface.faces import FaceDetector, estimate_affine, template_for, warp_face

    pts = FaceDetector(upsample=0).detect(astro)[0].landmarks
    d = tmp_path / "in"
    d.mkdir()
    ffhq = warp_face(astro, estimate_affine(pts, template_for("ffhq512", 256)), 256)
    Image.fromarray(ffhq).save(d / "ffhq.png")
    Image.fromarray(warp_face(astro, estimate_affine(pts, template_for("utkface64", 128)), 128)).save(d / "own.png")
    Image.fromarray(np.full((500, 500, 3), 128, np.uint8)).save(d / "blank.png")
    Image.fromarray(np.full((512, 512, 3), 128, np.uint8)).save(d / "blank512.png")
    half = (template_for("ffhq512", 512) + template_for("utkface64", 512)) / 2  # between the two: no clear fit
    Image.fromarray(warp_face(astro, estimate_affine(pts, half), 512)).save(d / "half.png")
    Image.fromarray(ffhq[:, 16:240]).save(d / "narrow.png")  # 224 x 256: not square
    assert _restore("--aligned", "-i", d, "-o", tmp_path / "a") == 0
    summary = capsys.readouterr().out
    faces = {n: json.loads((tmp_path / "a" / "records" / f"{n}.json").read_text())["faces"][0] for n in ("ffhq", "own", "blank")}
    assert faces["ffhq"]["input_template"] == faces["ffhq"]["input_template_guess"] == "ffhq512"
    dist = faces["ffhq"]["input_template_distances"]
    assert dist["ffhq512"] < 0.03 and dist["utkface64"] > 0.09
    assert "ffhq.png: re-aligned from the ffhq512 framing (told from its landmarks) to the model's utkface64" in summary
    res = np.asarray(Image.open(tmp_path / "a" / "restored_faces" / "ffhq.png")).astype(int) - ffhq
    assert res.shape == (256, 256, 3) and np.abs(res[:20]).max() <= 1 and res[100:160, 100:160].mean() > 5  # pasted back
    assert faces["own"]["input_template"] is None and faces["own"]["input_template_guess"] == "utkface64"
    assert faces["blank"]["input_template"] is None and faces["blank"]["input_template_guess"] is None
    assert ("blank.png: its framing could not be told (no face found on the crop): taken as the model's own utkface64 "
            "framing; if this crop is FFHQ-aligned") in summary and "--input-template ffhq512" in summary
    assert "own.png: its framing" not in summary and "ffhq.png: its framing" not in summary
    # a face found whose framing no template fits clearly (a tight crop saved at 512 px was taken as FFHQ by its side,
    # and its nose and mouth restored), or a crop that is not square: aligned from the face's own 5 points
    for name in ("half", "narrow"):
        rec = json.loads((tmp_path / "a" / "records" / f"{name}.json").read_text())["faces"][0]
        assert rec["input_template"] == "landmarks" and len(rec["input_landmarks5"]) == 5, name
        found, want = np.array(rec["input_landmarks5"]), template_for("utkface64", 64)
        err = np.abs(cv2_transform(found, np.array(rec["affine"])) - want).mean()  # the face onto the model's template
        if name == "half":  # taken as FFHQ by its side, the face landed more than twice as far from it
            by_side = estimate_affine(template_for("ffhq512", 512), want)
            assert err < 1.5 and np.abs(cv2_transform(found, by_side) - want).mean() > 2 * err, name
        assert (tmp_path / "a" / "cropped_faces" / f"{name}.png").is_file(), name  # what the model was given
    assert "half.png: its framing is not a known one (no known template fits it clearly): aligned from the face's own" in summary
    assert "narrow.png: its framing is not a known one (not square (224x256)): aligned from the face's own" in summary
    assert Image.open(tmp_path / "a" / "restored_faces" / "narrow.png").size == (224, 256)
    # no face found on a crop of a side FFHQ crops come in (a degraded one): taken as FFHQ, as its set's others
    rec = json.loads((tmp_path / "a" / "records" / "blank512.json").read_text())["faces"][0]
    assert rec["input_template"] == "ffhq512" and rec["input_template_guess"] is None
    assert ("blank512.png: its framing could not be told (no face found on the crop): taken as FFHQ-aligned, as 512-px "
            "aligned crops are") in summary and "restore it with --input-template utkface64" in summary
    # a name rules: the FFHQ crop taken in the model's framing (no landmarks looked at), the blank one as FFHQ
    assert _restore("--aligned", "--input-template", "utkface64", "-i", d / "ffhq.png", "-o", tmp_path / "b") == 0
    rec = json.loads((tmp_path / "b" / "records" / "ffhq.json").read_text())["faces"][0]
    assert rec["input_template"] is None and "input_template_guess" not in rec
    assert _restore("--aligned", "--input-template", "ffhq512", "-i", d / "blank.png", "-o", tmp_path / "c") == 0
    assert "its framing could not be told" not in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "records" / "blank.json").read_text())["faces"][0]["input_template"] == "ffhq512"
    assert _restore("--input-template", "auto", "-i", d / "own.png", "-o", tmp_path / "e") == 0  # auto needs no --aligned


def cv2_transform(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def test_a_512_px_aligned_crop_in_the_models_framing_suggests_the_ffhq_one(tmp_path, astro):
    """Without --input-template (the API's input_template=None: every crop in the model's framing), a 512-px crop,
    the side of GFPGAN's, CodeFormer's and DifFace's FFHQ crops, still gets the note."""
    from dynface.jobs import RestoreSettings, run_job

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "ffhq.png")  # 512 x 512
    Image.fromarray(astro[60:200, 150:290]).save(d / "own.png")
    s = run_job([d], tmp_path / "a", RestoreSettings(aligned=True, input_template=None), restorer=make_fake_restorer())
    notes = {Path(r.path).name: " ".join(r.notes) for r in s.results}
    assert "512x512: if this crop is FFHQ-aligned" in notes["ffhq.png"] and "--input-template ffhq512" in notes["ffhq.png"]
    assert "FFHQ" not in notes["own.png"]


def test_a_photo_without_a_face_keeps_its_notes(tmp_path, capsys):
    """A multi-page file whose first page has no face: "no face found" came without the note that only the first
    page is read, so the user never learnt the other pages were not looked at (manifest notes: [])."""
    d = tmp_path / "in"
    d.mkdir()
    pages = [Image.new("RGB", (64, 48), (90, 90, 90)), Image.fromarray(data.astronaut())]
    pages[0].save(d / "scan.tif", save_all=True, append_images=pages[1:])
    assert _restore("-i", d, "-o", tmp_path / "o") == 1
    out = capsys.readouterr().out
    assert "scan.tif: no face found" in out and "scan.tif: 2 frames/pages; only the first is restored" in out
    line = json.loads((tmp_path / "o" / "manifest.jsonl").read_text().splitlines()[-1])
    assert line["status"] == "no_face" and any("only the first is restored" in n for n in line["notes"])


def test_a_small_face_in_a_large_scan_is_found_with_a_larger_detect_side(tmp_path, astro, capsys):
    """Detection runs on a copy at most 2000 px wide: a helper's 55-px faces in a 7000 x 5000 scan were missed with
    nothing but "no face found". The message now says what size of face was looked for and what --detect-side
    would take; with it, the face is found."""
    from dynface.faces import smallest_face

    pano = np.full((1000, 9000, 3), 120, np.uint8)
    pano[200:712, 4000:4512] = astro  # the astronaut's face is about 94 px across
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(pano).save(d / "pano.png")
    assert _restore("-i", d, "-o", tmp_path / "a") == 1
    out = capsys.readouterr().out
    assert smallest_face(9000, 1000) == 180 and smallest_face(9000, 1000, 9000) == 80
    assert ("pano.png: faces smaller than about 180 px in this 9000x1000 photo are missed (detection ran on a copy "
            "2000 px on its longer side; --detect-side 9000: about 80 px, slower)") in out
    assert _restore("-i", d, "-o", tmp_path / "b", "--detect-side", "9000") == 0
    capsys.readouterr()
    assert _restore("-i", d, "-o", tmp_path / "m", "--detect-side", "9000", "--max-megapixels", "8.5") == 1
    assert "pano.png: image too large (9000x1000 = 9 MP; the limit is 8.5 MP)" in capsys.readouterr().out
    rec = json.loads((tmp_path / "b" / "records" / "pano.json").read_text())
    assert rec["num_faces"] == 1 and rec["settings"]["flags"]["detect_side"] == 9000
    with pytest.raises(SystemExit):  # argparse: "--detect-side: must be >= 64, got 10", exit 2
        _restore("-i", d, "-o", tmp_path / "c", "--detect-side", "10")


def test_a_closer_look_keeps_the_faces_the_default_finds_and_small_finds_are_told(tmp_path, astro, capsys,
                                                                                    monkeypatch):
    """An archivist's group scan (helper audit): the default 2000-px copy found 17 of 29 faces, with no note as
    some were found; --detect-side 6000 found the small ones but lost 4 large ones the default had. Now a larger
    --detect-side searches the default copy too and merges, and a photo whose smallest face found lies near the
    detection limit says that smaller ones may be missed."""
    from dynface import faces as faces_mod

    big = np.asarray(Image.fromarray(astro).resize((1400, 1400), Image.LANCZOS))  # its face: about 250 px
    pano = np.full((1400, 9000, 3), 120, np.uint8)
    pano[:, 3000:4400] = big
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(pano).save(d / "group.png")
    assert _restore("-i", d, "-o", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "group.png: the smallest face found is about" in out and "near the detection limit: faces smaller than " \
        "about 180 px in this 9000x1400 photo are missed" in out
    assert _restore("-i", d, "-o", tmp_path / "b", "--detect-side", "9000") == 0
    assert "near the detection limit" not in capsys.readouterr().out  # 250 px is far above 9000 px's 80 px

    # a 4000-px scan is searched down to about 80 px at any --detect-side (its 2000-px copy upsampled once): no note
    # then that smaller faces are missed and --detect-side 4000 would find "about 80 px" (family-photo audit)
    assert faces_mod.smallest_face(4000, 2800, 2000) == faces_mod.smallest_face(4000, 2800, 4000) == 80
    scan = np.full((2800, 4000, 3), 120, np.uint8)
    scan[1000:1512, 1000:1512] = astro  # its face: about 100 px
    Image.fromarray(scan).save(d / "group.png")
    assert _restore("-i", d, "-o", tmp_path / "c", "-s", "1") == 0
    assert "near the detection limit" not in capsys.readouterr().out

    det = faces_mod.FaceDetector(max_side=9000)
    assert det.scales(9000, 1400) == [9000, 2000] and det.scales(1800, 1400) == [9000]
    assert faces_mod.FaceDetector().scales(9000, 1400) == [2000]
    real = faces_mod.FaceDetector._found
    one = real(det, pano, 2000)
    assert len(one) == 1
    for fine in ([], one, [(one[0][0] + 8, 0.9)]):  # missed, the same box, the same face a little off
        def found(self, img, side, pad=0.0, fine=fine, **kw):  # the edge search (pad) adds nothing here
            return [] if pad else fine if side == 9000 else one

        monkeypatch.setattr(faces_mod.FaceDetector, "_found", found)
        assert len(det.detect(pano)) == 1
    box = np.array([0.0, 0, 10, 10])
    far = [(box + 100, 0.5)]
    assert len(faces_mod.merge_boxes([(box, 1.0)], far + [(box + 2, 0.7)])) == 2  # the far one added, the near one not


def test_a_face_lying_sideways_is_found_with_detect_turned(tmp_path, astro, capsys):
    """Faces turned a quarter (a scan stored sideways without an EXIF orientation, someone lying down) were found by
    no setting (archivist audit); --detect-turned searches the photo turned each way, maps the face's points back,
    and the face is aligned upright from them and pasted back as it lies."""
    side = np.ascontiguousarray(np.rot90(astro, 1))
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(side).save(d / "side.png")
    assert _restore("-i", d, "-o", tmp_path / "a", "-s", "1") == 1
    assert "side.png: --detector cnn (much slower) looks for blurred and dark faces at the photo's whole resolution, " \
        "--detect-turned" in \
        capsys.readouterr().out
    assert _restore("-i", d, "-o", tmp_path / "b", "-s", "1", "--detect-turned") == 0
    rec = json.loads((tmp_path / "b" / "records" / "side.json").read_text())
    assert rec["num_faces"] == 1 and rec["settings"]["flags"]["detect_turned"] is True
    x0, y0, x1, y1 = rec["faces"][0]["bbox"]  # the astronaut's face, where it lies in the turned photo
    assert abs(x0 - 79) < 6 and abs(y0 - 247) < 6 and abs(x1 - 173) < 6 and abs(y1 - 341) < 6
    (lx, ly), (rx, ry) = rec["faces"][0]["landmarks5"][:2]  # the eyes lie one above the other
    assert abs(lx - rx) < 6 and ry < ly - 30
    out = np.asarray(Image.open(tmp_path / "b" / "restored_imgs" / "side.png")).astype(int)
    diff = np.abs(out - side.astype(int)).mean(-1)
    assert diff[270:320, 100:150].mean() > 5 and diff[:60, :60].mean() < 1  # the face restored (+10), not the rest


def test_a_face_cut_by_the_photos_edge_is_found(tmp_path, astro, capsys):
    """A face cut by the photo's edge (someone at the edge of a group photo or entering a CCTV frame) was seldom
    found: the detector's window must lie inside the image. The edge search scans the copy padded by edge
    replication too; the cut face is found (its points as on the whole face) unless --no-detect-edges. Its saved
    crops are grey beyond the photo's edge (they showed the mirrored fill: doubled eyes, edge audit)."""
    import cv2

    from dynface.faces import FaceDetector

    close = cv2.resize(np.ascontiguousarray(astro[30:250, 110:330]), (440, 440), interpolation=cv2.INTER_LANCZOS4)
    whole = FaceDetector(edges=False).detect(close)[0]
    y0, y1 = int(whole.bbox[1]), int(whole.bbox[3])
    for cut, off in ((close[y0 + 45:], y0 + 45), (close[: y1 - 65], 0)):  # the forehead, the chin cut away
        cut = np.ascontiguousarray(cut)
        assert FaceDetector(edges=False).detect(cut) == []
        (face,) = FaceDetector().detect(cut)
        assert np.abs(face.landmarks + [0, off] - whole.landmarks).max() < 0.08 * whole.eye_distance
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.ascontiguousarray(close[: y1 - 65])).save(d / "cut.png")
    assert _restore("-i", d, "-o", tmp_path / "a", "-s", "1") == 0
    rec = json.loads((tmp_path / "a" / "records" / "cut.json").read_text())
    assert rec["num_faces"] == 1 and rec["settings"]["flags"]["detect_edges"] is True
    assert rec["faces"][0]["bbox"][3] > y1 - 65  # the box goes beyond the photo's bottom
    assert 0.1 < rec["faces"][0]["outside_photo"] < 0.5  # the crop's share beyond the photo's edge
    assert any("1 face(s) cut by the photo's edge (_00)" in n for n in rec["notes"])
    for sub in ("cropped_faces", "restored_faces"):  # grey there, not the mirrored fill the model was given
        crop = np.asarray(Image.open(tmp_path / "a" / sub / "cut_00.png").convert("RGB"))
        assert (crop[-3:] == (135, 133, 132)).all() and not (crop[:3] == (135, 133, 132)).all(-1).any()
    assert _restore("-i", d, "-o", tmp_path / "b", "-s", "1", "--no-detect-edges", "--detector", "hog") == 1
    assert "cut.png: no face found" in capsys.readouterr().out
    # the default's second look (the CNN detector where HOG finds no face) finds it without the edge search too
    assert _restore("-i", d, "-o", tmp_path / "c", "-s", "1", "--no-detect-edges") == 0


def test_a_face_the_cnn_check_turns_down_at_the_edge_gets_a_second_chance(astro, monkeypatch):
    """A face cut at a photo's corner (edge audit): the plain search found it weakly, the CNN check (on a region cut
    by the edge) turned it down, and the edge search's box for it was dropped as the same face. Now the edge search's
    finds are kept unless a face kept before covers them, so its box is checked (on a filled region) and kept."""
    from dynface import faces as faces_mod

    plain, padded = np.array([-40.0, -39, 133, 134]), np.array([-19.0, -19, 137, 137])
    monkeypatch.setattr(faces_mod.FaceDetector, "_found",
                        lambda self, img, side, pad=0.0, **kw: [((padded if pad else plain).copy(), 0.25 if pad else 0.23)])
    monkeypatch.setattr(faces_mod.FaceDetector, "cnn_confirms", staticmethod(lambda img, box: box[0] > -30))
    monkeypatch.setattr(faces_mod.FaceDetector, "landmarks68",  # the eyes (points 36-47) 60 px apart
                        staticmethod(lambda img, box: np.array([[box[0] + 50 + 60 * (42 <= i < 48), box[1] + 70]
                                                                for i in range(68)], dtype=float)))
    (face,) = faces_mod.FaceDetector().detect(astro)
    assert face.bbox == (-19.0, -19.0, 137.0, 137.0)
    assert faces_mod.FaceDetector(edges=False).detect(astro) == []
    monkeypatch.setattr(faces_mod.FaceDetector, "cnn_confirms", staticmethod(lambda img, box: True))
    (face,) = faces_mod.FaceDetector().detect(astro)  # both pass: the plain search's box is kept, once
    assert face.bbox == (-40.0, -39.0, 133.0, 134.0)


def test_jfif_files_are_found_and_sub_folders_left_out_are_said(tmp_path, astro, capsys):
    """.jfif/.jpe (what browsers save JPEGs as) were skipped "without an image extension"; a folder's sub-folders were
    left out without a word when the folder had images of its own."""
    d = tmp_path / "in"
    (d / "more").mkdir(parents=True)
    Image.fromarray(astro).save(d / "saved.jfif", format="JPEG", quality=95)
    Image.fromarray(astro).save(d / "more" / "x.png")
    assert _restore("-i", d, "-o", tmp_path / "o") == 0
    out = capsys.readouterr()
    assert (tmp_path / "o" / "restored_imgs" / "saved.jpg").is_file()
    assert "1 sub-folder(s) not searched (-r/--recursive searches them)" in out.out + out.err


def test_a_run_killed_between_the_outputs_and_the_record_leaves_the_input_incomplete(tmp_path, astro, monkeypatch, capsys):
    """A second run with other settings, killed after an input's new outputs and before its record: the new outputs
    stood under the old record (another size, fidelity), and --skip-existing and report took them as done. The old
    record is set aside first: the input is incomplete until the new record is written, and the next run restores
    it (removing the outputs only the old record listed)."""
    from dynface import jobs

    d = _crop_dir(tmp_path, astro, {"x.png": (64, 64)})
    out = tmp_path / "o"
    assert _restore("--aligned", "-i", d, "-o", out, "--ext", "png") == 0
    real = jobs.write_record

    def killed(*a, **k):
        raise KeyboardInterrupt  # stands for a kill -9 at that moment
    monkeypatch.setattr(jobs, "write_record", killed)
    s = jobs.run_job([d], out, jobs.RestoreSettings(aligned=True, ext="jpg", fidelity=1.0), restorer=make_fake_restorer())
    assert s.interrupted and not s.done
    monkeypatch.setattr(jobs, "write_record", real)
    assert not (out / "records" / "x.json").exists() and (out / "restored_faces" / "x.jpg").is_file()
    assert _restore("--aligned", "-i", d, "-o", out, "--ext", "jpg", "-w", "1", "--skip-existing") == 0
    assert "1 restored, 0 skipped" in capsys.readouterr().out
    rec = json.loads((out / "records" / "x.json").read_text())
    assert rec["settings"]["flags"]["ext"] == "jpg" and not (out / "restored_faces" / "x.png").exists()
    assert sorted(p.name for p in (out / "records").iterdir()) == ["x.json"]  # the set-aside record is gone


def test_a_kill_while_a_photo_is_written_leaves_no_outputs_without_a_record(tmp_path, astro):
    """A kill -9 after a photo's face files and before the photo and its record left face files that no record and
    no manifest line named (removed only if that photo was restored again, under the same names). The outputs about
    to be written are listed first (records/STEM.json.pending); the next run into the folder removes them, and
    report names the input meanwhile."""
    import subprocess

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "astro.jpg", quality=92)
    out = tmp_path / "o"
    kill = ("import os, sys; sys.path.insert(0, sys.argv[1]); from dynface import imageio; "
            "imageio.write_like_input = lambda *a, **k: os._exit(9); from dynface.cli import main; "
            "main(['restore', '-q', '-i', sys.argv[2], '-o', sys.argv[3], '--save-maps'])")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "DYNFACE_RESTORER_FACTORY": FACTORY}
    r = subprocess.run([sys.executable, "-c", kill, str(HERE), str(d), str(out)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 9, r.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent not in (out, out / "records"))
    assert any(w.startswith("restored_faces/") for w in written) and any(w.startswith("maps/") for w in written)
    assert [p.name for p in (out / "records").iterdir()] == ["astro.json.pending"]
    assert set(jobs.interrupted_inputs(out)) == {"astro"}  # its process is gone
    pending = json.loads((out / "records" / "astro.json.pending").read_text())
    assert set(written) <= set(pending["outputs"]) and "restored_imgs/astro.jpg" in pending["outputs"]

    # report names it; a run that restores something else removes the half-written outputs
    other = tmp_path / "in2"
    other.mkdir()
    Image.fromarray(astro).save(other / "second.png")
    assert _restore("-i", other, "-o", out) == 0
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert not any("astro" in p for p in left), left
    assert jobs.interrupted_inputs(out) == {}
    # the next run of the photo itself writes it whole, with its record
    assert _restore("-i", d, "-o", out, "--skip-existing") == 0
    assert (out / "records" / "astro.json").is_file() and not (out / "records" / "astro.json.pending").exists()


def test_a_face_that_came_back_as_it_went_in_is_said(tmp_path, astro, capsys, monkeypatch):
    """With --detail keep the detail rule can settle on the input itself (crossover 0: a halftone clipping's face,
    family-photo audit); the run said "1 restored" and nothing else. Now its note says so and what to try."""
    from dynface import faces as faces_mod

    paste = faces_mod.paste_face

    def as_it_was(*a, info=None, **kw):  # the rule's last resort, as keep_detail records it
        out = paste(*a, info=info, **kw)
        if info is not None and kw.get("model_px"):
            info["detail_cut_cycles"] = 0.0
        return out

    monkeypatch.setattr(faces_mod, "paste_face", as_it_was)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).save(d / "clipping.png")
    assert _restore("-i", d, "-o", tmp_path / "o", "-s", "2") == 0
    assert ("clipping.png: 1 face(s) came back as they went in (_00): with --detail keep every mix left less fine "
            "detail than the photo's own") in capsys.readouterr().out
    assert _restore("-i", d, "-o", tmp_path / "r", "-s", "2", "--detail", "restored") == 0
    assert "came back as they went in" not in capsys.readouterr().out


def test_a_newline_in_a_file_name_does_not_split_the_summary_line(tmp_path, astro, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "new\nline.png").write_bytes(b"not an image")
    assert _restore("-i", d, "-o", tmp_path / "o") == 1
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert "new?line.png: " in line and "not an image" in line


def test_a_missing_input_among_others_fails_its_own_line_not_the_run(tmp_path, astro, capsys):
    """`-i /nonexistent/x.jpg good.jpg` stopped everything with exit 2: one typo in a list of 1,000 paths stopped
    the lot (failure audit). It is one failed line now, the rest restored; only when nothing named exists is it a
    usage error."""
    d = _folder(tmp_path, astro)
    gone = tmp_path / "typo" / "x.jpg"
    assert _restore("-i", gone, d, "-o", tmp_path / "o", "-s", "1") == 1
    out = capsys.readouterr().out
    assert f"FAILED  {gone}: no such file" in out and "1 restored" in out
    line = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines() if "typo" in x]
    assert line and line[-1]["status"] == "failed"
    assert _restore("-i", gone, "-o", tmp_path / "o2") == 2
    assert "input not found" in capsys.readouterr().err



def test_strip_location_keeps_everything_but_where_the_photo_was_taken(tmp_path, astro):
    """For photos to share: --strip-metadata dropped the date, camera and copyright with the GPS position (audit:
    "strip GPS, keep copyright"). --strip-location drops only where it was taken: EXIF's GPS IFD and XMP's GPS and
    place properties."""
    d = tmp_path / "in"
    d.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x8769] = {0x9003: "1962:07:14 10:00:00"}
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    xmp = XMP.replace('tiff:Orientation="1"', 'tiff:Orientation="1" exif:GPSLatitude="48,51.4N" '
                      'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"'
                      ).replace("<tiff:ImageWidth>", "<photoshop:City>Paris</photoshop:City><tiff:ImageWidth>")
    Image.fromarray(astro).save(d / "trip.jpg", quality=95, exif=exif.tobytes(), xmp=xmp.encode())
    assert _restore("-i", d, "-o", tmp_path / "o", "-s", "1", "--strip-location") == 0
    with Image.open(tmp_path / "o" / "restored_imgs" / "trip.jpg") as im:
        e, x = im.getexif(), im.info["xmp"].decode()
        assert not e.get_ifd(0x8825) and e[0x010F] == "Canon" and e.get_ifd(0x8769)[0x9003] == "1962:07:14 10:00:00"
        assert "GPS" not in x and "Paris" not in x and "© 1962 Studio Lumière" in x
    rec = json.loads((tmp_path / "o" / "records" / "trip.json").read_text())
    assert rec["settings"]["flags"]["strip_location"] is True



def _gray_gamma_profile(gamma: float) -> bytes:
    """A minimal ICC v2 gray display profile (header, tag table: desc, wtpt D50, kTRC = gamma), as ICC.1:2001-04
    lays it out."""
    import struct

    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    name = b"gray gamma test\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 2 + 1 + 67)),
            (b"wtpt", b"XYZ \0\0\0\0" + s15(0.9642) + s15(1.0) + s15(0.8249)),
            (b"kTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, tag in tags:
        tag += bytes(-len(tag) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(tag))
        body += tag
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrGRAYXYZ " + bytes(12) + b"acsp"
              + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_a_gray_photo_with_a_gray_profile_written_as_webp_keeps_its_tones(tmp_path, astro):
    """WebP stores RGB: the gray profile cannot go with it, and the gamma-1.8 tones were then read as sRGB (11.5
    levels darker in a colour-managed viewer: photographer's audit). They are converted to sRGB, with its profile."""
    import io

    from PIL import ImageCms

    icc = _gray_gamma_profile(1.8)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astro).convert("L").save(d / "old.png", icc_profile=icc)
    assert _restore("-i", d, "-o", tmp_path / "o", "-s", "1", "--ext", "webp") == 0
    with Image.open(tmp_path / "o" / "restored_imgs" / "old.webp") as im:
        got, prof = np.asarray(im.convert("RGB")), im.info.get("icc_profile")
    assert prof and ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(prof))).startswith("sRGB")
    want = np.asarray(ImageCms.profileToProfile(Image.fromarray(astro).convert("L"), ImageCms.ImageCmsProfile(
        io.BytesIO(icc)), ImageCms.createProfile("sRGB"), outputMode="RGB"))
    corner = (slice(0, 60), slice(400, 512))  # no face: only the profile's conversion (and WebP's loss) differ
    assert np.abs(got[corner].astype(int) - want[corner]).mean() < 2.0
    plain = np.asarray(Image.fromarray(astro).convert("L"))[corner][..., None]  # the tones as they were written
    assert np.abs(got[corner].astype(int) - plain).mean() > 5
