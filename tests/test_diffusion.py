"""Ground-truth tests of the diffusion core against closed forms and improved-diffusion semantics."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from dynface.diffusion import GaussianDiffusion, ScheduleConfig, make_betas, space_timesteps

DT = torch.float64


@pytest.fixture(scope="module")
def diff() -> GaussianDiffusion:
    return GaussianDiffusion.from_config(ScheduleConfig())


def _t(*v):
    return torch.tensor(v, dtype=torch.long)


def _ref_alphas_cumprod():
    b = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    return b, np.cumprod(1.0 - b)


def _space_timesteps_ref(num_timesteps, section_counts):
    """improved-diffusion's respace.space_timesteps (as used by DifFace), returned sorted."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return sorted(set(range(0, num_timesteps, i)))
            raise ValueError
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = num_timesteps // len(section_counts), num_timesteps % len(section_counts)
    start_idx, all_steps = 0, []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx, taken = 0.0, []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return sorted(set(all_steps))


# ---- schedule and forward process -----------------------------------------------------------------


def test_linear_schedule_values(diff):
    assert diff.num_timesteps == 1000
    assert diff.betas.dtype == DT
    assert diff.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert diff.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.all(diff.betas[1:] > diff.betas[:-1])
    ac = diff.alphas_cumprod
    assert torch.all(ac[1:] < ac[:-1]) and 0 < ac[-1] < ac[0] < 1
    _, ac_ref = _ref_alphas_cumprod()
    np.testing.assert_allclose(ac.numpy(), ac_ref, rtol=1e-12)
    assert ac[-1].item() < 1e-4  # x_T is essentially pure noise
    # improved-diffusion scaling for other lengths
    b100 = make_betas(ScheduleConfig(num_timesteps=100))
    assert b100[0] == pytest.approx(1e-3) and b100[-1] == pytest.approx(0.2)


def test_cosine_schedule_is_valid():
    b = make_betas(ScheduleConfig(schedule="cosine"))
    assert b.shape == (1000,) and (b > 0).all() and (b <= 0.999).all()
    with pytest.raises(ValueError):
        make_betas(ScheduleConfig(schedule="quadratic"))


