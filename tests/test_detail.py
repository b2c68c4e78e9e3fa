"""merge_detail / keep_detail: the band split at the model's Nyquist and its adaptive crossover, against synthetic
ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dynface.detail import cut_schedule, keep_detail, laplacian_energy, low_band, low_pass, merge_detail, nyquist


def _wave(n: int, cycles: float, amp: float, mean: float = 128.0, angle: float = 0.3) -> np.ndarray:
    """(n, n, 3) float image: a plane wave with ``cycles`` cycles across the width, slightly rotated."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    f = cycles / n
    ph = 2 * np.pi * f * (np.cos(angle) * x + np.sin(angle) * y)
    w = mean + amp * np.sin(ph)
    return np.repeat(w[:, :, None], 3, axis=2)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _interior(a: np.ndarray, m: int = 24) -> np.ndarray:
    return a[m:-m, m:-m].astype(np.float64)


def test_high_band_comes_from_the_reference():
    n, model_px = 256, 64  # model Nyquist: 32 cycles per width
    reference = _u8(_wave(n, 80, 40))  # only content far above the cut
    restored = np.full((model_px, model_px, 3), 128, np.uint8)  # the model saw none of it
    out = merge_detail(restored, reference, model_px, "keep")
    err = np.abs(_interior(out) - _interior(reference))
    assert err.max() <= 3.0, err.max()
    # and "restored" (today's behaviour) loses it: the flat grey
    flat = merge_detail(restored, reference, model_px, "restored")
    assert np.abs(_interior(flat) - 128).max() <= 1


def test_low_band_comes_from_the_restoration():
    n, model_px = 256, 64
    restored_full = _wave(n, 6, 50, angle=1.1)  # far below the cut
    restored = _u8(restored_full)
    reference = _u8(_wave(n, 90, 30))  # texture above the cut, no low band of its own
    out = merge_detail(restored, reference, model_px, "keep").astype(np.float64)
    f = nyquist(model_px, n)
    lo_out = low_pass(out, f)
    lo_rest = low_pass(restored.astype(np.float64), f)
    assert np.abs(_interior(lo_out) - _interior(lo_rest)).max() <= 2.0
    # the output is restored + the reference's texture
    assert np.abs(_interior(out) - _interior(restored.astype(np.float64) + reference - 128)).max() <= 4.0


def test_restored_at_model_size_is_upsampled_and_keeps_the_reference_texture():
    n, model_px = 192, 48
    low = _wave(model_px, 4, 40, angle=0.7)  # the restoration, at the model's size
    tex = _wave(n, 70, 25, mean=0.0)  # detail only the reference has
    ref_low = np.array(Image.fromarray(_u8(low)).resize((n, n), Image.LANCZOS)).astype(np.float64)
    reference = _u8(ref_low + tex)
    out = merge_detail(_u8(low), reference, model_px, "keep").astype(np.float64)
    assert np.abs(_interior(out) - _interior(reference)).max() <= 4.0  # same low band + kept texture = the input


