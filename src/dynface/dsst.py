"""DSST: the Dynamic Starting-Step lookup Table (method.md §3).

For each blur level σ the table holds ``t_σ``, the earliest diffusion step at which an HQ face set
``X_t`` and its Gaussian-blurred copy ``Ỹ^σ_t`` have the same log radial power spectrum up to ``tol``::

    t_σ = min{ t : agg_bins |log P_X(t) − log P_Y(t)| ≤ tol }       agg ∈ {max, mean}

Conventions (project-wide):

* **σ is in pixels at the reference resolution** ``ref_size`` (512 by default), the unit of the
  paper's std* and of ``eta = std/10``. A table built for images of side ``image_size`` applies the blur
  with ``σ · image_size / ref_size`` *working* pixels.
* **Steps** are 0-based indices into the base schedule (``alphas_cumprod[t]``, t = 0 … T−1). If no step
  meets the tolerance, ``t_σ = T − 1`` and σ is listed in ``metadata["saturated_sigmas"]``.
* **Spectra**: images in [−1, 1]; power ``|FFT2(x)|² / (H·W)`` (per-pixel normalised, so white noise of
  variance v has flat power v), averaged over images and channels, no mean subtraction. ω is the
  angular frequency in rad/pixel (``2π·fftfreq``).
* **Radial bins**: ``bins`` equal-width annuli on ``0 ≤ |ω| ≤ π`` (the disc inscribed in the DFT grid);
  the corners ``|ω| > π`` are not used. Each bin holds the plain mean of the power over its pixels;
  empty bins (small images) are left out of the aggregation. Both spectra are radially averaged
  *before* the log is taken.
* **Monotonicity**: the stored steps are the cumulative maximum over increasing σ of the raw minima
  (``metadata["raw_steps"]``), so ``lookup`` is non-decreasing in σ. The analytic mode is monotone
  already; the empirical mode can have noise-induced dips.

Modes:

* ``analytic`` (method.md §3.3): with ``S(ω)`` the mean power spectrum of the images,
  ``P_X = ᾱ_t S + (1−ᾱ_t)`` and ``P_Y = ᾱ_t S |K_σ|² + (1−ᾱ_t)``, ``|K_σ(ω)|² = exp(−σ_w²|ω|²)``
  (continuous Gaussian, σ_w in working pixels). Computed for all t and σ at once.
* ``empirical``: the images and their copies blurred with :func:`dynface.ops.gaussian_blur` are diffused
  with the *same* noise ε, ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε``, and their radial PSDs (averaged over
  images and channels) are compared. One noise draw per image is reused for every t, so the PSD
  expands exactly into three radial profiles, ``ᾱ|X₀|² + (1−ᾱ)|E|² + 2√(ᾱ(1−ᾱ)) Re(X₀ Ē)``, and every
  step t is evaluated exactly without re-diffusing (see :func:`diffused_radial_psd`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dynface.atomicfile import atomic_write_text
from dynface.ops import gaussian_blur

FORMAT = "dynface-dsst"
FORMAT_VERSION = 1
_CHUNK = 8  # images per FFT chunk (bounds memory at 512 px; fixed so that seeded noise is reproducible)

#: method.md §3.3 calibration row: tol 0.005, ``max`` aggregation, DifFace linear schedule, 512 px.
METHOD_CALIBRATION: dict[float, int] = {
    1.0: 555,
    2.0: 704,
    3.0: 770,
    4.0: 809,
    5.0: 836,
    6.0: 866,
    8.0: 908,
    10.0: 935,
    12.0: 955,
    15.0: 978,
}


@dataclass(frozen=True)
class DSSTConfig:
    """How to build a DSST table.

    ``sigmas`` (strictly increasing, > 0) are in pixels at ``ref_size``; ``image_size`` is the side of the
    (square) images the table is built from, i.e. the prior's working size. ``num_images`` caps the
    images used (a ``seed``-ed random subset, see :func:`select_indices`; ``None`` = all); ``seed`` also
    seeds the empirical mode's noise.
    """

    tol: float = 0.005
    aggregation: str = "max"  # "max" | "mean" over radial bins
    bins: int = 64
    mode: str = "analytic"  # "analytic" | "empirical"
    sigmas: tuple[float, ...] = tuple(0.25 * k for k in range(1, 61))  # 0.25 … 15 step 0.25
    ref_size: int = 512
    image_size: int = 512
    num_images: int | None = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.aggregation not in ("max", "mean"):
            raise ValueError(f"aggregation must be 'max' or 'mean', got {self.aggregation!r}")
        if self.mode not in ("analytic", "empirical"):
            raise ValueError(f"mode must be 'analytic' or 'empirical', got {self.mode!r}")
        if self.bins < 1 or self.ref_size < 1 or self.image_size < 2:
            raise ValueError("bins and ref_size must be >= 1 and image_size >= 2")
        s = [float(v) for v in self.sigmas]
        if not s or s[0] <= 0 or any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ValueError("sigmas must be a non-empty, strictly increasing sequence of positive values")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"num_images must be >= 1 or None, got {self.num_images}")


def select_indices(n: int, k: int | None, seed: int) -> list[int]:
    """Sorted indices of a ``seed``-ed random subset of ``k`` out of ``n`` items (all of them if k ≥ n or None)."""
    if k is None or k >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1]; floating tensors are taken to be in [−1, 1] already."""
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x


