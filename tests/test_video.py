"""Videos: dynface.video (reading upright frames, writing H.264 with the sound, --clip) and ``dynface restore`` on
video files (the job layer's _process_video), with the fake restorer of test_restore_cli (it brightens each face by
10 levels)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

av = pytest.importorskip("av")

from dynface import video  # noqa: E402
from dynface.cli import main  # noqa: E402

HERE = Path(__file__).resolve().parent
RATE = 44100


def make_video(path: Path, frames: list[np.ndarray], rate: int = 8, pts: list[int] | None = None,
               audio_s: float | None = None, rotation: int | None = None, tone_from: float = 0.0,
               gop: int | None = None, interlaced: bool = False) -> Path:
    """An H.264 MP4/MOV/MPEG-TS of ``frames`` (all one size), at ``rate`` fps (``pts``: frame times in 1/rate s),
    with ``audio_s`` seconds of sound (a 440-Hz tone from ``tone_from`` s, silence before), stored with a display
    ``rotation``; ``gop``: frames between key frames; ``interlaced``: coded as interlaced (top field first)."""
    fmt = {".mov": "mov", ".ts": "mpegts"}.get(path.suffix, "mp4")
    c = av.open(str(path), "w", format=fmt)
    opts = {"g": str(gop)} if gop else {}
    if interlaced:
        opts["x264-params"] = "interlaced=1:tff=1"
    v = c.add_stream("libx264", rate=rate, options=opts)
    v.height, v.width = frames[0].shape[:2]
    v.pix_fmt = "yuv420p"
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio_s:
        a = c.add_stream("aac", rate=RATE)
        a.layout = "stereo"
    for i, fr in enumerate(frames):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")
        f.pts = i if pts is None else pts[i]
        for p in v.encode(f):
            c.mux(p)
    for p in v.encode():
        c.mux(p)
    if a is not None:
        t = np.arange(int(RATE * audio_s)) / RATE
        tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (t >= tone_from)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            ch = tone[k : k + 1024]
            f = av.AudioFrame.from_ndarray(np.stack([ch, ch]), format="fltp", layout="stereo")
            f.sample_rate, f.pts = RATE, k
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    c.close()
    return path


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        return sum(f.samples for f in c.decode(c.streams.audio[0])) / c.streams.audio[0].codec_context.sample_rate


@pytest.fixture(scope="module")
def face_frames() -> list[np.ndarray]:
    """Eight 320x240 frames of the astronaut (face about 100 px), panning 3 px a frame."""
    base = data.astronaut()[0:240, 100:420]
    return [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(8)]


# ------------------------------------------------------------------------------------------ the module
@pytest.mark.parametrize("text,want", [("75", (75.0, None)), ("1:10-1:25", (70.0, 85.0)), ("70.5-", (70.5, None)),
                                       ("-30", (0.0, 30.0)), ("0:01:10-0:01:12.5", (70.0, 72.5)), ("", (0.0, None))])
def test_clip_times(text, want):
    if "-" not in text and text:
        with pytest.raises(ValueError, match="START-END"):
            video.parse_clip(text)
        return
    c = video.parse_clip(text)
    assert (c.start, c.end) == want


@pytest.mark.parametrize("text", ["10-5", "a-b", "1:2:3:4-", "5-5"])
def test_bad_clips_say_why(text):
    with pytest.raises(ValueError, match="not a time|not after its start"):
        video.parse_clip(text)


def test_frames_keep_their_times_and_the_sound_its_clip(tmp_path, face_frames):
    """Variable frame times (CCTV drops frames) are kept, an odd size is made even, and --clip takes the frames and
    the sound of its seconds only."""
    src = make_video(tmp_path / "src.mp4", face_frames, pts=[0, 1, 2, 4, 5, 8, 9, 10], audio_s=1.5)
    with video.VideoReader(src) as r:
        assert (r.info.width, r.info.height, r.info.fps > 0, r.info.audio) == (320, 240, True, "aac")
        got = list(r.frames())
        assert [round(t * 8) for _, t, _, _ in got] == [0, 1, 2, 4, 5, 8, 9, 10]
        part = list(r.frames(video.parse_clip("0.5-1.2")))
        assert [round(t * 8) for _, t, _, _ in part] == [4, 5, 8, 9]
        w = video.VideoWriter(tmp_path / "out.mp4", 319, 239, r.rate, r.stream.time_base, (src, part[0][1], 1.2))
        first = part[0][2]
        for _, _, pts, rgb in part:
            w.write(rgb[:239, :319], pts - first)
        w.finish()
    with video.VideoReader(tmp_path / "out.mp4") as r:
        back = list(r.frames())
        assert (r.info.width, r.info.height) == (320, 240)
    assert [round(t * 8) for _, t, _, _ in back] == [0, 1, 4, 5]
    d = back[1][3][:239, :319].astype(int) - part[1][3][:239, :319]
    assert np.abs(d).mean() < 3 and np.abs(d.mean((0, 1))).max() < 0.5  # CRF 16: near lossless, no colour shift
    assert abs(audio_seconds(tmp_path / "out.mp4") - 0.7) < 0.06


@pytest.mark.parametrize("gop", [8, 1000])
def test_clips_of_an_mpeg_ts_count_from_its_first_frame(tmp_path, face_frames, gop):
    """CCTV exports are often MPEG-TS: its times do not start at 0 and it has no index, so a seek lands after
    the key frame it needs: --clip gave later frames, or none (video audit). Clip times count from the first frame,
    and a seek that lands past the start reads from the beginning instead."""
    frames = [face_frames[i % 8] for i in range(40)]
    src = make_video(tmp_path / f"cctv{gop}.ts", frames, gop=gop)
    with video.VideoReader(src) as r:
        assert r.t0 > 0.1  # MPEG-TS's own start (this muxer: 0.25 s)
        assert [round(t * 8) for _, t, _, _ in r.frames(video.parse_clip("1-2"))] == list(range(8, 16))
        got = list(r.frames(video.parse_clip("2.3-3")))
    assert [round(t * 8) for _, t, _, _ in got] == [19, 20, 21, 22, 23]
    assert np.abs(got[0][3].astype(int) - frames[19]).mean() < 4


@pytest.mark.usefixtures("_fake")
def test_the_sound_of_a_clip_starts_with_its_first_frame(tmp_path, face_frames):
    """--clip 0.9-2 starts the picture at the first frame at or after 0.9 s (1.0 s at 8 fps); the sound was cut from
    0.9 s, 0.1 s late against the picture (video audit). A tone that starts at 1.0 s now starts the output."""
    src = make_video(tmp_path / "sync.mp4", [face_frames[i % 8] for i in range(24)], audio_s=3.0, tone_from=1.0)
    assert main(["restore", "-q", "-i", str(src), "-o", str(tmp_path / "o"), "-s", "1", "--clip", "0.9-2"]) == 0
    with av.open(str(tmp_path / "o" / "restored_videos" / "sync.mp4")) as c:
        sound = np.concatenate([f.to_ndarray()[0] for f in c.decode(c.streams.audio[0])])
    onset = np.argmax(np.abs(sound) > 0.05) / RATE  # the tone's start (0.1 s before the fix)
    assert onset < 0.01 and abs(len(sound) / RATE - 1.0) < 0.06


def test_a_video_stored_sideways_is_read_upright(tmp_path, face_frames):
    """Phones store an upright video's frames sideways with a display rotation: read upright (faces are searched
    upright) and the record's size is the upright one."""
    side = [np.ascontiguousarray(np.rot90(f, 1)) for f in face_frames[:2]]
    src = make_video(tmp_path / "phone.mov", side, rotation=-90)
    with video.VideoReader(src) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (320, 240, -90)
        (_, _, _, a), (_, _, _, b) = r.frames()
    assert a.shape == (240, 320, 3) and np.abs(a.astype(int) - face_frames[0]).mean() < 4


