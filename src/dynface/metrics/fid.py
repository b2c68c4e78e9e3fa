"""FID, only with a user-supplied Inception weights file or user-supplied reference statistics.

Nothing is downloaded. Two feature extractors are supported:

1. **pytorch-fid's FID Inception** (``pt_inception-2015-12-05-6726825d.pth``, a state dict): the TF
   2015-12-05 Inception-v3 graph re-implemented here in plain torch with torchvision's module names and
   pytorch-fid's FID patches (average pools that ignore padding in Mixed_5*/6*/7b, max pool in Mixed_7c,
   1008 classes, no aux head). Input: uint8 RGB → [0,1] → bilinear resize to 299×299
   (``align_corners=False``, no antialias, as pytorch-fid) → ×2−1 → 2048-D pool3 features.
2. **A TorchScript feature extractor** (any ``torch.jit`` archive), e.g. the StyleGAN/clean-fid
   ``inception-2015-12-05.pt``: it is called as ``model(x, return_features=True)`` (or ``model(x)`` if that
   keyword is not accepted) with ``x`` a float tensor (B,3,H,W) of **0–255** RGB values at the images'
   own size (that model resizes internally); it must return (B,D) features.

The reference side is either a folder of images (features computed the same way) or an ``.npz`` with
``mu`` and ``sigma`` (pytorch-fid's ``--save-stats`` format), which must come from the *same* extractor
and preprocessing. FID = Fréchet distance of the two Gaussians (:func:`dynface.metrics.frechet.frechet_distance`).
Not supported: TF-graph (``.pb``) files, clean-fid's resize modes, KID.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.io import ModelLoadError, safe_torch_load
from ._util import as_rgb_uint8

FID_LABEL = "FID (Inception, user-supplied weights)"


class FidUnavailable(RuntimeError):
    pass


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg3(x):  # TF average pool: padded zeros not counted
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b1, b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = m(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # FID patch: Mixed_7c pools with max, Mixed_7b with TF-style average
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``fid_inception_v3()`` graph, torchvision ``Inception3`` parameter names (no AuxLogits)."""

    def __init__(self, num_classes: int = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1,1], (B,3,299,299) → (B,2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.pool3(x))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


class FidExtractor:
    """Features for FID from a user file: a pytorch-fid state dict or a TorchScript model."""

    def __init__(self, weights: str | Path):
        p = Path(weights)
        if not p.is_file():
            raise FidUnavailable(f"FID weights file not found: {p}")
        self.path = p
        if _is_torchscript(p):
            self.kind = "torchscript"
            with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the TorchScript loader
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = torch.jit.load(str(p), map_location="cpu").eval()
        else:
            self.kind = "pytorch-fid"
            try:
                sd = safe_torch_load(p)
            except ModelLoadError as e:  # refused, corrupt or truncated: one line naming the file
                raise FidUnavailable(str(e)) from None
            if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
                sd = sd["state_dict"]
            m = FIDInceptionV3()
            sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")} if isinstance(sd, dict) else sd
            try:
                missing, unexpected = m.load_state_dict(sd, strict=False)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise FidUnavailable(f"{p}: not a pytorch-fid Inception state dict ({e})") from e
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise FidUnavailable(
                    f"{p}: not a pytorch-fid Inception state dict (missing {missing[:3]}…, unexpected {list(unexpected)[:3]}…)"
                )
            self.model = m.eval().requires_grad_(False)

    def describe(self) -> str:
        if self.kind == "pytorch-fid":
            return (
                f"{FID_LABEL}: pytorch-fid FID Inception-v3 from {self.path.name}; bilinear resize to 299 "
                "(align_corners=False), [-1,1] input, 2048-D pool3 features"
            )
        return (
            f"{FID_LABEL}: TorchScript extractor {self.path.name}, called with float 0-255 RGB at native size, "
            "model(x, return_features=True)"
        )

    def features(self, images, batch_size: int = 16) -> np.ndarray:
        imgs = [
            as_rgb_uint8(x)
            for x in (list(images) if not isinstance(images, np.ndarray) or images.ndim == 4 else [images])
        ]
        out = []
        with torch.inference_mode():
            for i in range(0, len(imgs), batch_size):
                chunk = imgs[i : i + batch_size]
                if self.kind == "pytorch-fid":
                    x = torch.stack(
                        [
                            torch.from_numpy(np.require(a, requirements=["C", "W"])).permute(2, 0, 1).float() / 255.0
                            for a in chunk
                        ]
                    )
                    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                    f = self.model.pool3(2 * x - 1)
                else:
                    f = torch.cat([self._ts(torch.from_numpy(np.require(a, requirements=["C", "W"])).permute(2, 0, 1)[None].float())
                                   for a in chunk])  # fmt: skip
                out.append(f.double().reshape(f.shape[0], -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))

    def _ts(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.model(x, return_features=True)
        except (TypeError, RuntimeError):
            return self.model(x)


@functools.cache
def load_extractor(weights: str) -> FidExtractor:
    return FidExtractor(weights)
