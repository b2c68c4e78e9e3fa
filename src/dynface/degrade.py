"""Synthetic face degradations for training and test sets (method.md §1.2 and §8 A).

The pipeline is the GFPGAN/CodeFormer/DifFace one::

    y = JPEG_q( (x ⊛ k)↓r + n_δ )↑r

1. **Blur** ``x ⊛ k``: a normalised Gaussian kernel ``k`` (isotropic, or anisotropic with covariance
   ``R(θ) diag(σx², σy²) R(θ)ᵀ``), one per sample, applied by a grouped convolution with reflect padding
   (``cv2.filter2D``'s default border, ``BORDER_REFLECT_101``). Gaussians are point-symmetric, so
   correlation and convolution coincide.
2. **Downsample** ``↓r`` to ``round(N / r)`` pixels per side, bilinear, no antialiasing (half-pixel
   centres, like ``cv2.resize(..., INTER_LINEAR)`` in BasicSR/GFPGAN). ``r < 1`` upsamples.
3. **Noise** ``n_δ``: i.i.d. Gaussian per pixel and channel, std ``δ / 255``; then clamp to [0, 1].
4. **JPEG**: the low-resolution image is quantised to 8 bits (as it would be stored) and, when
   ``q < 100``, encoded and decoded in memory by PIL at quality ``q`` (4:2:0 chroma subsampling).
5. **Resize back** ``↑r`` to ``N × N``, bilinear.
6. Optional colour jitter, then optional conversion to grey (ITU-R 601 luma, kept as 3 channels), as
   GFPGAN does on the LQ image; the output is rounded to 8-bit levels (``k / 255``).

Tensors are ``(B, 3, H, W)`` float in [0, 1] with ``H == W == N``. Kernel coordinates: ``x`` is the
column offset (to the right), ``y`` the row offset (downwards); ``θ`` rotates the ``σx`` axis from
``+x`` towards ``+y``. Rotating ``θ`` by ``π/2`` is the same as swapping ``σx`` and ``σy``.

**Resolution convention.** Every preset parameter is defined at a reference resolution ``ref_size``
(512, the resolution of FFHQ/CelebA-HQ faces in the sources). When degrading ``N``-pixel images, the
blur σ's and the kernel size are multiplied by ``N / ref_size`` (the kernel size is then rounded to
an odd number ≥ 3); the downsample factor ``r`` is relative and unchanged; noise δ and JPEG quality
are per pixel and unchanged. This is *not* degrading the 512-px version and resizing the result: with ``r``
relative, the low-resolution face shrinks with ``N`` (``gfpgan``'s ``r`` = 6.66 leaves 19 px of a 128-px face, 77 px
of a 512-px one), so a small ``N`` is harsher: 8 CelebA-HQ faces, LQ PSNR 23.75 dB degraded at 128 px against
27.57 dB degraded at 512 and resized to 128 (``difface``: 17.96 against 23.40; a helper's measurement, session 16).
The embedded models are trained and evaluated this way, at their own ``N``. :class:`DegradationParams` hold the
values *actually applied* at
``size`` (σ and kernel size in pixels of the ``size``-pixel image).

**Randomness.** Parameters are drawn from NumPy generators, noise from a ``torch.Generator``; the
global RNGs are never touched. With an integer seed, sample ``i`` uses its own stream derived from
``(seed, i)``, so its parameters do not depend on how many samples are drawn (``sample_params(..., n)``
is a prefix of ``sample_params(..., n + m)``). Each :class:`DegradationParams` carries the seed of its
noise, so :func:`apply_degradation` is a deterministic function of ``(x, params)``.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dynface.ops import SIGMA_MIN

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma (cv2's BGR2GRAY, PIL's "L")
_RGB2YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64
)


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges of a random degradation, defined at ``ref_size`` (see the module's resolution convention).

    Each image independently gets an isotropic kernel with probability ``iso_prob`` (σ uniform in
    ``sigma_range``), else an anisotropic one (σx, σy independent and uniform in ``sigma_range``,
    θ uniform in [0, π)). The downsample factor ``r`` and the noise δ (0–255 scale) are uniform in their
    ranges; the JPEG quality is a uniform integer in ``jpeg_range`` (inclusive; ≥ 100 means no JPEG).
    ``gray_prob`` is the probability of a grey (3-channel) output. ``color_jitter``, when set, holds the
    maximum (brightness, contrast, saturation, hue) shifts: factors uniform in ``[1 − a, 1 + a]`` for the
    first three (torchvision's ``ColorJitter`` semantics), hue shift uniform in ``[−h, h]`` turns.
    """

    kernel_size: int = 41
    sigma_range: tuple[float, float] = (0.1, 10.0)
    iso_prob: float = 0.5
    scale_range: tuple[float, float] = (0.8, 8.0)
    noise_range: tuple[float, float] = (0.0, 20.0)
    jpeg_range: tuple[int, int] = (60, 100)
    gray_prob: float = 0.0
    color_jitter: tuple[float, float, float, float] | None = None
    ref_size: int = 512


