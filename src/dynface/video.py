"""Video files: decoded frame by frame as upright RGB, restored frames encoded as H.264 with the sound carried over.

PyAV (FFmpeg's libraries, the optional ``video`` extra) does the decoding and encoding: it reads what FFmpeg reads
(MP4, MOV, MKV, AVI, WebM, MPEG-TS, most CCTV exports) and its wheels carry libx264 and AAC, so an output plays in
any player and browser. The job layer (:mod:`dynface.jobs`) restores each frame like a photo; this module only
reads and writes. A frame the file marks as turned (a phone held upright stores its frames sideways with a display
rotation) is turned upright before faces are looked for, and written upright; frames marked interlaced are
deinterlaced (``bwdif``). Times count from the first frame (an MPEG-TS's own clock starts elsewhere), and the sound
is cut to the sample at the first frame written. HDR frames (10-bit BT.2020 HLG or PQ: phone videos) and BT.2020
SDR frames are brought to SDR BT.709 (:mod:`dynface.hdr`), what the restorer knows, and the restored video is SDR.

:class:`VideoWriter` encodes into a temporary file the caller names (the job layer renames it onto the output only
when the whole video is done: a killed run leaves no half video under the output's name).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["VIDEO_EXTS", "VideoError", "Clip", "parse_time", "parse_clip", "is_video_name", "VideoInfo", "colorspace",
           "hdr_kind", "to_rgb", "VideoReader", "VideoWriter"]

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv",
              ".flv", ".3gp", ".dav")
"""File names taken as videos (lower-cased suffix). ``.dav``: the raw export of many CCTV recorders (FFmpeg reads
most of them)."""

CRF = 16
"""libx264's constant rate factor for restored videos: 16 keeps the restored detail (18 is FFmpeg's "visually
lossless" rule of thumb; lower is larger)."""

AUDIO_BITRATE = 192_000

TECHNICAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name",
                            "vendor_id", "duration"})
"""Container tags that describe the file, not the recording: not carried over to a restored video."""


class VideoError(Exception):
    """A video that cannot be read or written (one line, without the path), or PyAV missing."""


def is_video_name(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _av():
    try:
        import av
    except ImportError:
        raise VideoError("videos need PyAV: pip install 'dynfacerestore[video]' (or pip install av)") from None
    # FFmpeg's log stays off (PyAV's default: setting a level routes it through Python, which deadlocked closing a
    # file while FFmpeg's decoding threads logged)
    return av


# ------------------------------------------------------------------------------------------ --clip
_TIME = re.compile(r"^(?:(\d+):)??(?:(\d+):)?(\d+(?:\.\d*)?)$")


def parse_time(s: str) -> float:
    """Seconds from ``SS``, ``SS.s``, ``M:SS`` or ``H:MM:SS(.s)``."""
    m = _TIME.match(s.strip())
    if not m:
        raise ValueError(f"not a time: {s!r} (seconds, M:SS or H:MM:SS, e.g. 75, 1:15 or 0:01:15.5)")
    h, mnt, sec = m.groups()
    if h is not None and mnt is None:  # "M:SS" matched the first group
        h, mnt = None, h
    if (mnt is not None and float(sec) >= 60) or (h is not None and int(mnt) >= 60):  # "1:75" is no time
        raise ValueError(f"not a time: {s!r} (seconds and minutes after a colon are under 60)")
    return int(h or 0) * 3600 + int(mnt or 0) * 60 + float(sec)


@dataclass(frozen=True)
class Clip:
    """The part of a video to restore: from ``start`` (s) up to ``end`` (s; None: the end of the video)."""

    start: float = 0.0
    end: float | None = None

    def __str__(self) -> str:
        return f"{self.start:g}-{'' if self.end is None else f'{self.end:g}'}"

    @property
    def whole(self) -> bool:
        return self.start <= 0 and self.end is None


def parse_clip(s: str | None) -> Clip:
    """``--clip START-END`` (either may be left out: ``1:10-``, ``-30``); times as :func:`parse_time`."""
    if s is None or not s.strip():
        return Clip()
    a, sep, b = s.strip().partition("-")
    if not sep:
        raise ValueError(f"--clip takes START-END (e.g. 1:10-1:25, 70-85, 1:10- or -30), got {s!r}")
    start = parse_time(a) if a.strip() else 0.0
    end = parse_time(b) if b.strip() else None
    if end is not None and end <= start:
        raise ValueError(f"--clip {s}: its end ({end:g} s) is not after its start ({start:g} s)")
    return Clip(start, end)


# ------------------------------------------------------------------------------------------ reading
@dataclass
class VideoInfo:
    """What a video is, as its record tells it (``width``/``height``: upright, after its display rotation)."""

    width: int
    height: int
    fps: float  # the stream's average frame rate
    frames: int | None  # as the file says (None: it does not say; estimated from the duration then)
    duration_s: float | None
    codec: str
    rotation: int  # degrees the stored frames are turned counter-clockwise to show them (0, ±90, 180)
    audio: str | None  # the first sound track's codec, None without one
    hdr: str | None = None  # "HLG", "PQ" or "BT.2020" (SDR with BT.2020 colours): read as SDR BT.709 (dynface.hdr)

    def frames_in(self, clip: Clip) -> int | None:
        """The frames ``clip`` holds, estimated (None: unknown)."""
        total = self.frames or (round(self.duration_s * self.fps) if self.duration_s and self.fps else None)
        if total is None:
            return None
        end = clip.end if clip.end is not None else total / self.fps if self.fps else None
        if end is None or not self.fps:
            return total
        return max(0, min(total, round(end * self.fps)) - round(clip.start * self.fps))

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": round(self.fps, 4), "frames": self.frames,
                "duration_s": None if self.duration_s is None else round(self.duration_s, 3), "codec": self.codec,
                "rotation": self.rotation, "audio": self.audio, "hdr": self.hdr}


