"""The web app's request handlers (``dynface.webapp.WebApp``) with the tiny preset model: good, bad and mixed
requests, refusals (a server path, an uploaded ``.pth`` as model), caps, the time limit, clean-up; and the
``dynface serve`` guard against binding beyond localhost.

The tiny model comes through the job layer's documented hook
``DYNFACE_RESTORER_FACTORY=test_webapp:make_tiny_restorer``, so the page's path is the CLI's path.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytest.importorskip("gradio")

from dynface.jobs import MANIFEST_NAME, Manifest  # noqa: E402
from dynface.webapp import ServerConfig, WebApp, WebRequestError, _client_gone, _ProgressBridge, quiet_environment  # noqa: E402

HERE = Path(__file__).resolve().parent
FACTORY = "test_webapp:make_tiny_restorer"
LOADS: list[str] = []  # every model name a factory was asked to load


def make_tiny_restorer(name_or_path="embedded-64", device="cpu", mode="full", steps=None, precision="auto", **kw):
    """The tiny preset (random weights, 32 px): the real pipeline, fast (4 sampling steps unless asked)."""
    from dynface.pipeline import DynFaceRestorer

    LOADS.append(str(name_or_path))
    if mode not in _TINY:  # built once per mode (the request handlers load per WebApp)
        _TINY[mode] = DynFaceRestorer.from_preset("tiny", mode=mode)
    return _TINY[mode].with_config(steps=str(steps or "ddim4"))


_TINY: dict = {}


class SlowRestorer:
    """Calls the progress callback for 40 steps of 50 ms each: for the time limit."""

    size, template_name, name = 64, "utkface64", "slow"

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, seeds=None, callback=None):
        for s in range(40):
            time.sleep(0.05)
            if callback is not None:
                callback(s + 1, 40)
        imgs = [np.asarray(Image.fromarray(np.asarray(f, np.uint8)).resize((64, 64))) for f in faces]
        return SimpleNamespace(images=imgs, records=[{"seed": seed}] * len(imgs), maps={})


class CountingRestorer(SlowRestorer):
    """Four quick steps a call, the calls counted in :data:`CALLS`."""

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, seeds=None, callback=None):
        CALLS.append(len(faces))
        for s in range(4):
            if callback is not None:
                callback(s + 1, 4)
        imgs = [np.asarray(Image.fromarray(np.asarray(f, np.uint8)).resize((64, 64))) for f in faces]
        return SimpleNamespace(images=imgs, records=[{"seed": seed}] * len(imgs), maps={})


CALLS: list[int] = []


def make_counting_restorer(**kw):
    return CountingRestorer()


def make_slow_restorer(**kw):
    LOADS.append(str(kw.get("name_or_path")))
    return SlowRestorer()


@pytest.fixture(autouse=True)
def _factory(monkeypatch):
    for k in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "DO_NOT_TRACK", "GRADIO_SSR_MODE"):
        monkeypatch.setenv(k, os.environ.get(k, ""))  # restored after the test
    quiet_environment()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    LOADS.clear()


@pytest.fixture
def uploads(tmp_path) -> Path:
    d = tmp_path / "uploads" / "a1b2"  # like Gradio's cache: <root>/<hash>/<original name>
    d.mkdir(parents=True)
    return d


@pytest.fixture
def app(tmp_path):
    a = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work"))
    yield a
    a.close()


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("astro") / "a.png"
    Image.fromarray(data.astronaut()).save(p)
    return p.read_bytes()


def _put(folder: Path, name: str, content: bytes) -> str:
    p = folder / name
    p.write_bytes(content)
    return str(p)


# ------------------------------------------------------------------------------------------ good requests
def test_photo_request_gives_the_cli_layout_table_comparisons_and_zip(app, uploads, astro_png):
    f = _put(uploads, "astronaut.png", astro_png)
    seen = []
    res = app.restore([f], model="embedded-64", seed=3, progress=lambda frac, desc: seen.append((frac, desc)))
    assert [r.status for r in res.results] == ["done"]
    assert res.messages == ["✓ astronaut.png: 1 face(s) restored"]
    # per-face table: std*, start steps, NFE, eta, s/face from the record
    (row,) = res.table
    rec = res.results[0].record["faces"][0]["restorer"]
    assert row[0] == "astronaut.png" and row[1] == 0
    assert row[2] == round(rec["std_star"], 3) and row[4] == rec["nfe"] and row[5] == round(rec["eta"], 3)
    assert row[3] == ", ".join(str(s) for s in rec["start_steps"])
    # before/after pairs of equal size, for the whole photo and the face
    assert set(res.comparisons) == {"astronaut: whole photo", "astronaut_00: face"}
    for before, after in res.comparisons.values():
        assert Image.open(before).size == Image.open(after).size
    w, h = Image.open(res.comparisons["astronaut: whole photo"][1]).size
    assert (w, h) == (1024, 1024)  # upscale 2 of the 512-px photo
    # explanation: restorer output, three guides, DGSA map
    assert [c for _, c in res.explanation] == [f"{k} · astronaut_00" for k in ("RM(y)", "ý0", "ý1", "ý2", "DGSA")]
    assert len(res.gallery) == 1
    # the zip holds the CLI's folder layout
    names = set(zipfile.ZipFile(res.zip_path).namelist())
    assert {"restored_imgs/astronaut.png", "restored_faces/astronaut_00.png", "cropped_faces/astronaut_00.png",
            "cmp/astronaut_00.png", "records/astronaut.json", "manifest.jsonl", "maps/astronaut_00_dgsa.png",
            "maps/astronaut_00_guide2.png", "maps/astronaut_00_restorer.png"} <= names
    # the request is a job with a start and an end line, kept on the server (they name its host and process)
    assert "jobs.jsonl" not in names
    from dynface.jobs import read_job_lines

    ends = [d for d in read_job_lines(res.out_dir) if d["job"] == "end"]
    assert len(ends) == 1 and ends[0]["restored"] == 1 and ends[0]["stopped"] is False
    # progress went forward and ended at 1
    fracs = [fr for fr, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert any("step" in d for _, d in seen)
    assert LOADS == ["embedded-64"]  # the allow-list name went to the job layer's loader


def test_the_page_finds_faces_lying_sideways_and_can_leave_the_metadata_out(app, uploads):
    """The command line's --detect-turned and --strip-metadata as the page's two checkboxes (a family photo scanned
    sideways; a photo to share without its location)."""
    import io

    src = Image.fromarray(np.ascontiguousarray(np.rot90(data.astronaut(), 1)))
    exif = src.getexif()
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    buf = io.BytesIO()
    src.save(buf, "PNG", exif=exif.tobytes())
    f = _put(uploads, "side.png", buf.getvalue())
    assert [r.status for r in app.restore([f], model="embedded-64").results] == ["no_face"]
    res = app.restore([f], model="embedded-64", turned=True, strip_metadata=True, upscale=1)
    assert [(r.status, r.faces) for r in res.results] == [("done", 1)]
    with zipfile.ZipFile(res.zip_path) as z, Image.open(io.BytesIO(z.read("restored_imgs/side.png"))) as im:
        assert not im.getexif().get_ifd(0x8825) and "dynfacerestore" in im.getexif()[0x0131]
    # kept unless asked; the grain and dust checkboxes: --grain match, --dust (one request for the three)
    res = app.restore([f], model="embedded-64", turned=True, upscale=1, grain=True, dust=True)
    with zipfile.ZipFile(res.zip_path) as z, Image.open(io.BytesIO(z.read("restored_imgs/side.png"))) as im:
        assert im.getexif().get_ifd(0x8825).get(1) == "N"
        rec = json.loads(z.read("records/side.json"))
    assert rec["settings"]["flags"]["grain"] == "match" and "grain_added" in rec["faces"][0]
    assert rec["settings"]["flags"]["dust"] is True and rec["faces"][0]["dust"]["specks"] >= 0


def test_the_page_smooths_a_printed_photos_dots_away(app, uploads):
    """The command line's --descreen as the page's checkbox: a yearbook-style print (4.5-px dots) has no face HOG
    finds (the CNN's second look finds it, dots and all), and a note that says what to tick; ticked, it is
    descreened and restored."""
    import io

    import cv2

    from dynface.degrade import add_halftone

    printed = add_halftone(cv2.resize(data.astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC), 4.5, 45.0)
    buf = io.BytesIO()
    Image.fromarray(printed).save(buf, "PNG")
    f = _put(uploads, "clipping.png", buf.getvalue())
    res = app.restore([f], model="embedded-64", upscale=1)
    assert [r.status for r in res.results] == ["done"]
    assert any("“smooth away a printed photo's dots” smooths the dots away" in m for m in res.messages), res.messages
    res = app.restore([f], model="embedded-64", upscale=1, descreen=True)
    assert [(r.status, r.faces) for r in res.results] == [("done", 1)]
    with zipfile.ZipFile(res.zip_path) as z:
        rec = json.loads(z.read("records/clipping.json"))
    assert rec["settings"]["flags"]["descreen"] is True and rec["descreen"]["applied"]


def test_iphone_heic_upload_shows_in_the_page_and_zips_as_jpeg(app, uploads):
    """A HEIC photo (which browsers do not show) gets its before/after pair as PNG/JPEG and a JPEG in the zip."""
    f = _put(uploads, "IMG_0001.HEIC", (HERE / "data" / "phone_o6.heic").read_bytes())
    res = app.restore([f], model="embedded-64")
    assert [r.status for r in res.results] == ["done"]
    before, after = res.comparisons["IMG_0001: whole photo"]
    for p in (before, after):
        assert Path(p).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
        with Image.open(p) as im:
            assert im.format in ("PNG", "JPEG", "WEBP")
    assert "restored_imgs/IMG_0001.jpg" in zipfile.ZipFile(res.zip_path).namelist()


def test_aligned_samples_and_restorer_reuse(app):
    samples = app.example_files()
    assert len(samples) >= 3 and all(Path(p).resolve().is_relative_to(app.upload_root.resolve()) for p in samples)
    res = app.restore(samples[:3], model="embedded-64", aligned=True, fidelity=0.8, steps="ddim3")
    assert [r.status for r in res.results] == ["done"] * 3
    assert len(res.gallery) == 3 and len(res.table) == 3
    assert all(k.endswith(": face") for k in res.comparisons)
    res2 = app.restore(samples[:1], model="embedded-64", aligned=True, fidelity=0.2, steps="ddim3")
    assert res2.results[0].status == "done"
    assert LOADS == ["embedded-64"]  # same model settings: loaded once


# ------------------------------------------------------------------------------------------ bad and mixed
def test_mixed_request_reports_each_bad_file_and_restores_the_rest(app, uploads, astro_png, tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(gray)
    files = [
        _put(uploads, "broken.png", astro_png[: len(astro_png) // 3]),
        _put(uploads, "astronaut.png", astro_png),
        _put(uploads, "empty.jpg", b""),
        _put(uploads, "notes.txt", b"not an image at all"),
        _put(uploads, "weights.pth", b"PK\x03\x04" + os.urandom(200)),
        _put(uploads, "wall.png", gray.read_bytes()),
    ]
    res = app.restore(files, model="embedded-64")
    status = {Path(r.path).name: (r.status, r.error) for r in res.results}
    assert status["astronaut.png"] == ("done", None)
    assert status["empty.jpg"] == ("failed", "empty file")
    assert status["wall.png"][0] == "no_face"
    assert "corrupt" in status["broken.png"][1] or "truncated" in status["broken.png"][1]
    assert "not an image" in status["notes.txt"][1]
    assert "not an image" in status["weights.pth"][1]
    assert len(res.messages) == 6 and res.messages[1].startswith("✓ astronaut.png")
    (wall,) = [m for m in res.messages if m.startswith("✗ wall.png: no face found (")]  # with what to try
    assert "the command line's --detector cnn (much slower)" in wall and "“also look for faces lying sideways”" in wall
    assert len(res.table) == 1
    assert "records/astronaut.json" in zipfile.ZipFile(res.zip_path).namelist()
    assert LOADS == ["embedded-64"]  # the .pth was never loaded as weights
    # the manifest has a line per upload, as the page has: the empty file refused before the job layer too; the
    # records and the manifest name inputs by their upload's name, not the server's copy in its request folder
    lines = Manifest(res.out_dir / MANIFEST_NAME).lines()
    assert sorted(d["path"] for d in lines) == sorted(Path(f).name for f in files)
    rec = json.loads((res.out_dir / "records" / "astronaut.json").read_text())
    assert rec["input"] == "astronaut.png"
    assert str(res.request_dir) not in "".join(p.read_text() for p in res.out_dir.rglob("*.json*"))
    assert next(d for d in lines if d["path"] == "empty.jpg")["error"] == "empty file"


def test_page_messages_duplicate_names_warnings_and_nothing_to_zip(app, uploads, astro_png, tmp_path, monkeypatch):
    """Two uploads of one name are told apart as in the zip; a precision this CPU emulates is warned about; a
    request that restored nothing offers no (empty) zip; the CLI's --aligned is named as the page's checkbox."""
    import dynface.pipeline

    other = uploads.parent / "c3d4"  # another upload of the same name: Gradio's next hash folder
    other.mkdir()
    files = [_put(uploads, "x.png", astro_png), _put(other, "x.png", astro_png)]
    monkeypatch.setattr(dynface.pipeline, "cpu_has_native_bf16", lambda: False)
    res = app.restore(files, model="embedded-64", precision="bf16")
    assert res.messages[0].startswith("note: precision bf16 on this CPU is emulated")
    assert res.messages[1:] == ["✓ x.png (as x): 1 face(s) restored", "✓ x.png (as x_2): 1 face(s) restored"]
    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((64, 128, 3), 100, np.uint8)).save(wide)
    res = app.restore([_put(uploads, "wide.png", wide.read_bytes())], model="embedded-64", aligned=True)
    assert res.zip_path is None and res.counts["done"] == 0
    assert "untick “inputs are aligned face crops”" in res.messages[0] and "--aligned" not in res.messages[0]
    with pytest.warns(UserWarning, match="no files"):  # gr.Warning: the toast (a warning outside a request)
        out = app.ui_page([], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 2.0, None)
    assert out[0].startswith("**Not restored:** no files") and out[2:-1] == (None, [], [], None, None, {})
    assert out[-1]["visible"] is False and out[-1]["value"] is None  # no video from an earlier request left on show


def test_caps_on_bytes_and_decoded_pixels(tmp_path, uploads, astro_png):
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work",
                              max_upload_bytes=len(astro_png) + 10, max_pixels=1_000_000))
    big = Image.new("1", (1500, 1000))  # 1.5 MP of one colour: a small file that decodes large
    big.save(uploads / "bomb.png", optimize=True)
    assert (uploads / "bomb.png").stat().st_size < 10_000
    files = [_put(uploads, "astronaut.png", astro_png), str(uploads / "bomb.png"),
             _put(uploads, "huge.png", astro_png + b"\0" * 100)]
    res = app.restore(files, model="embedded-64")
    st = [(r.status, r.error) for r in res.results]
    assert st[0] == ("done", None)
    assert st[1][0] == "failed" and "image too large (1500x1000" in st[1][1]
    assert st[2][0] == "failed" and "file too large" in st[2][1]
    app.close()


def test_pixel_cap_holds_for_files_only_opencv_decodes(tmp_path, uploads, astro_png):
    """The server's pixel cap (``max_pixels``) also holds for a file that only OpenCV decodes. A PAM (Netpbm P7)
    file is one: Pillow cannot open it (UnidentifiedImageError), so the web app's old Pillow-only header check let
    it through, and the job layer's OpenCV fallback read it under imageio's default 80 MP. Now the cap is the job
    layer's ``RestoreSettings.max_pixels``, applied whichever decoder reads the file. A PNG over the cap (Pillow's
    path) is refused with the same wording, and a file under the cap in the same request is still restored."""
    import cv2
    from PIL import UnidentifiedImageError

    from dynface.imageio import read_image

    face = np.asarray(Image.fromarray(data.astronaut()).resize((300, 300), Image.LANCZOS))
    ok, buf = cv2.imencode(".pam", np.ascontiguousarray(face[:, :, ::-1]))
    assert ok
    pam = _put(uploads, "portrait.pam", buf.tobytes())
    with pytest.raises(UnidentifiedImageError):
        Image.open(pam)  # not Pillow's: the OpenCV fallback reads it
    assert read_image(pam).format == "OPENCV" and read_image(pam).size == (300, 300)
    Image.fromarray(face).save(uploads / "big.png")
    small = np.asarray(Image.fromarray(face).resize((200, 200), Image.LANCZOS))
    Image.fromarray(small).save(uploads / "small.png")
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", max_pixels=50_000))
    res = app.restore([pam, str(uploads / "big.png"), str(uploads / "small.png")], model="embedded-64", upscale=1)
    st = [(r.status, r.error) for r in res.results]
    refused = "image too large (300x300 = 0.09 MP; the limit is 0.05 MP)"
    assert st[0] == ("failed", refused)
    assert st[1] == ("failed", refused)
    assert st[2] == ("done", None), st  # 200x200 = 40 000 pixels: under the cap, read and restored
    assert res.messages[0] == f"✗ portrait.pam: {refused}"
    app.close()


def _crop_uploads(uploads: Path, n: int) -> list[str]:
    """``n`` uploaded 64-px astronaut crops, c0.png ... (for the slow restorer's stopping tests)."""
    crop = Image.fromarray(data.astronaut()[20:220, 110:310]).resize((64, 64))
    for i in range(n):
        crop.save(uploads / f"c{i}.png")
    return [str(uploads / f"c{i}.png") for i in range(n)]


def test_time_limit_stops_mid_sampling_and_reports_the_rest(tmp_path, uploads, astro_png, monkeypatch):
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_webapp:make_slow_restorer")
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", time_limit_s=0.6))
    files = _crop_uploads(uploads, 10)  # two chunks of 8 + 2
    t0 = time.monotonic()
    res = app.restore(files, model="embedded-64", aligned=True)
    took = time.monotonic() - t0
    assert took < 1.9  # one restorer call takes 2 s: it was stopped at a step
    assert all(r.status == "failed" and "time limit (0.6 s) was reached" in r.error for r in res.results)
    from dynface.jobs import read_job_lines

    assert [(d["job"], d.get("stopped")) for d in read_job_lines(res.out_dir)] == [("start", None), ("end", True)]
    app.close()


def test_a_stopped_video_keeps_its_frames_done(tmp_path, uploads, clip_mp4, astro_png, monkeypatch):
    """Stop, the time limit or a closed page threw away the whole video, frames done and all (audit: a family clip of
    three faces waited 15 minutes for nothing): now the frames encoded so far are the restored video, with its sound
    up to their end, a note saying so, and a "partial" record that --skip-existing does not count as complete."""
    from test_video import audio_seconds

    from dynface import jobs, video

    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_webapp:make_counting_restorer")
    monkeypatch.setattr(jobs, "VIDEO_QUEUE_FRAMES", 1)  # a restorer call per two frames
    CALLS.clear()
    f = _put(uploads, "clip.mp4", clip_mp4)
    p = _put(uploads, "astronaut.png", astro_png)
    app_ = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work"))
    try:  # the Stop button, pressed during the third call
        res = app_.restore([f, p], model="embedded-64", upscale=1.0,
                           gone=lambda: "stopped with the Stop button" if len(CALLS) >= 3 else False)
        msg, photo = res.messages
        rec = res.results[0].record
        n = rec["frames"]
        assert res.results[0].status == "done" and 0 < n < 8 and msg == (
            f"✓ clip.mp4: video restored, {n} frame(s), {n} face(s) in {n} of them (stopped after {n} of 8 frame(s) "
            "(stopped with the Stop button): the restored video holds those)")
        assert rec["status"] == "partial" and rec["faces_per_frame"] == [1] * n
        out = res.out_dir / "restored_videos" / "clip.mp4"
        with video.VideoReader(out) as r:
            assert sum(1 for _ in r.frames()) == n
        assert abs(audio_seconds(out) - n / 8) < 0.06  # the sound up to the last frame's end
        assert not jobs.is_complete(res.out_dir, "clip")
        assert photo == "✓ astronaut.png: 1 face(s) restored"  # photos go first
    finally:
        app_.close()


def test_a_closed_page_stops_its_request_at_the_next_step(tmp_path, uploads, monkeypatch):
    """The page reloaded or closed (Gradio marks the event not alive): the request stops at the next sampling step
    instead of holding the worker, and the queue behind it, until the time limit."""
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_webapp:make_slow_restorer")
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", time_limit_s=600))
    files = _crop_uploads(uploads, 3)
    t0 = time.monotonic()
    res = app.restore(files, model="embedded-64", aligned=True, gone=lambda: time.monotonic() - t0 > 0.3)
    assert time.monotonic() - t0 < 1.9  # one restorer call takes 2 s: it was stopped at a step
    assert all(r.status == "failed" and "the page that asked was closed or reloaded" in r.error for r in res.results)
    app.close()


def test_a_stopping_server_stops_its_running_request_and_refuses_new_ones(tmp_path, uploads, monkeypatch):
    """dynface serve on Ctrl-C/SIGTERM calls shutdown() before it deletes its folders: the running request stops at
    its next sampling step (rather than running on in a deleted folder, or in torch while Python exits, which
    aborted the process with "terminate called without an active exception") and later requests are refused."""
    import threading

    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_webapp:make_slow_restorer")
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", time_limit_s=600))
    files = _crop_uploads(uploads, 3)
    out = {}
    worker = threading.Thread(target=lambda: out.update(res=app.restore(files, model="embedded-64", aligned=True)))
    worker.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert app.shutdown(wait_s=30)
    assert time.monotonic() - t0 < 1.9  # one restorer call takes 2 s: it was stopped at a step, then waited for
    worker.join(5)
    assert not worker.is_alive()
    assert all(r.status == "failed" and "the server is stopping" in r.error for r in out["res"].results)
    with pytest.raises(WebRequestError, match="the server is stopping"):
        app.restore(files, model="embedded-64", aligned=True)
    assert app.shutdown(wait_s=0)  # nothing running: at once
    app.close()


def test_gradio_tells_the_handlers_their_client(app):
    """The handlers get Gradio's Request (the annotation is the class, not this module's postponed string), from
    which _client_gone asks Gradio's queue whether the session's event is still alive."""
    from types import SimpleNamespace

    import gradio as gr
    from gradio.utils import get_type_hints

    from dynface.webapp import _client_gone, build_app

    demo = build_app(app)
    handlers = [f.fn for f in demo.fns.values()
                if getattr(f.fn, "__name__", "") in ("page_handler", "restore_handler", "stop_handler")]
    assert len(handlers) == 3 and all(get_type_hints(fn)["request"] is gr.Request for fn in handlers)
    (seed,) = [b for b in demo.blocks.values() if getattr(b, "label", None) == "seed"]
    assert seed.preprocess(1.5) == 1.5  # not rounded to 2 on the way: the settings refuse it with a reason
    with pytest.raises(WebRequestError, match="whole number"):
        app.settings(model="embedded-64", seed=1.5)
    evt = SimpleNamespace(session_hash="s1", alive=True)
    fake = SimpleNamespace(_queue=SimpleNamespace(active_jobs=[None, [evt]]))
    gone = _client_gone(fake, SimpleNamespace(session_hash="s1"))
    other = _client_gone(fake, SimpleNamespace(session_hash="s2"))
    assert not gone() and not other()
    evt.alive = False
    assert gone() and not other()
    assert _client_gone(fake, None) is None
    # the Stop button of page s2: its request is told why; s1's is not concerned
    evt.alive = True
    gone, other = (_client_gone(fake, SimpleNamespace(session_hash=h), app) for h in ("s1", "s2"))
    app.request_stop("s2")
    assert other() == "stopped with the Stop button" and not gone()
    assert app.stop_asked("s2", clear=True) and not app.stop_asked("s2") and not other()


def test_the_stop_button_stops_the_request_and_keeps_what_is_done(tmp_path, uploads, monkeypatch):
    """There was no way to stop a run but closing the page (which also lost the settings). Stop ends the request at
    its next sampling step; the files not done are reported as stopped."""
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_webapp:make_slow_restorer")
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", time_limit_s=600))
    files = _crop_uploads(uploads, 3)
    fake = SimpleNamespace(_queue=SimpleNamespace(active_jobs=[]))
    gone = _client_gone(fake, SimpleNamespace(session_hash="page"), app)
    t0 = time.monotonic()
    threading.Timer(0.3, app.request_stop, args=("page",)).start()
    res = app.restore(files, model="embedded-64", aligned=True, gone=gone)
    assert time.monotonic() - t0 < 1.9  # one restorer call takes 2 s: stopped at a step
    assert all(r.status == "failed" and "not restored: stopped with the Stop button" in r.error for r in res.results)
    app.close()


def test_slider_shows_transparency_as_a_viewer_does(tmp_path):
    """A transparent PNG's before/after pair shows a checkerboard where it is transparent, not the RGB hidden there."""
    from dynface.webapp import _pair

    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but only the left half is visible
    rgba[:, :32, 3] = 255
    for name in ("before.png", "after.png"):
        Image.fromarray(rgba, "RGBA").save(tmp_path / name)
    for shown in _pair(tmp_path / "before.png", tmp_path / "after.png", tmp_path, "p"):
        a = np.asarray(Image.open(shown).convert("RGB")).astype(int)
        assert (a[:, :32] == [255, 0, 0]).all()
        right = a[:, 32:]
        assert (right[..., 0] == right[..., 1]).all() and {200, 235} == set(np.unique(right))


def test_progress_bridge_is_monotonic_and_raises_only_at_steps():
    from dynface.jobs import Progress
    from dynface.webapp import RequestTimeLimit

    seen = []
    b = _ProgressBridge(lambda f, d: seen.append((f, d)), deadline=time.monotonic() + 60, limit=60, total=2)
    b(Progress(0, 1, 0, 5, 10, "a.png", 0.5))
    b(Progress(0, 1, 1, None, None, "a.png", 0.0))  # the job layer's per-call emit
    b.next_chunk(1)
    b(Progress(0, 1, 0, 10, 10, "b.png", 1.0))
    assert [round(f, 2) for f, _ in seen] == [0.25, 0.25, 1.0]
    assert seen[0][1] == "file 1/2 (a.png) · step 5/10" and "1 face(s) done" in seen[2][1]
    late = _ProgressBridge(None, deadline=time.monotonic() - 1, limit=1)
    late(Progress(1, 1, 1, None, None, "", 1.0))  # between files: no raise (the file is complete)
    with pytest.raises(RequestTimeLimit):
        late(Progress(0, 1, 0, 1, 10, "", 0.1))


# ------------------------------------------------------------------------------------------ no way in
def test_a_path_the_client_names_is_refused(app, uploads, astro_png, tmp_path):
    good = _put(uploads, "astronaut.png", astro_png)
    outside = tmp_path / "secret.png"
    outside.write_bytes(astro_png)
    link = uploads / "link.png"
    link.symlink_to(outside)
    for bad in ("/etc/passwd", str(outside), str(link), str(uploads / ".." / ".." / "secret.png"), {"path": "/etc/hostname"}):
        with pytest.raises(WebRequestError, match="refused"):
            app.restore([good, bad], model="embedded-64")
    assert LOADS == []  # refused before anything was loaded or restored
    assert not list(app.work_dir.glob("req-*"))


def test_a_model_that_is_not_on_the_allow_list_is_refused(app, uploads, astro_png, tmp_path):
    good = _put(uploads, "astronaut.png", astro_png)
    pth = _put(uploads, "prior.pth", b"\x80\x02weights")
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "prior.safetensors").write_bytes(b"x")
    for bad in (pth, str(uploads), str(folder), "../weights/embedded-64", "tiny", "", None):
        with pytest.raises(WebRequestError, match="refused: model"):
            app.restore([good], model=bad)
    assert LOADS == []


