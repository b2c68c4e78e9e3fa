"""HDR to SDR (``dynface.hdr``) against the standards' numbers and closed forms, and an HLG and a PQ video (HEVC,
10-bit, tagged as phones tag them) made from an SDR picture, read back as that picture and restored as SDR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from dynface import hdr

av = pytest.importorskip("av")


# ------------------------------------------------------------------------------------------ the math
def test_pq_matches_st2084_and_inverts():
    # BT.2408: HDR reference white, 203 cd/m², is a PQ signal of 58 %; 100 cd/m² 51 %; 1.0 is 10 000 cd/m²
    assert hdr.pq_eotf(np.array([0.58069, 0.50808, 1.0, 0.0])) == pytest.approx([203.0, 100.0, 10000.0, 0.0], rel=1e-3)
    nits = np.array([0.01, 1.0, 100.0, 203.0, 1000.0, 4000.0])
    assert hdr.pq_eotf(hdr.pq_inverse_eotf(nits)) == pytest.approx(nits, rel=1e-6)


def test_hlg_matches_bt2100_and_bt2408():
    e = np.linspace(0, 1, 1001)
    light = hdr.hlg_inverse_oetf(e)
    assert np.all(np.diff(light) > 0) and light[-1] == pytest.approx(1.0, abs=1e-6)
    assert hdr.hlg_inverse_oetf(np.array([0.5, 0.5 + 1e-9])) == pytest.approx([1 / 12, 1 / 12], abs=1e-8)  # continuous
    assert hdr.hlg_oetf(light) == pytest.approx(e, abs=1e-6)
    # on a 1000 cd/m² display: a grey of 75 % signal is reference white (203 cd/m², BT.2408), 100 % is the peak
    grey = hdr.hlg_display_light(np.array([[0.75] * 3, [1.0] * 3]))
    assert grey[0] == pytest.approx([203.0] * 3, rel=2e-3) and grey[1] == pytest.approx([1000.0] * 3, rel=1e-6)


def _rgb_to_xyz(primaries, white=(0.3127, 0.3290)):
    """RGB -> XYZ of primaries' (x, y) and white's: the standard construction (SMPTE RP 177)."""
    def xyz(x, y):
        return np.array([x / y, 1.0, (1 - x - y) / y])

    m = np.stack([xyz(*p) for p in primaries], axis=1)
    return m * np.linalg.solve(m, xyz(*white))


def test_the_primaries_matrix_is_bt2020s_to_bt709s():
    m709 = _rgb_to_xyz([(0.640, 0.330), (0.300, 0.600), (0.150, 0.060)])
    m2020 = _rgb_to_xyz([(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)])
    assert hdr.BT2020_TO_BT709 == pytest.approx(np.linalg.solve(m709, m2020), abs=2e-5)
    assert hdr.BT2020_TO_BT709.sum(axis=1) == pytest.approx([1, 1, 1], abs=1e-5)  # white stays white


@pytest.mark.parametrize("full", [False, True])
def test_ycbcr_decoding_inverts_bt2020_encoding(full):
    rng = np.random.default_rng(0)
    rgb = rng.random((500, 3))
    y, cb, cr = _encode(rgb, 10, full)
    assert hdr.ycbcr_to_rgb(y, cb, cr, 10, full) == pytest.approx(rgb, abs=2e-3)  # 10-bit rounding
    white = hdr.ycbcr_to_rgb(np.array(940.0), np.array(512.0), np.array(512.0), 10)
    assert white == pytest.approx([1, 1, 1], abs=1e-9)


def test_tone_map_keeps_the_knee_down_and_reaches_white_at_the_peak():
    x = np.linspace(0, 8, 8001)
    y = hdr.tone_map(x)
    assert np.array_equal(y[x <= hdr.KNEE], x[x <= hdr.KNEE])
    assert np.all(np.diff(y) >= 0) and np.max(np.abs(np.diff(y))) < 1.01 * (x[1] - x[0])  # monotone, slope <= 1
    peak = hdr.PEAK / hdr.REFERENCE_WHITE
    assert hdr.tone_map(np.array([peak, 2 * peak])) == pytest.approx([1.0, 1.0])
    assert hdr.tone_map(np.array([1.0]))[0] < 1.0  # reference white leaves room for highlights


# ------------------------------------------------------------------------------------------ videos
def _encode(rgb: np.ndarray, bits: int, full: bool = False):
    """BT.2020 NCL Y'CbCr integer samples of R'G'B' in [0, 1]."""
    kr, kb = hdr.KR, hdr.KB
    y = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    cb, cr = (rgb[..., 2] - y) / (2 * (1 - kb)), (rgb[..., 0] - y) / (2 * (1 - kr))
    s = 1 << (bits - 8)
    if full:
        top = (1 << bits) - 1
        return np.round(y * top), np.round(cb * top + 128 * s), np.round(cr * top + 128 * s)
    return np.round(16 * s + 219 * s * y), np.round(128 * s + 224 * s * cb), np.round(128 * s + 224 * s * cr)


def _hdr_signal(sdr: np.ndarray, transfer: int) -> np.ndarray:
    """The HDR R'G'B' signal (BT.2020) an SDR picture (uint8, BT.709, all below the knee) is shown as: the module's
    steps backwards."""
    light = (sdr / 255.0) ** 2.4
    assert light.max() <= hdr.KNEE
    nits = light @ np.linalg.inv(hdr.BT2020_TO_BT709).T * hdr.REFERENCE_WHITE
    if transfer == hdr.PQ:
        return hdr.pq_inverse_eotf(nits)
    yd = nits @ np.array([hdr.KR, 1 - hdr.KR - hdr.KB, hdr.KB])  # display luminance: OOTF backwards
    ys = (np.maximum(yd, 1e-12) / hdr.PEAK) ** (1 / 1.2)
    return hdr.hlg_oetf(nits / (hdr.PEAK * ys[..., None] ** 0.2))


def make_hdr_video(path: Path, frames: list[np.ndarray], transfer: int, rate: int = 8) -> Path:
    """A lossless HEVC 10-bit 4:2:0 video of SDR ``frames`` as HDR (``transfer``), tagged BT.2020, as phones tag it."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx265", rate=rate, options={"x265-params": "lossless=1:log-level=error"})
    h, w = frames[0].shape[:2]
    s.width, s.height, s.pix_fmt = w, h, "yuv420p10le"
    cc = s.codec_context
    cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = hdr.BT2020_PRIMARIES, transfer, 9, 1
    for i, sdr in enumerate(frames):
        y, cb, cr = _encode(_hdr_signal(sdr.astype(float), transfer), 10)
        sub = [p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round() for p in (cb, cr)]  # 4:2:0
        f = av.VideoFrame(w, h, "yuv420p10le")
        for plane, a in zip(f.planes, [y, *sub], strict=True):
            a = a.astype("<u2")
            rows = np.zeros((a.shape[0], plane.line_size // 2), "<u2")
            rows[:, : a.shape[1]] = a
            plane.update(rows.tobytes())
        f.pts = i
        f.color_primaries, f.color_trc, f.colorspace, f.color_range = hdr.BT2020_PRIMARIES, transfer, 9, 1
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


@pytest.fixture(scope="module")
def sdr_frames() -> list[np.ndarray]:
    """Four 320x240 frames of the astronaut (face about 100 px), darkened into the tone curve's straight part."""
    base = (data.astronaut()[0:240, 100:420] * 0.8).round().astype(np.uint8)
    return [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(4)]


@pytest.mark.parametrize("transfer,name", [(hdr.HLG, "HLG"), (hdr.PQ, "PQ")])
def test_an_hdr_video_is_read_as_an_sdr_screen_shows_it(tmp_path, sdr_frames, transfer, name):
    """Read as SDR, an HDR frame came back far off (HLG pale, PQ dark); now about a level from the SDR picture on
    average (what is left: 4:2:0 chroma at sharp colour edges, 10-bit rounding)."""
    from dynface import video

    path = make_hdr_video(tmp_path / f"{name}.mp4", sdr_frames, transfer)
    with video.VideoReader(path) as r:
        assert r.info.hdr == name and r.colorspace == 1  # written back as BT.709
        got = [rgb for _, _, _, rgb in r.frames()]
    diff = np.abs(got[1].astype(int) - sdr_frames[1])  # measured: mean 0.98 (HLG) / 1.10 (PQ), 95th pct 3 / 4
    assert len(got) == 4 and diff.mean() < 1.5 and np.percentile(diff, 95) <= 4, (diff.mean(), np.percentile(diff, 95))
    with av.open(str(path)) as c:  # as it was read before: the 10-bit frame as if it were SDR BT.709
        f = next(c.decode(video=0))
        naive = f.reformat(format="yuv444p", src_colorspace="ITU709", dst_colorspace="ITU709").to_ndarray(
            format="rgb24", src_colorspace="ITU709")
    assert np.abs(naive.astype(int) - sdr_frames[0]).mean() > 10


def test_restoring_an_hlg_video_writes_sdr_and_says_so(tmp_path, sdr_frames, monkeypatch):
    from dynface import video
    from dynface.cli import main

    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", "test_restore_cli:make_fake_restorer")  # brightens faces by 10
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = make_hdr_video(tmp_path / "phone.mp4", sdr_frames, hdr.HLG)
    out = tmp_path / "out"
    assert main(["restore", "-q", "-i", str(path), "-o", str(out), "-s", "1", "--threads", "1"]) == 0
    rec = json.loads((out / "records" / "phone.json").read_text())
    assert rec["video"]["hdr"] == "HLG"
    assert any(n.startswith("an HDR video (HLG, BT.2020)") and "the restored video is SDR" in n for n in rec["notes"])
    with av.open(str(out / "restored_videos" / "phone.mp4")) as c:
        f = next(c.decode(video=0))
        assert (int(f.color_primaries), int(f.color_trc), int(f.colorspace)) == (1, 1, 1)
    with video.VideoReader(out / "restored_videos" / "phone.mp4") as r:
        first = next(r.frames())[3].astype(int)
    assert np.abs(first - sdr_frames[0])[:40, :40].mean() < 2  # the wall: as the SDR picture, not pale