_SPACES = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M", 9: "BT2020"}  # FFmpeg's AVColorSpace -> PyAV's name for it


def colorspace(frame) -> int:
    """The YUV matrix of ``frame`` (FFmpeg's AVColorSpace): its tag, else what players assume for an untagged video
    (BT.709 from 720 lines up, BT.601 below), so that frames are read with the colours a player shows."""
    cs = int(frame.colorspace)
    return cs if cs in _SPACES else (1 if min(frame.width, frame.height) >= 720 else 6)


def hdr_kind(frame) -> str | None:
    """"HLG" or "PQ" for an HDR frame (its transfer), "BT.2020" for an SDR frame with BT.2020 primaries, else None."""
    from dynface import hdr

    trc, prim = int(frame.color_trc), int(frame.color_primaries)
    return {hdr.HLG: "HLG", hdr.PQ: "PQ"}.get(trc) or ("BT.2020" if prim == hdr.BT2020_PRIMARIES else None)


def to_rgb(frame) -> np.ndarray:
    """RGB uint8 of a decoded frame. A 4:2:0 frame goes through 4:4:4 first: swscale's direct 4:2:0 -> RGB path
    darkens by 1.3 levels on average (the astronaut: -1.27 against -0.03), which every frame of a restored video would
    add again. An HDR or BT.2020 frame (:func:`hdr_kind`) is read as SDR BT.709 (:func:`dynface.hdr.hdr_to_sdr`; its
    planes at 4:4:4, 16 bits)."""
    if hdr_kind(frame):
        from dynface import hdr

        yuv = frame.reformat(format="yuv444p16le").to_ndarray()  # 10 bits shifted to 16: limited range stays exact
        rgb = hdr.hdr_to_sdr(yuv[..., 0], yuv[..., 1], yuv[..., 2], 16, int(frame.color_trc),
                             full_range=int(frame.color_range) == 2, primaries=int(frame.color_primaries))
        return (rgb * 255 + 0.5).astype(np.uint8)
    cs = _SPACES[colorspace(frame)]
    if frame.format.name.startswith(("yuv", "nv")) and frame.format.name not in ("yuv444p", "yuvj444p"):
        frame = frame.reformat(format="yuv444p", src_colorspace=cs, dst_colorspace=cs)
    return frame.to_ndarray(format="rgb24", src_colorspace=cs)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    k = round(rotation / 90) % 4  # np.rot90 turns counter-clockwise, as the display matrix's angle counts
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class VideoReader:
    """A video opened for reading (a context manager). Raises :class:`VideoError` for a file FFmpeg cannot read or
    one without a video stream. ``threads``: the decoder's (None: FFmpeg's choice, one per core)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from dynface.imageio import NotRegularFile, open_regular_file

        av = _av()
        self.path = Path(path)
        self.threads = threads
        try:
            os.close(open_regular_file(self.path))  # FFmpeg would wait for a pipe's writer: the run hung
        except NotRegularFile as e:
            raise VideoError(str(e)) from None
        except OSError as e:
            raise VideoError(f"cannot read file ({e.strerror or e})") from None
        try:
            self._c = av.open(str(self.path), "r")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if _mp4_without_index(self.path):
                raise VideoError("an incomplete MP4: its index (the 'moov' box) is missing, as when a copy or a "
                                 "recording was cut off; copy it again, or repair it with the recorder's or a "
                                 "repair tool") from None
            raise VideoError(f"not a readable video ({_reason(e)})") from None
        if not self._c.streams.video:
            self._c.close()
            raise VideoError("no video stream in this file")
        self.stream = self._c.streams.video[0]
        self._threads()
        self.bad_packets = 0
        self.deinterlaced = False  # frames() met interlaced frames and deinterlaced them
        self._first = self._peek()
        self.info = self._info()
        tb = self.stream.time_base
        # a video's time 0 is its first frame's (an MPEG-TS starts at 1.4 s or anywhere): --clip counts from it
        self.t0 = float(self._first.pts * tb) if self._first.pts is not None and tb else 0.0
        # the matrix frames are read with and written back with; BT.709 for HDR frames, which are read as SDR BT.709
        self.colorspace = 1 if self.info.hdr else colorspace(self._first)

    def _threads(self) -> None:
        self.stream.thread_type = "AUTO"
        if self.threads:
            self.stream.codec_context.thread_count = self.threads

    def _peek(self):
        """The first frame (rotation and size are known only from decoded frames); None: none decodes."""
        for f in self._decode(None):
            return f
        return None

    def _reopen(self) -> None:
        self._c.close()
        self._c = _av().open(str(self.path), "r")
        self.stream = self._c.streams.video[0]
        self._threads()

    def _decode(self, start: float | None = None):
        """Decoded frames from the key frame at or before ``start`` (s, the stream's own time) on; None: from the
        file's beginning (opened again: also for a file that cannot seek)."""
        av = _av()
        tb = self.stream.time_base
        if start is None:
            self._reopen()
        else:
            try:
                self._c.seek(int(start / tb), stream=self.stream, backward=True)
            except (av.error.FFmpegError, OverflowError, ZeroDivisionError):
                self._reopen()
        for packet in self._c.demux(self.stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:  # a damaged packet (a CCTV export cut mid-frame): skipped, counted
                self.bad_packets += 1
                continue
            yield from frames

    def _info(self) -> VideoInfo:
        s, f = self.stream, self._first
        if f is None:
            self._c.close()
            raise VideoError("no frame of this video can be decoded")
        rot = int(getattr(f, "rotation", 0) or 0)
        w, h = (f.height, f.width) if round(rot / 90) % 2 else (f.width, f.height)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        dur = float(s.duration * s.time_base) if s.duration and s.time_base else (
            self._c.duration / 1e6 if self._c.duration else None)
        audio = self._c.streams.audio[0].codec_context.name if self._c.streams.audio else None
        return VideoInfo(w, h, fps, int(s.frames) or None, dur, s.codec_context.name, rot, audio, hdr_kind(f))

    @property
    def metadata(self) -> dict[str, str]:
        """The file's own tags (recording date, place, camera: ``creation_time``, ``location``,
        ``com.apple.quicktime.*``, ...), without the container's technical ones (:data:`TECHNICAL_TAGS`)."""
        return {str(k): str(v) for k, v in self._c.metadata.items() if str(k).lower() not in TECHNICAL_TAGS}

    @property
    def rate(self) -> Fraction | None:
        r = self.stream.average_rate or self.stream.guessed_rate
        return Fraction(r) if r else None

    def frames(self, clip: Clip = Clip()) -> Iterator[tuple[int, float, int | None, np.ndarray]]:
        """(index in the clip, time in s, pts, upright RGB uint8) of each frame within ``clip``, in order."""
        self.bad_packets = 0
        self.deinterlaced = False
        k = 0
        tb = self.stream.time_base
        step = 1.5 / self.info.fps if self.info.fps else 0.1
        frames = self._decode(self.t0 + clip.start if clip.start > 0 else None)
        first = next(frames, None)
        if clip.start > 0 and (first is None or first.pts is None or float(first.pts * tb) - self.t0 > clip.start + step):
            # the seek landed past the clip's start (an MPEG-TS has no index: it lands after the key frame it needs,
            # and nothing, or later frames, decode): read from the beginning instead
            frames.close()  # first: closing the file under a suspended decode can hang FFmpeg's decoding threads
            frames = self._decode(None)
            first = next(frames, None)
        for f in self._deinterlaced(itertools.chain([first] if first is not None else [], frames)):
            t = (float(f.pts * tb) - self.t0 if f.pts is not None and tb else
                 (k / self.info.fps if self.info.fps else 0.0))
            if t < clip.start - 1e-6:
                continue
            if clip.end is not None and t >= clip.end - 1e-6:
                break
            yield k, t, f.pts, _upright(to_rgb(f), int(getattr(f, "rotation", 0) or 0))
            k += 1

    def _deinterlaced(self, frames):
        """``frames``, those marked interlaced (DV, DVD and broadcast transfers of home videos) through FFmpeg's
        ``bwdif`` (one frame per frame, progressive ones as they are): a clean face pasted into a combed frame
        looked cut out (video audit). Sets ``self.deinterlaced``."""
        av = _av()
        graph = None

        def ready():
            while True:
                try:
                    yield graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return

        for f in frames:
            if graph is None:
                if not getattr(f, "interlaced_frame", False):
                    yield f
                    continue
                graph = av.filter.Graph()
                src, sink = graph.add_buffer(template=self.stream), graph.add("buffersink")
                bw = graph.add("bwdif", "mode=send_frame:parity=auto:deint=interlaced")
                src.link_to(bw)
                bw.link_to(sink)
                graph.configure()
                self.deinterlaced = True
            graph.push(f)
            yield from ready()
        if graph is not None:
            graph.push(None)
            yield from ready()

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mp4_without_index(path: Path) -> bool:
    """Whether ``path`` is an MP4/MOV (its top-level boxes start with ``ftyp``) without a ``moov`` box: cut off."""
    try:
        with open(path, "rb") as fh:
            size, pos, seen = path.stat().st_size, 0, []
            while pos + 8 <= size and len(seen) < 64:
                fh.seek(pos)
                head = fh.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if n == 1 and len(head) == 16:
                    n = int.from_bytes(head[8:16], "big")
                seen.append(kind)
                if n < 8:
                    break
                pos += n
    except OSError:
        return False
    return bool(seen) and seen[0] == b"ftyp" and b"moov" not in seen


def _reason(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return re.sub(r"\s*:\s*'[^']*'$", "", msg).strip() or type(e).__name__


# ------------------------------------------------------------------------------------------ writing
class VideoWriter:
    """Encodes RGB frames as H.264 (yuv420p, ``CRF``) into ``path`` (an MP4), at the source's time base and frame
    rate so that frame times are kept (variable-rate CCTV too), in the YUV matrix ``colorspace`` (the source's:
    :func:`colorspace`), tagged so that players show the colours read. With ``audio_from`` (a source file, and the
    times in its own timeline of the first frame written and of the clip's end, None: to its end), :meth:`finish`
    adds the source's first sound track from that frame's time on, to the sample (silence first if the sound starts
    later), re-encoded as AAC: sound and picture stay in step. An odd
    width or height is made even by repeating the last column or row (H.264's 4:2:0 needs even sizes)."""

    def __init__(self, path: str | Path, width: int, height: int, rate: Fraction | None, time_base: Fraction | None,
                 audio_from: tuple[str | Path, float, float | None] | None = None, colorspace: int = 1,
                 threads: int | None = None, metadata: dict[str, str] | None = None):
        av = _av()
        self.path = Path(path)
        # the index ('moov') before the frames ("faststart", written when the file is closed): a browser plays the
        # video while it loads (the web page), as sites that serve video write it; every tag given is written
        # ("use_metadata_tags": also a phone's com.apple.quicktime.* ones)
        self._c = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart+use_metadata_tags"})
        for k, v in (metadata or {}).items():
            self._c.metadata[k] = v
        rate = rate or Fraction(25)
        opts = {"crf": str(CRF), "preset": "medium"}
        if threads:
            opts["threads"] = str(threads)
        self.s = self._c.add_stream("libx264", rate=rate, options=opts)
        self.width, self.height = width + width % 2, height + height % 2
        self.s.width, self.s.height = self.width, self.height
        self.s.pix_fmt = "yuv420p"
        self.space = colorspace if colorspace in _SPACES else 1
        cc = self.s.codec_context
        cc.colorspace, cc.color_range = self.space, 1  # 1: limited ("tv") range, what players expect of H.264
        cc.color_primaries = self.space
        cc.color_trc = 6 if self.space in (5, 6) else 1
        self.time_base = time_base or 1 / rate
        self.s.codec_context.time_base = self.time_base
        self.s.time_base = self.time_base
        self._rate = rate
        self.frames = 0
        self._last = -1
        self._audio = None  # (source container, its sound stream, our AAC stream, start, end): streams go in before
        # the first packet is muxed
        self.audio_samples: int | None = None  # samples of sound written (None: not yet)
        if audio_from is not None:
            src = av.open(str(audio_from[0]), "r")
            if src.streams.audio:
                a = src.streams.audio[0]
                out = self._c.add_stream("aac", rate=a.codec_context.sample_rate or 48000)
                out.bit_rate = AUDIO_BITRATE
                out.layout = "mono" if a.codec_context.channels == 1 else "stereo"
                self._audio = (src, a, out, audio_from[1], audio_from[2])
            else:
                src.close()

    @property
    def has_audio(self) -> bool:
        """Whether the output gets the source's sound; after :meth:`finish`, whether it got any (a file cut off
        before its sound has none to give)."""
        return self._audio is not None and (self.audio_samples is None or self.audio_samples > 0)

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        """Encode one frame; ``pts`` in the source's time base from the clip's first frame (None: by its index)."""
        av = _av()
        h, w = rgb.shape[:2]
        if (w, h) != (self.width, self.height):
            rgb = np.pad(rgb, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format="yuv420p", dst_colorspace=_SPACES[self.space], dst_color_range=1)
        if pts is None:
            pts = round(self.frames / (self._rate * self.time_base))
        f.pts = max(int(pts), self._last + 1)  # strictly increasing, as the encoder requires
        self._last = f.pts
        for p in self.s.encode(f):
            self._c.mux(p)
        self.frames += 1

    def finish(self, sound_end: float | None = None) -> None:
        """Flush the encoder, add the sound (when asked for and there is one; ``sound_end``: up to this time of the
        source instead of the clip's end, for a video stopped early) and close the file."""
        for p in self.s.encode(None):
            self._c.mux(p)
        if self._audio is not None:
            src, a, out, start, end = self._audio
            self._copy_audio(src, a, out, start, end if sound_end is None else sound_end)
        self.close()

    def _copy_audio(self, src, a, out, start: float, end: float | None) -> None:
        av = _av()
        rate = out.codec_context.sample_rate
        layout = out.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)  # the same rate: no samples held back
        n = 0

        def put(arr: np.ndarray) -> None:
            nonlocal n
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.float32), format="fltp", layout=layout)
            f.sample_rate, f.pts, f.time_base = rate, n, Fraction(1, rate)
            n += arr.shape[1]
            for p in out.encode(f):
                self._c.mux(p)

        try:
            src.seek(int(start / a.time_base) if start > 0 and a.time_base else 0, stream=a, backward=True)
        except (av.error.FFmpegError, OverflowError, ZeroDivisionError):
            pass
        done = False
        for packet in src.demux(a):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for fr in frames:
                t = float(fr.pts * fr.time_base) if fr.pts is not None and fr.time_base else start + n / rate
                if end is not None and t >= end:
                    done = True
                    break
                for r in resampler.resample(fr):
                    arr = r.to_ndarray()
                    lo = max(0, round((start - t) * rate))  # the part before the first frame's time
                    hi = arr.shape[1] if end is None else min(arr.shape[1], round((end - t) * rate))
                    gap = round((t - start) * rate)
                    if n == 0 and gap > 0:  # the sound starts after the picture: silence first
                        put(np.zeros((arr.shape[0], gap), np.float32))
                    if hi > lo:
                        put(arr[:, lo:hi])
                    t += arr.shape[1] / rate
            if done:
                break
        for p in out.encode(None):
            self._c.mux(p)
        self.audio_samples = n

    def close(self) -> None:
        """Close the file (also after a failure; the caller removes a file that was not finished). Idempotent."""
        if self._audio is not None:
            self._audio[0].close()
        if self._c is not None:
            self._c.close()
            self._c = None