@dataclass(frozen=True)
class DegradationGrid:
    """A deterministic grid of anisotropic degradations (DifFace journal test set), at ``ref_size``.

    The grid is the product ``jpeg × scales × noises × sigmas_x × thetas``; σy is drawn at random from
    ``sigmas_y`` for every image. Image ``i`` of a set gets entry ``perm[i mod G]`` of a permutation of
    the ``G`` grid entries seeded by the seed alone (so ``G`` consecutive images cover the whole grid).
    """

    jpeg: tuple[int, ...] = (30, 40, 50, 60, 70)
    scales: tuple[float, ...] = tuple(float(s) for s in range(4, 41, 4))
    noises: tuple[float, ...] = (1.0, 5.0, 10.0, 15.0, 20.0)
    sigmas_x: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0)
    thetas: tuple[float, ...] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
    sigmas_y: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0)
    kernel_size: int = 41
    ref_size: int = 512

    def entries(self) -> list[tuple[int, float, float, float, float]]:
        """All grid entries ``(jpeg, scale, noise, sigma_x, theta)`` in a fixed nested order."""
        return list(itertools.product(self.jpeg, self.scales, self.noises, self.sigmas_x, self.thetas))


DegradationSpec = DegradationConfig | DegradationGrid

PRESETS: dict[str, DegradationSpec] = {
    # GFPGAN's CelebA-Test convention (method.md §8 A1).
    "gfpgan": DegradationConfig(
        sigma_range=(0.1, 10.0), scale_range=(0.8, 8.0), noise_range=(0.0, 20.0), jpeg_range=(60, 100)
    ),
    # DiffBIR stage-1 SwinIR training (method.md §8 A2).
    "diffbir": DegradationConfig(
        sigma_range=(0.1, 12.0), scale_range=(1.0, 12.0), noise_range=(0.0, 15.0), jpeg_range=(30, 100)
    ),
    # DifFace SwinIR training (configs/training/swinir_ffhq512.yaml).
    "difface": DegradationConfig(
        sigma_range=(0.1, 15.0), scale_range=(0.8, 32.0), noise_range=(0.0, 20.0), jpeg_range=(30, 100), gray_prob=0.01
    ),
    # DifFace journal CelebA-Test grid (scripts/prepare_testing_restoration.py).
    "difface-grid": DegradationGrid(),
}


@dataclass
class DegradationParams:
    """The degradation of one image, in pixels of a ``size × size`` image.

    ``kernel`` is ``"iso"`` or ``"aniso"``; ``sigma_x``, ``sigma_y`` (pixels) and ``theta`` (radians) define
    the blur, ``kernel_size`` its (odd) support; ``scale`` is the downsample factor r; ``noise`` the noise
    std δ on the 0–255 scale; ``jpeg`` the JPEG quality (≥ 100: none); ``gray`` a grey output;
    ``jitter`` the (brightness, contrast, saturation, hue) factors/shift or ``None``; ``seed`` seeds the
    noise generator.
    """

    kernel: str
    sigma_x: float
    sigma_y: float
    theta: float
    kernel_size: int
    scale: float
    noise: float
    jpeg: int
    gray: bool
    jitter: tuple[float, float, float, float] | None
    seed: int
    size: int

    def to_dict(self) -> dict:
        """JSON-ready dict (``jitter`` as a list or ``None``)."""
        d = asdict(self)
        d["jitter"] = list(self.jitter) if self.jitter is not None else None
        return d


