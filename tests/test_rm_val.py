"""scripts/rm_val.py: each DBLM file's RM is scored on the same degraded faces, next to the input's own row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import load_script
from PIL import Image

from dynface.models.dblm import DBLM, DBLMConfig
from dynface.models.io import save_safetensors


@pytest.fixture(scope="module")
def rv():
    return load_script("rm_val")


def _dblm_file(path: Path, shift: float) -> Path:
    cfg = DBLMConfig(size=32, rm_width=8, rm_mult=(1, 2), rm_blocks=1, tm_width=8, tm_mult=(1, 2), tm_blocks=1,
                     sde_width=8)
    net = DBLM(cfg)  # the RM's last convolution starts at zero: RM(y) = y
    with torch.no_grad():
        net.rm.tail.bias.fill_(shift)  # RM(y) = y + shift
    save_safetensors(net.state_dict(), path, metadata={"kind": "dblm", "dblm": cfg.to_dict()})
    return path


def test_rows_against_direct_computation(rv, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(5, 3, 32, 32, generator=g)).clamp(-1, 1)
    files = [_dblm_file(tmp_path / "identity.safetensors", 0.0), _dblm_file(tmp_path / "shift.safetensors", 0.1)]
    inp, ident, shift = rv.score(files, x, y, batch=2)
    assert inp.l1 == pytest.approx(float((y - x).abs().mean()))
    assert ident.l1 == pytest.approx(inp.l1) and torch.allclose(ident.psnr, inp.psnr)
    expect = 10 * torch.log10(4 / (y + 0.1 - x).pow(2).flatten(1).mean(1))
    assert shift.l1 == pytest.approx(float((y + 0.1 - x).abs().mean()), rel=1e-5)
    assert torch.allclose(shift.psnr, expect, atol=1e-4)
    md = rv.table([inp, ident, shift])
    d, se = rv.mean_se((shift.psnr - ident.psnr).tolist())
    assert f"{d:+.3f} ± {se:.3f}" in md and md.count("\n") == 4


def test_main_on_a_folder_and_a_missing_file(rv, tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(faces / f"f{k}.png")
    f = _dblm_file(tmp_path / "a.safetensors", 0.0)
    assert rv.main([str(f), "--val", str(faces), "--cache", "", "--size", "32", "--limit", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 faces" in out and "| input |" in out and str(f) in out
    assert rv.main([str(tmp_path / "nope.safetensors"), "--val", str(faces)]) == 2
    assert "no such file" in capsys.readouterr().err