def test_q_sample_identity_and_monte_carlo(diff):
    _, ac_ref = _ref_alphas_cumprod()
    t = _t(0, 250, 700, 999)
    x0 = torch.tensor([0.9, -0.4, 0.3, 1.0], dtype=DT)[:, None, None, None].expand(4, 1, 2, 2).contiguous()
    noise = torch.randn(4, 1, 2, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    a = torch.from_numpy(ac_ref[t.numpy()])[:, None, None, None]
    exact = a.sqrt() * x0 + (1 - a).sqrt() * noise
    assert torch.allclose(diff.q_sample(x0, t, noise), exact, atol=1e-14, rtol=0)

    # Monte Carlo: 200k draws per step, fixed seed; compare to the mean/variance formula
    n = 200_000
    torch.manual_seed(1234)
    xb = x0[:, :, :1, :1].reshape(4, 1, 1, 1).expand(4, n, 1, 1).contiguous()
    xs = diff.q_sample(xb, t)
    mean, var = diff.q_mean_variance(xb[:, :1], t)
    mean, var = mean.reshape(4), var.reshape(4)
    assert torch.allclose(mean, a.reshape(4).sqrt() * x0[:, 0, 0, 0], atol=1e-14)
    assert torch.allclose(var, 1 - a.reshape(4), atol=1e-14)
    emp_mean, emp_var = xs.mean(dim=(1, 2, 3)), xs.var(dim=(1, 2, 3))
    se = (var / n).sqrt()
    assert ((emp_mean - mean).abs() < 5 * se).all(), (emp_mean, mean)
    # Var(s²) = 2σ⁴/(n−1) for a Gaussian
    assert ((emp_var - var).abs() < 5 * var * math.sqrt(2 / (n - 1))).all(), (emp_var, var)


def test_x0_eps_inverse_pair(diff):
    g = torch.Generator().manual_seed(2)
    t = _t(0, 1, 10, 500, 998, 999)
    xt = torch.randn(6, 3, 4, 4, dtype=DT, generator=g)
    eps = torch.randn(6, 3, 4, 4, dtype=DT, generator=g)
    x0 = diff.x0_from_eps(xt, t, eps)
    assert torch.allclose(diff.eps_from_x0(xt, t, x0), eps, atol=1e-9, rtol=1e-9)
    x0b = torch.randn(6, 3, 4, 4, dtype=DT, generator=g)
    assert torch.allclose(diff.x0_from_eps(xt, t, diff.eps_from_x0(xt, t, x0b)), x0b, atol=1e-9)
    # consistency with the forward process: x_t built from (x0, ε) gives back both
    xt2 = diff.q_sample(x0b, t, eps)
    assert torch.allclose(diff.x0_from_eps(xt2, t, eps), x0b, atol=1e-9)
    assert torch.allclose(diff.eps_from_x0(xt2, t, x0b), eps, atol=1e-9)


def test_q_posterior_is_bayes_on_gaussians(diff):
    b, ac = _ref_alphas_cumprod()
    g = torch.Generator().manual_seed(3)
    ts = [1, 2, 50, 400, 999]
    x0 = torch.randn(len(ts), 2, 3, 3, dtype=DT, generator=g)
    xt = torch.randn(len(ts), 2, 3, 3, dtype=DT, generator=g)
    mean, var, logvar = diff.q_posterior(x0, xt, torch.tensor(ts))
    for i, t in enumerate(ts):
        # prior x_{t−1} | x0 ~ N(√ᾱ_{t−1} x0, 1−ᾱ_{t−1}); likelihood x_t | x_{t−1} ~ N(√α_t x_{t−1}, β_t)
        a_t, ab_prev = 1 - b[t], ac[t - 1]
        prec = 1 / (1 - ab_prev) + a_t / b[t]
        v = 1 / prec
        m = v * (math.sqrt(ab_prev) * x0[i] / (1 - ab_prev) + math.sqrt(a_t) * xt[i] / b[t])
        assert torch.allclose(mean[i], m, atol=1e-10, rtol=1e-10)
        assert var[i].flatten()[0].item() == pytest.approx(v, rel=1e-10)
        assert logvar[i].flatten()[0].item() == pytest.approx(math.log(v), rel=1e-10)
        assert v <= b[t]
    # t = 0: x_{−1} = x0 exactly
    m0, v0, lv0 = diff.q_posterior(x0[:1], xt[:1], _t(0))
    assert torch.allclose(m0, x0[:1], atol=1e-12) and v0.abs().max() == 0
    assert lv0.flatten()[0].item() == pytest.approx(math.log(diff.posterior_variance[1].item()))
    assert torch.all(diff.posterior_variance <= diff.betas)


def test_learned_range_variance_endpoints(diff):
    b, ac = _ref_alphas_cumprod()
    x = torch.zeros(3, 1, 2, 2, dtype=DT)
    t = _t(1, 300, 999)
    lo = diff.model_log_variance(-torch.ones_like(x), t, x)
    hi = diff.model_log_variance(torch.ones_like(x), t, x)
    for i, ti in enumerate(t.tolist()):
        beta_tilde = b[ti] * (1 - ac[ti - 1]) / (1 - ac[ti])
        assert lo[i].flatten()[0].item() == pytest.approx(math.log(beta_tilde), rel=1e-12)
        assert hi[i].flatten()[0].item() == pytest.approx(math.log(b[ti]), rel=1e-12)
    mid = diff.model_log_variance(torch.zeros_like(x), t, x)
    assert torch.allclose(mid, (lo + hi) / 2, atol=1e-12)
    # t = 0 uses the clipped value log β̃_1 (β̃_0 = 0)
    lo0 = diff.model_log_variance(-torch.ones(1, 1, 1, 1, dtype=DT), _t(0), x[:1, :, :1, :1])
    assert lo0.item() == pytest.approx(math.log(b[1] * (1 - ac[0]) / (1 - ac[1])), rel=1e-12)


def test_split_output(diff):
    out = torch.randn(2, 6, 4, 4)
    eps, v = diff.split_output(out, 3)
    assert eps.shape == v.shape == (2, 3, 4, 4)
    assert diff.split_output(out[:, :3], 3)[1] is None
    with pytest.raises(ValueError):
        diff.split_output(out[:, :4], 3)


# ---- respacing ------------------------------------------------------------------------------------


def test_space_timesteps_semantics():
    assert space_timesteps(1000, "ddim250") == list(range(0, 1000, 4))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    s250 = space_timesteps(1000, "250")
    assert len(s250) == 250 and s250[0] == 0 and s250[-1] == 999
    assert s250 == _space_timesteps_ref(1000, "250")
    s1010 = space_timesteps(1000, "10,10")
    assert len(s1010) == 20 and s1010[0] == 0 and s1010[9] == 499 and s1010[10] == 500 and s1010[-1] == 999
    assert s1010 == _space_timesteps_ref(1000, "10,10")
    assert space_timesteps(1000, 250) == s250
    assert space_timesteps(1000, "1000") == list(range(1000))
    # ties of round() are decided by the accumulated float stride, exactly as improved-diffusion
    assert 499 in space_timesteps(1000, "21") and 500 not in space_timesteps(1000, "21")
    for spec in ["1", "2", "21", "23", "25", "50", "100", "333", "3,7", "5,5,5", "20,1,40", "ddim10"]:
        assert space_timesteps(1000, spec) == _space_timesteps_ref(1000, spec), spec
    for n in (37, 100):
        for c in range(1, n + 1):
            assert space_timesteps(n, str(c)) == _space_timesteps_ref(n, str(c)), (n, c)
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError):
        space_timesteps(10, "11")