def test_restored_mode_is_a_plain_lanczos_resize():
    astro = data.astronaut()
    restored = astro[40:200, 150:310]  # 160 x 160
    reference = np.zeros((300, 300, 3), np.uint8)
    out = merge_detail(restored, reference, 64, "restored")
    ref = np.array(Image.fromarray(restored).resize((300, 300), Image.LANCZOS))
    assert out.shape == (300, 300, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def test_model_at_least_as_large_as_the_reference_returns_the_resized_restoration():
    astro = data.astronaut()
    restored = astro[0:128, 100:228]
    reference = astro[200:296, 200:296]  # 96 px wide
    want = np.array(Image.fromarray(restored).resize((96, 96), Image.LANCZOS))
    for model_px in (96, 128, 512):
        np.testing.assert_array_equal(merge_detail(restored, reference, model_px, "keep"), want)


def test_shapes_dtypes_and_identity():
    astro = data.astronaut()
    reference = astro[:300, :200]  # not square: model_px counts across the width
    out = merge_detail(astro[:90, :60], reference, 60, "keep")
    assert out.shape == (300, 200, 3) and out.dtype == np.uint8
    # a restoration equal to the reference gives the reference back (the bands are complementary)
    np.testing.assert_array_equal(merge_detail(reference, reference, 50, "keep"), reference)
    # the inputs are not modified
    before = reference.copy()
    merge_detail(astro[:64, :64], reference, 64, "keep")
    np.testing.assert_array_equal(reference, before)


def test_no_colour_shift():
    rng = np.random.default_rng(0)
    n, model_px = 256, 64
    # the reference: a warm face-like colour with fine texture; the restoration: a different fine texture, same colour
    base = np.array([190.0, 140.0, 120.0])
    reference = _u8(base + rng.normal(0, 12, (n, n, 3)))
    restored = _u8(base + rng.normal(0, 12, (model_px, model_px, 3)))
    out = merge_detail(restored, reference, model_px, "keep").astype(np.float64)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), base, atol=1.0)
    # a colour change in the restoration's low band is passed through whole (the low band is the model's)
    shifted = _u8(restored.astype(np.float64) + np.array([10.0, -8.0, 5.0]))
    out2 = merge_detail(shifted, reference, model_px, "keep").astype(np.float64)
    np.testing.assert_allclose(out2.reshape(-1, 3).mean(0) - out.reshape(-1, 3).mean(0), [10, -8, 5], atol=1.0)


def test_low_band_and_bad_arguments():
    astro = data.astronaut()[:128, :128]
    np.testing.assert_array_equal(low_band(astro, 128), astro.astype(np.float32))
    lb = low_band(astro, 32)
    assert lb.shape == astro.shape and lb.dtype == np.float32
    assert np.abs(np.diff(lb, axis=1)).mean() < np.abs(np.diff(astro.astype(np.float32), axis=1)).mean()
    with pytest.raises(ValueError, match="detail mode"):
        merge_detail(astro, astro, 64, "sharp")
    with pytest.raises(ValueError, match="model_px"):
        merge_detail(astro, astro, 0, "keep")
    with pytest.raises(TypeError, match="uint8"):
        merge_detail(astro.astype(np.float32), astro, 64)
    with pytest.raises(ValueError, match="shape"):
        merge_detail(astro[:, :, 0], astro, 64)


def test_crossover_gains():
    """The documented split (the first crossover of the schedule, kept here because one side is flat, so no detail
    is lost): the reference's band from the model's Nyquist up is kept whole, the restoration's band up to half the
    Nyquist is taken whole, and the two cross at 3/4 of it."""
    n, model_px = 512, 64  # Nyquist: 32 cycles per width
    flat = np.full((n, n, 3), 128, np.uint8)
    inner = np.s_[64:-64, 64:-64]

    def amp(a):
        return float(np.std(a[inner].astype(np.float64) - 128) * np.sqrt(2))

    for cycles, source, gain in ((32, "reference", 1.0), (40, "restored", 0.0), (16, "restored", 1.0), (24, "restored", 0.5)):
        wave = _u8(_wave(n, cycles, 60, angle=0.0))
        out = merge_detail(wave, flat, model_px) if source == "restored" else merge_detail(flat, wave, model_px)
        assert amp(out) / amp(wave) == pytest.approx(gain, abs=0.03), (cycles, source)


# ------------------------------------------------------------------------------------------ the adaptive crossover
def _split_at_nyquist(restored: np.ndarray, reference: np.ndarray, model_px: float) -> np.ndarray:
    """The fixed split (crossover at 3/4 of the model's Nyquist, no check): what "keep" did before the guarantee."""
    n = reference.shape[1]
    up = np.array(Image.fromarray(restored).resize(reference.shape[1::-1], Image.LANCZOS)).astype(np.float32)
    ref = reference.astype(np.float32)
    return _u8(ref + low_pass(up - ref, nyquist(model_px, n)))


def _shading(n: int, mean: float, amp: float) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) / n
    g = mean + amp * np.sin(2 * np.pi * (1.2 * x + 0.7 * y))
    return np.repeat(g[:, :, None], 3, axis=2)