def test_what_is_not_a_video_is_said_in_a_line(tmp_path):
    (tmp_path / "x.mp4").write_text("not a video\n")
    with pytest.raises(video.VideoError, match="not a readable video"):
        video.VideoReader(tmp_path / "x.mp4")


# ------------------------------------------------------------------------------------------ dynface restore
@pytest.fixture()
def _fake(monkeypatch):
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_restore_cli:make_fake_restorer")
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_LOG", raising=False)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def _restore(*argv) -> int:
    return main(["restore", "-q", *map(str, argv)])


@pytest.mark.usefixtures("_fake")
def test_restore_a_video(tmp_path, face_frames, capsys):
    """A video named as input: every frame's face restored, the frames' times and the sound kept, a record and a
    manifest line; --clip restores a part; a second run with --skip-existing skips it; a bad video fails in a line
    while the others are restored; videos in a folder wait for --videos."""
    d = tmp_path / "in"
    d.mkdir()
    clip = make_video(d / "clip.mp4", face_frames, audio_s=1.0)
    wall = make_video(d / "wall.mkv", [np.full((120, 160, 3), 120, np.uint8)] * 3)  # no face in any frame
    (d / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # an MP4 header and nothing else
    out = tmp_path / "out"
    assert _restore("-i", clip, d / "bad.mp4", wall, "-o", out, "-s", "1") == 1
    text = capsys.readouterr().out
    assert "3 input(s): 1 restored" in text and "bad.mp4: an incomplete MP4" in text
    assert "wall.mkv: no face found" in text and "no face in any of its 3 frame(s)" in text
    assert sorted(p.name for p in (out / "restored_videos").iterdir()) == ["clip.mp4"]  # no temporary file left
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["records", "restored_videos"]  # no empty photo folders
    rec = json.loads((out / "records" / "clip.json").read_text())
    assert (rec["frames"], rec["faces_per_frame"], rec["num_faces"], rec["audio_kept"]) == (8, [1] * 8, 8, True)
    assert rec["video"]["fps"] == 8 and rec["restored_video"] == "restored_videos/clip.mp4" and rec["clip"] is None
    assert rec["deinterlaced"] is False
    with video.VideoReader(out / "restored_videos" / "clip.mp4") as r:
        got = [f for _, _, _, f in r.frames()]
    assert len(got) == 8 and abs(audio_seconds(out / "restored_videos" / "clip.mp4") - 1.0) < 0.06
    raw = (out / "restored_videos" / "clip.mp4").read_bytes()
    assert 0 < raw.find(b"moov") < raw.find(b"mdat")  # its index first: it plays while it loads
    diff = got[3].astype(int) - face_frames[3]
    assert diff[70:130, 100:160].mean() > 5 and abs(diff[:40, :40].mean()) < 2  # the face (+10), not the wall
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {x["stem"]: x["status"] for x in lines} == {"clip": "done", "bad": "failed", "wall": "no_face"}

    assert _restore("-i", clip, "-o", out, "-s", "1", "--skip-existing") == 0
    assert "1 skipped (complete)" in capsys.readouterr().out

    assert _restore("-i", clip, "-o", out, "-s", "1", "--clip", "0.5-", "--skip-existing") == 0  # another clip: again
    rec = json.loads((out / "records" / "clip.json").read_text())
    assert (rec["frames"], rec["clip"]) == ((4, {"start_s": 0.5, "end_s": None}))
    assert abs(audio_seconds(out / "restored_videos" / "clip.mp4") - 0.5) < 0.06

    assert _restore("-i", d, "-o", tmp_path / "folder", "-s", "1") == 2  # videos only: none restored from a folder
    assert "3 video(s), restored only with --videos or when named" in capsys.readouterr().err
    assert _restore("-i", d, "-o", tmp_path / "folder", "-s", "1", "--videos") == 1
    assert (tmp_path / "folder" / "restored_videos" / "clip.mp4").is_file()


@pytest.mark.usefixtures("_fake")
def test_video_usage_errors(tmp_path, face_frames, capsys):
    clip = make_video(tmp_path / "clip.mp4", face_frames[:2])
    assert _restore("-i", clip, "-o", tmp_path / "o", "--clip", "5-2") == 2
    assert "not after its start" in capsys.readouterr().err
    assert _restore("-i", clip, "-o", tmp_path / "o", "--aligned") == 2
    assert "--aligned is for face crops" in capsys.readouterr().err
    assert _restore("-i", clip, "-o", tmp_path / "o", "--clip", "3-4") == 1  # past its end: said, not a traceback
    assert "no frame in --clip 3-4 (the video is 0.2 s long)" in capsys.readouterr().out
    from PIL import Image

    Image.fromarray(face_frames[0]).save(tmp_path / "still.png")
    assert _restore("-i", tmp_path / "still.png", "-o", tmp_path / "p", "--clip", "3-4", "-s", "1") == 0
    assert "note: --clip 3-4 is for videos, and none is among the inputs" in capsys.readouterr().err


@pytest.mark.usefixtures("_fake")
def test_a_long_video_shows_progress_in_a_log(tmp_path, face_frames, capsys, monkeypatch):
    """Without a terminal (an overnight run's log) a video got one line when it was done, hours later: now a line
    every PLAIN_EVERY_S with its frame."""
    from dynface.commands import restore

    monkeypatch.setattr(restore, "PLAIN_EVERY_S", 0.0)
    clip = make_video(tmp_path / "clip.mp4", face_frames[:3])
    assert main(["restore", "-i", str(clip), "-o", str(tmp_path / "o"), "-s", "1"]) == 0
    err = capsys.readouterr().err
    assert "[1/1] at clip.mp4 frame 2/3" in err and "[1/1] done" in err


def test_a_cut_off_mp4_is_named_as_such(tmp_path, face_frames):
    """A half-copied phone or CCTV MP4 lacks its index (written last): "not a readable video (Invalid data ...)" said
    nothing of it (video audit); and times after a colon are under 60 ("1:75" was 135 s)."""
    whole = make_video(tmp_path / "whole.mp4", face_frames)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"moov") - 4])
    with pytest.raises(video.VideoError, match="an incomplete MP4: its index .* is missing"):
        video.VideoReader(cut)
    for bad in ("1:75", "1:60:00"):
        with pytest.raises(ValueError, match="under 60"):
            video.parse_time(bad)
    assert video.parse_time("1:59.5") == 119.5