def test_models_dirs_make_the_allow_list(tmp_path):
    root = tmp_path / "models"
    for name in ("ffhq512", "other"):
        (root / name).mkdir(parents=True)
    (root / "ffhq512" / "prior.safetensors").write_bytes(b"x")
    (root / "empty").mkdir()
    (root / "difface").mkdir()
    (root / "difface" / "iddpm_ffhq512_ema500000.pth").write_bytes(b"x")
    app = WebApp(ServerConfig(models_dirs=(root,), upload_root=tmp_path / "up", work_dir=tmp_path / "work"))
    assert app.models["embedded-64"] == "embedded-64"
    assert app.models["ffhq512"] == str((root / "ffhq512").resolve())
    assert app.models["difface"] == str((root / "difface").resolve())
    assert "other" not in app.models and "empty" not in app.models
    s = app.settings(model="ffhq512")
    assert s.model == str((root / "ffhq512").resolve()) and s.save_maps
    with pytest.raises(WebRequestError):
        app.settings(model=str(root / "ffhq512"))  # the path itself is not a name on the list
    app.close()


def test_bad_settings_are_refused_with_a_reason(app):
    cases = {"mode": ("nonsense", "mode"), "fidelity": (1.5, "fidelity"), "seed": (-1, "seed"),
             "steps": ("ddim0", "steps"), "upscale": (9, "upscale"), "precision": ("int3", "precision"),
             "color_fix": ("sepia", "color-fix|colour")}
    for key, (value, msg) in cases.items():
        with pytest.raises(WebRequestError, match=msg):
            app.settings(model="embedded-64", **{key: value})
    assert app.settings(model="embedded-64", color_fix="model default").color_fix is None


