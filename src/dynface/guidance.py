"""Guidance terms of the sampler (method.md §4), as pure functions.

* the data term ``L_i = ‖ý_i − k_{σ_i} ⊗ x̂0‖²`` for each active guidance image (σ in ref pixels);
* the multi-guidance combination (§8 C2): ``accumulate`` (a guide joins at its own DSST step and stays,
  equal weights among the active ones — the default) or ``switch`` (only the newest, least blurred);
* the base step normaliser ζ_t (§8 C3): ``dps`` divides the gradient of the *squared* residual by the
  residual norm (DPS, Chung et al.), ``pgdiff`` rescales the gradient to a fraction of the size of
  the unguided step ‖x_t − x'_{t−1}‖ (PGDiff), ``landweber`` [OURS] takes the plain gradient of
  ½‖r‖² — with ζ = 1 and A = 1 a full Landweber step ``x̂0 − Kᵀ(Kx̂0 − ý)`` in x̂0 units, which is
  stable for a blur (‖K‖ ≤ 1) and independent of resolution and step count;
* the Eq. 7 σ refinement ``σ ← σ − s·∂L/∂σ`` (L as a mean over pixels), clamped;
* the Fourier proximal data step (§4.4) blended by the DGSA map.
"""

from __future__ import annotations

import torch

from .ops import fourier_prox, gaussian_blur


def active_guides(t: torch.Tensor, join_steps: torch.Tensor, combine: str = "accumulate") -> torch.Tensor:
    """Weights (B, G) of the guides active at steps ``t`` (B,); guide i joins when t ≤ join_steps[:, i].

    Guides are ordered most → least blurred, so join steps are non-increasing along G. Guide 0 is
    always active (it defines the start step). ``accumulate``: equal weights over the joined guides;
    ``switch``: weight 1 on the last joined guide only.
    """
    joined = t[:, None] <= join_steps
    joined[:, 0] = True
    if combine == "accumulate":
        w = joined.to(torch.float32)
        return w / w.sum(dim=1, keepdim=True)
    if combine == "switch":
        last = joined.to(torch.int64).cumsum(dim=1).argmax(dim=1)
        return torch.nn.functional.one_hot(last, join_steps.shape[1]).to(torch.float32)
    raise ValueError(f"unknown guide combination {combine!r} (expected 'accumulate' or 'switch')")


def residuals(x0: torch.Tensor, guides: torch.Tensor, sigmas_work: torch.Tensor) -> torch.Tensor:
    """``ý_i − k_{σ_i} ⊗ x̂0`` for every guide: (B, G, C, H, W); σ in *working* pixels (B, G)."""
    return torch.stack([guides[:, i] - gaussian_blur(x0, sigmas_work[:, i]) for i in range(guides.shape[1])], dim=1)


def guidance_loss(res: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted sum of squared residuals ``Σ_i w_i ‖r_i‖²``: (B,)."""
    return (weights.to(res.dtype) * res.pow(2).flatten(2).sum(dim=2)).sum(dim=1)


def combined_guide(guides: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the active guides (B, C, H, W): the ý shown to DGSA."""
    return (weights.to(guides.dtype)[:, :, None, None, None] * guides).sum(dim=1)


def normalise_step(
    grad: torch.Tensor, loss: torch.Tensor, rule: str, zeta: torch.Tensor | float, unguided_step: torch.Tensor | None = None
) -> torch.Tensor:
    """The guidance displacement before the DGSA map: (B, C, H, W).

    ``grad`` is ∇ of the squared residual ‖r‖². ``dps``: ζ·∇‖r‖ = ζ·∇‖r‖²/(2‖r‖). ``pgdiff``:
    ζ·‖x_t − x'_{t−1}‖·g/‖g‖ (needs ``unguided_step``). ``landweber``: ζ·∇(½‖r‖²).
    """
    z = torch.as_tensor(zeta, dtype=grad.dtype, device=grad.device).reshape(-1, 1, 1, 1)
    if rule == "landweber":
        return z * grad / 2
    if rule == "dps":
        norm = loss.detach().clamp_min(1e-12).sqrt().reshape(-1, 1, 1, 1)
        return z * grad / (2 * norm)
    if rule == "pgdiff":
        if unguided_step is None:
            raise ValueError("the pgdiff rule needs the unguided step size")
        gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
        snorm = unguided_step.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return z * snorm * grad / gnorm
    raise ValueError(f"unknown step normaliser {rule!r} (expected 'landweber', 'dps' or 'pgdiff')")


def refine_sigmas(
    x0: torch.Tensor,
    guides: torch.Tensor,
    sigmas_ref: torch.Tensor,
    weights: torch.Tensor,
    scale: float,
    lr: float,
    clamp: tuple[float, float],
) -> torch.Tensor:
    """One Eq. 7 step on each active guide's σ (ref px): ``σ_i ← σ_i − lr·∂L_i/∂σ_i``.

    ``L_i`` is the mean squared residual over pixels; ``scale`` converts ref → working pixels; x̂0 is
    treated as a constant. Inactive guides keep their σ.
    """
    s = sigmas_ref.detach().clone().requires_grad_(True)
    res = residuals(x0.detach(), guides, s * scale)
    per_guide = res.pow(2).flatten(2).mean(dim=2)  # (B, G)
    (g,) = torch.autograd.grad(per_guide.sum(), s)
    active = (weights > 0).to(s.dtype)
    return (s - lr * g * active).clamp(*clamp).detach()


def prox_step(
    x0: torch.Tensor, guides: torch.Tensor, sigmas_work: torch.Tensor, weights: torch.Tensor, lam: float | torch.Tensor
) -> torch.Tensor:
    """Weighted mean over the active guides of the closed-form proximal solution (method.md §4.4)."""
    out = torch.zeros_like(x0)
    for i in range(guides.shape[1]):
        w = weights[:, i].to(x0.dtype).reshape(-1, 1, 1, 1)
        if bool((w > 0).any()):
            out = out + w * fourier_prox(guides[:, i], x0, sigmas_work[:, i], lam)
    return out
