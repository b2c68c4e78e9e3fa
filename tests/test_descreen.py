"""Halftone screens of printed photos (``dynface.descreen``, ``restore --descreen``): found with their period and
angle in simulated prints (``dynface.degrade.add_halftone``), not found in photos (periodic textures and enlarged
photos included), smoothed by the Gaussian that leaves the stated share of the screen, and wired through the CLI."""

from __future__ import annotations

import io
import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from dynface.degrade import add_halftone
from dynface.descreen import RESIDUAL, SIGMA_PER_PERIOD, Screen, descreen, find_screen, screen_sigma


@pytest.fixture(scope="module")
def big_astronaut() -> np.ndarray:
    return cv2.resize(data.astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC)


def _jpeg(x: np.ndarray, q: int = 85) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(x).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


@pytest.mark.parametrize("period", [3.0, 4.5, 6.0, 9.0, 14.0])
@pytest.mark.parametrize("angle", [45.0, 22.5, 0.0])
def test_a_printed_photos_screen_is_found_with_its_period_and_angle(big_astronaut, period, angle):
    print_ = _jpeg(add_halftone(big_astronaut, period, angle))  # scanned, then saved as a JPEG
    s = find_screen(print_)
    assert s is not None
    assert s.period_px == pytest.approx(period, rel=0.02)
    assert min(abs(s.angle_deg - angle % 90), 90 - abs(s.angle_deg - angle % 90)) < 2.0
    assert s.strength_db > 25 and s.sigma_px == pytest.approx(screen_sigma(period), rel=0.02)


@pytest.mark.parametrize("period", [4.5, 9.0])
def test_a_colour_print_of_four_screens_is_found(big_astronaut, period):
    s = find_screen(add_halftone(big_astronaut, period, colour=True))
    assert s is not None and s.period_px == pytest.approx(period, rel=0.02)


def test_a_fine_screen_at_0_degrees_is_smoothed_with_its_own_period():
    """A 0° screen of 2.3 px looks like an enlarged photo's interpolation (rows and columns every 2-3 px), which is
    not taken for a screen; its 45° harmonic (2.3/√2 px) is found instead, and the smoothing still covers 2.3 px."""
    img = cv2.resize(data.astronaut(), (768, 768), interpolation=cv2.INTER_CUBIC)
    s = find_screen(add_halftone(img, 2.3, 0.0))
    assert s is not None and s.sigma_px >= screen_sigma(2.3) * 0.98


@pytest.mark.parametrize("name", ["astronaut", "camera", "brick", "grass", "gravel", "coffee", "chelsea", "rocket",
                                  "astronaut_x2", "astronaut_x2.07", "astronaut_q30"])
def test_photos_and_their_textures_have_no_screen(name):
    """Photos (a brick wall's rows, grass, gravel, a JPEG's 8×8 blocks, an enlarged photo's interpolation) are not
    prints: nothing is found, so --descreen leaves them as they are."""
    img = getattr(data, name.split("_")[0])()
    if name.endswith(("_x2", "_x2.07")):
        f = float(name.rsplit("_x", 1)[1])
        img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    if name.endswith("_q30"):
        img = _jpeg(img, 30)
    assert find_screen(img) is None


def test_the_smoothing_leaves_the_stated_share_of_the_screen():
    """A pure grating of the screen's period, smoothed: its amplitude falls to RESIDUAL (the closed form
    exp(-2π²σ²/P²)), and what is slower (a face's shading, 8 periods) keeps most of its own."""
    assert SIGMA_PER_PERIOD == pytest.approx(math.sqrt(math.log(1 / RESIDUAL) / (2 * math.pi**2)))
    period = 6.0
    x = np.arange(600, dtype=np.float32)
    s = Screen(period, 0.0, 40.0, screen_sigma(period))
    for p, expect in ((period, RESIDUAL), (8 * period, math.exp(-2 * math.pi**2 * s.sigma_px**2 / (8 * period) ** 2))):
        grating = np.tile(128 + 100 * np.cos(2 * np.pi * x / p), (64, 1)).astype(np.float32)
        out = descreen(grating, s)
        amp = (out[32, 100:500].max() - out[32, 100:500].min()) / 200
        assert amp == pytest.approx(expect, abs=0.004)


