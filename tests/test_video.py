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
               audio_s: float | None = None, rotation: int | None = None) -> Path:
    """An H.264 MP4/MOV of ``frames`` (all one size), at ``rate`` fps (``pts``: frame times in 1/rate s), with a
    440-Hz tone of ``audio_s`` seconds, stored with a display ``rotation``."""
    c = av.open(str(path), "w", format="mp4" if path.suffix != ".mov" else "mov")
    v = c.add_stream("libx264", rate=rate)
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
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(RATE * audio_s)) / RATE)).astype(np.float32)
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
        w = video.VideoWriter(tmp_path / "out.mp4", 319, 239, r.rate, r.stream.time_base,
                              (src, video.parse_clip("0.5-1.2")))
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
    assert "3 input(s): 1 restored" in text and "bad.mp4: not a readable video" in text
    assert "wall.mkv: no face found" in text and "no face in any of its 3 frame(s)" in text
    assert sorted(p.name for p in (out / "restored_videos").iterdir()) == ["clip.mp4"]  # no temporary file left
    rec = json.loads((out / "records" / "clip.json").read_text())
    assert (rec["frames"], rec["faces_per_frame"], rec["num_faces"], rec["audio_kept"]) == (8, [1] * 8, 8, True)
    assert rec["video"]["fps"] == 8 and rec["restored_video"] == "restored_videos/clip.mp4" and rec["clip"] is None
    with video.VideoReader(out / "restored_videos" / "clip.mp4") as r:
        got = [f for _, _, _, f in r.frames()]
    assert len(got) == 8 and abs(audio_seconds(out / "restored_videos" / "clip.mp4") - 1.0) < 0.06
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
