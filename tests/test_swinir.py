"""DifFace's SwinIR restorer (issue 12 part 1): layout, loading of every published wrapper form, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import astronaut_dsst

from dynface.models.io import ModelLoadError
from dynface.models.swinir import (
    DIFFACE_512,
    TINY,
    SwinIR,
    WindowAttention,
    load_swinir,
    shifted_window_mask,
    state_dict_shapes,
)

DATA = Path(__file__).parent / "data"
MANIFEST = DATA / "swinir512_manifest.txt"  # written from our module: `key dim…` per line
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "difface_swinir512_keys.txt"


def _read_manifest(path: Path) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        key, *dims = line.split()
        out[key] = tuple(int(d) for d in dims)
    return out


@pytest.fixture(scope="module")
def difface_swinir() -> SwinIR:
    torch.manual_seed(0)
    return SwinIR(DIFFACE_512).eval()


def test_state_dict_matches_committed_manifest(difface_swinir):
    shapes = state_dict_shapes(difface_swinir)
    manifest = _read_manifest(MANIFEST)
    assert list(shapes) == list(manifest)  # same keys, same order
    assert shapes == manifest
    assert len(shapes) == 732
    buffers = [k for k in shapes if k.endswith(("relative_position_index", "attn_mask"))]
    assert len(buffers) == 72
    assert round(sum(p.numel() for p in difface_swinir.parameters()) / 1e6, 2) == 15.79


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/reference (the published layout)")
def test_committed_manifest_matches_the_published_layout():
    assert _read_manifest(MANIFEST) == _read_manifest(REFERENCE)


def _forms(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    no_buf = {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    module = {f"module.{k}": v for k, v in no_buf.items()}
    return {
        "plain": sd,
        "params": {"params": no_buf},
        "params_ema": {"params_ema": sd, "params": {k: torch.zeros_like(v) for k, v in sd.items()}},
        "state_dict_module": {"state_dict": module},
        "module_no_buffers": module,
    }


def test_every_wrapper_form_loads_and_gives_the_same_deterministic_output(difface_swinir, tmp_path):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # 64 px → 8×8 features (one window)
    with torch.no_grad():
        want = difface_swinir(x)
        assert torch.equal(want, difface_swinir(x))  # deterministic
    assert want.shape == x.shape
    for name, obj in _forms(difface_swinir.state_dict()).items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        model = load_swinir(path)
        with torch.no_grad():
            got = model(x)
        assert torch.equal(got, want), name
        path.unlink()


def test_signed_io_is_the_unit_model_in_minus_one_one():
    torch.manual_seed(0)
    unit = SwinIR(TINY).eval()
    signed = SwinIR(TINY, io="signed").eval()
    signed.load_state_dict(unit.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(signed(x * 2 - 1), unit(x).clamp(0, 1) * 2 - 1, atol=1e-6)


def test_sizes_off_the_window_grid_are_padded_and_cropped_back():
    torch.manual_seed(0)
    model = SwinIR(TINY).eval()  # pads to multiples of window 4 × unshuffle 4 = 16
    with torch.no_grad():
        out = model(torch.rand(1, 3, 40, 24))
    assert out.shape == (1, 3, 40, 24)


def test_shift_mask_separates_tokens_that_were_not_neighbours_before_the_cyclic_shift():
    h = w = 16
    ws, shift = 8, 4
    mask = shifted_window_mask(h, w, ws, shift)  # windows of the rolled map, row-major
    assert mask.shape == ((h // ws) * (w // ws), ws * ws, ws * ws)
    for wy in range(h // ws):
        for wx in range(w // ws):
            m = mask[wy * (w // ws) + wx]
            # a rolled position r came from r + shift; it wrapped around iff r + shift ≥ size
            ry, rx = torch.meshgrid(torch.arange(ws) + wy * ws, torch.arange(ws) + wx * ws, indexing="ij")
            wrap_y, wrap_x = (ry.flatten() + shift >= h), (rx.flatten() + shift >= w)
            same = (wrap_y[:, None] == wrap_y[None]) & (wrap_x[:, None] == wrap_x[None])
            assert torch.equal(m == 0, same)
            assert set(m.unique().tolist()) <= {0.0, -100.0}


def test_window_attention_is_softmax_attention_with_relative_bias_and_mask():
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, ws=4, heads=3)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    x = torch.randn(8, 16, 12)  # batch 2 × 4 windows
    mask = shifted_window_mask(8, 8, 4, 2)
    with torch.no_grad():
        got = attn(x, mask)
        q, k, v = attn.qkv(x).view(8, 16, 3, 3, 4).permute(2, 0, 3, 1, 4)
        logits = (q * 4**-0.5) @ k.transpose(-1, -2)
        # bias[h, i, j] = table[(dy_ij + 3)·7 + dx_ij + 3, h], dy/dx the offsets between positions i and j
        pos = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")).flatten(1)
        d = pos[:, :, None] - pos[:, None, :] + 3
        bias = attn.relative_position_bias_table[d[0] * 7 + d[1]].permute(2, 0, 1)
        logits = logits + bias + mask.repeat(2, 1, 1)[:, None]
        want = attn.proj((F.softmax(logits, -1) @ v).transpose(1, 2).reshape(8, 16, 12))
    assert torch.allclose(got, want, atol=1e-5)


def test_truncated_wrong_and_unsafe_files_give_one_clear_error(difface_swinir, tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"params_ema": difface_swinir.state_dict()}, good)
    blob = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as e:
        load_swinir(cut)
    assert "\n" not in str(e.value)
    wrong = tmp_path / "wrong.pth"
    torch.manual_seed(0)
    torch.save({"params": SwinIR(TINY).state_dict()}, wrong)
    with pytest.raises(ModelLoadError, match="swinir_restoration512_L1.pth layout"):
        load_swinir(wrong)
    class Evil:  # noqa: E306
        def __reduce__(self):
            return (print, ("pwned",))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"params": Evil()}, unsafe)
    with pytest.raises(ModelLoadError, match="safe loader"):
        load_swinir(unsafe)
    with pytest.raises(ModelLoadError, match="not found"):
        load_swinir(tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save({"params": {"a": 1}}, other)
    with pytest.raises(ModelLoadError, match="state dict of tensors"):
        load_swinir(other)


def _tiny_prior_64(tmp_path: Path) -> Path:
    """A random 64-px prior file (the tiny UNet at 64 px; DifFace's SwinIR runs at any multiple of 64)."""
    from dataclasses import replace

    from dynface.models.io import save_safetensors
    from dynface.models.unet import PRESETS, UNetModel

    cfg = replace(PRESETS["tiny"], image_size=64)
    torch.manual_seed(0)
    path = tmp_path / "prior.safetensors"
    save_safetensors(UNetModel(cfg).state_dict(), path, metadata={"unet": cfg.to_dict()})
    return path


def test_pipeline_uses_the_swinir_file_as_rm(difface_swinir, tmp_path):
    from dynface.pipeline import DynFaceRestorer

    prior = _tiny_prior_64(tmp_path)
    rm_file = tmp_path / "swinir.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in difface_swinir.state_dict().items()}}, rm_file)
    face = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    only = DynFaceRestorer.from_pretrained(prior, mode="restorer_only", precision="fp32", restorer=rm_file)
    out = only.restore(face).tensor
    with torch.no_grad():
        want = difface_swinir(face).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-5)
    assert only.restore(face).records[0]["std_star"] is None  # no TM/SDE: no std* to report
    fixed = DynFaceRestorer.from_pretrained(prior, mode="fixed_start", precision="fp32", steps="ddim10", restorer=rm_file)
    a, b = fixed.restore(face, seed=3), fixed.restore(face, seed=3)
    # DifFace's t = 400; on ddim10 the default start ("auto") calls at 400 itself, then 300, 200, 100, 0 (DifFace's
    # convention would make its first call 100 steps below the noise it was given)
    assert torch.equal(a.tensor, b.tensor) and a.records[0]["nfe"] == 5
    with pytest.raises(ModelLoadError, match="needs std"):
        DynFaceRestorer.from_pretrained(prior, mode="full", restorer=rm_file)
    with pytest.raises(ValueError, match="needs TM and SDE"):
        fixed.with_config(mode="full").restore(face)