def resolve_spec(spec: DegradationSpec | str) -> DegradationSpec:
    """A preset name or a spec → the spec."""
    if isinstance(spec, str):
        try:
            return PRESETS[spec]
        except KeyError:
            raise ValueError(f"unknown degradation preset {spec!r}; choose from {', '.join(PRESETS)}") from None
    return spec


def scaled_kernel_size(kernel_size: int, size: int, ref_size: int) -> int:
    """Kernel size for ``size``-pixel images: ``kernel_size · size / ref_size`` rounded to odd, ≥ 3.

    Capped at ``2·size − 1`` so that reflect padding stays valid (1 for a 1-pixel image).
    """
    k = 2 * int(math.floor((kernel_size * size / ref_size - 1) / 2 + 0.5)) + 1
    return min(max(3, k), 2 * size - 1)


def gaussian_kernel_aniso(
    size: int, sigma_x: torch.Tensor | float, sigma_y: torch.Tensor | float, theta: torch.Tensor | float
) -> torch.Tensor:
    """Normalised, sampled 2-D Gaussians with covariance ``R(θ) diag(σx², σy²) R(θ)ᵀ``: ``(B, size, size)``.

    ``sigma_x``, ``sigma_y``, ``theta`` are scalars or ``(B,)`` tensors (broadcast together); ``size`` is
    odd. Index ``[b, i, j]`` is the tap at row offset ``i − size//2`` and column offset ``j − size//2``.
    σ is clamped to ``ops.SIGMA_MIN`` (a smaller blur is the identity). Isotropic is ``σx == σy``.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    given = [v for v in (sigma_x, sigma_y, theta) if isinstance(v, torch.Tensor)]
    dtype = functools.reduce(
        torch.promote_types, [v.dtype for v in given if v.is_floating_point()], torch.get_default_dtype()
    )
    device = given[0].device if given else None
    sx, sy, th = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=dtype, device=device).reshape(-1) for v in (sigma_x, sigma_y, theta))
    )
    sx, sy, th = (v[:, None, None] for v in (sx, sy, th))
    ax = torch.arange(size, dtype=dtype, device=sx.device) - size // 2
    yy, xx = ax[:, None], ax[None, :]
    c, s = torch.cos(th), torch.sin(th)
    u = c * xx + s * yy  # coordinate along the σx axis
    v = -s * xx + c * yy  # coordinate along the σy axis
    q = (u / sx.clamp_min(SIGMA_MIN)) ** 2 + (v / sy.clamp_min(SIGMA_MIN)) ** 2
    k = torch.exp(-0.5 * q)
    return k / k.sum(dim=(1, 2), keepdim=True)


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each sample of ``x`` (B,C,H,W) with its own kernel ``kernels[b]`` (B,k,k), reflect padding.

    Computes the correlation (equal to the convolution for point-symmetric kernels) on the
    reflect-padded image (``F.pad(mode="reflect")``, i.e. ``BORDER_REFLECT_101``); needs ``k//2 < H, W``.
    """
    b, c, h, w = x.shape
    if kernels.shape[0] != b or kernels.shape[1] != kernels.shape[2] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"need {b} square odd kernels, got shape {tuple(kernels.shape)}")
    r = kernels.shape[1] // 2
    if r >= min(h, w):
        raise ValueError(f"kernel size {kernels.shape[1]} too large for a {h}x{w} image")
    weight = kernels.to(x).repeat_interleave(c, dim=0)[:, None]  # (B*C, 1, k, k)
    xp = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


def _resolve_seed(seed_or_generator: int | np.random.Generator) -> int:
    if isinstance(seed_or_generator, np.random.Generator):
        return int(seed_or_generator.integers(2**63))
    seed = int(seed_or_generator)
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0, got {seed}")
    return seed


