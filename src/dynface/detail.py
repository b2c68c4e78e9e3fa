"""Keep a face's own detail above the model's resolution (``--detail keep``).

The restorer works at ``size`` px (128 for ``embedded-128``, 64 for ``embedded-64``); a face that was larger than that in the input comes
back without the detail the input had above the model's Nyquist frequency. :func:`merge_detail` splits both images
at that frequency and takes the low band from the restoration and the high band from the input:

    out = reference + L(restored_resized - reference)      ( = L(restored) + (1 - L)(reference) )

``L`` is a radial raised-cosine low-pass (FFT, mirrored padding): gain 1 up to half the model's Nyquist
frequency (``model_px / 2`` cycles per reference width), falling smoothly (cos²) to exactly 0 at the Nyquist; the
bands cross (gain 1/2) at 3/4 of it. So the input's band above the Nyquist is kept exactly, and the restoration's
band up to half of it is taken whole. Why not a split centred on the Nyquist: the model has nothing above it, so
any transition there drops part of the input's detail just above it; and the restoration's own band just below
it is weak after the resampling to and from the model (an identity "restorer" pasted back keeps about 0.2x the
face's Laplacian energy), so it cannot make up for it. On the 9 example photos a Gaussian split centred on the
Nyquist left the pasted faces 0.43-0.99x (median 0.86) the input's Laplacian energy (docs/results/detail_keep.md
has the current numbers).

**The guarantee** (:func:`keep_detail`, used by both :func:`merge_detail` and ``faces.paste_face``): a face never
comes back with less high-frequency energy (:func:`laplacian_energy`, the mean squared Laplacian of the grey image)
than the input had, measured on the final uint8 output (after rounding and clipping to 0..255) over the face
region, at the output's resolution and, for a photo upscaled by ``-s``, at the photo's own resolution too (the
output reduced back): at the upscaled resolution a smooth upscale holds little but rounding noise, and faces whose
eyes lost contrast at the photo's scale passed there. The split above is only the first crossover tried: where the restoration is smoother than the input in the
band below the model's Nyquist (the model's output is resampled to and from its grid, and a diffusion restorer
removes grain), the crossover moves down (3/4, 1/2, 0.35, 1/4 of the Nyquist, then 4 cycles per crop: colour and
shape only) until the output has at least the input's energy; the last resort is the input itself (crossover 0).
Where clipping at 0/255 is what loses the detail, the restoration's shift is first limited to the range the input's
texture leaves (``detail_range_limited``). The chosen crossover goes into the face's record (``detail_cut_cycles``,
cycles per crop). On the 9 example photos (embedded-128, upscales 1, 2 and 4: 30 face x upscale rows larger than
the model) the crossover settled at 3/4 of the Nyquist for 6 rows and at half of it for 22; a halftone print's face
stayed the input at upscales 2 and 4 (docs/results/detail_keep.md).

The two bands are complementary: where the restoration equals the input, so does the output. numpy/scipy/Pillow
only (no OpenCV), so it works without the ``faces`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from PIL import Image
from scipy import ndimage

DETAIL_MODES = ("keep", "restored")
TAPER = (0.5, 1.0)  # the low band's gain falls from 1 to 0 between these fractions of the model's Nyquist frequency
# The adaptive crossover (:func:`keep_detail`): where the restoration's band ends (gain 0; gain 1 up to half of it),
# tried in this order until the output has at least the input's high-frequency energy. Fractions of the model's
# Nyquist frequency, then LAST_CUT_CYCLES per crop (colour and shape only), then 0 (the input, unchanged).
CUT_FACTORS = (1.0, 0.75, 0.5, 0.35, 0.25)
LAST_CUT_CYCLES = 4.0
RANGE_WINDOW = 5  # px: the neighbourhood whose range the restoration's shift must keep inside 0..255 (see _in_range)
_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY


def check_detail_mode(mode: str) -> str:
    if mode not in DETAIL_MODES:
        raise ValueError(f"unknown detail mode {mode!r}; choose from {', '.join(DETAIL_MODES)}")
    return mode


def nyquist(model_px: float, width: float) -> float:
    """The Nyquist frequency, in cycles per reference pixel, of a model that saw ``model_px`` pixels across
    ``width`` reference pixels."""
    return float(model_px) / (2.0 * float(width))


class _Spectrum:
    """The FFT of a float (H, W) or (H, W, C) image, mirrored at its edges (``pad`` pixels on each side), so that
    several radial low-passes of it cost one forward transform."""

    def __init__(self, x: np.ndarray, pad: int):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim not in (2, 3):
            raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {x.shape}")
        self.shape = x.shape
        h, w = x.shape[:2]
        self.pad = pad = int(min(pad, 4 * max(h, w)))
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2)
        xp = np.pad(x, widths, mode="symmetric")
        self.hp, self.wp = xp.shape[:2]
        chans = [xp] if x.ndim == 2 else [xp[:, :, c] for c in range(x.shape[2])]
        # one channel at a time, in single precision: a big face at upscale 2 stays a few hundred MB at most
        self.spectra = [sfft.rfft2(c) for c in chans]
        fy = np.fft.fftfreq(self.hp)[:, None]
        fx = np.fft.rfftfreq(self.wp)[None, :]
        self.r = np.sqrt(fx * fx + fy * fy)

    def low(self, lo: float, hi: float) -> np.ndarray:
        """The band below ``hi`` cycles per pixel: gain 1 up to ``lo``, cos² down to 0 at ``hi``, radially."""
        t = np.clip((self.r - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        gain = (np.cos(0.5 * np.pi * t) ** 2).astype(np.float32)
        h, w, p = self.shape[0], self.shape[1], self.pad
        outs = [sfft.irfft2(s * gain, s=(self.hp, self.wp))[p : p + h, p : p + w] for s in self.spectra]
        out = outs[0] if len(self.shape) == 2 else np.stack(outs, axis=2)
        return np.ascontiguousarray(out, dtype=np.float32)


def _pad_for(lo: float) -> int:
    """Mirrored padding (two periods of the lowest frequency the filter treats) so nothing wraps around."""
    return int(math.ceil(2.0 / max(lo, 1e-3)))


def low_pass(x: np.ndarray, f_nyq: float, taper: tuple[float, float] = TAPER) -> np.ndarray:
    """The band of a float (H, W) or (H, W, C) image below ``f_nyq`` cycles per pixel: gain 1 up to
    ``taper[0] * f_nyq``, cos² down to 0 at ``taper[1] * f_nyq``, radially, per channel. The image is mirrored at
    its edges (by two periods of the lower edge) before the FFT, so nothing wraps around."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {x.shape}")
    lo, hi = taper[0] * f_nyq, taper[1] * f_nyq
    if lo >= 0.5 * math.sqrt(2.0):  # passes every frequency of the pixel grid
        return x.copy()
    return _Spectrum(x, _pad_for(lo)).low(lo, hi)