def test_old_request_folders_are_swept(app, uploads, astro_png):
    res = app.restore([_put(uploads, "astronaut.png", astro_png)], model="embedded-64")
    assert res.request_dir.is_dir()
    assert app.sweep() == 0
    old = time.time() - app.config.keep_s - 5
    os.utime(res.request_dir, (old, old))
    assert app.sweep() == 1 and not res.request_dir.exists()


# ------------------------------------------------------------------------------------------ videos
@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory) -> bytes:
    """One second of video (8 frames of the astronaut's top, 320x240, panning 3 px a frame) with sound."""
    from test_video import make_video

    base = data.astronaut()[0:240, 100:420]
    frames = [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(8)]
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, audio_s=1.0).read_bytes()


def test_a_video_request_gives_the_restored_video_and_a_frame_to_compare(app, uploads, clip_mp4, astro_png):
    """A video among the uploads is restored by the job layer as the CLI restores it (restored_videos/, its record);
    the page gets its frame with the most faces beside the same input frame, and the video for the player; "part of
    the videos" restores a part; the page's handler shows the player, the API's outputs stay as they were."""
    from dynface import video

    f = _put(uploads, "clip.mp4", clip_mp4)
    p = _put(uploads, "astronaut.png", astro_png)
    res = app.restore([f, p], model="embedded-64", upscale=1.0)
    assert [r.status for r in res.results] == ["done", "done"]
    assert res.messages[0] == "✓ clip.mp4: video restored, 8 frame(s), 8 face(s) in 8 of them"
    label = "clip: frame 1 of 8, at 0:00 (1 face(s))"
    assert list(res.videos) == [label] and res.videos[label] == str(res.out_dir / "restored_videos" / "clip.mp4")
    assert label in res.comparisons and "astronaut: whole photo" in res.comparisons
    before, after = (np.asarray(Image.open(x), dtype=int) for x in res.comparisons[label])
    with video.VideoReader(f) as r:
        first = next(r.frames())[3].astype(int)
    assert before.shape == after.shape == first.shape
    assert np.abs(before - first).mean() < 1.5  # the input's frame 1
    assert np.abs(after - before)[60:140, 90:170].mean() > np.abs(after - before)[:40, :40].mean() + 3  # its face
    names = set(zipfile.ZipFile(res.zip_path).namelist())
    assert {"restored_videos/clip.mp4", "records/clip.json", "restored_imgs/astronaut.png"} <= names

    part = app.restore([f], model="embedded-64", upscale=1.0, clip="0.5-")
    assert part.messages[0] == "✓ clip.mp4: video restored, 4 frame(s), 4 face(s) in 4 of them"
    assert part.messages[1].startswith("note: the explanation and the per-face table are for photos")  # video only
    rec = part.results[0].record
    assert rec["clip"] == {"start_s": 0.5, "end_s": None}
    assert list(part.videos) == ["clip: frame 1 of 4, at 0:00.5 (1 face(s))"]  # the input's time

    out = app.ui_page([f], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 1.0, None, False, False, False, "")
    assert len(out) == 9 and out[-1]["visible"] and out[-1]["value"].endswith("clip.mp4")
    assert out[7]["videos"] == res.videos | {} or list(out[7]["videos"]) == [label]
    assert len(app.ui_restore([p], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 1.0, None)) == 8


