"""DBLM — dynamic blur-level mapping (method.md §2).

Three small networks and one wrapper:

* ``RM`` (restoration model): LQ face → restored face. The paper uses SwinIR; we use a light
  residual U-Net (``RestorerNet``, configurable width) so that it trains and runs on a CPU.
* ``TM`` (transfer model): LQ face → the same face in the *Gaussian-blur domain*, i.e. an estimate
  of ``k_{std*} ⊗ x0`` (same architecture as RM, narrower).
* ``SDE`` (standard-deviation estimator): a Gaussian-blurred face → its blur std (a CNN regressor with
  global pooling and a softplus head).

``DBLM(y)`` returns the restored face ``RM(y)``, ``std* = SDE(TM(y))`` and the guidance images
``ý_i = k^{std*−i·spacing} ⊗ RM(y)`` for ``i = 0 … n_guides−1`` (σ clamped at ``sigma_min``).

σ convention: every σ here is in pixels at ``ref_size`` (512) — the paper's units, so that
``eta = std*/10`` keeps its meaning at any working resolution; the blur is applied with
``σ·size/ref_size`` working pixels through :func:`dynface.ops.gaussian_blur`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import gaussian_blur


@dataclass(frozen=True)
class DBLMConfig:
    size: int = 64  # working resolution
    ref_size: int = 512  # σ units: pixels at this resolution
    rm_width: int = 16
    rm_mult: tuple[int, ...] = (1, 2, 4)
    rm_blocks: int = 2
    # RM's input stem: 1 = full-resolution convolutions; k > 1 = the U-Net runs on the k×k space-to-depth image
    # (PixelUnshuffle, 3k² channels) and PixelShuffle puts the residual back: ≈ k² fewer FLOPs per image at the same
    # width and a k× larger receptive field (the 128-px RM: docs/results/embedded-128/rm_recipe.md)
    rm_unshuffle: int = 1
    tm_width: int = 12
    tm_mult: tuple[int, ...] = (1, 2, 4)
    tm_blocks: int = 1
    tm_unshuffle: int = 1
    sde_width: int = 16
    n_guides: int = 3
    guide_spacing: float = 1.0  # std*, std*−1, std*−2 (ref px)
    sigma_min: float = 0.3
    sigma_max: float = 12.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DBLMConfig:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)

    def differences(self, wanted: DBLMConfig) -> list[str]:
        """The fields in which this architecture differs from ``wanted``, as ``"name have (wanted: want)"``."""
        return [f"{k} {getattr(self, k)} (wanted: {getattr(wanted, k)})" for k in wanted.__dataclass_fields__
                if getattr(self, k) != getattr(wanted, k)]

    def to_working(self, sigma_ref: torch.Tensor) -> torch.Tensor:
        """σ in ref pixels → σ in working pixels."""
        return sigma_ref * (self.size / self.ref_size)


PRESETS = {
    "embedded-64": DBLMConfig(),
    "tiny": DBLMConfig(size=32, rm_width=8, rm_mult=(1, 2), rm_blocks=1, tm_width=8, tm_mult=(1, 2), tm_blocks=1, sde_width=8),
}


class _Res(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RestorerNet(nn.Module):
    """Residual U-Net image-to-image regressor (used for RM and TM): ``out = y + f(y)``.

    With ``unshuffle`` k > 1 the U-Net sees ``pixel_unshuffle(y, k)`` and its residual is added there, so
    ``out = pixel_shuffle(unshuffle(y) + f(unshuffle(y)))`` = ``y + shuffle(f(...))``: still the identity at
    initialisation (the tail is zero), and the parameter names are the same as without it.
    """

    def __init__(self, width: int = 32, mult: tuple[int, ...] = (1, 2, 4), blocks: int = 2, channels: int = 3,
                 unshuffle: int = 1):
        super().__init__()
        if unshuffle < 1:
            raise ValueError(f"unshuffle must be >= 1, got {unshuffle}")
        self.unshuffle = unshuffle
        channels = channels * unshuffle**2
        chs = [width * m for m in mult]
        self.head = nn.Conv2d(channels, chs[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(chs):
            self.down.append(nn.Sequential(*[_Res(c) for _ in range(blocks)]))
            if i < len(chs) - 1:
                self.downsample.append(nn.Conv2d(c, chs[i + 1], 3, stride=2, padding=1))
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in range(len(chs) - 2, -1, -1):
            self.upsample.append(nn.Conv2d(chs[i + 1], chs[i], 3, padding=1))
            self.up.append(nn.Sequential(nn.Conv2d(2 * chs[i], chs[i], 1), *[_Res(chs[i]) for _ in range(blocks)]))
        self.tail = nn.Conv2d(chs[0], channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.min_size = 2 ** (len(chs) - 1) * unshuffle

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        k = self.unshuffle
        if k > 1:
            return F.pixel_shuffle(self._residual(F.pixel_unshuffle(y, k)), k)
        return self._residual(y)

    def _residual(self, y: torch.Tensor) -> torch.Tensor:
        h = self.head(y)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h)
            if i < len(self.downsample):
                skips.append(h)
                h = F.silu(self.downsample[i](h))
        for up, blk in zip(self.upsample, self.up, strict=True):
            h = F.silu(up(F.interpolate(h, scale_factor=2, mode="nearest")))
            h = blk(torch.cat([h, skips.pop()], dim=1))
        return y + self.tail(h)


def band_log_energies(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Log energy of each Laplacian-pyramid band of the luma, plus the log-ratios of adjacent bands.

    Blur level is a statement about the spectrum: these fixed features give the std estimator a strong,
    content-normalised signal from the first step (a learned CNN alone barely learned it, see DBLMConfig).
    """
    cur = x.mean(dim=1, keepdim=True)
    feats = []
    for _ in range(levels):
        down = F.avg_pool2d(cur, 2)
        band = cur - F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False)
        feats.append(torch.log(band.pow(2).mean(dim=(1, 2, 3)) + 1e-8))
        cur = down
    f = torch.stack(feats, dim=1)
    return torch.cat([f, f[:, :-1] - f[:, 1:]], dim=1)