def _check_images(images: torch.Tensor) -> tuple[int, int]:
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.shape[-2], images.shape[-1]


def _fft(x: torch.Tensor) -> torch.Tensor:
    """2-D DFT in float64, scaled by ``1/√(H·W)`` so that ``|F|²`` is the per-pixel-normalised power."""
    h, w = x.shape[-2:]
    return torch.fft.fft2(x.double()) / math.sqrt(h * w)


def mean_power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean ``|FFT2(x)|² / (H·W)`` over images and channels: ``(H, W)`` float64, DC at [0, 0].

    ``images``: ``(N, C, H, W)``, float in [−1, 1] or uint8 in [0, 255] (mapped to [−1, 1]).
    """
    h, w = _check_images(images)
    total = torch.zeros(h, w, dtype=torch.float64)
    for i in range(0, images.shape[0], _CHUNK):
        total += _fft(_as_float(images[i : i + _CHUNK])).abs().square().sum(dim=(0, 1))
    return total / (images.shape[0] * images.shape[1])


@functools.lru_cache(maxsize=8)
def _radial_index(shape: tuple[int, int], bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel indices inside ``|ω| ≤ π`` and their bin numbers (equal-width bins on [0, π])."""
    h, w = shape
    wy = 2 * math.pi * torch.fft.fftfreq(h, dtype=torch.float64)
    wx = 2 * math.pi * torch.fft.fftfreq(w, dtype=torch.float64)
    r = torch.sqrt(wy[:, None] ** 2 + wx[None, :] ** 2).flatten()
    keep = torch.nonzero(r <= math.pi * (1 + 1e-12)).squeeze(1)
    idx = (r[keep] / math.pi * bins).long().clamp_max(bins - 1)
    return keep, idx


