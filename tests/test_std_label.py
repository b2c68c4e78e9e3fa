"""The std* training labels of dynface.training.dblm: the shipped ``psnr`` one and the ``masked`` one."""

from __future__ import annotations

import pytest
import torch

from dynface.diffusion import GaussianDiffusion
from dynface.dsst import DSSTTable
from dynface.models.dblm import PRESETS
from dynface.training.dblm import DBLMTrainConfig, label_dsst_path, make_labeler

DCFG = PRESETS["embedded-64"]
GRID = torch.arange(0.5, 12.0 + 1e-9, 0.25)


def _faces(seed: int = 0, b: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=64, mode="bilinear", align_corners=False)


def test_a_constant_error_above_the_psnr_threshold_starts_at_zero_only_with_the_psnr_label():
    """RM off by a constant c (blurring cannot hide it; MSE = c² at every σ), PSNR 30 dB ≥ the 24-dB threshold."""
    x0 = _faces()
    c = 2 * 10 ** (-30 / 20)  # PSNR = 10·log10(4 / c²) = 30 dB
    restored = x0 + c
    old = make_labeler(DBLMTrainConfig(label="psnr", psnr_threshold=24.0), DCFG, GRID)(restored, x0)
    assert torch.allclose(old, torch.full_like(old, 0.5))  # the grid's minimum ...
    table = DSSTTable.load(label_dsst_path(DBLMTrainConfig()))
    assert int(table.lookup(torch.tensor([0.5], dtype=torch.float64)).floor()) == 0  # ... whose start is t = 0

    new = make_labeler(DBLMTrainConfig(label="masked", mask_db=23.0), DCFG, GRID)(restored, x0)
    # closed form: the first σ whose start step t has (1 − ᾱ_t) / (ᾱ_t c²) ≥ 10^(23/10)
    ac = GaussianDiffusion.from_config().alphas_cumprod
    want = next(s for s in GRID.tolist()
                if (1 - (a := float(ac[int(table.lookup(torch.tensor([s], dtype=torch.float64)).floor())]))) / (a * c * c)
                >= 10 ** 2.3)
    assert torch.allclose(new, torch.full_like(new, want))
    start = int(table.lookup(torch.tensor([want], dtype=torch.float64)).floor())
    assert start > 0 and want > 0.5


def test_masked_labels_grow_with_the_error_and_with_mask_db():
    x0 = _faces(1, b=3)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(x0.shape, generator=g)
    restored = x0 + noise * torch.tensor([0.01, 0.05, 0.2])[:, None, None, None]
    lab = make_labeler(DBLMTrainConfig(label="masked", mask_db=20.0), DCFG, GRID)(restored, x0)
    assert lab[0] < lab[1] < lab[2]
    stricter = make_labeler(DBLMTrainConfig(label="masked", mask_db=30.0), DCFG, GRID)(restored, x0)
    assert (stricter >= lab).all() and (stricter > lab).any()
    # an RM that is never good enough gets the largest grid value
    hopeless = make_labeler(DBLMTrainConfig(label="masked", mask_db=200.0), DCFG, GRID)(restored, x0)
    assert torch.allclose(hopeless, torch.full_like(hopeless, GRID[-1].item()))


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="unknown std\\* label"):
        make_labeler(DBLMTrainConfig(label="ssim"), DCFG, GRID)


def test_masked_label_refuses_a_dsst_table_of_another_resolution():
    from dynface.pipeline import DEFAULT_DSST  # built at 512 px

    with pytest.raises(ValueError, match="built at 64 px"):
        make_labeler(DBLMTrainConfig(label="masked", label_dsst=str(DEFAULT_DSST)), DCFG, GRID)