@pytest.mark.parametrize("spec", ["ddim250", "250", "10,10", "ddim25"])
def test_respace_keeps_alpha_bar(diff, spec):
    sp = diff.respace(spec)
    use = space_timesteps(1000, spec)
    assert sp.num_timesteps == len(use)
    assert sp.timestep_map.tolist() == use
    np.testing.assert_allclose(sp.alphas_cumprod.numpy(), diff.alphas_cumprod.numpy()[use], rtol=1e-12)
    idx = torch.arange(len(use))
    assert torch.equal(sp.model_timesteps(idx), torch.tensor(use))
    # respacing a respaced chain composes the maps
    sp2 = sp.respace([0, 5, len(use) - 1])
    assert sp2.timestep_map.tolist() == [use[0], use[5], use[-1]]
    np.testing.assert_allclose(sp2.alphas_cumprod.numpy(), diff.alphas_cumprod.numpy()[sp2.timestep_map], rtol=1e-12)


# ---- DDIM ----------------------------------------------------------------------------------------


def _oracle_x0(diff, x, t, xstar):
    """x̂0 of the exact ε-model for the one-point data distribution δ(x*)."""
    a = diff.alpha_bar(t, x)
    eps = (x - a.sqrt() * xstar) / (1 - a).sqrt()
    return diff.x0_from_eps(x, t, eps)


def _pairs(steps):
    """Descending (t, t_prev) pairs over a step list, ending at −1."""
    desc = sorted(steps, reverse=True)
    return list(zip(desc, desc[1:] + [-1], strict=True))


def test_ddim_eta0_is_deterministic_and_uses_no_rng(diff):
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(3, 3, 4, 4, dtype=DT, generator=g)
    x0 = torch.randn(3, 3, 4, 4, dtype=DT, generator=g)
    t, tp = _t(400, 100, 999), _t(396, -1, 979)
    state = torch.get_rng_state()
    a = diff.ddim_step(xt, t, tp, x0, eta=0.0)
    b = diff.ddim_step(xt, t, tp, x0, eta=torch.zeros(3, dtype=DT))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert torch.equal(a, diff.ddim_step(xt, t, tp, x0, eta=0.0, noise=torch.randn_like(xt)))


