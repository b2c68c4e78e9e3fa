"""The low-frequency colour fix (dynface.colorfix) against closed forms; gray faces stay gray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dynface.colorfix import (
    COLOR_FIXES,
    adain_fix,
    color_fix,
    gray_tone,
    is_gray,
    to_gray,
    wavelet_blur,
    wavelet_fix,
    wavelet_lowpass,
)


def _img(seed: int = 0, b: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g, dtype=torch.float64)


def test_wavelet_blur_is_the_dilated_binomial_kernel():
    # an impulse far from the borders spreads into [1,2,1]ᵀ[1,2,1]/16 with taps `dilation` apart
    x = torch.zeros(1, 1, 17, 17, dtype=torch.float64)
    x[0, 0, 8, 8] = 16.0
    for d in (1, 2, 4):
        y = wavelet_blur(x, d)[0, 0]
        expect = torch.zeros(17, 17, dtype=torch.float64)
        for i, wi in zip((-d, 0, d), (1, 2, 1), strict=True):
            for j, wj in zip((-d, 0, d), (1, 2, 1), strict=True):
                expect[8 + i, 8 + j] = wi * wj
        assert torch.allclose(y, expect)


def test_lowpass_keeps_constants_and_kills_the_nyquist_checkerboard_inside():
    c = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    assert torch.allclose(wavelet_lowpass(c), c)
    ii, jj = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((-1.0) ** (ii + jj)).to(torch.float64)[None, None]
    one = wavelet_blur(checker, 1)[0, 0]
    assert one[1:-1, 1:-1].abs().max() < 1e-12  # [1,2,1]/4 has a zero at π


def test_wavelet_fix_closed_forms():
    x, r = _img(0), _img(1)
    # identity when the reference is the content itself (the decomposition telescopes exactly)
    assert torch.allclose(wavelet_fix(x, x), x, atol=1e-12)
    # a colour cast (per-channel constant offset) of the content is removed exactly
    cast = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)[None, :, None, None]
    assert torch.allclose(wavelet_fix(x + cast, x), x, atol=1e-12)
    # linearity: out = content + low(reference − content)
    assert torch.allclose(wavelet_fix(x, r), x + wavelet_lowpass(r - x), atol=1e-12)
    # a constant reference gives the content's details on the reference's level
    const = torch.full_like(x, 0.5)
    out = wavelet_fix(x, const)
    assert torch.allclose(out, x - wavelet_lowpass(x) + 0.5, atol=1e-12)
    assert not torch.allclose(out, x)


def test_adain_fix_matches_the_reference_statistics():
    x, r = _img(2), _img(3) * 0.5 + 0.2
    out = adain_fix(x, r, eps=0.0)
    assert torch.allclose(out.mean(dim=(2, 3)), r.mean(dim=(2, 3)), atol=1e-12)
    assert torch.allclose(out.flatten(2).std(dim=2), r.flatten(2).std(dim=2), atol=1e-12)
    # an affine change of the content per channel (gain > 0, offset) is undone exactly
    gain = torch.tensor([1.5, 0.7, 1.1], dtype=torch.float64)[None, :, None, None]
    off = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)[None, :, None, None]
    assert torch.allclose(adain_fix(r * gain + off, r, eps=0.0), r, atol=1e-12)


def test_color_fix_dispatch_and_errors():
    x, r = _img(4).float(), _img(5).float()
    assert set(COLOR_FIXES) == {"none", "wavelet", "adain"}
    assert color_fix(x, r, "none") is x
    assert torch.equal(color_fix(x, r, "wavelet"), wavelet_fix(x, r))
    assert torch.equal(color_fix(x, r, "adain"), adain_fix(x, r))
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(x, r, "histogram")
    with pytest.raises(ValueError, match="differ in shape"):
        color_fix(x, r[:, :, :16], "wavelet")


# ---- the pipeline option (RestoreConfig.color_fix, from_pretrained(color_fix=...), the records)


def _tiny_faces(astronaut_face):
    from dynface.degrade import degrade

    x = torch.from_numpy(np.asarray(Image.fromarray(astronaut_face).resize((32, 32), Image.LANCZOS)).copy())
    x = x.permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    return degrade(x, "gfpgan", seed=3)[0]


def test_pipeline_color_fix_pulls_the_colours_to_the_restorer(astronaut_face, tiny_random):
    from dynface.pipeline import RestoreConfig

    y = _tiny_faces(astronaut_face)
    base = tiny_random.with_config(steps="ddim10")
    plain = base.restore(y, seed=0)
    fixed = base.with_config(color_fix="wavelet").restore(y, seed=0)
    assert [r["color_fix"] for r in plain.records + fixed.records] == ["none"] * 2 + ["wavelet"] * 2
    # the tiny preset's restorer is the identity (zero-initialised tail): its colours are the input's
    ref = y.mean(dim=(2, 3))
    err_plain = (plain.tensor.mean(dim=(2, 3)) - ref).abs().mean()
    err_fixed = (fixed.tensor.mean(dim=(2, 3)) - ref).abs().mean()
    assert err_fixed < 0.5 * err_plain, (err_fixed, err_plain)
    assert base.with_config(mode="restorer_only", color_fix="adain").restore(y).records[0]["color_fix"] == "none"
    with pytest.raises(ValueError, match="unknown colour fix"):
        RestoreConfig(color_fix="auto")


def _as_tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_is_gray_and_to_gray(astronaut_face, tmp_path):
    """Gray faces stored as RGB are found (exact, JPEG-coded, with facexlib's (135, 133, 132) border fill on a
    tenth of the crop); sepia and colour faces are not; to_gray is Pillow's L conversion (±1 level)."""
    gray = Image.fromarray(astronaut_face).convert("L").convert("RGB")
    gray.save(tmp_path / "g.jpg", quality=75)
    jpeg = Image.open(tmp_path / "g.jpg").convert("RGB")
    bordered = np.array(gray)
    bordered[: bordered.shape[0] // 10] = (135, 133, 132)
    g = np.asarray(gray, dtype=np.float32)
    sepia = np.clip(g * np.array([1.0, 0.85, 0.66]), 0, 255).astype(np.uint8)
    faces = [gray, jpeg, bordered, sepia, astronaut_face]
    x = torch.cat([_as_tensor(f) for f in faces])
    assert is_gray(x).tolist() == [True, True, True, False, False]
    # a tint of 4 levels on a third of the pixels is not gray; 3 levels everywhere still is
    tinted = x[:1].clone()
    tinted[:, 0, : tinted.shape[2] // 3] += 4 / 255
    assert not bool(is_gray(tinted)[0]) and bool(is_gray(x[:1] + torch.tensor([3 / 255, 0, 0]).view(1, 3, 1, 1))[0])
    y = to_gray(_as_tensor(astronaut_face))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    pil = np.asarray(Image.fromarray(astronaut_face).convert("L"), dtype=np.float32)
    assert np.abs(y[0, 0].numpy() * 255 - pil).max() <= 1.0


def _scanned_in_colour(astronaut_face, seed=0) -> np.ndarray:
    """The astronaut's face as a black-and-white print scanned in colour mode: gray, a +4/+1/-3 level cast and
    per-channel noise of 2.5 levels (the family-photo audit's input)."""
    g = np.asarray(Image.fromarray(astronaut_face).convert("L"), dtype=np.float32)[..., None]
    noise = np.random.default_rng(seed).normal(0, 2.5, g.shape[:2] + (3,))
    return np.clip(np.round(g + np.array([4.0, 1.0, -3.0]) + noise), 0, 255).astype(np.uint8)


def test_toned_gray_faces_are_found_with_their_cast(astronaut_face):
    """A gray print scanned in colour (cast + noise) fails is_gray but is toned gray, with its cast; gray faces are
    toned gray with no cast; sepia (its tint grows with brightness), a faded colour print and colour faces are not."""
    scan = _scanned_in_colour(astronaut_face)
    g = np.asarray(Image.fromarray(astronaut_face).convert("L").convert("RGB"), dtype=np.float32)
    sepia = np.clip(g * np.array([1.0, 0.85, 0.66]), 0, 255).astype(np.uint8)
    a = astronaut_face.astype(np.float32)
    faded = np.clip(128 + 0.35 * (a - 128) * np.array([1.25, 0.97, 0.78]), 0, 255).astype(np.uint8)
    x = torch.cat([_as_tensor(f) for f in (scan, g.astype(np.uint8), sepia, faded, astronaut_face)])
    toned, cast = gray_tone(x)
    assert toned.tolist() == [True, True, False, False, False] and not bool(is_gray(x[:1])[0])
    assert np.allclose(cast[0].numpy() * 255, [4 - 1.3, 1 - 1.3, -3 - 1.3], atol=0.8)  # each channel minus the luma's
    assert cast[1:].abs().max() == 0


def test_pipeline_keeps_gray_faces_gray(astronaut_face, tiny_random):
    """A gray face comes back gray (the random tiny prior tints it otherwise), its colour neighbour in the same batch
    is untouched, the record says so in every mode, and keep_gray=False gives the old output."""
    small = Image.fromarray(astronaut_face).resize((32, 32), Image.LANCZOS)
    faces = [np.asarray(small.convert("L").convert("RGB")), np.asarray(small)]
    base = tiny_random.with_config(steps="ddim10", color_fix="wavelet")
    for mode in ("full", "restorer_only"):
        r = base.with_config(mode=mode)
        out = r.restore(faces, seeds=[5, 6])
        off = r.with_config(keep_gray=False).restore(faces, seeds=[5, 6])
        assert [rec["gray_input"] for rec in out.records] == [True, False]
        a = out.images[0].astype(int)
        assert (a.max(-1) - a.min(-1)).max() == 0
        assert np.array_equal(out.images[1], off.images[1])  # per face: the colour face is as before
        assert torch.allclose(out.tensor[0], to_gray(off.tensor[:1])[0])
        if mode == "full":
            b = off.images[0].astype(int)
            assert (b.max(-1) - b.min(-1)).max() > 3, "the fixture no longer shows the tint this guards against"
    alone = base.restore(faces[:1], seeds=[5])
    assert np.array_equal(alone.images[0], base.restore(faces, seeds=[5, 6]).images[0])

    # a gray print scanned in colour comes back gray with the scan's cast: no colour where a colour face has it
    scan = np.asarray(Image.fromarray(_scanned_in_colour(astronaut_face)).resize((32, 32), Image.LANCZOS))
    out = base.restore([scan], seeds=[5])
    off = base.with_config(keep_gray=False).restore([scan], seeds=[5])
    (rec,) = out.records
    assert rec["gray_input"] and np.allclose(rec["gray_cast_levels"], [2.7, -0.3, -4.3], atol=1.0)
    chroma = out.images[0].astype(int) - out.images[0].astype(int).mean(-1, keepdims=True)
    chroma_off = off.images[0].astype(int) - off.images[0].astype(int).mean(-1, keepdims=True)
    assert chroma.std(axis=(0, 1)).max() < 0.6 < chroma_off.std(axis=(0, 1)).max()


def test_from_pretrained_color_fix_default_comes_from_the_model(tmp_path):
    import shutil

    from dynface.models.io import load_state_dict_file, save_safetensors
    from dynface.pipeline import DynFaceRestorer
    from dynface.registry import WEIGHTS_DIR

    src = WEIGHTS_DIR / "embedded-64"
    model = tmp_path / "m"
    shutil.copytree(src, model)
    shipped = DynFaceRestorer.from_pretrained(src, mode="restorer_only").cfg.color_fix
    assert shipped in COLOR_FIXES
    sd, meta = load_state_dict_file(src / "dgsa.safetensors")
    other = "adain" if shipped != "adain" else "wavelet"
    save_safetensors(sd, model / "dgsa.safetensors", metadata={**meta, "restore": {"color_fix": other}})
    assert DynFaceRestorer.from_pretrained(model, mode="restorer_only").cfg.color_fix == other
    assert DynFaceRestorer.from_pretrained(model, mode="restorer_only", color_fix="none").cfg.color_fix == "none"
    with pytest.raises(ValueError, match="unknown colour fix"):
        DynFaceRestorer.from_pretrained(model, color_fix="bogus")


# ---- precision="auto"


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_cpu(monkeypatch, native):
    import dynface.pipeline as pl

    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: native)
    want = "bf16" if native else "fp32"
    assert pl.resolve_precision("auto", "cpu") == want
    assert pl.resolve_precision("auto", "cuda") == "fp32"  # other devices: as before
    assert pl.resolve_precision("fp16", "cpu") == "fp16"
    r = pl.DynFaceRestorer.from_pretrained("embedded-64", mode="restorer_only")
    assert r.cfg.sampler.precision == want
    assert r.restore([np.zeros((64, 64, 3), np.uint8)]).records[0]["precision"] == want
    assert pl.DynFaceRestorer.from_pretrained("embedded-64", precision="fp32").cfg.sampler.precision == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        pl.resolve_precision("fp8")


def test_cpu_bf16_detection_reads_the_cpuinfo_flags(monkeypatch, tmp_path):
    import builtins

    import dynface.pipeline as pl

    real_open = builtins.open
    for flags, want in (("fpu sse avx512f avx512_bf16", True), ("fpu amx_tile amx_bf16", True), ("fpu sse avx2 avx512f", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, _i=info, **k: real_open(_i if p == "/proc/cpuinfo" else p, *a, **k))
        assert pl.cpu_has_native_bf16() is want
        monkeypatch.setattr(builtins, "open", real_open)