def test_a_video_longer_than_the_server_restores_is_refused_with_a_part_to_give(tmp_path, uploads, clip_mp4,
                                                                                 astro_png):
    """Over ``max_video_s`` (the part asked for, else the whole video): its own line saying which part to give, and
    the request's other files are restored; a part within the limit is restored; a bad part is refused in the page's
    words; a part with no video uploaded is noted."""
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", max_video_s=0.5))
    try:
        f = _put(uploads, "clip.mp4", clip_mp4)
        p = _put(uploads, "astronaut.png", astro_png)
        res = app.restore([f, p], model="embedded-64", upscale=1.0)
        assert [r.status for r in res.results] == ["failed", "done"]
        assert res.messages[0] == ("✗ clip.mp4: 1.0 s of video: this server restores up to 0.5 s of a video per "
                                   "request (about 1.4 s per face and frame on 2 CPU cores); give a part under “part "
                                   "of the videos”, e.g. 0:00-0:00.5")
        assert not (res.request_dir / "in" / "clip.mp4").exists()
        res = app.restore([f], model="embedded-64", upscale=1.0, clip="0:00.25-0:00.75")
        assert res.messages[0] == "✓ clip.mp4: video restored, 4 frame(s), 4 face(s) in 4 of them"
        with pytest.raises(WebRequestError, match="the part of the videos takes START-END"):
            app.restore([f], model="embedded-64", clip="5")
        res = app.restore([p], model="embedded-64", upscale=1.0, clip="0-1")
        assert "note: the part of the videos (0-1) is for videos, and none was uploaded" in res.messages
    finally:
        app.close()