def radial_profile(power: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Radial average of ``(..., H, W)`` spectra (DC at [0, 0], unshifted) into ``(..., bins)``.

    Bin k holds the mean over pixels with ``k·π/bins ≤ |ω| < (k+1)·π/bins`` (ω in rad/pixel, the last
    bin closed at π); pixels beyond π (the corners) are ignored; empty bins are NaN.
    """
    keep, idx = (v.to(power.device) for v in _radial_index(tuple(power.shape[-2:]), bins))
    flat = power.flatten(-2)[..., keep]
    sums = flat.new_zeros(*flat.shape[:-1], bins).index_add_(-1, idx, flat)
    counts = torch.bincount(idx, minlength=bins).to(flat.dtype)
    return sums / counts  # 0/0 = NaN for empty bins


def diffused_radial_psd(
    x0_psd: torch.Tensor, noise_psd: torch.Tensor, cross_psd: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Radial PSD of ``√ᾱ·x₀ + √(1−ᾱ)·ε`` for every ᾱ, from the three radial profiles of one noise draw.

    ``x0_psd`` = R[|X₀|²], ``noise_psd`` = R[|E|²], ``cross_psd`` = R[Re(X₀Ē)] (each ``(..., bins)``, with the
    normalisation of :func:`mean_power_spectrum`). Returns ``(T, ..., bins)``; this is exact (the DFT is
    linear), not an approximation.
    """
    a = alphas_cumprod.double().reshape(-1, *([1] * x0_psd.ndim))
    return a * x0_psd + (1 - a) * noise_psd + 2 * torch.sqrt(a * (1 - a)) * cross_psd


def _working_sigmas(cfg: DSSTConfig) -> torch.Tensor:
    return torch.tensor(cfg.sigmas, dtype=torch.float64) * (cfg.image_size / cfg.ref_size)


def _analytic_psds(
    images: torch.Tensor, alphas_cumprod: torch.Tensor, cfg: DSSTConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected radial PSDs ``P_X (T, bins)`` and ``P_Y (T, S, bins)`` (method.md §3.3)."""
    spec = mean_power_spectrum(images)
    h, w = spec.shape
    wy = 2 * math.pi * torch.fft.fftfreq(h, dtype=torch.float64)
    wx = 2 * math.pi * torch.fft.fftfreq(w, dtype=torch.float64)
    r2 = wy[:, None] ** 2 + wx[None, :] ** 2
    s_w = _working_sigmas(cfg)
    blurred = torch.cat(
        [radial_profile(spec * torch.exp(-(s[:, None, None] ** 2) * r2), cfg.bins) for s in s_w.split(8)]
    )
    a = alphas_cumprod.double()
    p_x = a[:, None] * radial_profile(spec, cfg.bins) + (1 - a[:, None])
    p_y = a[:, None, None] * blurred + (1 - a[:, None, None])
    return p_x, p_y


def _empirical_psds(
    images: torch.Tensor, alphas_cumprod: torch.Tensor, cfg: DSSTConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radial PSDs of the diffused sharp ``(T, bins)`` and blurred ``(T, S, bins)`` sets, shared noise."""
    s_w = _working_sigmas(cfg)
    n, c = images.shape[:2]
    g = torch.Generator().manual_seed(cfg.seed)
    acc = {k: torch.zeros(cfg.bins, dtype=torch.float64) for k in ("x", "e", "xe")}
    acc_y = torch.zeros(len(s_w), cfg.bins, dtype=torch.float64)
    acc_ye = torch.zeros(len(s_w), cfg.bins, dtype=torch.float64)

    def rsum(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """Radial profile of Σ_images,channels |A|² (or Re(A·B̄)) for normalised DFTs A, B."""
        p = a.abs().square() if b is None else (a * b.conj()).real
        return radial_profile(p.sum(dim=(0, 1)), cfg.bins)

    for i in range(0, n, _CHUNK):
        x = _as_float(images[i : i + _CHUNK]).float()
        eps = torch.randn(x.shape, generator=g)
        fx, fe = _fft(x), _fft(eps)
        acc["x"] += rsum(fx)
        acc["e"] += rsum(fe)
        acc["xe"] += rsum(fx, fe)
        for j, s in enumerate(s_w.tolist()):
            fy = _fft(gaussian_blur(x, s))
            acc_y[j] += rsum(fy)
            acc_ye[j] += rsum(fy, fe)
    m = n * c
    p_x = diffused_radial_psd(acc["x"] / m, acc["e"] / m, acc["xe"] / m, alphas_cumprod)
    p_y = diffused_radial_psd(acc_y / m, (acc["e"] / m).expand_as(acc_y), acc_ye / m, alphas_cumprod)
    return p_x, p_y


def first_steps(
    p_x: torch.Tensor, p_y: torch.Tensor, tol: float, aggregation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(steps, saturated)`` from radial PSDs ``p_x (T, bins)`` and ``p_y (T, S, bins)``.

    ``steps[s]`` = the smallest t with ``agg_bins |log p_x − log p_y| ≤ tol`` (NaN bins skipped), or T−1
    where no t qualifies (then ``saturated[s]`` is True).
    """
    gap = (p_x[:, None].log() - p_y.log()).abs()  # (T, S, bins)
    valid = ~torch.isnan(gap[0, 0])
    gap = gap[..., valid]
    agg = gap.amax(-1) if aggregation == "max" else gap.mean(-1)  # (T, S)
    ok = agg <= tol
    saturated = ~ok.any(0)
    steps = torch.where(saturated, torch.tensor(p_x.shape[0] - 1), ok.to(torch.int8).argmax(0))
    return steps, saturated


class DSSTLoadError(ValueError):
    """A DSST table file could not be used; the message names the file and the reason in one line."""


@dataclass(frozen=True)
class DSSTTable:
    """σ → starting step. ``sigmas`` (ref px, strictly increasing), ``steps`` (0-based, non-decreasing)."""

    sigmas: tuple[float, ...]
    steps: tuple[int, ...]
    metadata: dict[str, Any]

    def __post_init__(self) -> None:
        s, t = self.sigmas, self.steps
        if not s or len(s) != len(t):
            raise ValueError("sigmas and steps must be non-empty and of equal length")
        if any(b <= a for a, b in zip(s, s[1:], strict=False)):
            raise ValueError("sigmas must be strictly increasing")
        if any(b < a for a, b in zip(t, t[1:], strict=False)):
            raise ValueError("steps must be non-decreasing in sigma")

    def lookup(self, sigma: float | torch.Tensor, as_int: bool = False) -> torch.Tensor:
        """Starting step(s) for σ (ref px): linear interpolation between grid points, clamped at both ends.

        Returns float64 steps of σ's shape (on σ's device), or, with ``as_int``, the same rounded to the
        nearest integer (``torch.round``, ties to even) as int64. Non-decreasing in σ.
        """
        sig = torch.as_tensor(sigma, dtype=torch.float64)
        grid = torch.tensor(self.sigmas, dtype=torch.float64, device=sig.device)
        vals = torch.tensor(self.steps, dtype=torch.float64, device=sig.device)
        if len(grid) == 1:
            out = vals[0].expand(sig.shape).clone()
        else:
            s = sig.clamp(grid[0], grid[-1])
            i = (torch.searchsorted(grid, s, right=True) - 1).clamp(0, len(grid) - 2)
            frac = (s - grid[i]) / (grid[i + 1] - grid[i])
            out = vals[i] + frac * (vals[i + 1] - vals[i])
        return out.round().long() if as_int else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "sigmas": list(self.sigmas),
            "steps": list(self.steps),
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temporary file in the same folder, then rename)."""
        atomic_write_text(json.dumps(self.to_dict(), indent=1) + "\n", path)

    @classmethod
    def load(cls, path: str | Path) -> DSSTTable:
        """Read a table written by :meth:`save`; :class:`DSSTLoadError` (one line naming the file) otherwise."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DSSTLoadError(f"DSST table {path}: file not found") from None
        except IsADirectoryError:
            raise DSSTLoadError(f"DSST table {path}: is a folder, expected a .json file") from None
        except OSError as e:
            raise DSSTLoadError(f"DSST table {path}: cannot read ({e.strerror or e})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DSSTLoadError(f"DSST table {path}: not JSON ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise DSSTLoadError(f"DSST table {path}: not a {FORMAT} v{FORMAT_VERSION} file")
        try:
            return cls(tuple(float(s) for s in d["sigmas"]), tuple(int(t) for t in d["steps"]), d["metadata"])
        except KeyError as e:
            raise DSSTLoadError(f"DSST table {path}: the field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError) as e:
            raise DSSTLoadError(f"DSST table {path}: invalid table ({e})") from None


def build_dsst(
    images: torch.Tensor,
    alphas_cumprod: torch.Tensor | Sequence[float],
    cfg: DSSTConfig = DSSTConfig(),
    *,
    schedule: str = "custom",
) -> DSSTTable:
    """Build the table from clean images ``(N, C, S, S)`` with ``S == cfg.image_size``.

    ``images``: float in [−1, 1] or uint8 in [0, 255]; at most ``cfg.num_images`` of them are used
    (:func:`select_indices`). ``alphas_cumprod``: ᾱ_t of the prior's base schedule, t = 0 … T−1.
    ``schedule`` is a name stored in the metadata.
    """
    h, w = _check_images(images)
    if h != w or h != cfg.image_size:
        raise ValueError(f"images must be {cfg.image_size}x{cfg.image_size} (cfg.image_size), got {h}x{w}")
    images = images[select_indices(images.shape[0], cfg.num_images, cfg.seed)]
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
    psds = _analytic_psds if cfg.mode == "analytic" else _empirical_psds
    p_x, p_y = psds(images, ac, cfg)
    raw, saturated = first_steps(p_x, p_y, cfg.tol, cfg.aggregation)
    steps = torch.cummax(raw, dim=0).values
    config = asdict(cfg)
    config["sigmas"] = list(cfg.sigmas)
    meta = {
        "config": config,
        "schedule": schedule,
        "num_timesteps": len(ac),
        "image_size": cfg.image_size,
        "ref_size": cfg.ref_size,
        "num_images": int(images.shape[0]),
        "sigma_unit": f"pixels at {cfg.ref_size} px; blur applied with sigma*image_size/ref_size",
        "step_convention": "0-based index into alphas_cumprod of the base schedule",
        "monotone": "steps = cumulative max over increasing sigma of raw_steps",
        "raw_steps": raw.tolist(),
        "saturated_sigmas": [s for s, sat in zip(cfg.sigmas, saturated.tolist(), strict=True) if sat],
    }
    return DSSTTable(tuple(float(s) for s in cfg.sigmas), tuple(steps.tolist()), meta)
