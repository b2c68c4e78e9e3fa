"""benchmarks/video_fuse.py: its clips, scores and report, on synthetic faces (no model run)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import video_fuse as vf  # noqa: E402


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    import cv2

    a = cv2.resize(np.ascontiguousarray(data.astronaut()[0:260, 130:390]), (200, 200), interpolation=cv2.INTER_AREA)
    return [a, np.ascontiguousarray(a[:, ::-1])]


def test_clips_move_as_their_kind_says(faces):
    """still: the same frame throughout; pan: the scored box moves 1.5 px a frame; zoom: it grows by half; talk: only
    the lower face changes; cut: the second face from the middle frame on. The box is the crop's middle 70 %."""
    n = 8
    still, sb = vf.clean_clip(faces, "still", n, 110)
    assert all(np.array_equal(f, still[0]) for f in still) and len(set(sb)) == 1
    x0, y0, x1, y1 = sb[0]
    assert x1 - x0 == pytest.approx(0.7 * 110) and (x0 + x1) / 2 == pytest.approx(160) and vf.frame_size(220) == (640, 480)
    _, pb = vf.clean_clip(faces, "pan", n, 110)
    assert np.diff([b[0] for b in pb]) == pytest.approx(np.full(n - 1, 1.5))
    _, zb = vf.clean_clip(faces, "zoom", n, 110)
    assert (zb[-1][2] - zb[-1][0]) / (zb[0][2] - zb[0][0]) == pytest.approx(1.5)
    talk, _ = vf.clean_clip(faces, "talk", n, 110)
    d = np.abs(talk[3].astype(int) - talk[0]).sum(axis=2)
    # the crop spans rows 65-175: above its middle (the eyes) at most a level a channel (the bump's tail), below
    assert d[:110].max() <= 3 and d[130:].max() > 60
    cut, _ = vf.clean_clip(faces, "cut", n, 110)
    assert np.array_equal(cut[0], cut[n // 2 - 1]) and not np.array_equal(cut[n // 2 - 1], cut[n // 2])
    assert np.array_equal(cut[n // 2], cut[-1])


def test_scores_are_their_closed_forms(faces):
    """A clip compared with itself has no flicker; a constant offset of 10 levels: PSNR 20 log10(255/10), still no
    flicker; noise of σ 5 in every frame: flicker ≈ E|N(0, 2·25)| = 10/sqrt(pi) (rounding and clipping aside)."""
    clean, boxes = vf.clean_clip(faces, "pan", 6, 110)
    same = vf.scores(clean, clean, boxes, None)
    assert same["flicker"] == 0 and same["ssim"] == pytest.approx(1.0)
    off = [np.clip(f.astype(int) + 10, 0, 255).astype(np.uint8) for f in clean]
    got = vf.scores(off, clean, boxes, None)
    assert got["psnr"] == pytest.approx(20 * np.log10(255 / 10), abs=0.1) and got["flicker"] < 0.2
    rng = np.random.default_rng(0)
    noisy = [np.clip(np.rint(f + rng.normal(0, 5, f.shape)), 0, 255).astype(np.uint8) for f in clean]
    assert vf.scores(noisy, clean, boxes, None)["flicker"] == pytest.approx(10 / np.sqrt(np.pi), rel=0.05)
    cut = vf.scores(clean, clean, boxes, 3)
    assert cut["psnr_after_cut"] > 90  # identical frames: PSNR at its 1e-10 floor


def test_the_report_has_a_row_per_kind_and_value(faces):
    def r(kind, p):
        return {"psnr": p, "ssim": 0.9, "flicker": 2.0}

    rows = [{"clip": f"clip0{i}_{k}", "kind": k, "faces": ["a.jpg"], "input": r(k, 28.0),
             "fuse0": {**r(k, 30.0), "s": 1, "frames_with_faces": 8, "fused": {"faces_fused": 0}},
             "fuse4": {**r(k, 31.0), "s": 1, "frames_with_faces": 8,
                       "fused": {"faces_fused": 7, "mean_weight": 2.5, "noise_levels": 5.0}}}
            for i, k in enumerate(vf.KINDS)]
    rows[-1]["fuse4"]["psnr_after_cut"] = 29.5
    args = SimpleNamespace(frames=8, face_px=110, noise=12.0, detail="keep", kinds=",".join(vf.KINDS))
    text = vf.render(rows, [0, 4], args, "embedded-128", {"commit": "abc1234", "date": "2026-12-02 00:00 UTC"})
    assert "| all (5) | --fuse-frames 4 | 31.00 |" in text and "| cut (1) | --fuse-frames 4 | 31.00 | 0.9000 | 2.00 | 29.50 |" in text
    assert "31.00 / 2.00 (7, 2.5, σ 5.0)" in text and "`abc1234`" in text
