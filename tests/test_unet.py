"""The improved-diffusion / DifFace UNet: architecture (against an independently derived manifest),
checkpoint-key compatibility, forward shapes, initialisation and the attention kernel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _helpers import load_script

from dynface.models.io import load_state_dict_file, load_weights
from dynface.models.unet import AttentionBlock, build_unet

DATA = Path(__file__).parent / "data"
MANIFEST = DATA / "difface-ffhq512_manifest.json"


@pytest.fixture(scope="module")
def difface_meta():
    with torch.device("meta"):
        return build_unet("difface-ffhq512")


def test_difface_parameter_count(difface_meta):
    n = sum(p.numel() for p in difface_meta.parameters())
    assert abs(n - 159.8e6) <= 0.1e6, n
    assert all(p.is_meta for p in difface_meta.parameters())


def test_difface_state_dict_matches_committed_manifest(difface_meta):
    doc = json.loads(MANIFEST.read_text())
    ours = [[k, list(v.shape)] for k, v in difface_meta.state_dict().items()]
    theirs = doc["keys"]
    missing = sorted({k for k, _ in theirs} - {k for k, _ in ours})
    unexpected = sorted({k for k, _ in ours} - {k for k, _ in theirs})
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    shapes = dict(map(tuple, [(k, tuple(s)) for k, s in theirs]))
    bad = [(k, s, shapes[k]) for k, s in ours if tuple(s) != shapes[k]]
    assert not bad, bad[:5]
    assert ours == theirs  # registration order too (state dicts are saved in this order)
    assert doc["num_parameters"] == sum(p.numel() for p in difface_meta.parameters())


def test_manifest_is_in_sync_with_its_generator():
    mod = load_script("make_manifest", "tests/data")
    keys = [[k, s] for k, s in mod.manifest(mod.DIFFACE_FFHQ512)]
    assert keys == json.loads(MANIFEST.read_text())["keys"]


def test_module_prefix_is_stripped_on_load(tmp_path):
    torch.manual_seed(0)
    src = build_unet("tiny")
    for p in src.parameters():  # make the weights non-trivial (zero-init layers included)
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "ddp_ckpt.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    sd, meta = load_state_dict_file(path)
    assert meta == {}
    assert set(sd) == set(src.state_dict())
    dst = build_unet("tiny")
    load_weights(dst, path)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(dst(x, t), src(x, t))


def test_forward_shapes():
    tiny = build_unet("tiny")
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, 32, 32), torch.tensor([0, 999]))
        assert out.shape == (2, 3, 32, 32)
        # other sizes that are multiples of 2^(levels−1) work too; a scalar t is broadcast
        assert tiny(torch.randn(1, 3, 16, 24), torch.tensor(5)).shape == (1, 3, 16, 24)
        emb = build_unet("embedded-64")
        assert emb(torch.randn(1, 3, 64, 64), torch.tensor([500])).shape == (1, 3, 64, 64)


def test_float64_forward_matches_float32():
    torch.manual_seed(2)
    m = build_unet("tiny", out_channels=6)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([4, 600])
    with torch.no_grad():
        y32 = m(x, t)
        y64 = m.double()(x.double(), t)
    assert y64.dtype == torch.float64
    assert torch.allclose(y64.float(), y32, atol=1e-4, rtol=1e-4)


def test_learned_sigma_has_six_channels():
    m = build_unet("tiny", out_channels=6)
    assert m.cfg.learn_sigma
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32), torch.tensor([3])).shape == (1, 6, 32, 32)


def test_zero_initialised_output_gives_zero():
    m = build_unet("tiny")
    assert all((p == 0).all() for p in m.out[2].parameters())
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32), torch.tensor([1, 700]))
    assert torch.equal(out, torch.zeros_like(out))


def _legacy_attention(blk: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """improved-diffusion's AttentionBlock with QKVAttentionLegacy (heads split before q/k/v)."""
    b, c, *spatial = x.shape
    xf = x.reshape(b, c, -1)
    qkv = blk.qkv(blk.norm(xf))
    bs, width, length = qkv.shape
    n_heads = blk.num_heads
    ch = width // (3 * n_heads)
    q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    # improved-diffusion: softmax in float32 (``weight.float()``); never below the input precision here
    weight = torch.softmax(weight.to(torch.promote_types(weight.dtype, torch.float32)), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)
    return (xf + blk.proj_out(a)).reshape(b, c, *spatial)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("ch,head_ch", [(64, 16), (32, 32), (96, 32)])
def test_fused_attention_equals_legacy_qkv_attention(ch, head_ch, dtype, tol):
    torch.manual_seed(1)
    blk = AttentionBlock(ch, head_ch, groups=8).to(dtype)
    assert blk.num_heads == ch // head_ch
    for p in blk.parameters():  # proj_out is zero-initialised; randomise everything
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, ch, 5, 6, dtype=dtype)
    with torch.no_grad():
        ours, ref = blk(x), _legacy_attention(blk, x)
    assert torch.allclose(ours, ref, atol=tol, rtol=0)
    assert (ours - x).abs().max() > 1e-2  # the attention branch is not trivially zero
    with pytest.raises(ValueError):
        AttentionBlock(48, 32, groups=8)


def test_input_size_must_be_multiple_of_downsampling():
    tiny = build_unet("tiny")  # 2 levels: multiples of 2
    emb = build_unet("embedded-64")  # 4 levels: multiples of 8
    with torch.no_grad():
        with pytest.raises(ValueError):
            tiny(torch.randn(1, 3, 31, 32), torch.tensor([1]))
        with pytest.raises(ValueError):
            emb(torch.randn(1, 3, 64, 60), torch.tensor([1]))
        with pytest.raises(ValueError):
            emb(torch.randn(1, 3, 36, 64), torch.tensor([1]))


def test_mismatched_config_is_rejected():
    with pytest.raises(ValueError):
        build_unet("tiny", num_res_blocks=[1, 1, 1])
    with pytest.raises(ValueError):
        build_unet("no-such-preset")
