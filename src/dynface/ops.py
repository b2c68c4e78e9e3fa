"""The Gaussian operator used everywhere in DynFaceRestore (method.md §8 B3).

One isotropic Gaussian blur, built from a per-sample σ tensor so that ∂/∂σ exists (needed for the σ
refinement of Eq. 7), with reflect padding. Two paths compute the *same* operator:

* ``gaussian_blur`` — separable spatial convolution (grouped conv, one kernel per sample);
* ``gaussian_blur_fft`` — multiplication by the DFT of the same discrete kernel on the reflect-padded
  (hence periodic) domain.

Because both use the same sampled, normalised kernel, they agree to float precision everywhere
(not just away from the borders). ``fourier_prox`` is the closed-form proximal step of method.md §4.4,
posed on the same reflect-extended periodic domain, so it is exact for that operator.

Images are ``(B, C, H, W)`` tensors; σ is a scalar, a float, or a ``(B,)`` tensor (pixels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIGMA_MIN = 1e-3  # below this a blur is the identity (kernel collapses to a delta)


def _as_sigma(sigma: torch.Tensor | float, batch: int, ref: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=ref.dtype, device=ref.device)
    if s.ndim == 0:
        s = s.expand(batch)
    if s.shape != (batch,):
        raise ValueError(f"sigma must be a scalar or have shape ({batch},), got {tuple(s.shape)}")
    return s


def kernel_radius(sigma_max: float, truncate: float = 3.0, limit: int | None = None) -> int:
    """Half-width ``ceil(truncate·σ)`` of the kernel (``2r+1`` taps), optionally capped by ``limit``."""
    r = max(1, int(math.ceil(truncate * float(sigma_max))))
    if limit is not None:
        r = max(1, min(r, limit))
    return r


def gaussian_kernel1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Sampled, normalised 1-D Gaussians, one row per σ: ``(B, 2r+1)``; differentiable in σ."""
    x = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    s = sigma.clamp_min(SIGMA_MIN)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_kernel2d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Isotropic 2-D kernels ``(B, 2r+1, 2r+1)`` (outer product of the 1-D kernels)."""
    k = gaussian_kernel1d(sigma, radius)
    return k[:, :, None] * k[:, None, :]


def _radius_for(x: torch.Tensor, sigma: torch.Tensor, radius: int | None, truncate: float) -> int:
    h, w = x.shape[-2:]
    limit = min(h, w) - 1
    if radius is None:
        radius = kernel_radius(float(sigma.detach().max()), truncate)
    return max(1, min(radius, limit))


def gaussian_blur(
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    radius: int | None = None,
    truncate: float = 3.0,
) -> torch.Tensor:
    """Blur ``x`` (B,C,H,W) with an isotropic Gaussian of std ``sigma`` per sample (spatial path).

    The kernel radius is ``ceil(truncate·max σ)`` unless given (capped so reflect padding is valid).
    """
    b, c, h, w = x.shape
    s = _as_sigma(sigma, b, x)
    r = _radius_for(x, s, radius, truncate)
    k = gaussian_kernel1d(s, r)  # (B, K)
    kk = k.repeat_interleave(c, dim=0)  # (B*C, K)
    xp = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(xp, kk[:, None, :, None], groups=b * c)  # vertical
    y = F.conv2d(y, kk[:, None, None, :], groups=b * c)  # horizontal
    return y.reshape(b, c, h, w)


def gaussian_transfer(
    sigma: torch.Tensor, radius: int, shape: tuple[int, int], rfft: bool = False
) -> torch.Tensor:
    """DFT ``(B, H, W)`` (or ``(B, H, W//2+1)``) of the discrete kernel placed circularly at the origin.

    The kernel is symmetric, so the transfer function is real; it is returned as a real tensor.
    """
    h, w = shape
    k = gaussian_kernel1d(sigma, radius)  # (B, K)
    taps = torch.arange(-radius, radius + 1, device=sigma.device)

    def circ(n: int) -> torch.Tensor:
        v = sigma.new_zeros(sigma.shape[0], n)
        return v.index_add(1, taps % n, k)

    kh = torch.fft.fft(circ(h), dim=1).real  # (B, H)
    kw = (torch.fft.rfft(circ(w), dim=1) if rfft else torch.fft.fft(circ(w), dim=1)).real
    return kh[:, :, None] * kw[:, None, :]


def gaussian_transfer_analytic(sigma: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Continuous Gaussian transfer function ``exp(-σ²|ω|²/2)`` on the DFT grid (ω in rad/pixel)."""
    h, w = shape
    wy = 2 * math.pi * torch.fft.fftfreq(h, dtype=sigma.dtype, device=sigma.device)
    wx = 2 * math.pi * torch.fft.fftfreq(w, dtype=sigma.dtype, device=sigma.device)
    r2 = wy[:, None] ** 2 + wx[None, :] ** 2
    return torch.exp(-0.5 * sigma[:, None, None] ** 2 * r2[None])


def _pad_reflect(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.pad(x, (r, r, r, r), mode="reflect")


def gaussian_blur_fft(
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    radius: int | None = None,
    truncate: float = 3.0,
) -> torch.Tensor:
    """Same operator as :func:`gaussian_blur`, computed in the Fourier domain."""
    b, c, h, w = x.shape
    s = _as_sigma(sigma, b, x)
    r = _radius_for(x, s, radius, truncate)
    xp = _pad_reflect(x, r)
    hp, wp = xp.shape[-2:]
    kf = gaussian_transfer(s, r, (hp, wp), rfft=True)[:, None]
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * kf, s=(hp, wp))
    return y[..., r : r + h, r : r + w]


def fourier_prox(
    y_blur: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor | float,
    lam: torch.Tensor | float,
    radius: int | None = None,
    truncate: float = 3.0,
) -> torch.Tensor:
    """Closed-form ``argmin_x ‖ý − k_σ⊛x‖² + λ‖x − x̂0‖²`` (method.md §4.4).

    Solved on the reflect-extended periodic domain: ``X = (K̄·Ý + λ X̂0) / (|K|² + λ)``, then cropped.
    ``lam`` is a scalar or ``(B,)``; λ→∞ returns ``x0``, λ→0 the (regularised) inverse filter.
    """
    b, c, h, w = x0.shape
    s = _as_sigma(sigma, b, x0)
    r = _radius_for(x0, s, radius, truncate)
    lam_t = _as_sigma(lam, b, x0)[:, None, None, None]
    yp, xp = _pad_reflect(y_blur, r), _pad_reflect(x0, r)
    hp, wp = yp.shape[-2:]
    kf = gaussian_transfer(s, r, (hp, wp), rfft=True)[:, None]  # real, symmetric kernel
    num = kf * torch.fft.rfft2(yp) + lam_t * torch.fft.rfft2(xp)
    out = torch.fft.irfft2(num / (kf**2 + lam_t), s=(hp, wp))
    return out[..., r : r + h, r : r + w]


def periodic_blur(x: torch.Tensor, sigma: torch.Tensor | float, radius: int) -> torch.Tensor:
    """Circular convolution with the discrete kernel (the operator ``fourier_prox`` inverts)."""
    b, c, h, w = x.shape
    s = _as_sigma(sigma, b, x)
    kf = gaussian_transfer(s, radius, (h, w), rfft=True)[:, None]
    return torch.fft.irfft2(torch.fft.rfft2(x) * kf, s=(h, w))
