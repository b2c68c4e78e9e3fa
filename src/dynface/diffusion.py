"""Diffusion core: schedule, forward process, parameterisations, respacing and sampler steps.

Follows the improved-diffusion / DifFace conventions (linear β 1e-4→0.02 over 1000 steps,
ε-prediction, optional learned-range variance with a 6-channel model output). The schedule is kept
separate from the network and from the sampling loop: every function here is a pure function of the
schedule arrays and the tensors passed in, with **per-sample** timesteps (and per-sample eta for
DDIM), so one batched tensor can hold faces at different diffusion steps.

Timesteps index the *base* 1000-step grid everywhere. A respaced schedule (``ddim250``, ``"50"``)
is a list of base-grid steps; DDIM only needs ᾱ at the two ends of a step, so it runs directly on
the base schedule. :meth:`GaussianDiffusion.respace` builds the equivalent shortened Markov chain
(new βs + ``timestep_map``) for ancestral sampling and learned variances, as improved-diffusion does.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ScheduleConfig:
    num_timesteps: int = 1000
    schedule: str = "linear"  # "linear" | "cosine"
    beta_start: float = 1e-4  # at 1000 steps; scaled as in improved-diffusion for other lengths
    beta_end: float = 0.02
    learn_sigma: bool = False  # model outputs (ε, v): learned-range variance
    rescale_learned_sigmas: bool = True


def make_betas(cfg: ScheduleConfig) -> np.ndarray:
    n = cfg.num_timesteps
    if cfg.schedule == "linear":
        scale = 1000 / n
        return np.linspace(scale * cfg.beta_start, scale * cfg.beta_end, n, dtype=np.float64)
    if cfg.schedule == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        return np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)])
    raise ValueError(f"unknown noise schedule {cfg.schedule!r} (expected 'linear' or 'cosine')")


def check_steps(spec: str | int, num_timesteps: int = 1000) -> str:
    """A respacing spec (:func:`space_timesteps`: ``ddimN``, ``N`` or ``a,b,c``) with 2..``num_timesteps`` steps in
    all that the grid can give, as a string; a ValueError with a one-line reason otherwise (``--steps``, and
    :class:`dynface.sampler.SamplerConfig` before any sampling)."""
    if isinstance(spec, bool) or not isinstance(spec, (str, int, np.integer)):
        raise ValueError(f"unusable steps {spec!r}: expected ddimN, N or a,b,c (e.g. ddim25, 50, 10,10,5)")
    s = str(spec).strip()
    if not re.fullmatch(r"(ddim)?\d+(,\d+)*", s):
        raise ValueError(f"unusable steps {s!r}: expected ddimN, N or a,b,c (e.g. ddim25, 50, 10,10,5)")
    counts = [int(c) for c in s.removeprefix("ddim").split(",")]
    if s.startswith("ddim") and len(counts) > 1:
        raise ValueError(f"unusable steps {s!r}: ddimN takes one number")
    total = sum(counts)
    if total < 2:  # one step is t = 0 alone: a face noised to its start step got one call, there (PSNR 14 dB)
        raise ValueError(f"steps must be at least 2 (one step is the last, t = 0, alone), got {s!r}")
    if total > num_timesteps:
        raise ValueError(f"steps must be at most {num_timesteps} (the diffusion grid), got {s!r}")
    try:
        grid = space_timesteps(num_timesteps, s)
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"unusable steps {s!r}: {e}") from None
    if not grid:
        raise ValueError(f"unusable steps {s!r}: no steps")
    return s


def space_timesteps(num_timesteps: int, spec: str | int) -> list[int]:
    """Base-grid steps kept by a respacing spec (improved-diffusion semantics), ascending.

    ``"ddimN"``: an even stride giving exactly N steps (``ddim250`` → 0, 4, …, 996).
    ``"N"`` / ``N``: N steps spread evenly (rounded) over the whole range, last step included.
    ``"a,b,c"``: the range split in equal sections, with a, b, c steps in each.
    """
    if isinstance(spec, int):
        spec = str(spec)
    spec = spec.strip()
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == want:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot create exactly {want} steps with an integer stride")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, out = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count or count < 1:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        frac = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0  # accumulated, not frac·j: the float sums decide round()'s ties as improved-diffusion does
        for _ in range(count):
            out.append(start + round(cur))
            cur += frac
        start += size
    return sorted(set(out))


def _extract(arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """arr[t] broadcast to x's shape; ``t == -1`` means "before step 0" (ᾱ = 1) for ᾱ-like arrays."""
    out = arr.to(x.device)[t.long().to(x.device)].to(x.dtype)
    return out.reshape(-1, *([1] * (x.ndim - 1)))