@pytest.mark.usefixtures("_fake")
def test_a_cut_off_download_is_said_and_its_missing_sound_not_claimed(tmp_path, face_frames):
    """An index-first MP4 cut at 60 % (a partial download; audit): restored from what can be read, with a note saying
    how many frames its index lists, and no "audio_kept" for sound that is not there."""
    whole = make_video(tmp_path / "whole.mp4", face_frames, audio_s=1.0)
    assert _restore("-i", whole, "-o", tmp_path / "o", "-s", "1") == 0
    data = (tmp_path / "o" / "restored_videos" / "whole.mp4").read_bytes()  # index first: restored videos are so
    assert data.index(b"moov") < data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(0.6 * len(data))])
    assert _restore("-i", cut, "-o", tmp_path / "c", "-s", "1") == 0
    rec = json.loads((tmp_path / "c" / "records" / "cut.json").read_text())
    assert rec["frames"] < 8 and rec["video"]["frames"] == 8
    assert any(n.startswith(f"only {rec['frames']} of the 8 frames its index lists could be read") for n in rec["notes"])
    with av.open(str(tmp_path / "c" / "restored_videos" / "cut.mp4")) as c:
        has_sound = bool(c.streams.audio) and any(True for _ in c.demux(c.streams.audio[0]) if _.size)
    assert rec["audio_kept"] is has_sound
    if not has_sound:
        assert any("its sound track gave no sound" in n for n in rec["notes"])