def low_band(img: np.ndarray, model_px: float, taper: tuple[float, float] = TAPER) -> np.ndarray:
    """The band of ``img`` that :func:`merge_detail` takes from the restoration for a model that saw ``model_px``
    pixels across its width (``taper=(1, 1)``: everything below the model's Nyquist, a sharp cut). Float32; the
    image itself when ``model_px`` is at least its width."""
    x = np.asarray(img, dtype=np.float32)
    if model_px >= x.shape[1]:
        return x
    return low_pass(x, nyquist(model_px, x.shape[1]), taper)


def resize_lanczos(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` (uint8) resized to ``size`` = (w, h) with Pillow's antialiased Lanczos (a copy when the size matches)."""
    h, w = img.shape[:2]
    if (w, h) == tuple(size):
        return np.array(img, dtype=np.uint8, copy=True)
    return np.array(Image.fromarray(np.ascontiguousarray(img)).resize(tuple(size), Image.LANCZOS))


def _check_rgb(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 image, got {a.dtype}")
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"{name}: expected an (H, W, 3) image, got shape {a.shape}")
    return a


def laplacian_energy(img: np.ndarray, where: np.ndarray | None = None, scale: float = 1.0) -> float:
    """High-frequency energy: the mean squared Laplacian (4-neighbour, mirrored border) of the grey image (BT.601
    luma of RGB, on the 0..255 scale), over the pixels where the boolean (H, W) ``where`` is set (all by default;
    0 for an empty selection).

    ``scale`` > 1: ``img`` is a photo upscaled by that much, and the energy is measured at the photo's own
    resolution (the grey image and ``where`` reduced by ``scale`` with area averaging; a pixel counts where at least
    half of its area was selected). At the upscaled resolution the Laplacian sees little but the rounding noise of
    the smooth upscale: a face whose eyes lost contrast at the photo's own scale still measured more energy there."""
    a = np.asarray(img, dtype=np.float64)
    g = a[:, :, :3] @ _GREY if a.ndim == 3 else a
    if scale > 1.0 + 1e-6:
        h, w = g.shape
        size = (max(1, round(w / scale)), max(1, round(h / scale)))
        g = np.asarray(Image.fromarray(g.astype(np.float32), "F").resize(size, Image.BOX), dtype=np.float64)
        if where is not None:
            sel = Image.fromarray(np.asarray(where, dtype=np.float32), "F").resize(size, Image.BOX)
            where = np.asarray(sel) >= 0.5
    p = np.pad(g, 1, mode="reflect")
    lap2 = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * g) ** 2
    sel = lap2 if where is None else lap2[np.asarray(where, dtype=bool)]
    return float(sel.mean()) if sel.size else 0.0


def cut_schedule(model_px: float) -> tuple[float, ...]:
    """The crossovers :func:`keep_detail` tries, in cycles per crop (``model_px`` pixels across the crop): where the
    restoration's band ends. Starts at the model's Nyquist (``model_px / 2``), ends with 0 (the input unchanged)."""
    nyq = float(model_px) / 2.0
    cuts = [f * nyq for f in CUT_FACTORS]
    if LAST_CUT_CYCLES < cuts[-1]:
        cuts.append(LAST_CUT_CYCLES)
    return (*cuts, 0.0)


@dataclass
class DetailSplit:
    """What :func:`keep_detail` chose: the output and its crossover."""

    image: np.ndarray  # uint8 (H, W, 3)
    cut_cycles: float  # the restoration's band ends here (cycles per crop; gain 1 up to half of it); 0: the input
    model_px: float
    hf_in: float  # min over the checked regions (and resolutions: see keep_detail) of the input's Laplacian energy ...
    hf_ratio: float | None  # ... and min over the regions of output / input (>= 1; None when the input has none)
    tried: int  # how many crossovers were tried
    range_limited: bool = False  # the restoration's shift was limited where it would have clipped the input's texture

    def record(self) -> dict:
        return {
            "detail_cut_cycles": round(self.cut_cycles, 3),
            "detail_range_limited": self.range_limited,
            "detail_cut_of_nyquist": round(self.cut_cycles / (self.model_px / 2.0), 4),
            "detail_hf_ratio": None if self.hf_ratio is None else round(self.hf_ratio, 4),
        }


def _range_bounds(ref: np.ndarray, k: int = RANGE_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, [-min, 255 - max] of ``ref`` over each k x k neighbourhood: a shift limited to these bounds
    needs no clipping, and where a bound binds across a neighbourhood the shift there is one constant, so the input's
    texture moves as a whole instead of being flattened against 0 or 255."""
    size = (k, k, 1) if ref.ndim == 3 else (k, k)
    return -ndimage.minimum_filter(ref, size=size, mode="nearest"), 255.0 - ndimage.maximum_filter(ref, size=size, mode="nearest")


def _enough(e_out: list[float], e_in: list[float]) -> bool:
    return all(eo >= ei for eo, ei in zip(e_out, e_in, strict=True))


def keep_detail(
    reference: np.ndarray,
    diff: np.ndarray,
    crop_px: float,
    model_px: float,
    weight: np.ndarray | None = None,
    regions: Sequence[np.ndarray] = (),
    scale: float = 1.0,
) -> DetailSplit:
    """``--detail keep`` with a guarantee: out = uint8(reference + weight * L_c(diff)), ``diff`` = restoration -
    reference (float, same shape), ``L_c`` the raised-cosine low-pass that ends at ``c`` cycles per crop (``crop_px``
    pixels across; gain 1 up to ``c / 2``). ``c`` is the first of :func:`cut_schedule` for which the final uint8
    output's :func:`laplacian_energy` is at least the reference's in every region (boolean (H, W) masks; the whole
    image when none is given). The last candidate, 0, returns the reference itself, so the guarantee holds by
    construction: the output never has less high-frequency energy than the input in these regions. A restoration
    that is as sharp as the input keeps the model's split (``c`` = the model's Nyquist); one that is smoother than
    the input in the band below the Nyquist gives that band back to the input. ``scale``: how much ``reference``
    was upscaled from the input photo; the energies are then compared at the photo's own resolution too
    (:func:`laplacian_energy`), where the input's detail is: the output must pass at both resolutions.

    Clipping: where ``reference + weight * L_c(diff)`` leaves 0..255 and the check fails, the same ``c`` is tried
    again with the shift limited to what each 5 x 5 neighbourhood of the reference leaves in range
    (``range_limited``): saturated texture (halftone dots, specular highlights) then keeps its contrast and the rest of
    the face still gets the restoration's low band, instead of the crossover dropping for the whole face."""
    ref_u8 = np.asarray(reference)
    if ref_u8.dtype != np.uint8:
        raise TypeError(f"reference: expected a uint8 image, got {ref_u8.dtype}")
    ref = ref_u8.astype(np.float32)
    diff = np.asarray(diff, dtype=np.float32)
    if diff.shape != ref.shape:
        raise ValueError(f"diff has shape {diff.shape}, reference {ref.shape}")
    regs = [np.asarray(r, dtype=bool) for r in regions] or [np.ones(ref.shape[:2], bool)]
    scales = (1.0, float(scale)) if scale > 1.0 + 1e-6 else (1.0,)  # the output's resolution, and the photo's own

    def energies(img: np.ndarray) -> list[float]:
        return [laplacian_energy(img, r, sc) for sc in scales for r in regs]

    e_in = energies(ref_u8)
    spec: _Spectrum | None = None
    bounds: tuple[np.ndarray, np.ndarray] | None = None
    h, w = ref.shape[:2]
    cuts = cut_schedule(model_px)
    for k, c in enumerate(cuts, 1):
        if c <= 0:
            out = ref_u8.copy()
        else:
            lo, hi = 0.5 * c / crop_px, c / crop_px
            if lo >= 0.5 * math.sqrt(2.0):
                low = diff
            else:
                need = min(_pad_for(lo), 4 * max(h, w))
                if spec is None or spec.pad < need:
                    # the first crossover with its own padding (the plain split); when it has to move, one transform
                    # padded for this crossover and the next serves both (most faces stop within two steps)
                    nxt = cuts[min(k, len(cuts) - 2)] * 0.5 / crop_px  # cuts[k] is the next one; the last is 0
                    spec = _Spectrum(diff, need if spec is None else min(_pad_for(nxt), 4 * max(h, w)))
                low = spec.low(lo, hi)
            add = low if weight is None else weight * low
            raw = ref + add
            out = np.clip(np.round(raw), 0, 255).astype(np.uint8)
        e_out = energies(out)
        limited = False
        if c > 0 and not _enough(e_out, e_in) and (raw.min() < -0.5 or raw.max() > 255.5):
            # clipping may be what lost the detail: try the same crossover with the shift kept inside the range
            bounds = bounds or _range_bounds(ref)
            out = np.clip(np.round(ref + np.clip(add, *bounds)), 0, 255).astype(np.uint8)
            e_out = energies(out)
            limited = True
        if _enough(e_out, e_in):
            ratios = [eo / ei for eo, ei in zip(e_out, e_in, strict=True) if ei > 0]
            return DetailSplit(out, float(c), float(model_px), min(e_in), min(ratios) if ratios else None, k, limited)
    raise AssertionError("unreachable: the last crossover returns the reference")  # pragma: no cover


def merge_detail(restored: np.ndarray, reference: np.ndarray, model_px: float, mode: str = "keep", info: dict | None = None) -> np.ndarray:
    """restored: uint8 (h, w, 3), any size, same framing as reference. reference: uint8 (H, W, 3), the input at the
    output size. model_px: how many pixels across the reference's width the model saw (e.g. restorer.size for a
    plain aligned crop). mode "keep": the band below the model's Nyquist from `restored` (resized to H x W), the band
    above it from `reference`; "restored": `restored` resized to H x W (Lanczos). Returns uint8 (H, W, 3).

    The split is smooth (``TAPER``: from half the model's Nyquist to the Nyquist, see the module's notes): the
    reference's band above the Nyquist is kept exactly. Where that output would have less high-frequency energy
    (:func:`laplacian_energy`, whole image) than the reference, the crossover moves down (:func:`keep_detail`), so
    "keep" never returns less detail than the reference had. With ``model_px >= W`` the reference has nothing above
    the model's Nyquist and "keep" returns the resized restoration too. ``info`` (a dict) receives the chosen
    crossover (:meth:`DetailSplit.record`: ``detail_cut_cycles`` per width, ...) when the split was applied."""
    check_detail_mode(mode)
    restored = _check_rgb("restored", restored)
    reference = _check_rgb("reference", reference)
    model_px = float(model_px)
    if not math.isfinite(model_px) or model_px <= 0:
        raise ValueError(f"model_px must be a positive number, got {model_px}")
    H, W = reference.shape[:2]
    up = resize_lanczos(restored, (W, H))
    if mode == "restored" or model_px >= W:
        return up
    diff = up.astype(np.float32) - reference.astype(np.float32)
    res = keep_detail(reference, diff, float(W), model_px)
    if info is not None:
        info.update(res.record())
    return res.image
