"""Degradation model (dynface.degrade) and the ``dynface degrade`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from dynface import degrade as D
from dynface.cli import main
from dynface.commands import degrade as cmd
from dynface.ops import gaussian_kernel2d


def _params(**kw) -> D.DegradationParams:
    """Identity-like parameters (tiny blur, no resize, noise or JPEG), overridden by ``kw``."""
    base = dict(
        kernel="iso", sigma_x=1e-3, sigma_y=1e-3, theta=0.0, kernel_size=3, scale=1.0, noise=0.0, jpeg=100,
        gray=False, jitter=None, seed=0, size=64,
    )  # fmt: skip
    return D.DegradationParams(**{**base, **kw})


def _smooth_image(b: int = 2, n: int = 64, seed: int = 0, cells: int = 8) -> torch.Tensor:
    """Random bicubic-interpolated colours on a ``cells × cells`` grid, (b, 3, n, n) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, cells, cells, generator=g)
    return F.interpolate(x, size=(n, n), mode="bicubic", align_corners=False).clamp(0, 1)


# --- kernels -----------------------------------------------------------------------------------


def test_kernel_normalised_and_point_symmetric():
    sx, sy, th = torch.tensor([0.5, 2.0, 3.0]), torch.tensor([0.5, 5.0, 1.0]), torch.tensor([0.0, 0.3, 2.0])
    k = D.gaussian_kernel_aniso(21, sx, sy, th)
    assert k.shape == (3, 21, 21)
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(3))
    torch.testing.assert_close(k, k.flip(1).flip(2))  # k(−p) = k(p)
    iso = k[0]
    torch.testing.assert_close(iso, iso.T)
    torch.testing.assert_close(iso, iso.flip(0))


def test_kernel_quarter_turn_swaps_sigmas():
    sx, sy, th = torch.tensor([1.5, 4.0]), torch.tensor([3.0, 2.0]), torch.tensor([0.2, 1.0])
    a = D.gaussian_kernel_aniso(15, sx, sy, th + math.pi / 2)
    b = D.gaussian_kernel_aniso(15, sy, sx, th)
    torch.testing.assert_close(a, b)
    # θ = 0 puts σx along the columns (x): the kernel is wider horizontally when σx > σy
    k = D.gaussian_kernel_aniso(15, 4.0, 1.0, 0.0)[0]
    assert k[7, 11] > k[11, 7]


def test_kernel_matches_covariance_formula():
    """Same as BasicSR's bivariate Gaussian: Σ = R(θ) diag(σx², σy²) R(θ)ᵀ on the (x = column, y = row) grid."""
    sx, sy, th = 3.0, 1.2, 0.7
    c, s = math.cos(th), math.sin(th)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    yy, xx = np.mgrid[-7:8, -7:8].astype(np.float64)
    g = np.stack([xx, yy], -1)
    ref = np.exp(-0.5 * np.einsum("...i,ij,...j->...", g, inv, g))
    k = D.gaussian_kernel_aniso(15, torch.tensor(sx, dtype=torch.float64), sy, th)[0].numpy()
    np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-12)