def test_videos_have_their_own_byte_cap(tmp_path, uploads, clip_mp4, astro_png):
    """A video is held to ``max_video_bytes``, a photo to ``max_upload_bytes`` (a phone video is megabytes a second)."""
    small = len(clip_mp4) - 1
    app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work", max_video_bytes=small,
                              max_upload_bytes=len(clip_mp4) * 4))
    try:
        res = app.restore([_put(uploads, "clip.mp4", clip_mp4)], model="embedded-64")
        assert res.messages[0] == (f"✗ clip.mp4: video too large ({len(clip_mp4) / 2**20:.2g} MB; this server "
                                   f"accepts up to {small / 2**20:.3g} MB)")
        app.close()
        app = WebApp(ServerConfig(upload_root=tmp_path / "uploads", work_dir=tmp_path / "work2",
                                  max_upload_bytes=len(clip_mp4) - 1))
        res = app.restore([_put(uploads, "clip.mp4", clip_mp4)], model="embedded-64", upscale=1.0, clip="0-0.25")
        assert res.messages[0].startswith("✓ clip.mp4: video restored, 2 frame(s)")
    finally:
        app.close()


# ------------------------------------------------------------------------------------------ the page and the CLI
def test_ui_handler_outputs_and_errors(app, uploads, astro_png):
    import gradio as gr

    f = _put(uploads, "astronaut.png", astro_png)
    out = app.ui_restore([f], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 2.0, "model default")
    status, compare, slider, gallery, explain, table, zipped, state = out
    assert "1 of 1 file(s) restored" in status and "✓ astronaut.png" in status
    assert compare.choices[0][0] == "astronaut: whole photo" and tuple(state["pairs"][compare.value]) == slider
    assert state["videos"] == {}
    assert len(gallery) == 1 and len(explain) == 5 and len(table) == 1 and zipped.endswith(".zip")
    with pytest.raises(gr.Error, match="refused"):
        app.ui_restore(["/etc/passwd"], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 2.0, None)
    with pytest.raises(gr.Error, match="no files"):
        app.ui_restore([], None, "embedded-64", "full", False, 0.5, "", 0, "auto", 2.0, None)


