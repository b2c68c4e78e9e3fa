"""Ground-truth tests of the Gaussian operator (method.md §4.4, §8 B3): spatial and FFT paths,
the transfer functions, ∂/∂σ, and the Fourier proximal step. All in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from dynface.ops import (
    fourier_prox,
    gaussian_blur,
    gaussian_blur_fft,
    gaussian_transfer,
    gaussian_transfer_analytic,
    kernel_radius,
    periodic_blur,
)

DT = torch.float64


def _img(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=DT) * 2 - 1


def _kernel1d_np(sigma: float, radius: int) -> np.ndarray:
    """Independent reference: sampled, normalised 1-D Gaussian with 2r+1 taps."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _circulant(k: np.ndarray, n: int) -> np.ndarray:
    """(n, n) matrix of circular correlation (= convolution, k symmetric) with k centred at 0."""
    r = (len(k) - 1) // 2
    m = np.zeros((n, n))
    for i in range(n):
        for j, tap in enumerate(k):
            m[i, (i + j - r) % n] += tap
    return m


# ---- spatial path ---------------------------------------------------------------------------------


def test_spatial_blur_matches_scipy_mirror_correlation():
    # torch 'reflect' padding (edge not repeated) is scipy.ndimage 'mirror'
    sig = [0.6, 1.4, 2.7]
    x = _img(3, 2, 23, 19)
    y = gaussian_blur(x, torch.tensor(sig, dtype=DT))
    r = kernel_radius(max(sig))
    assert r == math.ceil(3 * max(sig))
    for b, s in enumerate(sig):
        k1 = _kernel1d_np(s, r)
        k2 = np.outer(k1, k1)
        for c in range(2):
            ref = ndimage.correlate(x[b, c].numpy(), k2, mode="mirror")
            np.testing.assert_allclose(y[b, c].numpy(), ref, rtol=0, atol=1e-12)


def test_spatial_blur_explicit_radius_matches_scipy():
    x = _img(1, 1, 17, 17, seed=3)
    y = gaussian_blur(x, 1.1, radius=6)
    k1 = _kernel1d_np(1.1, 6)
    ref = ndimage.correlate(x[0, 0].numpy(), np.outer(k1, k1), mode="mirror")
    np.testing.assert_allclose(y[0, 0].numpy(), ref, rtol=0, atol=1e-12)


# ---- FFT path = spatial path ---------------------------------------------------------------------


@pytest.mark.parametrize("radius", [None, 4])
def test_fft_blur_equals_spatial_blur_whole_image(radius):
    sig = torch.tensor([0.4, 1.3, 2.9], dtype=DT)  # per-sample σ in one batch
    x = _img(3, 3, 24, 20, seed=1)
    a = gaussian_blur(x, sig, radius=radius)
    b = gaussian_blur_fft(x, sig, radius=radius)
    assert a.shape == b.shape == x.shape
    # same discrete kernel on the reflect-padded domain: equal everywhere, borders included
    assert (a - b).abs().max() < 1e-5
    assert (a - b).abs().max() < 1e-12


def test_fft_blur_equals_spatial_blur_with_capped_radius():
    # σ so large that the radius is capped at min(H, W) − 1
    sig = torch.tensor([6.0, 10.0], dtype=DT)
    x = _img(2, 1, 12, 14, seed=2)
    a, b = gaussian_blur(x, sig), gaussian_blur_fft(x, sig)
    assert (a - b).abs().max() < 1e-12


def test_per_sample_sigma_equals_separate_calls():
    sig = torch.tensor([0.7, 2.2], dtype=DT)
    x = _img(2, 3, 16, 16, seed=4)
    r = kernel_radius(2.2)
    for fn in (gaussian_blur, gaussian_blur_fft):
        batch = fn(x, sig, radius=r)
        for i in range(2):
            single = fn(x[i : i + 1], float(sig[i]), radius=r)
            assert torch.allclose(batch[i : i + 1], single, atol=1e-13, rtol=0)