class GaussianDiffusion:
    """Schedule arrays and the closed-form identities of a DDPM (all float64 internally)."""

    def __init__(self, betas: np.ndarray, cfg: ScheduleConfig, timestep_map: list[int] | None = None):
        self.cfg = cfg
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or not ((b > 0) & (b <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.num_timesteps = len(b)
        self.timestep_map = torch.tensor(timestep_map if timestep_map is not None else range(len(b)))
        ac = np.cumprod(1.0 - b)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        t64 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))  # noqa: E731
        self.betas = t64(b)
        self.alphas_cumprod = t64(ac)
        self.alphas_cumprod_prev = t64(ac_prev)
        # ᾱ with a leading 1 so that index t+1 is ᾱ_t and index 0 is ᾱ_{-1} = 1 (DDIM's last step)
        self._ac_ext = t64(np.append(1.0, ac))
        self.sqrt_ac = t64(np.sqrt(ac))
        self.sqrt_1m_ac = t64(np.sqrt(1.0 - ac))
        self.sqrt_recip_ac = t64(np.sqrt(1.0 / ac))
        self.sqrt_recipm1_ac = t64(np.sqrt(1.0 / ac - 1))
        self.posterior_variance = t64(post_var)
        self.posterior_log_variance_clipped = t64(np.log(np.append(post_var[1], post_var[1:])))
        self.posterior_mean_coef1 = t64(b * np.sqrt(ac_prev) / (1.0 - ac))
        self.posterior_mean_coef2 = t64((1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac))
        self.log_betas = t64(np.log(b))

    @classmethod
    def from_config(cls, cfg: ScheduleConfig = ScheduleConfig()) -> GaussianDiffusion:
        return cls(make_betas(cfg), cfg)

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        """A copy whose schedule arrays live on ``device`` (saves a host→device copy per lookup on a GPU)."""
        out = copy.copy(self)
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(out, k, v.to(device))
        return out

    # ---- respacing -------------------------------------------------------------------------------
    def respace(self, spec: str | int | list[int]) -> GaussianDiffusion:
        """The shortened chain over the kept steps (βs recomputed from ᾱ), with ``timestep_map``."""
        use = space_timesteps(self.num_timesteps, spec) if not isinstance(spec, list) else sorted(spec)
        ac = self.alphas_cumprod.cpu().numpy()
        last, betas = 1.0, []
        for i in use:
            betas.append(1 - ac[i] / last)
            last = ac[i]
        base = self.timestep_map.tolist()
        return GaussianDiffusion(np.array(betas), self.cfg, [base[i] for i in use])

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The base-grid step to feed the network for an index of this (possibly respaced) chain."""
        return self.timestep_map.to(t.device)[t.long()]

    # ---- forward process and parameterisations --------------------------------------------------
    def alpha_bar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ᾱ_t broadcast to x; t = −1 gives 1 (the clean end of the chain)."""
        return _extract(self._ac_ext, t.long() + 1, x)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x0) if noise is None else noise
        return _extract(self.sqrt_ac, t, x0) * x0 + _extract(self.sqrt_1m_ac, t, x0) * noise

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _extract(self.sqrt_ac, t, x0) * x0, _extract(1.0 - self.alphas_cumprod, t, x0)

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0)."""
        mean = _extract(self.posterior_mean_coef1, t, xt) * x0 + _extract(self.posterior_mean_coef2, t, xt) * xt
        return (
            mean,
            _extract(self.posterior_variance, t, xt),
            _extract(self.posterior_log_variance_clipped, t, xt),
        )

    def x0_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return _extract(self.sqrt_recip_ac, t, xt) * xt - _extract(self.sqrt_recipm1_ac, t, xt) * eps

    def eps_from_x0(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_extract(self.sqrt_recip_ac, t, xt) * xt - x0) / _extract(self.sqrt_recipm1_ac, t, xt)

    def split_output(self, out: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ε̂, v) from a model output; v is None for a fixed-variance (3-channel) model."""
        if out.shape[1] == channels:
            return out, None
        if out.shape[1] == 2 * channels:
            return out[:, :channels], out[:, channels:]
        raise ValueError(f"model output has {out.shape[1]} channels; expected {channels} or {2 * channels}")

    def model_log_variance(self, v: torch.Tensor | None, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Learned-range log-variance (interpolates log β̃_t … log β_t), or the fixed-large choice."""
        max_log = _extract(self.log_betas, t, x)
        if v is None:
            return max_log.expand_as(x)
        min_log = _extract(self.posterior_log_variance_clipped, t, x)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    # ---- sampler steps -------------------------------------------------------------------------
    def ddim_step(
        self,
        xt: torch.Tensor,
        t: torch.Tensor,
        t_prev: torch.Tensor,
        x0: torch.Tensor,
        eta: torch.Tensor | float = 0.0,
        noise: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDIM step x_t → x_{t_prev} with per-sample t, t_prev (−1 = final) and eta.

        ``eps``: the ε̂ to step with (DifFace: the model's raw output); None re-derives it from the (possibly
        clipped or guided) x̂0, as in improved-diffusion. σ_t = η·sqrt((1−ᾱ_prev)/(1−ᾱ_t))·sqrt(1−ᾱ_t/ᾱ_prev).
        """
        if eps is None:
            eps = self.eps_from_x0(xt, t, x0)
        return self.ddim_step_eps(xt, t, t_prev, x0, eps, eta, noise)

    def ddim_step_eps(self, xt, t, t_prev, x0, eps, eta=0.0, noise=None) -> torch.Tensor:
        a = self.alpha_bar(t, xt)
        ap = self.alpha_bar(t_prev, xt)
        eta_t = torch.as_tensor(eta, dtype=xt.dtype, device=xt.device)
        eta_t = eta_t.reshape(-1, *([1] * (xt.ndim - 1))) if eta_t.ndim else eta_t
        sigma = eta_t * torch.sqrt((1 - ap) / (1 - a)) * torch.sqrt(1 - a / ap)
        mean = torch.sqrt(ap) * x0 + torch.sqrt((1 - ap - sigma**2).clamp_min(0)) * eps
        if noise is None:  # eta = 0 everywhere: deterministic, and the global RNG is left untouched
            noise = torch.randn_like(xt) if bool((sigma != 0).any()) else torch.zeros_like(xt)
        last = (t_prev < 0).reshape(-1, *([1] * (xt.ndim - 1))).to(xt.device)
        return torch.where(last, mean, mean + sigma * noise)

    def ddim_reverse_step(self, xt: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, x0: torch.Tensor):
        """Deterministic DDIM inversion x_t → x_{t_next} (t_next > t ≥ 0), with ε implied by ``x0``.

        From t = −1 (the clean image itself) ε is not implied by x_t and x̂0 (it would be 0/0), so that
        first step must be taken as ``q_sample``-style with a model's ε; it is refused here.
        """
        if bool((t < 0).any()):
            raise ValueError("ddim_reverse_step needs t ≥ 0: from the clean image (t = −1) ε is undefined")
        a = self.alpha_bar(t, xt)
        an = self.alpha_bar(t_next, xt)
        eps = (xt - torch.sqrt(a) * x0) / torch.sqrt(1 - a).clamp_min(1e-12)
        return torch.sqrt(an) * x0 + torch.sqrt(1 - an) * eps

    def ancestral_step(
        self,
        xt: torch.Tensor,
        t: torch.Tensor,
        x0: torch.Tensor,
        v: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """p(x_{t−1}|x_t) sample on *this* chain's indices (use a respaced chain for short runs)."""
        mean, _, _ = self.q_posterior(x0, xt, t)
        logvar = self.model_log_variance(v, t, xt)
        noise = torch.randn_like(xt) if noise is None else noise
        nonzero = (t != 0).float().reshape(-1, *([1] * (xt.ndim - 1))).to(xt)
        return mean + nonzero * torch.exp(0.5 * logvar) * noise

    # ---- training losses -----------------------------------------------------------------------
    def training_losses(
        self, model_out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses: ``mse`` on ε (+ ``vb`` for a learned-variance model, improved-diffusion's
        hybrid loss with the mean detached). Returns a dict with ``loss`` = the sum used for training."""
        eps, v = self.split_output(model_out, x0.shape[1])
        mse = ((eps - noise) ** 2).mean(dim=tuple(range(1, x0.ndim)))
        out = {"mse": mse, "loss": mse}
        if v is not None:
            vb = self._vb_term(eps.detach(), v, x0, xt, t)
            if self.cfg.rescale_learned_sigmas:
                vb = vb * self.num_timesteps / 1000.0
            out["vb"] = vb
            out["loss"] = mse + vb
        return out

    def _vb_term(self, eps, v, x0, xt, t) -> torch.Tensor:
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        x0_pred = self.x0_from_eps(xt, t, eps)  # clip_denoised=False in improved-diffusion's training vb
        mean, _, _ = self.q_posterior(x0_pred, xt, t)
        logvar = self.model_log_variance(v, t, xt)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """Log-likelihood of 8-bit images in [−1, 1] under a discretised Gaussian (improved-diffusion)."""
    centered = x - means
    inv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_1m_cdf_min, torch.log(delta.clamp(min=1e-12)))
    )