def test_page_queues_one_job_at_a_time_and_exposes_the_restore_api(app):
    from dynface.webapp import build_app

    demo = build_app(app)
    fns = [f for f in demo.fns.values() if f.api_name == "restore"]
    assert len(fns) == 1 and fns[0].concurrency_limit == 1
    assert [f.api_name for f in demo.fns.values() if f.api_visibility == "public"] == ["restore"]


def test_the_api_page_names_every_parameter_and_output(app):
    """The "Use via API" page: the handler's parameter names, every output by its label (the status was "value_25"),
    a plain description (the docstring's ``files`` showed its backquotes)."""
    from dynface.webapp import build_app

    ep = build_app(app).get_api_info()["named_endpoints"]["/restore"]
    assert [p["parameter_name"] for p in ep["parameters"]] == [
        "files", "pasted", "model", "mode", "aligned", "fidelity", "steps", "seed", "precision", "upscale", "color_fix",
        "turned", "strip_metadata", "grain", "clip", "dust", "descreen"]
    labels = [r["label"] for r in ep["returns"]]
    assert labels[:3] == ["status", "compare", "before / after"] and len(labels) == 7
    assert not any(str(x).startswith(("value_", "parameter_", "param_"))
                   for x in labels + [p["label"] for p in ep["parameters"]]), labels
    assert ep["description"].startswith("Restore the faces") and "``" not in ep["description"]