def test_iso_kernel_matches_separable_gaussian():
    sigma = torch.tensor([0.7, 2.5, 6.0], dtype=torch.float64)
    k = D.gaussian_kernel_aniso(13, sigma, sigma, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(k, gaussian_kernel2d(sigma, 6))


def test_kernel_rejects_even_size():
    with pytest.raises(ValueError):
        D.gaussian_kernel_aniso(4, 1.0, 1.0, 0.0)


def test_scaled_kernel_size():
    assert D.scaled_kernel_size(41, 512, 512) == 41
    assert D.scaled_kernel_size(41, 64, 512) == 5
    assert D.scaled_kernel_size(41, 256, 512) == 21
    assert D.scaled_kernel_size(41, 8, 512) == 3
    assert D.scaled_kernel_size(41, 2048, 512) == 165
    assert D.scaled_kernel_size(41, 2, 512) == 3 and D.scaled_kernel_size(41, 1, 512) == 1


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_images_degrade(n: int):
    y, _ = D.degrade(torch.rand(2, 3, n, n, generator=torch.Generator().manual_seed(0)), "difface-grid", 0)
    assert y.shape == (2, 3, n, n)


def test_blur_matches_scipy_reference():
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    k = D.gaussian_kernel_aniso(7, torch.tensor([1.0, 2.5]), torch.tensor([2.0, 0.8]), torch.tensor([0.4, 2.2]))
    y = D.blur(x, k)
    for b in range(2):
        for c in range(3):
            ref = ndimage.correlate(x[b, c].numpy(), k[b].numpy(), mode="mirror")  # mirror = reflect-101
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gfpgan", "diffbir", "difface"])
@pytest.mark.parametrize("size", [512, 64])
def test_random_presets_respect_ranges(name: str, size: int):
    cfg = D.PRESETS[name]
    f = size / cfg.ref_size
    ps = D.sample_params(name, 400, 7, size)
    eps = 1e-9
    for p in ps:
        assert p.size == size and p.kernel_size == D.scaled_kernel_size(41, size, 512)
        for s in (p.sigma_x, p.sigma_y):
            assert cfg.sigma_range[0] * f - eps <= s <= cfg.sigma_range[1] * f + eps
        assert cfg.scale_range[0] <= p.scale <= cfg.scale_range[1]
        assert cfg.noise_range[0] <= p.noise <= cfg.noise_range[1]
        assert cfg.jpeg_range[0] <= p.jpeg <= cfg.jpeg_range[1] and isinstance(p.jpeg, int)
        assert 0 <= p.theta < math.pi
        if p.kernel == "iso":
            assert p.sigma_x == p.sigma_y and p.theta == 0.0
    n_iso = sum(p.kernel == "iso" for p in ps)
    assert 150 < n_iso < 250  # iso_prob 0.5
    assert len({p.seed for p in ps}) == len(ps)


def test_gray_probability_and_color_jitter_sampling():
    cfg = D.DegradationConfig(gray_prob=0.5, color_jitter=(0.2, 0.3, 0.4, 0.05))
    ps = D.sample_params(cfg, 200, 3, 64)
    assert 60 < sum(p.gray for p in ps) < 140
    for p in ps:
        b, c, s, h = p.jitter
        assert 0.8 <= b <= 1.2 and 0.7 <= c <= 1.3 and 0.6 <= s <= 1.4 and -0.05 <= h <= 0.05
    assert all(p.jitter is None and not p.gray for p in D.sample_params("gfpgan", 50, 3, 64))


def test_difface_grid_values_lie_on_grid():
    grid = D.PRESETS["difface-grid"]
    assert len(grid.entries()) == 4000
    f = 64 / 512
    ps = D.sample_params("difface-grid", 300, 5, 64)
    for p in ps:
        assert p.kernel == "aniso" and p.kernel_size == 5 and not p.gray
        assert p.jpeg in grid.jpeg and p.scale in grid.scales and p.noise in grid.noises
        assert p.theta in grid.thetas
        assert p.sigma_x / f in grid.sigmas_x and p.sigma_y / f in grid.sigmas_y
    combos = {(p.jpeg, p.scale, p.noise, p.sigma_x, p.theta) for p in ps}
    assert len(combos) == len(ps)  # a permutation: no grid entry repeats before the grid is used up
    # cycled after the whole grid
    big = D.sample_params("difface-grid", 4001, 5, 64)
    assert (big[0].jpeg, big[0].scale, big[0].noise, big[0].sigma_x, big[0].theta) == (
        big[4000].jpeg, big[4000].scale, big[4000].noise, big[4000].sigma_x, big[4000].theta
    )  # fmt: skip
    assert len({(p.jpeg, p.scale, p.noise, p.sigma_x, p.theta) for p in big[:4000]}) == 4000


@pytest.mark.parametrize("name", list(D.PRESETS))
def test_sampling_is_seeded_and_prefix_stable(name: str):
    a = D.sample_params(name, 10, 11, 64)
    assert a == D.sample_params(name, 10, 11, 64)
    assert a[:4] == D.sample_params(name, 4, 11, 64)  # sample i depends on (seed, i) only
    assert a != D.sample_params(name, 10, 12, 64)
    g1, g2 = np.random.default_rng(0), np.random.default_rng(0)
    assert D.sample_params(name, 3, g1, 64) == D.sample_params(name, 3, g2, 64)


@pytest.mark.parametrize("name", ["diffbir", "gfpgan"])
def test_threaded_degradation_equals_sequential(name: str):
    """workers > 1 (GPU training) gives the very same bytes: each sample has its own seed."""
    x = torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    params = D.sample_params(name, 6, 3, 48)
    seq = D.apply_degradation(x, params)
    assert torch.equal(D.apply_degradation(x, params, workers=4), seq)
    assert torch.equal(D.degrade(x, name, 3, workers=3)[0], seq)


def test_sample_params_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown degradation preset"):
        D.sample_params("nope", 1, 0, 64)
    with pytest.raises(ValueError):
        D.sample_params("gfpgan", 1, -1, 64)


def test_params_to_dict_is_json_ready():
    p = D.sample_params(D.DegradationConfig(color_jitter=(0.1, 0.1, 0.1, 0.01)), 1, 0, 64)[0]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["kernel"] == p.kernel and d["jpeg"] == p.jpeg and d["jitter"] == list(p.jitter) and d["seed"] == p.seed


# --- application -------------------------------------------------------------------------------


def test_identity_parameters_only_quantise():
    x = _smooth_image()
    y = D.apply_degradation(x, [_params(), _params()])
    torch.testing.assert_close(y, (x * 255).round() / 255)


def test_noise_std_matches_delta():
    x = torch.full((4, 3, 64, 64), 0.5)
    y = D.apply_degradation(x, [_params(noise=10.0, seed=s) for s in range(4)])
    std = float((y - 0.5).std())
    assert abs(std * 255 - 10.0) < 0.3
    assert abs(float((y - 0.5).mean())) < 1e-3


def test_blur_step_of_pipeline_matches_reference():
    x = _smooth_image(1, 32).double()
    p = _params(kernel="aniso", sigma_x=2.0, sigma_y=0.7, theta=0.6, kernel_size=9, size=32)
    y = D.apply_degradation(x, [p])
    k = D.gaussian_kernel_aniso(9, 2.0, 0.7, 0.6)[0].double().numpy()
    ref = np.stack([ndimage.correlate(x[0, c].numpy(), k, mode="mirror") for c in range(3)])
    np.testing.assert_allclose(y[0].numpy(), np.round(ref * 255) / 255, atol=1e-9)


def test_mixed_kernel_sizes_in_one_batch():
    x = _smooth_image(2, 32)
    p1 = _params(sigma_x=1.0, sigma_y=1.0, kernel_size=5, size=32)
    p2 = _params(kernel="aniso", sigma_x=2.0, sigma_y=1.0, theta=1.0, kernel_size=11, size=32)
    both = D.apply_degradation(x, [p1, p2])
    torch.testing.assert_close(both[0:1], D.apply_degradation(x[0:1], [p1]))
    torch.testing.assert_close(both[1:2], D.apply_degradation(x[1:2], [p2]))


def test_jpeg_and_downsampling_change_the_image():
    x = _smooth_image(1)
    base = D.apply_degradation(x, [_params()])
    assert (D.apply_degradation(x, [_params(jpeg=30)]) - base).abs().max() > 2 / 255
    assert (D.apply_degradation(x, [_params(scale=4.0)]) - base).abs().max() > 2 / 255
    # a flat image survives any resize exactly
    flat = torch.full((1, 3, 64, 64), 100 / 255)
    torch.testing.assert_close(D.apply_degradation(flat, [_params(scale=7.3)]), flat)


def test_gray_and_jitter():
    x = _smooth_image(1)
    y = D.apply_degradation(x, [_params(gray=True)])
    assert torch.equal(y[0, 0], y[0, 1]) and torch.equal(y[0, 1], y[0, 2])
    j = D.apply_degradation(x, [_params(jitter=(1.0, 1.0, 1.0, 0.0))])
    torch.testing.assert_close(j, D.apply_degradation(x, [_params()]))  # neutral jitter is the identity
    h = D.apply_degradation(x, [_params(jitter=(1.1, 0.9, 0.5, 0.1))])
    assert (h - j).abs().max() > 5 / 255 and 0 <= h.min() and h.max() <= 1


def test_resolution_convention_blur_commutes_with_resizing():
    """Blurring at 512 with σ then area-downsampling ≈ downsampling then blurring with σ·64/512."""
    x = _smooth_image(1, 512, seed=3, cells=16)
    ref = F.interpolate(
        D.apply_degradation(
            x, [_params(kernel="aniso", sigma_x=8.0, sigma_y=4.0, theta=0.5, kernel_size=41, size=512)]
        ),
        size=64,
        mode="area",
    )
    x64 = F.interpolate(x, size=64, mode="area")

    def err(sx: float, sy: float, k: int) -> float:
        p = _params(kernel="aniso", sigma_x=sx, sigma_y=sy, theta=0.5, kernel_size=k, size=64)
        return float((D.apply_degradation(x64, [p]) - ref).abs().mean())

    scaled = err(1.0, 0.5, D.scaled_kernel_size(41, 64, 512))  # σ × 64/512, kernel 5
    assert scaled < 1 / 255
    assert scaled < err(1e-3, 1e-3, 3) / 5 and scaled < err(2.0, 1.0, 9) / 5


@pytest.mark.parametrize("name", list(D.PRESETS))
def test_degrade_shape_range_determinism(name: str):
    x = _smooth_image(3)
    y, ps = D.degrade(x, name, 5)
    assert y.shape == x.shape and y.dtype == x.dtype and len(ps) == 3
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    torch.testing.assert_close(y * 255, (y * 255).round())  # 8-bit levels
    y2, ps2 = D.degrade(x, name, 5)
    assert torch.equal(y, y2) and ps == ps2
    y3, _ = D.degrade(x, name, 6)
    assert not torch.equal(y, y3)


def test_apply_checks_shapes():
    x = _smooth_image(2)
    with pytest.raises(ValueError):
        D.apply_degradation(x, [_params()])
    with pytest.raises(ValueError):
        D.apply_degradation(x, [_params(size=32), _params(size=32)])


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def hq_dir(tmp_path):
    from skimage import data

    d = tmp_path / "hq_in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()).resize((96, 80), Image.LANCZOS).save(d / "astronaut.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "noise.jpg", quality=90)
    yy, xx = np.mgrid[0:50, 0:50]
    Image.fromarray(((xx + yy) * 2.5).astype(np.uint8), mode="L").save(d / "sub" / "ramp.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_preset_names_match_presets():
    assert set(cmd.PRESET_NAMES) == set(D.PRESETS)


def test_cli_end_to_end_is_reproducible(hq_dir, tmp_path, capsys):
    outs = [tmp_path / "o1", tmp_path / "o2"]
    for o in outs:
        rc, out, err = _run(
            ["degrade", "-i", str(hq_dir), "-o", str(o), "--preset", "gfpgan", "--seed", "3", "--size", "32"], capsys
        )
        assert rc == 0, err
        assert "3/3" in out
    names = ["astronaut.png", "noise.png", "sub/ramp.png"]
    for sub in ("hq", "lq"):
        for n in names:
            a, b = (o / sub / n for o in outs)
            assert a.read_bytes() == b.read_bytes()
            with Image.open(a) as im:
                assert im.size == (32, 32) and im.mode == "RGB"
    m1, m2 = ((o / "manifest.json").read_text() for o in outs)
    assert m1 == m2
    m = json.loads(m1)
    assert (m["preset"], m["seed"], m["size"], m["ref_size"], m["failed"]) == ("gfpgan", 3, 32, 512, [])
    assert [e["file"] for e in m["images"]] == ["astronaut.png", "noise.jpg", "sub/ramp.png"]
    expected = D.sample_params("gfpgan", 3, 3, 32)
    for e, p in zip(m["images"], expected, strict=True):
        assert {k: e[k] for k in p.to_dict()} == p.to_dict()
    # a different seed gives different LQ images, the same HQ ones
    rc, _, _ = _run(["degrade", "-i", str(hq_dir), "-o", str(tmp_path / "o3"), "--seed", "4", "--size", "32"], capsys)
    assert rc == 0
    assert (tmp_path / "o3/hq/astronaut.png").read_bytes() == (outs[0] / "hq/astronaut.png").read_bytes()
    assert (tmp_path / "o3/lq/astronaut.png").read_bytes() != (outs[0] / "lq/astronaut.png").read_bytes()


def test_cli_corrupt_file_is_reported_and_skipped(hq_dir, tmp_path, capsys):
    (hq_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out_dir = tmp_path / "out"
    rc, _, err = _run(
        ["degrade", "-i", str(hq_dir), "-o", str(out_dir), "--preset", "difface-grid", "--size", "32"], capsys
    )
    assert rc == 1
    assert "broken.png" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    m = json.loads((out_dir / "manifest.json").read_text())
    assert [f["file"] for f in m["failed"]] == ["broken.png"]
    assert [e["file"] for e in m["images"]] == ["astronaut.png", "noise.jpg", "sub/ramp.png"]
    assert not (out_dir / "lq" / "broken.png").exists()
    for n in ("astronaut.png", "noise.png", "sub/ramp.png"):
        assert (out_dir / "lq" / n).is_file() and (out_dir / "hq" / n).is_file()
    # parameters follow the sorted index, whatever failed: astronaut is index 0, noise.jpg index 2
    ps = D.sample_params("difface-grid", 4, 0, 32)
    entry, expected = m["images"][1], ps[2].to_dict()
    assert {k: entry[k] for k in expected} == expected


def test_cli_limit_and_output_inside_input(hq_dir, capsys):
    out_dir = hq_dir / "degraded"
    args = ["degrade", "-i", str(hq_dir), "-o", str(out_dir), "--size", "16", "--limit", "2"]
    rc, _, err = _run(args, capsys)  # issue 11 B4: as restore, -o inside the input needs --allow-input-dir
    assert rc == 2 and "lies inside the input folder" in err and "--allow-input-dir" in err and not out_dir.exists()
    args.append("--allow-input-dir")
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "2/2" in out
    first = (out_dir / "lq" / "astronaut.png").read_bytes()
    rc, out, _ = _run(args, capsys)  # the outputs written inside the input folder are not new inputs
    assert rc == 0 and "2/2" in out
    assert (out_dir / "lq" / "astronaut.png").read_bytes() == first


def test_cli_duplicate_output_names_too_small_faces_and_a_file_as_input(tmp_path, capsys):
    """face.jpg and face.png are both degraded, named as restore names them (face_jpg, face_png; the second was
    refused); a 1×1 image is refused as no face (restore refuses crops under 16 px); -i FILE says it is a file."""
    d = tmp_path / "in"
    d.mkdir()
    for ext in ("jpg", "png"):
        Image.new("RGB", (20, 20), (200, 100, 50)).save(d / f"face.{ext}")
    Image.new("RGB", (1, 1)).save(d / "dot.png")
    rc, out, err = _run(["degrade", "-i", str(d), "-o", str(tmp_path / "o"), "--size", "16"], capsys)
    assert rc == 1 and "2/3" in out and err.strip() == "dot.png: too small for a face (1x1; at least 16 px a side, as restore's crops)"
    assert sorted(p.name for p in (tmp_path / "o" / "lq").iterdir()) == ["face_jpg.png", "face_png.png"]
    rc, _, err = _run(["degrade", "-i", str(d / "face.jpg"), "-o", str(tmp_path / "o2")], capsys)
    assert rc == 2 and "is a file; degrade reads a folder" in err


def test_cli_refuses_bad_folders(hq_dir, tmp_path, capsys):
    rc, _, err = _run(["degrade", "-i", str(hq_dir), "-o", str(hq_dir)], capsys)
    assert rc == 2 and "is the input folder" in err and "Traceback" not in err  # restore's wording (issue 11 B4)
    rc, _, err = _run(["degrade", "-i", str(hq_dir / "sub"), "-o", str(hq_dir.parent / "o")], capsys)
    assert rc == 0
    rc, _, err = _run(["degrade", "-i", str(hq_dir.parent / "o" / "lq"), "-o", str(hq_dir.parent / "o")], capsys)
    assert rc == 2 and "lies in the output folder's lq/" in err
    rc, _, err = _run(["degrade", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not found" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = _run(["degrade", "-i", str(empty), "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no images" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = _run(["degrade", "-i", str(hq_dir), "-o", str(blocker)], capsys)
    assert rc == 2 and "cannot create the output folder" in err and "Traceback" not in err


def test_cli_size_limit(tmp_path, capsys):
    """Issue 11 B4: --size is bounded (20000 took 9 GB), with imageio's "too large" wording; checked before any
    folder is read (the empty input folder would otherwise be the error) and for library callers too."""
    import argparse

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as ei:
        main(["degrade", "-i", str(empty), "-o", str(tmp_path / "o"), "--size", "20000"])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "output too large (20000x20000 = 400 MP; the limit is 4.19 MP), at most 2048" in err
    ns = argparse.Namespace(input=empty, output=tmp_path / "o", preset="gfpgan", seed=0, size=20000, limit=None)
    assert cmd.run(ns) == 2 and "too large" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli_input_over_pixel_budget_is_refused_before_decoding(hq_dir, tmp_path, capsys):
    """Issue 11 B4/B9: an input over dynface.imageio.MAX_PIXELS fails alone, from its header, with the same
    message as restore's reader; the others are written."""
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    (hq_dir / "big.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 9_000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )  # fmt: skip
    rc, out, err = _run(["degrade", "-i", str(hq_dir), "-o", str(tmp_path / "o"), "--size", "16"], capsys)
    assert rc == 1 and "3/4" in out
    assert err.strip() == "big.png: image too large (10000x9000 = 90 MP; the limit is 80 MP)"


def test_cli_earlier_outputs_hidden_files_and_symlinked_outputs(hq_dir, tmp_path, capsys):
    """Issue 11 B4: outputs of an earlier run inside the input folder are never degraded again (old code: 3, then
    9 images); hidden files are skipped; an output path that a symlink would lead out of -o is refused per file."""
    (hq_dir / ".cache").mkdir()
    Image.new("RGB", (20, 20)).save(hq_dir / ".cache" / "thumb.png")
    for o in ("o1", "o2"):
        rc, out, err = _run(["degrade", "-i", str(hq_dir), "-o", str(hq_dir / o), "--size", "16", "--allow-input-dir"],
                            capsys)  # fmt: skip
        assert rc == 0 and "3/3" in out, (out, err)
        assert "left out" in err
    assert not (hq_dir / "o2" / "lq" / "o1").exists() and not (hq_dir / "o1" / "lq" / ".cache").exists()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out_dir = tmp_path / "o3"
    (out_dir / "lq").mkdir(parents=True)
    (out_dir / "lq" / "sub").symlink_to(outside)
    rc, out, err = _run(["degrade", "-i", str(hq_dir), "-o", str(out_dir), "--size", "16"], capsys)
    assert rc == 1 and "2/3" in out and "sub/ramp.png: cannot use this name for an output" in err
    assert list(outside.iterdir()) == []


def test_cli_reads_16_bit_and_exif_rotated_faces_as_restore_does(tmp_path, capsys):
    """A 16-bit PNG is scaled to 8 bits (it came out all white), an EXIF-rotated JPEG is turned upright (it came
    out sideways): the HQ images are the pictures a viewer shows, as ``dynface restore`` reads them."""
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()[0:240, 100:340]).resize((64, 64), Image.LANCZOS))
    gray = np.asarray(Image.fromarray(face).convert("L"))
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "g16.png")
    src = Image.fromarray(face).transpose(Image.ROTATE_90)  # stored turned; orientation 6 turns it back
    exif = src.getexif()
    exif[0x0112] = 6
    src.save(d / "rot.jpg", quality=98, exif=exif.tobytes())
    rc, _, err = _run(["degrade", "-i", str(d), "-o", str(tmp_path / "o"), "--size", "64"], capsys)
    assert rc == 0, err
    g16 = np.asarray(Image.open(tmp_path / "o/hq/g16.png")).astype(int)
    assert np.abs(g16 - gray[..., None]).max() <= 1
    rot = np.asarray(Image.open(tmp_path / "o/hq/rot.png")).astype(int)
    assert np.abs(rot - face).mean() < 3 and np.abs(np.rot90(rot, 2) - face).mean() > 20