@pytest.mark.usefixtures("_fake")
def test_a_videos_recording_tags_are_kept_unless_stripped(tmp_path, face_frames):
    """Recording date, place and camera carry over (as a photo's EXIF does; a restored home video was filed under the
    day it was restored: audit), with a comment saying what the video now is; --strip-metadata drops them."""
    src = make_video(tmp_path / "phone.mov", face_frames[:3])
    tags = {"creation_time": "2019-07-14T10:00:00.000000Z", "location": "+48.8584+002.2945/", "make": "Apple",
            "model": "iPhone 12", "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/"}
    with av.open(str(src)) as c, av.open(str(tmp_path / "tagged.mov"), "w", format="mov",
                                         options={"movflags": "use_metadata_tags"}) as o:  # as an iPhone writes them
        for k, v in tags.items():
            o.metadata[k] = v
        o.add_stream_from_template(c.streams.video[0])
        for p in c.demux(c.streams.video[0]):
            if p.dts is not None:
                p.stream = o.streams.video[0]
                o.mux(p)
    assert _restore("-i", tmp_path / "tagged.mov", "-o", tmp_path / "o", "-s", "1") == 0
    with av.open(str(tmp_path / "o" / "restored_videos" / "tagged.mp4")) as c:
        got = dict(c.metadata)
    assert {k: got.get(k) for k in tags} == tags and got["comment"].startswith("faces restored by a generative model")
    rec = json.loads((tmp_path / "o" / "records" / "tagged.json").read_text())
    assert set(tags) <= set(rec["metadata_kept"])
    assert _restore("-i", tmp_path / "tagged.mov", "-o", tmp_path / "s", "-s", "1", "--strip-metadata") == 0
    with av.open(str(tmp_path / "s" / "restored_videos" / "tagged.mp4")) as c:
        got = dict(c.metadata)
    assert not set(tags) & set(got) and "comment" in got
    assert _restore("-i", tmp_path / "tagged.mov", "-o", tmp_path / "l", "-s", "1", "--strip-location") == 0
    with av.open(str(tmp_path / "l" / "restored_videos" / "tagged.mp4")) as c:
        got = dict(c.metadata)
    assert {k: got.get(k) for k in tags if "location" not in k} == {k: v for k, v in tags.items() if "location" not in k}
    assert not [k for k in got if "location" in k]  # where it was filmed: gone; when and with what: kept


