"""LPIPS v0.1 (Zhang et al. 2018), only with weights the user supplies; nothing is downloaded.

LPIPS needs two parts:

* the linear heads ``lin0..lin4`` — read from the ``lpips`` PyPI wheel's ``lpips/weights/v0.1/{alex,vgg}.pth``
  (install it with ``pip install --no-deps lpips``; the ``lpips`` package itself imports torchvision, so it
  is never imported here: the file is found with ``importlib.util.find_spec``), or from ``heads_path``;
* the ImageNet backbone — a **user-supplied** torchvision-format AlexNet (``alexnet-owt-7be5be79.pth``) or
  VGG16 (``vgg16-397923af.pth``) state dict (``features.N.weight`` / ``features.N.bias`` keys; the
  classifier is ignored), loaded with ``torch.load(weights_only=True)``.

Computation (identical to ``lpips.LPIPS(net=..., version='0.1')``, ``spatial=False``): uint8 RGB →
[-1,1] → ScalingLayer (shift (-.030,-.088,-.188), scale (.458,.448,.450)) → the 5 ReLU stages
(AlexNet relu1..relu5 / VGG16 relu1_2..relu5_3) → unit-normalise each feature over channels
(eps 1e-10) → squared difference → 1×1 linear head → spatial mean → sum over the 5 stages.
Images are compared at their own resolution (no resize); both images of a pair must have the same size.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.io import ModelLoadError, safe_torch_load
from ._util import as_rgb_uint8, package_dir

ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG_CHANNELS = (64, 128, 256, 512, 512)
ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _load(path: str | Path):
    """``torch.load(weights_only=True)`` through :func:`~dynface.models.io.safe_torch_load`: a refused, corrupt or
    truncated file is one :class:`LpipsUnavailable` line."""
    try:
        return safe_torch_load(path)
    except ModelLoadError as e:
        raise LpipsUnavailable(str(e)) from None


class LpipsUnavailable(RuntimeError):
    pass


def alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features`` (same indices)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )  # fmt: skip


def vgg16_features() -> nn.Sequential:
    """torchvision ``vgg16().features`` (same indices)."""
    layers: list[nn.Module] = []
    c = 3
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class _Backbone(nn.Module):
    """Holds ``features`` (so torchvision's keys load as-is) and cuts it into LPIPS' 5 stages."""

    def __init__(self, net: str):
        super().__init__()
        self.features = alexnet_features() if net == "alex" else vgg16_features()
        self.slices = ALEX_SLICES if net == "alex" else VGG_SLICES

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for a, b in self.slices:
            for i in range(a, b):
                x = self.features[i](x)
            outs.append(x)
        return outs


class LPIPS(nn.Module):
    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError("net must be 'alex' or 'vgg'")
        self.net_name = net
        self.net = _Backbone(net)
        chans = ALEX_CHANNELS if net == "alex" else VGG_CHANNELS
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in chans])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    @staticmethod
    def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0, x1: (B,3,H,W) in [-1,1] → (B,) distances."""
        f0 = self.net((x0 - self.shift) / self.scale)
        f1 = self.net((x1 - self.shift) / self.scale)
        total = 0
        for lin, a, b in zip(self.lins, f0, f1, strict=True):
            total = total + lin((self._unit(a) - self._unit(b)) ** 2).mean(dim=(2, 3))
        return total.view(-1)

    def load_heads(self, path: str | Path) -> None:
        sd = _load(path)
        mapped = {}
        for i in range(5):
            k = f"lin{i}.model.1.weight"
            if k not in sd:
                raise LpipsUnavailable(f"{path}: not an LPIPS head file (missing {k})")
            mapped[f"{i}.weight"] = sd[k]
        self.lins.load_state_dict(mapped, strict=True)

    def load_backbone(self, path: str | Path) -> None:
        sd = _load(path)
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise LpipsUnavailable(f"{path}: expected a state dict, got {type(sd).__name__}")
        feats = {k.removeprefix("module.")[len("features."):]: v for k, v in sd.items()
                 if k.removeprefix("module.").startswith("features.")}  # fmt: skip
        want = self.net.features.state_dict()
        if set(feats) != set(want) or any(tuple(feats[k].shape) != tuple(want[k].shape) for k in want):
            raise LpipsUnavailable(
                f"{path}: not a torchvision {'AlexNet' if self.net_name == 'alex' else 'VGG16'} state dict "
                f"(expected keys features.N.weight/bias with torchvision's shapes)"
            )
        self.net.features.load_state_dict(feats, strict=True)


def heads_path(net: str = "alex") -> Path:
    d = package_dir("lpips")
    p = d / "weights" / "v0.1" / f"{net}.pth" if d else None
    if p is None or not p.is_file():
        raise LpipsUnavailable("LPIPS heads not found: `pip install --no-deps lpips` (its wheel ships them)")
    return p


def guess_net(backbone_path: str | Path) -> str:
    """'alex' or 'vgg' from the backbone file's first conv weight shape."""
    sd = _load(backbone_path)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    w = sd.get("features.0.weight", sd.get("module.features.0.weight")) if isinstance(sd, dict) else None
    if w is None:
        raise LpipsUnavailable(f"{backbone_path}: no features.0.weight; not a torchvision AlexNet/VGG16 state dict")
    return "alex" if tuple(w.shape) == (64, 3, 11, 11) else "vgg"


@functools.cache
def load_lpips(backbone_path: str, net: str | None = None, heads: str | None = None) -> LPIPS:
    """An LPIPS model (eval, frozen) from a user-supplied backbone file and the wheel's (or given) heads."""
    net = net or guess_net(backbone_path)
    m = LPIPS(net)
    m.load_backbone(backbone_path)
    m.load_heads(heads or heads_path(net))
    return m.eval().requires_grad_(False)


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.require(a, requirements=["C", "W"])).float().div(127.5).sub(1.0)
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t.permute(2, 0, 1)[None]


def lpips_distance(
    img1: np.ndarray,
    img2: np.ndarray,
    backbone_path: str | Path,
    net: str | None = None,
    heads: str | Path | None = None,
):
    """LPIPS v0.1 of uint8 RGB images ((H,W,3) → float, (N,H,W,3) → (N,) array); lower is more similar."""
    a, b = as_rgb_uint8(img1, "img1"), as_rgb_uint8(img2, "img2")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    m = load_lpips(str(backbone_path), net, None if heads is None else str(heads))
    with torch.inference_mode():
        d = m(_to_tensor(a), _to_tensor(b)).double().numpy()
    return d if a.ndim == 4 else float(d[0])


def convention(backbone_path: str | Path) -> str:
    net = guess_net(backbone_path)
    return (
        f"LPIPS v0.1 ({'AlexNet' if net == 'alex' else 'VGG16'}), heads from the lpips wheel, backbone "
        f"{Path(backbone_path).name} (user-supplied), inputs in [-1,1] at native resolution"
    )
