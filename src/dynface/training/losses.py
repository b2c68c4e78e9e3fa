"""Losses for DGSA training (method.md §5): stationary-wavelet L1 and an offline DISTS substitute.

* ``swt_haar``: the undecimated (stationary) Haar wavelet transform, à-trous, periodic borders —
  the same coefficients as ``pywt.swt2(x, "haar", level, trim_approx=False)`` (checked in the tests).
* ``swt_l1``: ``Σ_i γ_i ‖SWT(a)_i − SWT(b)_i‖₁`` over the sub-bands (LL, LH, HL, HH of each level).
* ``filterbank_dists``: DISTS (Ding et al. 2020) needs ImageNet VGG16 weights, which cannot be
  obtained offline here. We keep DISTS's *formula* — per feature map, a texture term on global
  means ``(2μxμy+c1)/(μx²+μy²+c1)`` and a structure term on global (co)variances
  ``(2σxy+c2)/(σx²+σy²+c2)``, loss ``1 − mean(½·texture + ½·structure)`` — but compute it on a fixed
  multi-scale filter bank (the image, its SWT sub-bands at 2 levels and a Laplacian pyramid)
  instead of VGG features. It is a disclosed substitute, not DISTS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_S = 1 / math.sqrt(2)


def _haar_filters(dtype, device) -> torch.Tensor:
    lo = torch.tensor([_S, _S], dtype=dtype, device=device)
    hi = torch.tensor([_S, -_S], dtype=dtype, device=device)
    # pywt naming: (cA, (cH, cV, cD)); cH = lo along columns × hi along rows (horizontal detail)
    ll, lh, hl, hh = torch.outer(lo, lo), torch.outer(hi, lo), torch.outer(lo, hi), torch.outer(hi, hi)
    return torch.stack([ll, lh, hl, hh])[:, None]  # (4,1,2,2)


def swt_haar(x: torch.Tensor, levels: int = 1) -> list[torch.Tensor]:
    """Stationary Haar transform of (B,C,H,W): list over levels (finest first) of (B,C,4,H,W) = (LL,H,V,D)."""
    b, c, h, w = x.shape
    out = []
    cur = x.reshape(b * c, 1, h, w)
    for lev in range(levels):
        d = 2**lev
        f = _haar_filters(x.dtype, x.device)
        # à trous: dilate the 2-tap filters; pywt's swt uses periodic extension on the right/bottom
        padded = F.pad(cur, (0, d, 0, d), mode="circular")
        bands = F.conv2d(padded, f, dilation=d)[..., :h, :w]  # (BC,4,H,W)
        out.append(bands.reshape(b, c, 4, h, w))
        cur = bands[:, :1]
    return out


def swt_l1(a: torch.Tensor, b: torch.Tensor, levels: int = 1, gammas: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Σ over levels and sub-bands of γ_band · mean |SWT(a) − SWT(b)|."""
    g = torch.tensor(gammas, dtype=a.dtype, device=a.device)
    loss = a.new_zeros(())
    for sa, sb in zip(swt_haar(a, levels), swt_haar(b, levels), strict=True):
        loss = loss + ((sa - sb).abs().mean(dim=(0, 1, 3, 4)) * g).sum()
    return loss


def _feature_bank(x: torch.Tensor) -> list[torch.Tensor]:
    feats = [x]
    for bands in swt_haar(x, levels=2):
        feats.append(bands[:, :, 1:].flatten(1, 2))  # detail bands only
    cur = x
    for _ in range(2):
        down = F.avg_pool2d(cur, 2)
        feats.append(cur - F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False))
        cur = down
    return feats


def filterbank_dists(a: torch.Tensor, b: torch.Tensor, c1: float = 1e-6, c2: float = 1e-6) -> torch.Tensor:
    """DISTS-style texture+structure distance on a fixed filter bank (see the module docstring); (B,)."""
    terms = []
    for fa, fb in zip(_feature_bank(a), _feature_bank(b), strict=True):
        ma, mb = fa.mean(dim=(2, 3)), fb.mean(dim=(2, 3))
        va = (fa - ma[..., None, None]).pow(2).mean(dim=(2, 3))
        vb = (fb - mb[..., None, None]).pow(2).mean(dim=(2, 3))
        cov = ((fa - ma[..., None, None]) * (fb - mb[..., None, None])).mean(dim=(2, 3))
        texture = (2 * ma * mb + c1) / (ma**2 + mb**2 + c1)
        structure = (2 * cov + c2) / (va + vb + c2)
        terms.append((0.5 * texture + 0.5 * structure).mean(dim=1))
    return 1 - torch.stack(terms, dim=1).mean(dim=1)