def test_descreening_brings_a_print_back_to_the_photo_it_shows(big_astronaut):
    """The print, smoothed, is the photo smoothed alike, less the dots: its error from the original is a fraction
    of the print's (6-px dots: 54.7 and 10.0 levels from the photo; the rest is the dots' tone curve)."""
    gray = np.repeat(cv2.cvtColor(big_astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)  # a one-ink print
    print_ = add_halftone(gray, 6.0, 45.0)
    s = find_screen(print_)
    ref = descreen(gray, s)
    err_print = np.abs(print_.astype(float) - ref).mean()
    err_descreened = np.abs(descreen(print_, s).astype(float) - ref).mean()
    print(f"error from the photo: print {err_print:.1f}, descreened {err_descreened:.1f} levels")
    assert descreen(print_, s).dtype == np.uint8 and err_descreened < err_print / 4


def test_restore_descreen_records_what_it_found_and_says_it(tmp_path, big_astronaut, capsys, monkeypatch):
    from test_restore_cli import FACTORY

    from dynface.cli import main

    monkeypatch.setenv("DYNFACE_RESTORER_FACTORY", FACTORY)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(add_halftone(big_astronaut, 4.5, 45.0)).save(d / "clipping.png", dpi=(600, 600))
    Image.fromarray(data.astronaut()).save(d / "photo.png")

    # without --descreen: the dots hide the face from HOG, and the note says what to try
    assert main(["restore", "-q", "-i", str(d), "-o", str(tmp_path / "plain"), "-s", "1", "--detector", "hog"]) == 1
    txt = capsys.readouterr().out
    assert "NO FACE " in txt and "clipping.png: no face found" in txt
    assert "clipping.png: this photo looks printed (a halftone screen of 4.5 px at 45°, 133 lines per inch at 600 dpi)" in txt
    assert "photo.png: this photo looks printed" not in txt
    assert "descreen" not in json.loads((tmp_path / "plain" / "records" / "photo.json").read_text())
    # the default's second look (the CNN detector) finds it through the dots; the note still says what to try
    assert main(["restore", "-q", "-i", str(d / "clipping.png"), "-o", str(tmp_path / "auto"), "-s", "1"]) == 0
    assert "clipping.png: this photo looks printed" in capsys.readouterr().out

    assert main(["restore", "-q", "-i", str(d), "-o", str(tmp_path / "out"), "-s", "1", "--descreen"]) == 0
    txt = capsys.readouterr().out
    assert "clipping.png: descreened: a halftone screen of 4.5 px at 45°" in txt and "σ 2.0 px" in txt
    assert "photo.png: --descreen: no halftone screen found" in txt
    rec = json.loads((tmp_path / "out" / "records" / "clipping.json").read_text())
    assert rec["descreen"]["applied"] and rec["descreen"]["period_px"] == pytest.approx(4.5, abs=0.1)
    assert rec["settings"]["flags"]["descreen"] is True
    assert json.loads((tmp_path / "out" / "records" / "photo.json").read_text())["descreen"] == {"found": False,
                                                                                                   "applied": False}
    # the restored clipping is the descreened print (the fake restorer returns faces as they are): of the dots'
    # contrast (what is finer than the screen's period) about RESIDUAL is left
    def fine(x):
        x = cv2.cvtColor(np.asarray(x), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float((x - cv2.GaussianBlur(x, (0, 0), 4.5)).std())

    out = Image.open(tmp_path / "out" / "restored_imgs" / "clipping.png").convert("RGB")
    before = fine(Image.open(d / "clipping.png").convert("RGB"))
    photo = fine(descreen(big_astronaut, Screen(4.5, 45.0, 40.0, screen_sigma(4.5))))  # the photo's own, as smooth
    assert abs(fine(out) - photo) < 0.2 * photo and before > 4 * photo, (fine(out), photo, before)  # 12.8, 11.3, 59


def test_a_smooth_16_bit_ramp_is_no_screen_though_its_8_bit_copy_has_steps():
    """Rounded to 8 bits, a smooth 2-D ramp has regular steps that look like a screen (53 dB); the job layer looks
    at a 16-bit input's own levels (audit: a 16-bit master's sky got the "looks printed" note)."""
    yy, xx = np.mgrid[0:800, 0:800]
    ramp = np.dstack([np.clip(xx * 30.0 + yy * 25.0, 0, 65535).astype(np.uint16)] * 3)
    assert find_screen(ramp) is None
    assert find_screen(((ramp.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)) is not None