@pytest.mark.usefixtures("_fake")
def test_a_face_the_detector_misses_for_a_frame_is_followed(tmp_path, face_frames, monkeypatch):
    """CCTV: the detector missed a noisy face in some frames, which then jumped between restored and raw (video
    audit). A face found up to FOLLOW_S before is followed into the frame (its points predicted again, the CNN
    confirming a face there); one that has left the picture is not."""
    from dynface import faces as faces_mod

    detect, calls = faces_mod.detect_faces, [0]

    def misses_some(img, *a, **kw):
        calls[0] += 1
        return [] if calls[0] in (3, 6) else detect(img, *a, **kw)  # frames 2 and 5

    monkeypatch.setattr(faces_mod, "detect_faces", misses_some)
    wall = np.full_like(face_frames[0], 150)
    clip = make_video(tmp_path / "cctv.mp4", face_frames[:6] + [wall, wall])
    assert main(["restore", "-q", "-i", str(clip), "-o", str(tmp_path / "o"), "-s", "1"]) == 0
    rec = json.loads((tmp_path / "o" / "records" / "cctv.json").read_text())
    assert rec["faces_per_frame"] == [1, 1, 1, 1, 1, 1, 0, 0]  # the wall: the face is not followed onto it
    assert rec["followed_per_frame"] == [0, 0, 1, 0, 0, 1, 0, 0]
    assert "2 face(s) in 2 frame(s) followed from the frame before" in " ".join(rec["notes"])
    with video.VideoReader(tmp_path / "o" / "restored_videos" / "cctv.mp4") as r:
        got = [f for _, _, _, f in r.frames()]
    assert (got[2].astype(int) - face_frames[2])[70:130, 100:160].mean() > 5  # restored, as its neighbours