def _sample_random(cfg: DegradationConfig, rng: np.random.Generator, size: int) -> DegradationParams:
    f = size / cfg.ref_size
    iso = bool(rng.random() < cfg.iso_prob)
    sx = float(rng.uniform(*cfg.sigma_range))
    sy = sx if iso else float(rng.uniform(*cfg.sigma_range))
    theta = 0.0 if iso else float(rng.uniform(0.0, math.pi))
    scale = float(rng.uniform(*cfg.scale_range))
    noise = float(rng.uniform(*cfg.noise_range))
    jpeg = int(rng.integers(cfg.jpeg_range[0], cfg.jpeg_range[1], endpoint=True))
    gray = bool(rng.random() < cfg.gray_prob)
    jitter = None
    if cfg.color_jitter is not None:
        b, c, s, h = cfg.color_jitter
        jitter = (
            float(rng.uniform(max(0.0, 1 - b), 1 + b)),
            float(rng.uniform(max(0.0, 1 - c), 1 + c)),
            float(rng.uniform(max(0.0, 1 - s), 1 + s)),
            float(rng.uniform(-h, h)),
        )
    return DegradationParams(
        kernel="iso" if iso else "aniso",
        sigma_x=sx * f,
        sigma_y=sy * f,
        theta=theta,
        kernel_size=scaled_kernel_size(cfg.kernel_size, size, cfg.ref_size),
        scale=scale,
        noise=noise,
        jpeg=jpeg,
        gray=gray,
        jitter=jitter,
        seed=int(rng.integers(2**63)),
        size=size,
    )