def test_cut_schedule():
    assert cut_schedule(64) == pytest.approx((32, 24, 16, 11.2, 8, 4, 0))
    assert cut_schedule(128) == pytest.approx((64, 48, 32, 22.4, 16, 4, 0))
    assert cut_schedule(16) == pytest.approx((8, 6, 4, 2.8, 2, 0))  # no 4-cycle step above the last factor


def test_laplacian_energy_is_the_mean_squared_4_neighbour_laplacian_of_the_luma():
    cv2 = pytest.importorskip("cv2")
    img = data.astronaut()[100:260, 150:330]
    g = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = cv2.Laplacian(g, cv2.CV_64F, ksize=1)  # [[0,1,0],[1,-4,1],[0,1,0]], mirrored border
    assert laplacian_energy(img) == pytest.approx(float(np.mean(lap**2)), rel=1e-9)
    where = np.zeros(img.shape[:2], bool)
    where[20:90, 30:70] = True
    assert laplacian_energy(img, where) == pytest.approx(float(np.mean(lap[where] ** 2)), rel=1e-9)
    assert laplacian_energy(img, np.zeros_like(where)) == 0.0
    assert laplacian_energy(np.full((9, 9, 3), 77, np.uint8)) == 0.0


def test_keep_never_loses_detail_to_a_restoration_smoother_than_the_input():
    """A reference with strong texture between half the model's Nyquist and the Nyquist (22 cycles per width for a
    64-px model), and a smooth restoration with its own shading. The fixed split takes most of that band from the
    restoration (which has none of it) and loses detail; "keep" moves the crossover down to 16 cycles, where the
    texture is the reference's whole, and still takes the shading from the restoration."""
    n, model_px = 256, 64
    reference = _u8(_shading(n, 120, 20) + _wave(n, 22, 35, mean=0.0, angle=0.4))
    restored_full = _shading(n, 135, 30)  # brighter, more contrast in the shading, no texture
    restored = _u8(np.array(Image.fromarray(_u8(restored_full)).resize((model_px, model_px), Image.LANCZOS)))
    e_in = laplacian_energy(reference)
    old = _split_at_nyquist(restored, reference, model_px)
    assert laplacian_energy(old) < 0.5 * e_in  # the fixed split: less than half the input's detail

    info: dict = {}
    out = merge_detail(restored, reference, model_px, "keep", info=info)
    assert laplacian_energy(out) >= e_in
    assert info["detail_cut_cycles"] == pytest.approx(16) and info["detail_cut_of_nyquist"] == pytest.approx(0.5)
    assert info["detail_hf_ratio"] >= 1.0
    # the shading (far below the crossover) is the restoration's, the texture the reference's
    lo = nyquist(8, n)  # below 4 cycles per width
    assert np.abs(_interior(low_pass(out.astype(np.float64), lo)) - _interior(low_pass(restored_full, lo))).max() < 3.0
    assert np.abs(_interior(out) - _interior(reference + restored_full - _shading(n, 120, 20))).max() < 4.0


def test_keep_keeps_the_models_split_when_the_restoration_is_as_sharp_as_the_input():
    """The restoration has the reference's texture below the Nyquist and a different colour: nothing is lost, so
    the crossover stays at the model's Nyquist (the restoration's contribution is kept whole)."""
    n, model_px = 256, 64
    tex = _wave(n, 20, 30, mean=0.0, angle=0.4) + _wave(n, 60, 20, mean=0.0, angle=1.2)
    reference = _u8(_shading(n, 120, 15) + tex)
    restored = _u8(_shading(n, 120, 15) + tex + np.array([12.0, -6.0, 4.0]))  # full size: the band below is sharp
    info: dict = {}
    out = merge_detail(restored, reference, model_px, info=info)
    assert info["detail_cut_cycles"] == pytest.approx(32)
    np.testing.assert_array_equal(out, _split_at_nyquist(restored, reference, model_px))
    np.testing.assert_allclose(_interior(out).reshape(-1, 3).mean(0) - _interior(reference).reshape(-1, 3).mean(0),
                               [12, -6, 4], atol=1.0)