def test_constant_image_is_preserved():
    x = torch.full((2, 3, 15, 18), 0.37, dtype=DT)
    sig = torch.tensor([0.5, 4.0], dtype=DT)
    for fn in (gaussian_blur, gaussian_blur_fft):
        assert torch.allclose(fn(x, sig), x, atol=1e-13, rtol=0)


@pytest.mark.parametrize("s", [0.0, 1e-4, 1e-3])
def test_sigma_to_zero_is_identity(s):
    x = _img(2, 3, 16, 16, seed=5)
    for fn in (gaussian_blur, gaussian_blur_fft):
        assert torch.allclose(fn(x, s), x, atol=1e-12, rtol=0)


def test_bad_sigma_shape_is_rejected():
    x = _img(2, 1, 8, 8)
    with pytest.raises(ValueError):
        gaussian_blur(x, torch.ones(3, dtype=DT))


# ---- ∂/∂σ -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [gaussian_blur, gaussian_blur_fft])
@pytest.mark.parametrize("radius", [None, 7])
def test_sigma_gradient_matches_central_differences(fn, radius):
    # σ·3 away from integers so ceil(3σ ± h) (the default radius) does not change
    sig0 = torch.tensor([0.9, 1.55, 2.1], dtype=DT)
    x = _img(3, 2, 18, 18, seed=6)
    w = _img(3, 2, 18, 18, seed=7)

    s = sig0.clone().requires_grad_(True)
    loss = (w * fn(x, s, radius=radius)).sum()
    (g,) = torch.autograd.grad(loss, s)

    h = 1e-5
    fd = torch.empty(3, dtype=DT)
    for b in range(3):
        e = torch.zeros(3, dtype=DT)
        e[b] = h
        lp = (w * fn(x, sig0 + e, radius=radius)).sum()
        lm = (w * fn(x, sig0 - e, radius=radius)).sum()
        fd[b] = (lp - lm) / (2 * h)
    assert torch.allclose(g, fd, rtol=1e-6, atol=1e-8), (g, fd)
    assert (g.abs() > 1e-3).all()


def test_sigma_gradient_of_data_loss_flows_through_fourier_prox():
    x0 = _img(1, 1, 12, 12, seed=8)
    y = gaussian_blur(_img(1, 1, 12, 12, seed=9), 1.5)
    s = torch.tensor([1.2], dtype=DT, requires_grad=True)
    out = fourier_prox(y, x0, s, 0.1)
    (g,) = torch.autograd.grad(out.square().sum(), s)
    assert torch.isfinite(g).all()


# ---- transfer functions ---------------------------------------------------------------------------