def sample_params(
    spec: DegradationSpec | str, n: int, seed_or_generator: int | np.random.Generator, size: int
) -> list[DegradationParams]:
    """Draw the degradations of ``n`` images of ``size × size`` pixels from a spec or preset name.

    With an integer seed, sample ``i`` depends only on ``(seed, i)`` (and, for a grid, on the grid
    permutation, which depends on the seed only). A NumPy generator is consumed once to draw that seed.
    """
    spec = resolve_spec(spec)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    seed = _resolve_seed(seed_or_generator)
    streams = [np.random.default_rng([seed, 0, i]) for i in range(n)]
    if isinstance(spec, DegradationConfig):
        return [_sample_random(spec, rng, size) for rng in streams]
    entries = spec.entries()
    perm = np.random.default_rng([seed, 1]).permutation(len(entries))
    f = size / spec.ref_size
    ks = scaled_kernel_size(spec.kernel_size, size, spec.ref_size)
    out = []
    for i, rng in enumerate(streams):
        q, sf, noise, sx, theta = entries[perm[i % len(entries)]]
        sy = spec.sigmas_y[int(rng.integers(len(spec.sigmas_y)))]
        out.append(
            DegradationParams(
                kernel="aniso",
                sigma_x=sx * f,
                sigma_y=sy * f,
                theta=theta,
                kernel_size=ks,
                scale=sf,
                noise=noise,
                jpeg=q,
                gray=False,
                jitter=None,
                seed=int(rng.integers(2**63)),
                size=size,
            )
        )
    return out


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Quantise (3,h,w) [0,1] to uint8, JPEG round-trip in memory unless ``quality ≥ 100``, back to float."""
    arr = x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    if quality < 100:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality), subsampling=2)
        buf.seek(0)
        with Image.open(buf) as im:
            arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(x.dtype) / 255


def _jitter(x: torch.Tensor, jitter: tuple[float, float, float, float]) -> torch.Tensor:
    """Brightness, contrast, saturation (torchvision semantics), then hue as a YIQ chroma rotation."""
    b, c, s, h = jitter
    grey = torch.tensor(_GREY, dtype=x.dtype)[:, None, None]
    x = (x * b).clamp(0, 1)
    x = (x * c + (x * grey).sum(0).mean() * (1 - c)).clamp(0, 1)
    x = (x * s + (x * grey).sum(0, keepdim=True) * (1 - s)).clamp(0, 1)
    if h != 0:
        a = 2 * math.pi * h
        rot = torch.tensor(
            [[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64
        )
        m = (torch.linalg.inv(_RGB2YIQ) @ rot @ _RGB2YIQ).to(x.dtype)
        x = torch.einsum("ij,jhw->ihw", m, x).clamp(0, 1)
    return x


def _degrade_one(xb: torch.Tensor, p: DegradationParams, h: int, w: int) -> torch.Tensor:
    """The per-sample steps after the blur (CPU): downsample, noise, JPEG, upsample, jitter, grey, 8-bit."""
    lr_size = (max(1, int(h / p.scale + 0.5)), max(1, int(w / p.scale + 0.5)))
    y = xb[None]
    if lr_size != (h, w):
        y = F.interpolate(y, size=lr_size, mode="bilinear", align_corners=False, antialias=False)
    y = y[0]
    if p.noise > 0:
        g = torch.Generator().manual_seed(p.seed)
        y = y + torch.randn(y.shape, generator=g, dtype=y.dtype) * (p.noise / 255)
    y = _jpeg(y.clamp(0, 1), p.jpeg)
    if lr_size != (h, w):
        y = F.interpolate(y[None], size=(h, w), mode="bilinear", align_corners=False, antialias=False)[0]
    y = y.clamp(0, 1)
    if p.jitter is not None:
        y = _jitter(y, p.jitter)
    if p.gray:
        y = (y * torch.tensor(_GREY, dtype=y.dtype)[:, None, None]).sum(0, keepdim=True).expand(3, h, w)
    return y.mul(255).round().clamp(0, 255) / 255


def apply_degradation(x: torch.Tensor, params: list[DegradationParams], workers: int = 1) -> torch.Tensor:
    """Degrade ``x`` (B,3,N,N) float in [0,1] with one :class:`DegradationParams` per sample.

    Deterministic in ``(x, params)``. The blur runs batched on ``x``'s device; the later steps run per
    sample on the CPU (sizes differ after downsampling, JPEG is PIL), on ``workers`` threads when > 1 (the
    same result: each sample has its own seed; for GPU training, where this loop would starve the device).
    Returns a float tensor of the same shape, dtype and device, in [0, 1], on 8-bit levels.
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"expected a float (B,3,H,W) tensor, got {tuple(x.shape)} {x.dtype}")
    b, _, h, w = x.shape
    if len(params) != b:
        raise ValueError(f"{len(params)} parameter sets for a batch of {b}")
    for p in params:
        if p.size != h or p.size != w:
            raise ValueError(f"parameters are for {p.size}x{p.size} images, got {h}x{w}")
    kmax = max(p.kernel_size for p in params)
    kernels = torch.stack(
        [
            F.pad(
                gaussian_kernel_aniso(p.kernel_size, p.sigma_x, p.sigma_y, p.theta)[0],
                [(kmax - p.kernel_size) // 2] * 4,
            )
            for p in params
        ]
    )  # zero taps around a smaller kernel leave its result unchanged
    blurred = blur(x, kernels.to(device=x.device, dtype=x.dtype)).cpu()
    if workers > 1 and b > 1:
        with ThreadPoolExecutor(min(workers, b)) as pool:  # torch ops and PIL's JPEG codec release the GIL
            out = list(pool.map(lambda xp: _degrade_one(xp[0], xp[1], h, w), zip(blurred, params, strict=True)))
    else:
        out = [_degrade_one(xb, p, h, w) for xb, p in zip(blurred, params, strict=True)]
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


def degrade(
    x: torch.Tensor, spec: DegradationSpec | str, seed: int | np.random.Generator, workers: int = 1
) -> tuple[torch.Tensor, list[DegradationParams]]:
    """Sample parameters for ``x`` (B,3,N,N) in [0,1] (see :func:`sample_params`) and apply them."""
    params = sample_params(spec, x.shape[0], seed, x.shape[-1])
    return apply_degradation(x, params, workers=workers), params


# ------------------------------------------------------------------------------------------ old prints
def add_dust(img: np.ndarray, rng: np.random.Generator, specks: int = 12, scratches: int = 2,
             region: tuple[int, int, int, int] | None = None, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An old print's white dust and scratches on an RGB uint8 image (for tests and ``benchmarks/dust.py``; not in
    the training pipeline): ``specks`` round specks (discs of radius 0.6–2.5 px × ``scale`` with a pixel-wide edge,
    60–100 % of the way to white) and ``scratches`` thin curved lines (0.7–1.5 px × ``scale`` wide, 20–60 % of the
    region's side long, 50–90 % of the way to white), all inside ``region`` = (x0, y0, x1, y1) (default: the whole
    image). Returns the image and the defects' opacity in [0, 1] (H, W)."""
    import cv2

    h, w = img.shape[:2]
    x0, y0, x1, y1 = region or (0, 0, w, h)
    alpha = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(specks):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        r = rng.uniform(0.6, 2.5) * scale
        a = rng.uniform(0.6, 1.0)
        edge = np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0.0, 1.0)  # a disc, its edge a pixel wide
        alpha = np.maximum(alpha, (a * edge).astype(np.float32))
    side = min(x1 - x0, y1 - y0)
    for _ in range(scratches):
        p0 = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.2, 0.6) * side
        p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.08 * length, 2)  # a gentle curve
        t = np.linspace(0, 1, 64)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2
        line = np.zeros((h, w), np.uint8)
        cv2.polylines(line, [np.round(pts * 16).astype(np.int32)], False, 255,
                      thickness=max(1, int(round(rng.uniform(0.7, 1.5) * scale))), lineType=cv2.LINE_AA, shift=4)
        alpha = np.maximum(alpha, rng.uniform(0.5, 0.9) * line.astype(np.float32) / 255)
    out = img.astype(np.float32) + alpha[..., None] * (255 - img.astype(np.float32))
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha


