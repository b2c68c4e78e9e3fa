"""Low-frequency colour correction of a diffusion output (the StableSR / DiffBIR post-process).

A diffusion prior that is under-trained, or started from a noisy state, can shift the colours of the
whole face (casts). The restorer output ``RM(y)`` carries the input's colours faithfully at low
frequencies, so the established fix keeps the *details* of the diffusion output and takes the *colour*
(the lowest band, or the per-channel statistics) from the restorer:

* ``wavelet`` — StableSR's ``wavelet_reconstruction``: a ``levels``-level à-trous ("wavelet") blur
  decomposition with the dilated 3×3 binomial kernel (dilation 1, 2, 4, …, replicate padding);
  ``out = content − low(content) + low(reference)``, where ``low`` is the residual after all levels.
* ``adain`` — adaptive instance normalisation: each channel of ``content`` is shifted and scaled so that
  its mean and standard deviation equal the reference's.
* ``none`` — the content unchanged.

All functions are pure and work on ``(B, C, H, W)`` tensors in any value range (the operations are
affine-equivariant; ``adain``'s ``eps`` aside). Clamping to the image range is the caller's business.

**Gray stays gray.** A black-and-white face stored as RGB (a scanned print, a gray JPEG saved in colour) keeps
all three channels equal, but the restorer and the prior were trained on colour faces and give it a faint tint
(measured on a gray Blake_Lively.jpg stored as RGB: channel spread up to 14 levels in the restored face, while
the photo around it is exactly gray). :func:`is_gray` finds such inputs (channels within 3 levels of each other
at 99 % of the pixels: JPEG rounding and facexlib's (135, 133, 132) border fill pass, a sepia or colour face does
not) and :func:`to_gray` turns the result back into gray (ITU-R BT.601 luma, as Pillow's ``L``).

**A toned gray stays toned gray.** A black-and-white print scanned in colour mode is gray with the scanner's cast
(a few levels per channel) and noise: it failed the 3-level test, and the model coloured it where a colour face has
colour (greenish irises, reddish lips: the face's chroma spread doubled, 0.95 to 1.93 levels, in a family-photo
audit). :func:`gray_tone` finds faces whose chroma (each channel minus the luma), smoothed over 5x5 px against the
noise, spans at most :data:`TONE_TOLERANCE` (1st to 99th percentile), and gives their cast (the chroma's median);
their restoration is the luma plus that cast. Sepia (its tint grows with the brightness) and colour faces span far
more and are left as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOR_FIXES = ("none", "wavelet", "adain")
WAVELET_LEVELS = 5  # StableSR / DiffBIR default
ADAIN_EPS = 1e-5


GRAY_TOLERANCE = 3 / 255  # largest channel spread (max − min, [0, 1] units) of a "gray" pixel
GRAY_SHARE = 0.99  # share of a face's pixels that must be gray
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, Pillow's RGB -> L
TONE_TOLERANCE = 6 / 255  # largest spread of a toned-gray face's smoothed chroma (1st to 99th percentile)


def is_gray(x: torch.Tensor, tol: float = GRAY_TOLERANCE, share: float = GRAY_SHARE) -> torch.Tensor:
    """(B,) bool: the faces of ``x`` (B,3,H,W) in [0, 1] whose channels differ by at most ``tol`` at ``share`` of
    their pixels."""
    spread = (x.amax(dim=1) - x.amin(dim=1)).flatten(1).float()
    return torch.quantile(spread, share, dim=1) <= tol + 1e-6


def gray_tone(x: torch.Tensor, tol: float = TONE_TOLERANCE) -> tuple[torch.Tensor, torch.Tensor]:
    """The faces of ``x`` (B,3,H,W) in [0, 1] that are gray or gray with one colour cast (see the module's doc):
    ((B,) bool, (B, 3) cast in [0, 1] units, 0 for the faces :func:`is_gray` finds)."""
    xf = x.float()
    chroma = xf - to_gray(xf)
    smooth = F.avg_pool2d(chroma, 5, stride=1, padding=2, count_include_pad=False).flatten(2)
    q = torch.quantile(smooth, torch.tensor([0.01, 0.99], device=x.device), dim=2)  # (2, B, 3)
    gray = is_gray(xf)
    toned = ((q[1] - q[0]) <= tol + 1e-6).all(dim=1) | gray
    cast = torch.where(gray.view(-1, 1), 0.0, chroma.flatten(2).median(dim=2).values)
    return toned, torch.where(toned.view(-1, 1), cast, 0.0)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) → its luma (ITU-R BT.601) in three equal channels."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x).contiguous()


def check_color_fix(name: str) -> str:
    if name not in COLOR_FIXES:
        raise ValueError(f"unknown colour fix {name!r}; choose from {', '.join(COLOR_FIXES)}")
    return name


def wavelet_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """One à-trous level: the 3×3 kernel ``[1,2,1]ᵀ[1,2,1]/16`` with taps ``dilation`` apart (replicate pad)."""
    c = x.shape[1]
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    k = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3).contiguous()
    xp = F.pad(x, (dilation, dilation, dilation, dilation), mode="replicate")
    return F.conv2d(xp, k, groups=c, dilation=dilation)


def wavelet_lowpass(x: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """The low band left after ``levels`` à-trous levels (dilations 1, 2, …, 2^(levels−1))."""
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2**i)
    return low


def wavelet_fix(content: torch.Tensor, reference: torch.Tensor, levels: int = WAVELET_LEVELS) -> torch.Tensor:
    """``content``'s high bands + ``reference``'s low band (StableSR ``wavelet_reconstruction``)."""
    return content - wavelet_lowpass(content, levels) + wavelet_lowpass(reference, levels)


def _mean_std(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)
    mean = flat.mean(dim=2)[..., None, None]
    std = (flat.var(dim=2, unbiased=True) + eps).sqrt()[..., None, None]
    return mean, std


def adain_fix(content: torch.Tensor, reference: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """Per-image, per-channel ``(content − μ_c)/σ_c · σ_r + μ_r`` (StableSR ``adaptive_instance_normalization``)."""
    mc, sc = _mean_std(content, eps)
    mr, sr = _mean_std(reference, eps)
    return (content - mc) / sc * sr + mr


def color_fix(content: torch.Tensor, reference: torch.Tensor, method: str) -> torch.Tensor:
    """Apply the named fix (``none`` | ``wavelet`` | ``adain``); shapes must match."""
    check_color_fix(method)
    if content.shape != reference.shape:
        raise ValueError(f"colour fix: content {tuple(content.shape)} and reference {tuple(reference.shape)} differ in shape")
    if method == "none":
        return content
    ref = reference.to(content.dtype)
    return wavelet_fix(content, ref) if method == "wavelet" else adain_fix(content, ref)
