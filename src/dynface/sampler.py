"""The guided DDIM sampler with per-sample start steps (method.md §4.3).

Every face b follows its own descending timestep sequence: its exact start step ``t0_b`` followed by
the respaced grid steps below it (``schedule="grid"``: NFE grows with the start step, as in the
paper's "sampling range [690, 925]"), or ``n`` evenly spaced steps from ``t0_b`` to 0
(``schedule="uniform"``). Sequences are right-aligned so that all faces finish together; at each
iteration the UNet runs once on the faces that have started, with a per-sample ``t`` tensor.
By default the sampler is DifFace's, step for step (``start_convention="auto"``: as ``"difface"``, x is noised to
t0_b but the first UNet call is at the next step below t0_b, unless that call would lie more than
:data:`AUTO_MAX_GAP` steps below t0_b, on a grid coarser than ``ddim50``; ``eps_source="model"``: the DDIM step
uses the model's raw ε̂ next to the clipped x̂0); ``"iddpm"``/``"clipped_x0"`` give improved-diffusion's choices
(docs/results/difface_sampler.md, docs/results/start_convention.md).

Per iteration, for the active faces: ε̂ = UNet(x_t, t) → x̂0 (clipped) → DDIM step with per-sample
eta → minus the DGSA-scaled guidance displacement (``unet``: ∂/∂x_t through the UNet, DPS style;
``x0``: ∂/∂x̂0 only, x̂0 corrected before the step; ``prox``: Fourier proximal x̂0 blended by
clamp(ζ·A, 0, 1); ``none``) → Eq. 7 refinement of each active guide's σ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .diffusion import GaussianDiffusion, check_steps, space_timesteps
from .guidance import active_guides, combined_guide, guidance_loss, normalise_step, prox_step, refine_sigmas, residuals

GUIDANCE_KINDS = ("unet", "x0", "prox", "none")
START_CONVENTIONS = ("auto", "difface", "iddpm")
# "auto": DifFace's start convention only while its first UNet call lies at most this many steps below the start
# (ddim250: 4; ddim50, the embedded models' default: 20; ddim25: up to 40; ddim10: up to 100). Further below, the UNet
# is handed more noise than its step says and the face keeps it as grain: 32 val faces, embedded-128, --steps 10:
# PSNR 27.41 dB with "difface" against 28.64 with "auto", high-frequency energy x1.32 of the ground truth's against
# x0.26 (the restorer's: x0.23; docs/results/start_convention.md)
AUTO_MAX_GAP = 20


@dataclass(frozen=True)
class SamplerConfig:
    steps: str = "ddim250"  # respacing of the 1000-step grid (``grid``) or steps per face (``uniform``)
    schedule: str = "grid"  # "grid" | "uniform"
    guidance: str = "unet"  # "unet" | "x0" | "prox" | "none"
    step_rule: str = "landweber"  # ζ normaliser: "landweber" | "dps" | "pgdiff" (§8 C3)
    zeta: float = 1.0
    combine: str = "accumulate"  # "accumulate" | "switch" (§8 C2)
    sigma_lr: float = 1e-3  # Eq. 7 step size s (0 disables σ refinement)
    sigma_clamp: tuple[float, float] = (0.3, 12.0)
    clip_x0: bool = True
    prox_lambda: float = 0.05
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast of the UNet)
    # DifFace's sampler (the default, issue 12): x is noised to the start step t0 and the first UNet call is at the
    # next step below t0 ("difface"), and the DDIM step uses the model's raw ε ("model"). improved-diffusion's
    # choices: a first call at t0 itself ("iddpm"), ε re-derived from the clipped/guided x̂0 ("clipped_x0").
    # "auto" (the default): "difface" unless its first call would lie more than AUTO_MAX_GAP steps below t0, then
    # "iddpm" (the same as "difface" on ddim250 and ddim50; at --steps 10 "difface" left grain)
    start_convention: str = "auto"  # "auto" | "difface" | "iddpm"
    eps_source: str = "model"  # "model" | "clipped_x0"

    def __post_init__(self) -> None:
        if self.start_convention not in START_CONVENTIONS:
            raise ValueError(f"unknown start_convention {self.start_convention!r} (expected one of {START_CONVENTIONS})")
        if self.eps_source not in ("model", "clipped_x0"):
            raise ValueError(f"unknown eps_source {self.eps_source!r} (expected 'model' or 'clipped_x0')")
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"unknown guidance {self.guidance!r}; choose from {GUIDANCE_KINDS}")
        if self.schedule not in ("grid", "uniform"):
            raise ValueError(f"unknown schedule {self.schedule!r} (expected 'grid' or 'uniform')")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {self.precision!r}; choose from fp32, bf16, fp16")
        check_steps(self.steps)  # fails here, not at the first restore
        if self.schedule == "uniform" and "," in str(self.steps):
            raise ValueError(f"schedule 'uniform' takes a number of steps, got {self.steps!r}")
        if isinstance(self.zeta, bool) or not isinstance(self.zeta, (int, float)) or not math.isfinite(self.zeta) or self.zeta < 0:
            raise ValueError(f"zeta must be a finite number >= 0, got {self.zeta!r}")


def timestep_sequences(starts: list[int], cfg: SamplerConfig, num_timesteps: int = 1000) -> list[list[int]]:
    """Descending UNet-call steps, one sequence per face, ending at 0.

    ``iddpm``: each begins at the face's start t0. ``auto`` (the default): ``difface`` when the next step below t0
    lies at most :data:`AUTO_MAX_GAP` below it, else ``iddpm``. ``difface``: x is still noised to t0, but the first
    call is at the next step below it (DifFace noises to respaced index 100 of ``ddim250``, t = 400, and calls the UNet
    at 396, 392, …, 0: 100 calls); a start at or below the last step keeps its one call at t0.
    """
    seqs = []
    if cfg.schedule == "grid":
        grid = space_timesteps(num_timesteps, cfg.steps)
        for s in starts:
            seqs.append([s] + [g for g in reversed(grid) if g < s])
    else:
        n = int(str(cfg.steps).removeprefix("ddim"))
        for s in starts:
            seq = torch.linspace(s, 0, max(2, n)).round().long().tolist()
            seqs.append(sorted(set(seq), reverse=True))
    if cfg.start_convention != "iddpm":
        wide = AUTO_MAX_GAP if cfg.start_convention == "auto" else math.inf
        seqs = [seq[1:] if len(seq) > 1 and seq[0] - seq[1] <= wide else seq for seq in seqs]
    return seqs


@dataclass
class SampleResult:
    x: torch.Tensor  # (B,C,H,W) in [-1, 1]
    nfe: torch.Tensor  # (B,) UNet evaluations per face
    sigmas: torch.Tensor  # (B,G) refined guide σ (ref px)
    mean_map: torch.Tensor  # (B,1,H,W) guidance-scale map averaged over each face's guided steps


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def unet_eps(unet, diffusion, x: torch.Tensor, t: torch.Tensor, precision: str = "fp32", channels: int = 3) -> torch.Tensor:
    """ε of ``unet`` at (x, t), computed under ``precision``'s autocast and returned in fp32 (the learned-range
    variance half of the output, if any, dropped): how the sampler, and DGSA training after it, call the prior."""
    with _autocast(x.device, precision):
        out = unet(x, t)
    return diffusion.split_output(out.float(), channels)[0]


def guided_sample(
    unet: torch.nn.Module,
    diffusion: GaussianDiffusion,
    start_image: torch.Tensor,
    starts: list[int],
    guides: torch.Tensor,
    sigmas_ref: torch.Tensor,
    join_steps: torch.Tensor,
    eta: torch.Tensor,
    cfg: SamplerConfig,
    ref_to_working: float,
    scale_map: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | float,
    zeta: torch.Tensor | float,
    generators: list[torch.Generator],
    callback: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Run the sampler. ``scale_map(guide, x0, t) -> (B,1,H,W)`` is DGSA, or a float for a global scale.

    ``starts`` (B,) start steps; ``guides`` (B,G,C,H,W) with σ ``sigmas_ref`` (B,G, ref px) joining at
    ``join_steps`` (B,G); ``eta`` (B,); ``zeta`` scalar or (B,); ``generators`` one per face, so a
    face's result does not depend on the rest of the batch. ``callback(step, steps_total)`` is called after
    each sampling iteration (1-based), e.g. to move a progress bar.
    """
    dev = start_image.device
    b = start_image.shape[0]
    seqs = timestep_sequences(starts, cfg, diffusion.num_timesteps)
    length = max(len(s) for s in seqs)
    offsets = [length - len(s) for s in seqs]

    def noise_like(idx: torch.Tensor, shape) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=generators[i]) for i in idx.tolist()]).to(dev)

    all_idx = torch.arange(b)
    t0 = torch.tensor(starts, device=dev)
    x = diffusion.q_sample(start_image, t0, noise_like(all_idx, start_image.shape[1:]))
    sig = sigmas_ref.clone().float()
    nfe = torch.zeros(b, dtype=torch.long)
    map_sum = torch.zeros(b, 1, *start_image.shape[-2:], device=dev)
    zeta_t = torch.as_tensor(zeta, dtype=torch.float32, device=dev).expand(b)
    channels = start_image.shape[1]

    for k in range(length):
        ia = torch.tensor([i for i in range(b) if offsets[i] <= k], dtype=torch.long)
        t = torch.tensor([seqs[i][k - offsets[i]] for i in ia.tolist()], device=dev)
        tp = torch.tensor(
            [seqs[i][k - offsets[i] + 1] if k - offsets[i] + 1 < len(seqs[i]) else -1 for i in ia.tolist()], device=dev
        )
        ia_d = ia.to(dev)
        xa = x[ia_d].detach()
        g_i, s_i, w = guides[ia_d], sig[ia_d], active_guides(t, join_steps[ia_d], cfg.combine)
        need_grad = cfg.guidance == "unet"
        xa.requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            eps = unet_eps(unet, diffusion, xa, t, cfg.precision, channels)
            x0 = diffusion.x0_from_eps(xa, t, eps)
            if cfg.clip_x0:
                x0 = x0.clamp(-1, 1)
        noise = noise_like(ia, xa.shape[1:])
        eps_used = eps.detach() if cfg.eps_source == "model" else None  # None: ε re-derived from the x̂0 used

        if cfg.guidance == "none":
            x_new = diffusion.ddim_step(xa.detach(), t, tp, x0.detach(), eta[ia_d], noise, eps=eps_used)
        else:
            a_map = scale_map(combined_guide(g_i, w), x0.detach(), t) if callable(scale_map) else torch.full_like(x0[:, :1], float(scale_map))
            map_sum[ia_d] += a_map.detach()
            x_unguided = diffusion.ddim_step(xa.detach(), t, tp, x0.detach(), eta[ia_d], noise, eps=eps_used)
            if cfg.guidance == "unet":
                with torch.enable_grad():
                    loss = guidance_loss(residuals(x0, g_i, s_i * ref_to_working), w)
                    (grad,) = torch.autograd.grad(loss.sum(), xa)
                step = normalise_step(grad, loss, cfg.step_rule, zeta_t[ia_d], x_unguided - xa.detach())
                if cfg.step_rule == "landweber":  # x̂0-space step → x_{t−1} space (∂x̂0/∂x_t ≈ I/sqrt(ᾱ_t))
                    step = step * (diffusion.alpha_bar(t, xa) * diffusion.alpha_bar(tp, xa)).sqrt()
                x_new = x_unguided - a_map * step
            elif cfg.guidance == "x0":
                x0v = x0.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = guidance_loss(residuals(x0v, g_i, s_i * ref_to_working), w)
                    (grad,) = torch.autograd.grad(loss.sum(), x0v)
                step = normalise_step(grad, loss, cfg.step_rule, zeta_t[ia_d], x_unguided - xa.detach())
                x0g = (x0.detach() - a_map * step).clamp(-1, 1)
                x_new = diffusion.ddim_step(xa.detach(), t, tp, x0g, eta[ia_d], noise, eps=eps_used)
            else:  # prox
                xp = prox_step(x0.detach(), g_i, s_i * ref_to_working, w, cfg.prox_lambda)
                blend = (a_map * zeta_t[ia_d].reshape(-1, 1, 1, 1)).clamp(0, 1)  # fidelity scales the blend
                x0g = (blend * xp + (1 - blend) * x0.detach()).clamp(-1, 1)
                x_new = diffusion.ddim_step(xa.detach(), t, tp, x0g, eta[ia_d], noise, eps=eps_used)
            if cfg.sigma_lr > 0:
                with torch.enable_grad():
                    sig[ia_d] = refine_sigmas(x0.detach(), g_i, s_i, w, ref_to_working, cfg.sigma_lr, cfg.sigma_clamp)
        x[ia_d] = x_new.detach().to(x.dtype)
        nfe[ia] += 1
        if callback is not None:
            callback(k + 1, length)
    guided = nfe.clamp_min(1).to(dev).reshape(-1, 1, 1, 1)
    return SampleResult(x=x.detach(), nfe=nfe, sigmas=sig, mean_map=map_sum / guided)