BAD_API_VALUES = {  # parameter: (value, what the refusal says)
    "fidelity": (5, r"fidelity must be a number in \[0, 1\], got 5"),
    "seed": (-1, r"seed must be a whole number .*got -1"),
    "upscale": (99, r"upscale must be between 1 and 4, got 99"),
    "mode": ("bogus", r"unknown mode 'bogus'; choose from full"),
    "precision": ("int3", r"precision must be one of auto, .*got 'int3'"),
    "model": ("/etc/passwd", r"refused: model '/etc/passwd' is not one this server offers"),
    "steps": ("-1", r"steps: unusable steps '-1'"),
    "clip": ("1:75-", r"the part of the videos: not a time: '1:75'"),
}


def test_out_of_range_api_values_are_refused_with_a_reason_and_one_log_line(app, uploads, astro_png, capfd):
    """Gradio's own range and choice checks (Slider, Number, Dropdown) raised gr.Error with print_exception on: a
    traceback in the server log for every API call with, say, fidelity 5, and "Value 5 is greater than maximum value
    1.0." for the client. The components now hand the value over as it is, the app refuses it with a reason that
    names the setting (no traceback) and the log gets one line per refused request."""
    import gradio as gr

    from dynface.webapp import build_app

    demo = build_app(app)
    (fn,) = [f for f in demo.fns.values() if f.api_name == "restore"]
    names = ["files", "pasted", "model", "mode", "aligned", "fidelity", "steps", "seed", "precision", "upscale",
             "color_fix", "turned", "strip_metadata", "grain", "clip", "dust", "descreen"]
    good = dict(zip(names, [[_put(uploads, "astronaut.png", astro_png)], None, "embedded-64", "full", False, 0.5, "",
                            0, "auto", 2.0, "model default", False, False, False, "", False, False], strict=True))
    for blk in fn.inputs:  # what lets their preprocess hand the value over as it is (nothing to round or map)
        if isinstance(blk, gr.Slider | gr.Number):
            assert blk.precision is None
        if isinstance(blk, gr.Dropdown):
            assert blk.type == "value" and not blk.multiselect
    capfd.readouterr()
    for key, (value, msg) in BAD_API_VALUES.items():
        values = {**good, key: value}
        # as Gradio does: each component's preprocess, then the handler (files and pasted: the cache's paths)
        args = [values[n] if n in ("files", "pasted") else blk.preprocess(values[n])
                for n, blk in zip(names, fn.inputs, strict=True)]
        with pytest.raises(gr.Error, match=msg) as e:
            fn.fn(*args, request=None)
        assert e.value.print_exception is False  # Gradio prints no traceback for it
        out, err = capfd.readouterr()
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dynface serve: refused a request: "), err
        assert "Traceback" not in out + err
    # a client's newline does not make a second log line
    with pytest.raises(gr.Error):
        app.ui_restore([], None, "a\nb", "full", False, 0.5, "", 0, "auto", 2.0, None)
    assert len(capfd.readouterr().err.splitlines()) == 1