def test_keep_checks_the_final_uint8_output_where_saturated_texture_clips():
    """Halftone-like dots at 0 and 255 (left half; far above the model's Nyquist) beside a flat grey (right half),
    and a restoration that is one brighter flat grey. The band split keeps the dots exactly in float, but the
    restoration's brightening pushes the 255 dots out of range and the clipped output loses contrast. The check is
    made on the clipped uint8 output; "keep" then limits the restoration's shift to what the dots' neighbourhood
    leaves in range: the dots stay as they were, the flat half still gets the restoration's brightness, and the
    crossover stays at the model's Nyquist."""
    n, model_px = 192, 48
    y, x = np.mgrid[0:n, 0:n]
    img = np.where(((x // 2) + (y // 2)) % 2 == 0, 255.0, 0.0)
    img[:, n // 2 :] = 100.0
    reference = _u8(np.repeat(img[:, :, None], 3, axis=2))
    restored = np.full((model_px, model_px, 3), 170, np.uint8)
    e_in = laplacian_energy(reference)
    assert laplacian_energy(_split_at_nyquist(restored, reference, model_px)) < 0.95 * e_in
    info: dict = {}
    out = merge_detail(restored, reference, model_px, info=info)
    assert laplacian_energy(out) >= e_in
    assert info["detail_range_limited"] is True and info["detail_cut_cycles"] == pytest.approx(model_px / 2)
    np.testing.assert_array_equal(out[16:-16, 16 : n // 2 - 16], reference[16:-16, 16 : n // 2 - 16])
    assert np.abs(out[16:-16, n // 2 + 24 : -16].astype(float) - 170).max() <= 3


def test_keep_detail_regions_weight_and_last_resort():
    """keep_detail checks every region it is given; with nothing better it returns the reference itself (cut 0)."""
    n = 128
    rng = np.random.default_rng(1)
    reference = _u8(128 + rng.normal(0, 25, (n, n, 3)))  # white noise: most of its energy is above any cut
    # a restoration that is the reference minus its noise in the top half only
    diff = np.zeros((n, n, 3), np.float32)
    diff[: n // 2] = 128.0 - reference[: n // 2].astype(np.float32)
    top = np.zeros((n, n), bool)
    top[8 : n // 2 - 8, 8:-8] = True
    bottom = np.zeros((n, n), bool)
    bottom[n // 2 + 8 : -8, 8:-8] = True
    only_bottom = keep_detail(reference, diff, n, 64, regions=[bottom])
    assert only_bottom.cut_cycles == pytest.approx(32)  # nothing lost where it looks
    both = keep_detail(reference, diff, n, 64, regions=[bottom, top])
    assert laplacian_energy(both.image, top) >= laplacian_energy(reference, top)
    assert both.cut_cycles < 32 and both.hf_ratio is not None and both.hf_ratio >= 1.0
    # a weight of 0 pastes nothing: the first crossover passes and the output is the reference
    none = keep_detail(reference, diff, n, 64, weight=np.zeros((n, n, 1), np.float32))
    assert none.cut_cycles == pytest.approx(32)
    np.testing.assert_array_equal(none.image, reference)
    # a 32-px crop whose detail is a 1.5-cycle wave (below every crossover but 0) and a flat restoration, without
    # clipping: every crossover loses the wave, and the reference comes back unchanged
    wave = _u8(_wave(32, 1.5, 100, angle=0.0))
    last = keep_detail(wave, np.float32(128.0) - wave.astype(np.float32), 32, 30)
    assert not last.range_limited
    assert last.cut_cycles == 0 and last.tried == len(cut_schedule(30)) and last.hf_ratio == 1.0
    np.testing.assert_array_equal(last.image, wave)
    with pytest.raises(TypeError, match="uint8"):
        keep_detail(reference.astype(np.float32), diff, n, 64)
    with pytest.raises(ValueError, match="shape"):
        keep_detail(reference, diff[:10], n, 64)


def test_info_is_only_filled_when_the_split_is_applied():
    astro = data.astronaut()
    for mode, model_px in (("restored", 64), ("keep", 300)):
        info: dict = {}
        merge_detail(astro[:64, :64], astro[:300, :300], model_px, mode, info=info)
        assert info == {}