class StdEstimator(nn.Module):
    """SDE: blurred face → Gaussian blur std (ref pixels), in [0, sigma_max].

    Two branches into one MLP: fixed Laplacian-band log-energies (:func:`band_log_energies`) and the
    log-energies of a small learned CNN's features at three scales.
    """

    def __init__(self, width: int = 16, sigma_max: float = 12.0, channels: int = 3, levels: int = 4):
        super().__init__()
        w = width
        self.levels = levels
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1)),
            nn.Sequential(nn.SiLU(), nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1)),
            nn.Sequential(nn.SiLU(), nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(4 * w, 4 * w, 3, padding=1)),
        ])
        self.head = nn.Sequential(nn.Linear(7 * w + 2 * levels - 1, 4 * w), nn.SiLU(), nn.Linear(4 * w, 4 * w), nn.SiLU(), nn.Linear(4 * w, 1))
        self.sigma_max = sigma_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, h = [band_log_energies(x, self.levels)], x
        for stage in self.stages:
            h = stage(h)
            feats.append(torch.log(h.pow(2).mean(dim=(2, 3)) + 1e-6))
        return (self.sigma_max * torch.sigmoid(self.head(torch.cat(feats, dim=1)))).squeeze(1)


@dataclass
class DBLMOutput:
    restored: torch.Tensor  # RM(y), (B,3,H,W) in [-1,1]
    transferred: torch.Tensor  # TM(y)
    std: torch.Tensor  # std* (B,), ref px
    sigmas: torch.Tensor  # guidance blur levels (B, G), ref px
    guides: torch.Tensor  # ý_i (B, G, 3, H, W)


class DBLM(nn.Module):
    def __init__(self, cfg: DBLMConfig = DBLMConfig()):
        super().__init__()
        self.cfg = cfg
        self.rm = RestorerNet(cfg.rm_width, cfg.rm_mult, cfg.rm_blocks, unshuffle=cfg.rm_unshuffle)
        self.tm = RestorerNet(cfg.tm_width, cfg.tm_mult, cfg.tm_blocks, unshuffle=cfg.tm_unshuffle)
        self.sde = StdEstimator(cfg.sde_width, cfg.sigma_max)

    def guide_sigmas(self, std: torch.Tensor, n: int | None = None) -> torch.Tensor:
        n = self.cfg.n_guides if n is None else n
        offs = torch.arange(n, dtype=std.dtype, device=std.device) * self.cfg.guide_spacing
        return (std[:, None] - offs[None]).clamp(min=self.cfg.sigma_min)

    def blur(self, x: torch.Tensor, sigma_ref: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, self.cfg.to_working(sigma_ref))

    def forward(self, y: torch.Tensor, n_guides: int | None = None) -> DBLMOutput:
        restored = self.rm(y)
        transferred = self.tm(y)
        std = self.sde(transferred).clamp(self.cfg.sigma_min, self.cfg.sigma_max)
        sig = self.guide_sigmas(std, n_guides)
        guides = torch.stack([self.blur(restored, sig[:, i]) for i in range(sig.shape[1])], dim=1)
        return DBLMOutput(restored, transferred, std, sig, guides)