def test_serve_refuses_a_remote_bind_without_the_flag(capsys):
    from dynface.cli import main
    from dynface.commands.serve import is_local_host

    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert not is_local_host("0.0.0.0") and not is_local_host("192.168.1.20")
    assert main(["serve", "--host", "0.0.0.0", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote" in err and "Traceback" not in err


def test_serve_restarts_on_the_port_a_stopped_server_left_in_time_wait():
    """A server that answered requests leaves its closed connections in TIME_WAIT for a minute; restarting it on
    the same port must work (uvicorn binds with SO_REUSEADDR), while a port another server listens on is refused."""
    import socket

    from dynface.commands.serve import cannot_listen

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    assert cannot_listen("127.0.0.1", port)  # in use: the reason, e.g. "Address already in use"
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server closes first, as after a response: its side goes to TIME_WAIT
    cli.recv(1)
    cli.close()
    srv.close()
    plain = socket.socket()
    try:
        plain.bind(("127.0.0.1", port))
        in_time_wait = False
    except OSError:
        in_time_wait = True
    finally:
        plain.close()
    assert in_time_wait  # what the old probe (no SO_REUSEADDR) refused
    assert cannot_listen("127.0.0.1", port) is None


def test_job_notes_name_the_page_s_controls_or_say_it_has_none():
    """The job layer's notes name CLI flags; the page shows them with its own controls' names, and says so where it
    has no such control (--input-template)."""
    from dynface.webapp import _for_the_page

    assert _for_the_page("--fidelity 0: no guidance") == "fidelity 0: no guidance"
    assert "untick “inputs are aligned face crops”" in _for_the_page("not a face crop: leave out --aligned")
    note = _for_the_page("512x512: if this crop is FFHQ-aligned, restore it with --input-template ffhq512; it was taken")
    assert "the command line's --input-template ffhq512 (this page has no framing control" in note
    assert "; the command line's --detect-side 6000: about 80 px" in _for_the_page("faces smaller than about 120 px in this "
        "6000x4000 photo are missed (detection ran on a copy 2000 px on its longer side; --detect-side 6000: about 80 px")
    from dynface.jobs import NO_FACE_HINT_VIDEO

    hint = _for_the_page(NO_FACE_HINT_VIDEO)  # every flag named: the page's control, or the command line's
    assert "“also look for faces lying sideways” for faces on their side" in hint
    assert "the command line's --detector cnn" in hint and "the command line's --keep-faceless" in hint
    assert _for_the_page("x; the command line's --detect-side 5") == "x; the command line's --detect-side 5"


def test_upload_names_keep_their_letters():
    """Accented names were mangled everywhere ("Grand-mère été 1962.jpg" -> Grand-m_re_t_1962): letters of any script
    stay, what could make a path or a control character does not."""
    from dynface.webapp import _safe_name

    assert _safe_name("Grand-mère été 1962.jpg") == "Grand-mère_été_1962.jpg"
    assert _safe_name("Grand-me\u0300re.png") == "Grand-mère.png"  # NFC: one code point per letter
    assert _safe_name("../../etc/passwd") == "passwd" and _safe_name("семья 1950.png") == "семья_1950.png"
    assert _safe_name("a\u202egnp.exe") == "a_gnp.exe" and _safe_name("照片.JPG") == "照片.JPG"