def test_train_sde_tm_against_the_frozen_swinir_then_restore(difface_swinir, tmp_path, astronaut_face, capsys):
    """`dynface train dblm --stages sde,tm --restorer SWINIR.pth` wiring, at 64 px (the 512 layout runs at any
    multiple of 64): RM stays the published file, the export holds TM and SDE only and needs the restorer."""
    from PIL import Image

    from dynface.cli import main
    from dynface.models.io import load_state_dict_file
    from dynface.pipeline import DynFaceRestorer

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(4):
        Image.fromarray(astronaut_face[:, :: (1 if i % 2 else -1)]).save(faces / f"f{i}.png")
    rm_file = tmp_path / "swinir.pth"
    torch.save({"params": difface_swinir.state_dict()}, rm_file)
    run = tmp_path / "run"
    common = ["train", "dblm", "--data", str(faces), "--out", str(run), "--restorer", str(rm_file),
              "--set", "batch_size=2", "--set", "steps={sde: 2, tm: 2}", "--set", "log_every=1"]
    assert main([*common, "--stages", "rm,sde,tm"]) == 2  # RM is frozen: refused, one line
    assert main([*common, "--stages", "sde,tm"]) == 0
    sd, meta = load_state_dict_file(run / "dblm.safetensors")
    assert meta["rm"] == {"arch": "swinir", "file": "swinir.pth"} and meta["progress"]["tm"] == 2
    assert not any(k.startswith("rm.") for k in sd) and any(k.startswith("tm.") for k in sd)
    ckpt = torch.load(run / "last.pt", weights_only=False)  # our own checkpoint
    assert not any(k.startswith("rm.") for k in ckpt["model"])  # the frozen RM is not checkpointed either
    steps3 = [a if a != "steps={sde: 2, tm: 2}" else "steps={sde: 2, tm: 3}" for a in common]
    assert main([*steps3, "--stages", "sde,tm", "--resume"]) == 0  # resumes TM and SDE, RM reloaded from the file
    assert load_state_dict_file(run / "dblm.safetensors")[1]["progress"]["tm"] == 3
    prior = _tiny_prior_64(tmp_path)
    with pytest.raises(ModelLoadError, match="external restorer"):
        DynFaceRestorer.from_pretrained(prior, dblm=run / "dblm.safetensors")
    r = DynFaceRestorer.from_pretrained(prior, dblm=run / "dblm.safetensors", restorer=rm_file, steps="ddim10",
                                        precision="fp32", guidance="x0")
    face = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    rec = r.restore(face).records[0]
    assert 0.3 <= rec["std_star"] <= 12 and rec["nfe"] >= 1

    # DGSA trains against that DBLM with the same restorer (`dynface train dgsa --restorer`), then a packaged model
    astronaut_dsst(64).save(tmp_path / "dsst.json")
    dgsa_args = ["train", "dgsa", "--data", str(faces), "--out", str(tmp_path / "dgsa"), "--set", f"prior={prior}",
                 "--set", f"dblm={run / 'dblm.safetensors'}", "--set", f"dsst={tmp_path / 'dsst.json'}",
                 "--set", "batch_size=2", "--set", "steps=2", "--set", "log_every=1"]
    capsys.readouterr()
    assert main(dgsa_args) == 2  # without the restorer: one line naming it
    err = capsys.readouterr().err
    assert "external restorer (swinir.pth)" in err and len(err.strip().splitlines()) == 1
    assert main([*dgsa_args, "--restorer", str(rm_file)]) == 0
    assert main(["train", "package", "--prior", str(prior), "--dblm", str(run / "dblm.safetensors"),
                 "--dsst", str(tmp_path / "dsst.json"), "--dgsa", str(tmp_path / "dgsa" / "dgsa.safetensors"),
                 "--out", str(tmp_path / "model")]) == 0
    m = DynFaceRestorer.from_pretrained(tmp_path / "model", restorer=rm_file, steps="ddim10", precision="fp32")
    assert m.dgsa is not None and 0.3 <= m.restore(face).records[0]["std_star"] <= 12