def test_ddim_oracle_lands_on_data_point_and_inverts(diff):
    g = torch.Generator().manual_seed(5)
    xstar = torch.rand(2, 3, 8, 8, dtype=DT, generator=g) * 2 - 1
    xT = torch.randn(2, 3, 8, 8, dtype=DT, generator=g)
    steps = space_timesteps(1000, "ddim50")
    x = xT
    for t, tp in _pairs(steps):
        tt, ttp = _t(t, t), _t(tp, tp)
        x = diff.ddim_step(x, tt, ttp, _oracle_x0(diff, x, tt, xstar), eta=0.0)
        if tp == steps[0]:
            x_low = x.clone()
    assert torch.allclose(x, xstar, atol=1e-6, rtol=0)

    # inversion from the lowest kept step back to x_T, then sampling down again
    x = x_low
    asc = sorted(steps)
    for t, tn in pairwise(asc):
        tt, ttn = _t(t, t), _t(tn, tn)
        x = diff.ddim_reverse_step(x, tt, ttn, _oracle_x0(diff, x, tt, xstar))
    assert torch.allclose(x, xT, atol=1e-6, rtol=0)
    for t, tp in _pairs(steps)[:-1]:
        tt, ttp = _t(t, t), _t(tp, tp)
        x = diff.ddim_step(x, tt, ttp, _oracle_x0(diff, x, tt, xstar), eta=0.0)
    assert torch.allclose(x, x_low, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="t ≥ 0"):  # from the clean image ε is 0/0
        diff.ddim_reverse_step(xstar, _t(-1, -1), _t(steps[0], steps[0]), xstar)

    # the same chain run on the respaced object (indices 0..49) gives the same trajectory
    sp = diff.respace("ddim50")
    y = xT
    for i in range(sp.num_timesteps - 1, -1, -1):
        ti = _t(i, i)
        x0 = _oracle_x0(sp, y, ti, xstar)
        y = sp.ddim_step(y, ti, ti - 1, x0, eta=0.0)
    assert torch.allclose(y, xstar, atol=1e-6, rtol=0)


def _smooth_x0(diff, x, t):
    """A generic smooth (non-oracle) ε-model, converted to x̂0."""
    tf = t.to(DT).reshape(-1, *([1] * (x.ndim - 1))) / 1000.0
    eps = 0.4 * torch.tanh(x) + 0.2 * torch.sin(1.5 * x + 3 * tf) * (1 + tf)
    return diff.x0_from_eps(x, t, eps)


def test_ddim_inversion_error_decreases_with_steps(diff):
    g = torch.Generator().manual_seed(6)
    x_start = torch.randn(2, 3, 6, 6, dtype=DT, generator=g)
    t0, t1 = 100, 700
    errs = []
    for n in (4, 16, 64):
        steps = np.linspace(t0, t1, n + 1).round().astype(int).tolist()
        x = x_start
        for t, tn in pairwise(steps):
            x = diff.ddim_reverse_step(x, _t(t, t), _t(tn, tn), _smooth_x0(diff, x, _t(t, t)))
        for t, tp in pairwise(steps[::-1]):
            x = diff.ddim_step(x, _t(t, t), _t(tp, tp), _smooth_x0(diff, x, _t(t, t)), eta=0.0)
        errs.append((x - x_start).abs().max().item())
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < errs[0] / 8, errs  # first-order method: ≈ 1/n


def test_ddim_eta1_matches_ancestral_posterior(diff):
    g = torch.Generator().manual_seed(7)
    xt = torch.randn(3, 2, 4, 4, dtype=DT, generator=g)
    x0 = torch.randn(3, 2, 4, 4, dtype=DT, generator=g)
    z = torch.randn(3, 2, 4, 4, dtype=DT, generator=g)
    t = _t(1, 300, 999)
    mean_ddim = diff.ddim_step(xt, t, t - 1, x0, eta=1.0, noise=torch.zeros_like(xt))
    noisy = diff.ddim_step(xt, t, t - 1, x0, eta=1.0, noise=z)
    sigma = ((noisy - mean_ddim) / z).reshape(3, -1)
    assert torch.allclose(sigma.std(dim=1), torch.zeros(3, dtype=DT), atol=1e-10)
    # σ_t² = β̃_t for consecutive steps, and the DDIM(η=1) mean is the posterior mean
    assert torch.allclose(sigma[:, 0] ** 2, diff.posterior_variance[t], rtol=1e-9, atol=0)
    mean_post, _, _ = diff.q_posterior(x0, xt, t)
    assert torch.allclose(mean_ddim, mean_post, atol=1e-10)
    # = the ancestral step with the learned-range variance at its lower end (v = −1)
    anc = diff.ancestral_step(xt, t, x0, v=-torch.ones_like(xt), noise=z)
    assert torch.allclose(anc, noisy, atol=1e-10)

    # on a respaced chain: a DDIM step between kept steps = the shortened chain's posterior
    sp = diff.respace("ddim50")
    i = _t(10, 25, 49)
    base_t, base_tp = sp.timestep_map[i], sp.timestep_map[i - 1]
    sig_sp = (
        diff.ddim_step(xt, base_t, base_tp, x0, eta=1.0, noise=z)
        - diff.ddim_step(xt, base_t, base_tp, x0, eta=1.0, noise=torch.zeros_like(z))
    ) / z
    assert torch.allclose(sig_sp.reshape(3, -1)[:, 0] ** 2, sp.posterior_variance[i], rtol=1e-9, atol=0)