CMYK_ANGLES = (15.0, 75.0, 0.0, 45.0)  # degrees: the usual screen angles of cyan, magenta, yellow and black


def add_halftone(img: np.ndarray, period: float, angle: float = 45.0, *, colour: bool = False, supersample: int = 4,
                 scan_blur: float = 0.5) -> np.ndarray:
    """``img`` (RGB uint8) printed as an AM halftone and scanned (for tests and ``benchmarks/descreen.py``; not in the
    training pipeline): round dots on a square screen of ``period`` px (of the result) at ``angle`` degrees that grow
    with the ink's darkness until they join; ``colour``: cyan, magenta, yellow and black screens at
    :data:`CMYK_ANGLES` (black: the grey's share under the colours), else one black screen of the luma. Drawn at
    ``supersample`` × the size, blurred by the scanner (a Gaussian of ``scan_blur`` px of the result) and averaged
    down. Returns RGB uint8 of ``img``'s size."""
    import cv2

    h, w = img.shape[:2]
    s = int(supersample)
    big = cv2.resize(img, (w * s, h * s), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    yy, xx = np.mgrid[0 : h * s, 0 : w * s].astype(np.float32) / s

    def screen(dark: np.ndarray, deg: float) -> np.ndarray:  # the ink's coverage, 0/1: dots at the cells' centres
        a = np.deg2rad(deg)
        u, v = xx * np.cos(a) - yy * np.sin(a), xx * np.sin(a) + yy * np.cos(a)
        spot = 0.5 + 0.25 * (np.cos(2 * np.pi * u / period) + np.cos(2 * np.pi * v / period))
        return (spot < dark).astype(np.float32)

    if colour:
        cmy = 1.0 - big
        k = cmy.min(axis=2)
        inks = [screen(cmy[..., i] - k, CMYK_ANGLES[i]) for i in range(3)]
        black = screen(k, CMYK_ANGLES[3])
        printed = np.stack([(1.0 - ink) * (1.0 - black) for ink in inks], axis=2)
    else:
        luma = big @ np.array([0.299, 0.587, 0.114], np.float32)
        printed = np.repeat((1.0 - screen(1.0 - luma, angle))[..., None], 3, axis=2)
    printed = cv2.GaussianBlur(printed, (0, 0), scan_blur * s)
    out = cv2.resize(printed, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
