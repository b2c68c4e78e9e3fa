"""DGSA — dynamic guidance-scaling adjuster (method.md §5).

A 3-layer CNN over (ý, x̂0, t) → a per-pixel map ``A_t ∈ [0, 1]`` (one channel, broadcast over RGB)
that scales the guidance: large on contours and smooth structure (fidelity), small in textured
regions (freedom for the prior). ``t`` enters as a constant extra channel ``t/T`` ([OURS], §8 D1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class DGSAConfig:
    width: int = 64
    kernel: int = 3
    num_timesteps: int = 1000
    init_bias: float = 0.0  # sigmoid(0) = 0.5 at initialisation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DGSAConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class DGSA(nn.Module):
    def __init__(self, cfg: DGSAConfig = DGSAConfig(), channels: int = 3):
        super().__init__()
        self.cfg = cfg
        p = cfg.kernel // 2
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels + 1, cfg.width, cfg.kernel, padding=p, padding_mode="reflect"),
            nn.ReLU(),
            nn.Conv2d(cfg.width, cfg.width, cfg.kernel, padding=p, padding_mode="reflect"),
            nn.ReLU(),
            nn.Conv2d(cfg.width, 1, cfg.kernel, padding=p, padding_mode="reflect"),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, cfg.init_bias)

    def forward(self, guide: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``guide``, ``x0``: (B,3,H,W) in [-1,1]; ``t``: (B,) base-grid steps → (B,1,H,W) in [0,1]."""
        tt = (t.to(x0.dtype) / self.cfg.num_timesteps).reshape(-1, 1, 1, 1).expand(-1, 1, *x0.shape[-2:])
        return torch.sigmoid(self.net(torch.cat([guide, x0, tt], dim=1)))