def test_ddim_per_sample_rows_equal_single_calls(diff):
    g = torch.Generator().manual_seed(8)
    xt = torch.randn(4, 3, 5, 5, dtype=DT, generator=g)
    x0 = torch.randn(4, 3, 5, 5, dtype=DT, generator=g)
    z = torch.randn(4, 3, 5, 5, dtype=DT, generator=g)
    t, tp = _t(900, 400, 40, 3), _t(880, 200, -1, 2)
    eta = torch.tensor([1.0, 0.3, 0.7, 0.0], dtype=DT)
    batch = diff.ddim_step(xt, t, tp, x0, eta=eta, noise=z)
    for i in range(4):
        one = diff.ddim_step(
            xt[i : i + 1], t[i : i + 1], tp[i : i + 1], x0[i : i + 1], eta=float(eta[i]), noise=z[i : i + 1]
        )
        assert torch.allclose(batch[i : i + 1], one, atol=1e-13, rtol=0), i
    # ancestral step too
    v = torch.rand(4, 3, 5, 5, dtype=DT, generator=g) * 2 - 1
    ab = diff.ancestral_step(xt, t, x0, v=v, noise=z)
    for i in range(4):
        one = diff.ancestral_step(xt[i : i + 1], t[i : i + 1], x0[i : i + 1], v=v[i : i + 1], noise=z[i : i + 1])
        assert torch.allclose(ab[i : i + 1], one, atol=1e-13, rtol=0)


def test_final_step_returns_mean_without_noise(diff):
    g = torch.Generator().manual_seed(9)
    xt = torch.randn(2, 3, 4, 4, dtype=DT, generator=g)
    x0 = torch.randn(2, 3, 4, 4, dtype=DT, generator=g)
    out = diff.ddim_step(xt, _t(8, 3), _t(-1, -1), x0, eta=1.0, noise=torch.randn_like(xt))
    assert torch.allclose(out, x0, atol=1e-12, rtol=0)  # ᾱ_{−1} = 1: the mean is x̂0 itself
    state = torch.get_rng_state()
    out2 = diff.ddim_step(xt, _t(8, 3), _t(-1, -1), x0, eta=1.0)
    assert torch.equal(torch.get_rng_state(), state) and torch.allclose(out2, x0, atol=1e-12)
    anc = diff.ancestral_step(xt, _t(0, 0), x0, noise=torch.randn_like(xt))
    assert torch.allclose(anc, diff.q_posterior(x0, xt, _t(0, 0))[0], atol=0)


# ---- training losses ------------------------------------------------------------------------------


def test_training_losses_learned_sigma(diff):
    g = torch.Generator().manual_seed(10)
    x0 = torch.rand(3, 3, 4, 4, dtype=DT, generator=g) * 2 - 1
    x0[0] = 1.5  # outside [−1, 1]: improved-diffusion's vb term does not clip x̂0
    noise = torch.randn(3, 3, 4, 4, dtype=DT, generator=g)
    t = _t(5, 500, 999)
    xt = diff.q_sample(x0, t, noise)
    # perfect ε and v = −1 (β̃ at t ≥ 1): the KL term vanishes, mse is zero
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    terms = diff.training_losses(out, x0, xt, t, noise)
    assert torch.allclose(terms["mse"], torch.zeros(3, dtype=DT), atol=1e-20)
    assert torch.allclose(terms["vb"], torch.zeros(3, dtype=DT), atol=1e-9)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])
    # fixed-variance model: mse only
    terms3 = diff.training_losses(noise + 0.1, x0, xt, t, noise)
    assert set(terms3) == {"mse", "loss"} and torch.allclose(terms3["loss"], torch.full((3,), 0.01, dtype=DT))


def test_to_device_copies_schedule_and_keeps_respacing(diff):
    moved = diff.to("cpu")
    assert moved is not diff
    for name, value in vars(diff).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(moved, name), value)
    assert torch.allclose(moved.respace("ddim25").alphas_cumprod, diff.respace("ddim25").alphas_cumprod)