@pytest.mark.usefixtures("_fake")
def test_the_bar_of_a_video_stops_at_its_end(tmp_path, face_frames):
    """Each frame moves the bar by 1/frames; the sum went past the input's end (tqdm warned "clamping frac" in a
    terminal, video audit). Frames past the file's estimate move it no further."""
    from dynface import jobs

    clip = make_video(tmp_path / "c.mp4", [face_frames[i % 8] for i in range(23)])
    seen: list[float] = []
    jobs.run_job([clip], tmp_path / "o", jobs.RestoreSettings(upscale=1),
                 progress=lambda p: seen.append(p.fraction))
    assert max(seen) <= 1.0 and seen[-1] == 1.0 and len(set(seen)) > 10


def _combing(x: np.ndarray) -> float:
    """Each row's distance from the mean of its neighbours: fields from two moments interleaved comb."""
    x = x.astype(float)
    return float(np.abs(x[1:-1] - (x[:-2] + x[2:]) / 2).mean())


@pytest.mark.usefixtures("_fake")
def test_an_interlaced_video_is_deinterlaced(tmp_path, face_frames):
    """A home video transferred from tape is interlaced: its two fields are 1/50 s apart, so moving edges comb, and a
    clean face pasted into a combed frame looked cut out (video audit). Frames marked interlaced go through bwdif."""
    frames = []
    for i in range(8):
        a, b = np.roll(face_frames[0], 4 * i, axis=1), np.roll(face_frames[0], 4 * i + 2, axis=1)
        f = a.copy()
        f[1::2] = b[1::2]  # the second field, later
        frames.append(f)
    src = make_video(tmp_path / "tape.mp4", frames, rate=25, interlaced=True)
    with video.VideoReader(src) as r:
        got = [f for _, _, _, f in r.frames()]
        assert r.deinterlaced and len(got) == 8
    assert _combing(got[3]) < 0.4 * _combing(frames[3])
    assert main(["restore", "-q", "-i", str(src), "-o", str(tmp_path / "o"), "-s", "1"]) == 0
    rec = json.loads((tmp_path / "o" / "records" / "tape.json").read_text())
    assert rec["deinterlaced"] is True and rec["frames"] == 8 and "deinterlaced" in " ".join(rec["notes"])


def test_the_faces_of_frames_share_restorer_calls(tmp_path, face_frames, tiny_random, monkeypatch):
    """With a restorer that takes per-face seeds (fp32 on a CPU), the faces of consecutive frames go to the restorer
    together, --batch-size faces a call (photos' faces batch for ×1.7 the speed), and the video comes back as with
    one face per call (--exact), frames in order."""
    from dynface import jobs

    sizes: list[int] = []
    restore = jobs._Tracker.restore

    def counted(self, restorer, faces, *a, **kw):
        sizes.append(len(faces))
        return restore(self, restorer, faces, *a, **kw)

    monkeypatch.setattr(jobs._Tracker, "restore", counted)
    clip = make_video(tmp_path / "c.mp4", face_frames[:6])
    got = {}
    for name, exact in (("shared", False), ("alone", True)):
        sizes.clear()
        settings = jobs.RestoreSettings(upscale=1, batch_size=4, exact=exact, threads=1)  # threads: not the machine's load
        summary = jobs.run_job([clip], tmp_path / name, settings, restorer=tiny_random.with_config(steps="ddim10"))
        assert summary.exit_code == 0
        assert sizes == ([4, 2] if not exact else [1] * 6)
        with video.VideoReader(tmp_path / name / "restored_videos" / "c.mp4") as r:
            got[name] = [f.astype(int) for _, _, _, f in r.frames()]
    assert len(got["shared"]) == 6
    assert max(np.abs(a - b).max() for a, b in zip(got["shared"], got["alone"], strict=True)) <= 2
    assert np.abs(got["shared"][5] - face_frames[5]).mean() < np.abs(got["shared"][5] - face_frames[0]).mean()