def test_analytic_transfer_approximates_discrete_transfer():
    shape = (40, 36)
    sig = torch.tensor([1.5, 2.0, 3.0], dtype=DT)
    ana = gaussian_transfer_analytic(sig, shape)
    # default truncation (3σ, renormalised): close
    disc = gaussian_transfer(sig, kernel_radius(3.0), shape)
    assert (ana - disc).abs().max() < 1e-2
    # wide kernel: only aliasing remains, exp(-σ²π²/2) at Nyquist
    sig2 = torch.tensor([2.0, 3.0], dtype=DT)
    disc2 = gaussian_transfer(sig2, 17, shape)
    assert (gaussian_transfer_analytic(sig2, shape) - disc2).abs().max() < 1e-7
    # rfft layout is the first W//2+1 columns of the full layout
    half = gaussian_transfer(sig, kernel_radius(3.0), shape, rfft=True)
    assert torch.allclose(half, disc[..., : shape[1] // 2 + 1], atol=1e-14, rtol=0)
    assert torch.allclose(disc[:, 0, 0], torch.ones(3, dtype=DT), atol=1e-14, rtol=0)


def test_periodic_blur_is_circular_convolution():
    sig, r, n = 1.3, 4, 11
    x = _img(1, 1, n, n, seed=10)
    c = _circulant(_kernel1d_np(sig, r), n)
    ref = c @ x[0, 0].numpy() @ c.T
    np.testing.assert_allclose(periodic_blur(x, sig, r)[0, 0].numpy(), ref, atol=1e-13)


# ---- Fourier proximal step ------------------------------------------------------------------------


def _prox_reference(y, x0, sigma, lam, r):
    """argmin_x ‖pad(y) − K x‖² + λ‖x − pad(x0)‖² on the padded periodic domain, solved through the
    normal equations (KᵀK + λI) x = Kᵀ pad(y) + λ pad(x0) with a dense circulant K, then cropped.
    ``y``, ``x0``: (C, H, W); all channels share the operator."""
    c, h, w = y.shape
    yp = np.pad(y, ((0, 0), (r, r), (r, r)), mode="reflect")  # numpy 'reflect' = torch 'reflect'
    xp = np.pad(x0, ((0, 0), (r, r), (r, r)), mode="reflect")
    hp, wp = yp.shape[1:]
    k1 = _kernel1d_np(sigma, r)
    a = np.kron(_circulant(k1, hp), _circulant(k1, wp))  # vec(C X Cᵀ) = (C⊗C) vec(X), row-major
    lhs = a.T @ a + lam * np.eye(hp * wp)
    rhs = a.T @ yp.reshape(c, -1).T + lam * xp.reshape(c, -1).T
    sol = np.linalg.solve(lhs, rhs).T.reshape(c, hp, wp)
    return sol[:, r : r + h, r : r + w]


def test_fourier_prox_equals_least_squares_solve():
    sig = torch.tensor([0.8, 1.7], dtype=DT)
    lam = torch.tensor([0.05, 0.3], dtype=DT)
    y = _img(2, 2, 16, 16, seed=11)
    x0 = _img(2, 2, 16, 16, seed=12)
    out = fourier_prox(y, x0, sig, lam)
    r = kernel_radius(1.7)
    for b in range(2):
        ref = _prox_reference(y[b].numpy(), x0[b].numpy(), float(sig[b]), float(lam[b]), r)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=1e-4)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=1e-9)


def test_fourier_prox_large_lambda_returns_x0():
    y, x0 = _img(2, 3, 16, 16, seed=13), _img(2, 3, 16, 16, seed=14)
    out = fourier_prox(y, x0, torch.tensor([1.0, 2.5], dtype=DT), 1e12)
    assert torch.allclose(out, x0, atol=1e-9, rtol=0)


def test_fourier_prox_small_lambda_inverts_noiseless_blur():
    # H = W = 16 with radius 7: the reflect-padded 30×30 domain is exactly one period of the even
    # (DCT-I) extension, so pad(blur(x)) = periodic_blur(pad(x)) and ý is noiseless on that domain.
    h, r, sigma = 16, 7, 1.0
    n = np.arange(h)
    basis = [np.cos(np.pi * k * n / (h - 1)) for k in range(4)]  # |K| ≥ 0.8 at these frequencies
    rng = np.random.default_rng(0)
    x = sum(rng.normal() * np.outer(basis[i], basis[j]) for i in range(4) for j in range(4))
    x = torch.from_numpy(x)[None, None]
    y = gaussian_blur(x, sigma, radius=r)
    assert torch.allclose(
        periodic_blur(torch.nn.functional.pad(x, (r,) * 4, mode="reflect"), sigma, r),
        torch.nn.functional.pad(y, (r,) * 4, mode="reflect"),
        atol=1e-13,
    )
    x0 = torch.zeros_like(x)
    out = fourier_prox(y, x0, sigma, 1e-10, radius=r)
    assert torch.allclose(out, x, atol=1e-6, rtol=0)

    # generic x: recovered on the frequencies where the transfer function is not tiny
    xg = _img(1, 1, h, h, seed=15)
    yg = gaussian_blur(xg, sigma, radius=r)
    outg = fourier_prox(yg, x0, sigma, 1e-10, radius=r)
    pad = lambda t: torch.nn.functional.pad(t, (r,) * 4, mode="reflect")  # noqa: E731
    kf = gaussian_transfer(torch.tensor([sigma], dtype=DT), r, (h + 2 * r, h + 2 * r))[0]
    mask = kf.abs() > 0.05
    err = torch.fft.fft2(pad(outg) - pad(xg))[0, 0]
    assert err[mask].abs().max() < 1e-5
    assert mask.float().mean() > 0.2
