"""Tests for dynface.dsst (the dynamic starting-step table) and the ``build-dsst`` command.

Synthetic faces are isotropic 1/f² random fields (the power-law spectrum of natural images), small so
that the whole file runs in seconds. The calibration test against method.md §3.3 runs only where the
shared face data is present.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynface.cli import main as cli_main
from dynface.diffusion import GaussianDiffusion, ScheduleConfig
from dynface.dsst import (
    METHOD_CALIBRATION,
    DSSTConfig,
    DSSTLoadError,
    DSSTTable,
    build_dsst,
    diffused_radial_psd,
    mean_power_spectrum,
    radial_profile,
)

HQ_FACES = Path(__file__).parents[2] / "shared/data/hq_ffhq_aligned"
SIZE = 64


@pytest.fixture(scope="module")
def alphas() -> torch.Tensor:
    return GaussianDiffusion.from_config(ScheduleConfig()).alphas_cumprod


def power_law_images(n: int, size: int = SIZE, seed: int = 1234) -> torch.Tensor:
    """``(n, 3, size, size)`` random fields with power ∝ 1/(|ω|² + 0.05²), zero mean, std 0.4."""
    g = torch.Generator().manual_seed(seed)
    w = 2 * math.pi * torch.fft.fftfreq(size)
    amp = 1 / torch.sqrt(w[:, None] ** 2 + w[None, :] ** 2 + 0.05**2)
    x = torch.fft.ifft2(torch.fft.fft2(torch.randn(n, 3, size, size, generator=g)) * amp).real
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return 0.4 * x / x.std(dim=(1, 2, 3), keepdim=True)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return power_law_images(16)


def small_cfg(**kw) -> DSSTConfig:
    """σ in working pixels (ref_size = image_size) so that the blurs are well resolved at 64 px."""
    base = dict(bins=32, ref_size=SIZE, image_size=SIZE, sigmas=(0.5, 1.0, 2.0, 3.0, 4.0, 6.0))
    return DSSTConfig(**(base | kw))


def omega_radius(size: int) -> torch.Tensor:
    w = 2 * math.pi * torch.fft.fftfreq(size, dtype=torch.float64)
    return torch.sqrt(w[:, None] ** 2 + w[None, :] ** 2)


# ---- spectra ---------------------------------------------------------------------------------------
def test_radial_profile_of_isotropic_function() -> None:
    bins, r = 16, omega_radius(128)
    f = torch.exp(-(r**2))
    f_corners = torch.where(r > math.pi, torch.full_like(f, 1e6), f)  # corners must be ignored
    prof = radial_profile(f_corners, bins)
    edges = torch.linspace(0, math.pi, bins + 1, dtype=torch.float64)
    # a decreasing function's bin mean lies between its values at the bin edges
    assert torch.all(prof <= torch.exp(-(edges[:-1] ** 2)) + 1e-12)
    assert torch.all(prof >= torch.exp(-(edges[1:] ** 2)) - 1e-12)
    assert prof[0] == pytest.approx(float(f[r < math.pi / bins].mean()))
    # constants stay constant, leading dimensions are kept, and it equals a brute-force bin mean
    assert torch.allclose(radial_profile(torch.full((2, 128, 128), 3.0), bins), torch.tensor(3.0))
    k = 7
    sel = (r >= k * math.pi / bins) & (r < (k + 1) * math.pi / bins)
    assert prof[k] == pytest.approx(float(f[sel].mean()), rel=1e-12)


def test_radial_profile_marks_empty_bins_nan() -> None:
    prof = radial_profile(torch.ones(8, 8, dtype=torch.float64), bins=64)
    assert torch.isnan(prof).any() and (prof[~torch.isnan(prof)] == 1).all()


def test_mean_power_spectrum_normalisation() -> None:
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(12, 3, 32, 32, generator=g)
    spec = mean_power_spectrum(x)
    assert spec.shape == (32, 32) and spec.dtype == torch.float64
    assert float(spec.mean()) == pytest.approx(float(x.double().square().mean()), rel=1e-9)  # Parseval
    assert float(radial_profile(spec, 8).mean()) == pytest.approx(0.09, rel=0.1)  # white: flat at σ²
    u8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=g)
    assert torch.allclose(mean_power_spectrum(u8), mean_power_spectrum(u8.float() / 127.5 - 1))


def test_diffused_radial_psd_matches_literal_diffusion(alphas: torch.Tensor) -> None:
    x0 = power_law_images(4, 32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    fx, fe = torch.fft.fft2(x0.double()) / 32, torch.fft.fft2(eps.double()) / 32

    def r(p: torch.Tensor) -> torch.Tensor:
        return radial_profile(p.mean(dim=(0, 1)), 16)

    ts = torch.tensor([0, 300, 700, 999])
    closed = diffused_radial_psd(r(fx.abs() ** 2), r(fe.abs() ** 2), r((fx * fe.conj()).real), alphas[ts])
    diff = GaussianDiffusion.from_config(ScheduleConfig())
    for i, t in enumerate(ts.tolist()):
        xt = diff.q_sample(x0.double(), torch.full((4,), t), eps.double())
        assert torch.allclose(closed[i], r(torch.fft.fft2(xt).abs() ** 2 / 32**2), rtol=1e-10)


# ---- the table -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["analytic", "empirical"])
def test_table_is_monotone_and_larger_tol_starts_earlier(faces, alphas, mode: str) -> None:
    tight = build_dsst(faces, alphas, small_cfg(mode=mode, tol=0.005))
    loose = build_dsst(faces, alphas, small_cfg(mode=mode, tol=0.02))
    for tab in (tight, loose):
        assert all(b >= a for a, b in zip(tab.steps, tab.steps[1:], strict=False))
        assert tab.steps == tuple(np.maximum.accumulate(tab.metadata["raw_steps"]).tolist())
        assert all(0 <= t < len(alphas) for t in tab.steps)
    assert all(lo <= hi for lo, hi in zip(loose.steps, tight.steps, strict=True))
    assert sum(loose.steps) < sum(tight.steps)


def test_mean_aggregation_starts_no_later_than_max(faces, alphas) -> None:
    tmax = build_dsst(faces, alphas, small_cfg(aggregation="max"))
    tmean = build_dsst(faces, alphas, small_cfg(aggregation="mean"))
    assert all(a <= b for a, b in zip(tmean.steps, tmax.steps, strict=True))


def test_tiny_sigma_starts_at_step_zero(faces, alphas) -> None:
    tab = build_dsst(faces, alphas, small_cfg(sigmas=(1e-3, 0.01, 2.0)))
    assert tab.steps[0] == 0 and tab.steps[1] <= 1 and tab.steps[2] > 100
    assert float(tab.lookup(0.0)) == 0.0  # clamped to the first grid point


def test_saturation_is_reported(faces, alphas) -> None:
    tab = build_dsst(faces, alphas, small_cfg(tol=1e-7, sigmas=(1.0, 6.0)))
    assert tab.steps[-1] == len(alphas) - 1 and tab.metadata["saturated_sigmas"][-1] == 6.0


def test_analytic_and_empirical_agree_on_power_law_images(alphas) -> None:
    """Within 30 steps for σ = 1…4 working px (64 px, 32 images, 32 bins, tol 0.01).

    The empirical noise must be independent of the data: the synthetic images use seed 1234, the
    DSST noise seed 0. Larger σ on 64-px images disagree more (reflect-padded borders, truncation).
    """
    x = power_law_images(32)
    kw = dict(tol=0.01, sigmas=(1.0, 2.0, 3.0, 4.0))
    ana = build_dsst(x, alphas, small_cfg(mode="analytic", **kw))
    emp = build_dsst(x, alphas, small_cfg(mode="empirical", **kw))
    assert max(abs(a - e) for a, e in zip(ana.steps, emp.steps, strict=True)) <= 30, (ana.steps, emp.steps)


def test_sigma_is_scaled_by_image_size_over_ref_size(faces, alphas) -> None:
    """σ_ref at ref_size 128 on 64-px images is the same blur as σ_ref/2 at ref_size 64."""
    a = build_dsst(faces, alphas, small_cfg(sigmas=(2.0, 4.0), ref_size=128))
    b = build_dsst(faces, alphas, small_cfg(sigmas=(1.0, 2.0), ref_size=64))
    assert a.steps == b.steps and a.metadata["ref_size"] == 128


def test_build_validates_inputs(faces, alphas) -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_dsst(faces, alphas, small_cfg(image_size=32))
    with pytest.raises(ValueError):
        DSSTConfig(sigmas=(2.0, 1.0))
    with pytest.raises(ValueError):
        DSSTConfig(aggregation="median")
    sub = build_dsst(faces, alphas, small_cfg(num_images=5, sigmas=(1.0,)))
    assert sub.metadata["num_images"] == 5


# ---- lookup and I/O ------------------------------------------------------------------------------
def test_lookup_interpolates_and_clamps() -> None:
    tab = DSSTTable((1.0, 2.0, 4.0), (500, 700, 800), {})
    assert tab.lookup(1.0).item() == 500.0 and tab.lookup(2.0).item() == 700.0
    assert tab.lookup(1.5).item() == pytest.approx(600.0)
    assert tab.lookup(3.0).item() == pytest.approx(750.0)
    assert tab.lookup(0.1).item() == 500.0 and tab.lookup(99.0).item() == 800.0
    out = tab.lookup(torch.tensor([[1.25, 3.5]]))
    assert out.shape == (1, 2) and out.dtype == torch.float64
    assert torch.allclose(out, torch.tensor([[550.0, 775.0]], dtype=torch.float64))
    assert tab.lookup(torch.tensor([1.26, 3.99]), as_int=True).tolist() == [552, 800]
    dense = tab.lookup(torch.linspace(0, 5, 101))
    assert torch.all(dense[1:] >= dense[:-1])
    assert DSSTTable((3.0,), (640,), {}).lookup(torch.tensor([1.0, 9.0])).tolist() == [640.0, 640.0]
    with pytest.raises(ValueError):
        DSSTTable((1.0, 2.0), (700, 600), {})


def test_json_round_trip(tmp_path: Path, faces, alphas) -> None:
    tab = build_dsst(faces, alphas, small_cfg(sigmas=(1.0, 2.0, 3.0)), schedule="linear test")
    path = tmp_path / "sub" / "dsst.json"
    tab.save(path)
    back = DSSTTable.load(path)
    assert back == tab and back.metadata["schedule"] == "linear test"
    assert back.metadata["config"]["sigmas"] == [1.0, 2.0, 3.0] and back.metadata["ref_size"] == SIZE
    assert [p.name for p in path.parent.iterdir()] == ["dsst.json"]  # no temporary left behind
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError):
        DSSTTable.load(path)


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "file not found"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a dynface-dsst v1 file"),
        ('{"format": "dynface-dsst", "version": 1, "sigmas": [1.0], "metadata": {}}', "'steps' is missing"),
        ('{"format": "dynface-dsst", "version": 1, "sigmas": [2.0, 1.0], "steps": [1, 2], "metadata": {}}',
         "sigmas must be strictly increasing"),
    ],
)
def test_bad_table_file_is_named(tmp_path: Path, content, words) -> None:
    """Issue 11 B9: every way a DSST file can be bad gives one line naming the file (was a bare JSONDecodeError,
    KeyError or ValueError without the path)."""
    path = tmp_path / "my_table.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DSSTLoadError) as ei:
        DSSTTable.load(path)
    msg = str(ei.value)
    assert msg.startswith(f"DSST table {path}: ") and words in msg and "\n" not in msg


def test_restore_names_a_bad_dsst_file(tmp_path: Path, capsys) -> None:
    face = tmp_path / "in" / "face.png"
    face.parent.mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(face)
    bad = tmp_path / "broken_dsst.json"
    bad.write_text("{not json")
    rc = cli_main(["restore", "-i", str(face), "-o", str(tmp_path / "out"), "--aligned", "--dsst", str(bad), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---- command -------------------------------------------------------------------------------------
def test_cli_build_dsst(tmp_path: Path, capsys) -> None:
    data = tmp_path / "faces" / "nested"
    data.mkdir(parents=True)
    img = ((power_law_images(3, 32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    for i, a in enumerate(img.numpy()):
        Image.fromarray(a).save(data / f"{i}.png")
    out = tmp_path / "t.json"
    assert cli_main(["build-dsst", "--data", str(tmp_path / "faces"), "--size", "32", "--out", str(out)]) == 0
    tab = DSSTTable.load(out)
    assert tab.metadata["image_size"] == 32 and tab.metadata["num_images"] == 3 and len(tab.sigmas) == 60
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        assert cli_main(["build-dsst", "--data", str(folder), "--size", "32", "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    # a truncated face is left out with one note line naming it, not a traceback; the table is built from the others
    (data / "broken.png").write_bytes((data / "0.png").read_bytes()[:60])
    assert cli_main(["build-dsst", "--data", str(tmp_path / "faces"), "--size", "32", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("dynface build-dsst: note: 1 of 4 image(s)") and "broken.png" in err
    assert len(err.strip().splitlines()) == 1 and DSSTTable.load(out).metadata["num_images"] == 3
    only = tmp_path / "only_broken"  # none readable: one error line, exit 2
    only.mkdir()
    (only / "broken.png").write_bytes((data / "0.png").read_bytes()[:60])
    assert cli_main(["build-dsst", "--data", str(only), "--size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynface build-dsst: error: ") and "broken.png" in err and len(err.strip().splitlines()) == 1


# ---- calibration on real faces (only where the shared data exists) -------------------------------
@pytest.mark.skipif(not HQ_FACES.is_dir(), reason="shared face data not present")
def test_calibration_against_method_md(alphas) -> None:
    from dynface.training.data import list_images, load_square

    faces = torch.from_numpy(
        np.stack([load_square(f, 512) for f in list_images(HQ_FACES)]).transpose(0, 3, 1, 2).copy()
    )
    tab = build_dsst(faces, alphas, DSSTConfig(num_images=None))
    for s in (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        assert abs(int(tab.lookup(s, as_int=True)) - METHOD_CALIBRATION[s]) <= 25, s