@pytest.mark.usefixtures("_fake")
def test_a_still_face_is_fused_over_frames_before_it_is_restored(tmp_path, face_frames, capsys):
    """--fuse-frames (dynface.temporal): a small still face under fresh noise in each frame is averaged with its crops
    in the frames before, so less of the noise reaches the restorer and the restored video; 0 restores each frame on
    its own. A face larger than the model is left as it is (MIN_SCALE). The record says what was fused; an
    out-of-range value is a usage error."""
    import cv2

    rng = np.random.default_rng(0)
    big = [np.clip(face_frames[0] + rng.normal(0, 14, face_frames[0].shape), 0, 255).astype(np.uint8) for _ in range(4)]
    assert main(["restore", "-q", "-i", str(make_video(tmp_path / "big.mp4", big)), "-o", str(tmp_path / "b"), "-s", "1"]) == 0
    rec = json.loads((tmp_path / "b" / "records" / "big.json").read_text())
    assert rec["fused"]["faces_fused"] == 0 and rec["fused"]["faces_larger"] == 4  # a ~100-px face, a 64-px model
    # the face at ~50 px: its crop (the fake model's 64 px) enlarges it
    base = cv2.resize(face_frames[0], (160, 120), interpolation=cv2.INTER_AREA)
    noisy = [np.clip(base + rng.normal(0, 14, base.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    clip = make_video(tmp_path / "still.mp4", noisy)
    assert main(["restore", "-q", "-i", str(make_video(tmp_path / "clean.mp4", [base] * 8)), "-o", str(tmp_path / "c"),
                 "-s", "1", "--fuse-frames", "0"]) == 0
    with video.VideoReader(tmp_path / "c" / "restored_videos" / "clean.mp4") as r:
        ref = [f for _, _, _, f in r.frames()][4].astype(float)  # the clean frame through the same path
    errs = {}
    for k in (0, 4):
        out = tmp_path / f"o{k}"
        assert main(["restore", "-q", "-i", str(clip), "-o", str(out), "-s", "1", "--fuse-frames", str(k)]) == 0
        rec = json.loads((out / "records" / "still.json").read_text())
        assert rec["fused"]["frames"] == k and rec["settings"]["flags"]["fuse_frames"] == k
        assert rec["faces_per_frame"] == [1] * 8
        with video.VideoReader(out / "restored_videos" / "still.mp4") as r:
            got = [f for _, _, _, f in r.frames()]
        # the face's inside, in the frames with 4 frames before them
        face = np.array([g[30:70, 55:85] for g in got[3:]], dtype=float)
        errs[k] = (np.sqrt(np.mean((face[1:] - ref[30:70, 55:85]) ** 2)), face.std(0).mean())  # error, flicker
        if k:
            assert rec["fused"]["faces_fused"] == 7 and rec["fused"]["mean_weight"] > 2
            assert 2 < rec["fused"]["noise_levels"] < 14
        else:
            assert rec["fused"] == {"frames": 0, "faces_fused": 0, "faces_larger": 0, "mean_weight": None,
                                    "noise_levels": None}
    # measured: error 7.46 -> 6.19 levels, flicker 5.02 -> 3.00
    assert errs[4][0] < 0.9 * errs[0][0] and errs[4][1] < 0.7 * errs[0][1], errs
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["restore", "-i", str(clip), "-o", str(tmp_path / "bad"), "--fuse-frames", "17"])
    assert e.value.code == 2 and "--fuse-frames: must be between 0 and 16" in capsys.readouterr().err
    from dynface import jobs

    with pytest.raises(jobs.UsageError, match="--fuse-frames must be a whole number from 0 to 16"):
        jobs.check_settings(jobs.RestoreSettings(fuse_frames=-1))


SEEDS_SEEN: list[int] = []


class _SeededFake:
    """The fake restorer taking per-face seeds (as DynFaceRestorer does), which it notes in SEEDS_SEEN."""

    size, template_name, name = 64, "utkface64", "seeded-fake"

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, seeds=None):
        from types import SimpleNamespace

        import cv2

        SEEDS_SEEN.extend(seeds)
        imgs = [cv2.resize(np.asarray(f, np.uint8), (64, 64), interpolation=cv2.INTER_AREA) for f in faces]
        return SimpleNamespace(images=imgs, records=[{"seed": s} for s in seeds], maps={})


def make_seeded_fake(*a, **kw):
    return _SeededFake()


def test_a_face_keeps_its_seed_when_another_comes_in_on_its_left(tmp_path, monkeypatch):
    """Seeds follow faces, not positions: the astronaut alone for 3 frames, then a second face on her left. Seeded by
    position (left to right) she took the newcomer's old seed and hers changed at that frame (a jump in her restored
    face); seeded by her track she keeps it."""
    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_video:make_seeded_fake")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    face = data.astronaut()[0:240, 120:300]
    other = np.ascontiguousarray(face[:, ::-1])
    wall = np.full_like(face, 128)
    frames = [np.ascontiguousarray(np.concatenate([wall if k < 3 else other, face], axis=1)) for k in range(6)]
    clip = make_video(tmp_path / "two.mp4", frames)
    SEEDS_SEEN.clear()
    assert main(["restore", "-q", "-i", str(clip), "-o", str(tmp_path / "o"), "-s", "1", "--fuse-frames", "0"]) == 0
    rec = json.loads((tmp_path / "o" / "records" / "two.json").read_text())
    assert rec["faces_per_frame"] == [1, 1, 1, 2, 2, 2]
    hers = SEEDS_SEEN[:3] + SEEDS_SEEN[4::2]  # frames 3-5: the newcomer (left) first
    newcomer = SEEDS_SEEN[3::2]
    assert len(set(hers)) == 1 and len(set(newcomer)) == 1 and hers[0] != newcomer[0]


@pytest.mark.usefixtures("_fake")
def test_a_small_soft_face_hog_misses_is_found_in_a_video(tmp_path, monkeypatch):
    """A video's frames are searched as photos are with --detector auto, without the CNN's look at the whole frame:
    HOG's near misses checked by the CNN. A 52-px soft face (a CCTV still's) HOG scores below its threshold is found
    and restored; --detector hog misses it. A near miss the CNN turned down is not checked again for REFUSED_HOLD_S:
    in 12 identical frames at 8 fps the CNN looks twice (the first frame, and the first after a second), not 12
    times."""
    import cv2

    from dynface import faces as faces_mod

    crop = np.ascontiguousarray(data.astronaut()[20:220, 110:310])
    small = cv2.GaussianBlur(cv2.resize(crop, (52, 52), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    frame = np.ascontiguousarray(cv2.copyMakeBorder(small, 94, 94, 134, 134, cv2.BORDER_REPLICATE))  # 320x240
    clip = make_video(tmp_path / "soft.mp4", [frame] * 4)
    counts = {}
    for det in ("auto", "hog"):
        assert main(["restore", "-q", "-i", str(clip), "-o", str(tmp_path / det), "-s", "1", "--detector", det,
                     "--keep-faceless"]) == 0
        counts[det] = json.loads((tmp_path / det / "records" / "soft.json").read_text())["faces_per_frame"]
    assert counts == {"auto": [1, 1, 1, 1], "hog": [0, 0, 0, 0]}

    checked: list = []
    confirms = faces_mod.FaceDetector.cnn_confirms
    monkeypatch.setattr(faces_mod.FaceDetector, "cnn_confirms",
                        staticmethod(lambda img, box, **kw: checked.append(box) or confirms(img, box, **kw)))
    texture = np.ascontiguousarray(cv2.resize(data.coins(), (320, 240))[..., None].repeat(3, axis=2))
    faces_mod.FaceDetector(kind="auto", look=False).detect(texture)
    once = len(checked)  # the coins give HOG near misses the CNN turns down: 4 checks a frame
    checked.clear()
    still = make_video(tmp_path / "coins.mp4", [texture] * 12)  # 8 fps: REFUSED_HOLD_S is 8 frames
    assert main(["restore", "-q", "-i", str(still), "-o", str(tmp_path / "c"), "-s", "1", "--keep-faceless"]) == 0
    assert 0 < once and 0 < len(checked) <= 2 * once + 2, (once, len(checked))  # without the memory: 12 x 4 = 48
