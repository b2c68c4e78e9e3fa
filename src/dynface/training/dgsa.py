"""Train DGSA (method.md §5) against the frozen prior and DBLM.

One training example: a clean face x0, its degraded copy y, DBLM(y) → guides ý_i, σ_i, std*; a step t
drawn uniformly in [Δ, DSST(std*)]; ``x_t = q_sample(ý_0, t)`` — the sampler's own start state (our choice
for the unstated x_t of §5; ``start_mix`` > 0 diffuses the clean x0 instead for that fraction, but a state
that already holds the clean face teaches DGSA that guidance only hurts: in a first run with 0.5 the mean
map fell from 0.38 to 0.05 within 20 steps); one guided DDIM step
t → t−Δ exactly as the sampler does it, with the DGSA map scaling the (detached) guidance
displacement; then the frozen UNet's x̂0 at t−Δ and the loss
``Σ_i γ_i L1(SWT(x̂0_{t−Δ})_i, SWT(x0)_i) + λ·D(x̂0_{t−Δ}, x0)`` where D is the filter-bank DISTS
substitute of :mod:`dynface.training.losses`. Gradients reach DGSA through the UNet at t−Δ.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..degrade import degrade
from ..diffusion import GaussianDiffusion, ScheduleConfig
from ..dsst import DSSTTable
from ..guidance import active_guides, combined_guide, guidance_loss, normalise_step, residuals
from ..models.dblm import DBLM
from ..models.dgsa import DGSA, DGSAConfig
from ..models.io import save_safetensors
from ..models.unet import UNetModel
from ..pipeline import load_dblm, load_prior, prior_schedule
from ..sampler import SamplerConfig, unet_eps
from .data import load_face_tensor
from .dblm import _batch
from .loop import Checkpointer, CSVLog, StopFlag, degrade_workers, resume_into, rng_state, set_rng_state
from .losses import filterbank_dists, swt_l1


@dataclass
class DGSATrainConfig:
    prior: str = ""  # prior.safetensors (EMA)
    dblm: str = ""  # dblm.safetensors
    restorer: str = ""  # DifFace's SwinIR .pth: the RM of a DBLM trained with --restorer (its file holds TM and SDE only)
    dsst: str = ""  # dsst.json
    dgsa: dict = field(default_factory=dict)
    degradation: str = "diffbir"
    batch_size: int = 8
    lr: float = 1e-3
    steps: int = 1000
    minutes: float = 0.0
    delta: int = 4  # step size of the sampler grid (ddim250)
    zeta: float = SamplerConfig.zeta  # base step normaliser: DGSA learns relative to it (§8 C3)
    step_rule: str = SamplerConfig.step_rule
    swt_levels: int = 1
    gammas: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    dists_weight: float = 1.0
    start_mix: float = 0.0  # probability that x_t is diffused from x0 (else from ý_0): see the docstring
    checkpoint_minutes: float = 10.0
    log_every: int = 25
    seed: int = 0
    threads: int = 0
    degrade_workers: int = 0  # threads for the CPU half of the degradations; 0: auto (training.loop.degrade_workers)
    data_limit: int = 0
    bf16: bool = False  # autocast the frozen UNet's two passes (as the sampler's bf16): ×0.6 the step time on 2 bf16 CPU cores


def load_frozen(cfg: DGSATrainConfig) -> tuple[UNetModel, DBLM, DSSTTable, ScheduleConfig]:
    """The frozen networks as the pipeline loads them: the prior (ours or a published ``.pth``) with the schedule
    its file declares, the DBLM (with its external restorer, if it was trained against one), the DSST table."""
    unet, meta = load_prior(cfg.prior)
    dblm, _ = load_dblm(Path(cfg.dblm), cfg.restorer or None, unet.cfg.image_size, "full", cfg.prior)
    for m in (unet, dblm):
        m.eval().requires_grad_(False)
    return unet, dblm, DSSTTable.load(cfg.dsst), prior_schedule(meta, unet)


def train_dgsa(cfg: DGSATrainConfig, data_dir: str, out_dir: str, resume: bool = True, device: str = "cpu") -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    workers = degrade_workers(cfg.degrade_workers, dev)
    unet, dblm, table, schedule = load_frozen(cfg)
    unet, dblm = unet.to(dev), dblm.to(dev)
    diffusion = GaussianDiffusion.from_config(schedule).to(dev)
    dgsa_cfg = DGSAConfig.from_dict(cfg.dgsa)
    model = DGSA(dgsa_cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ckpt = Checkpointer(run, cfg.checkpoint_minutes)
    step = 0
    torch.manual_seed(cfg.seed)
    state = ckpt.load() if resume else None
    if state is not None:
        resume_into(model, state, "model", run / "last.pt")
        opt.load_state_dict(state["opt"])
        step = state["step"]
        set_rng_state(state["rng"])
    size = unet.cfg.image_size
    scale = dblm.cfg.size / dblm.cfg.ref_size
    data = load_face_tensor(data_dir, size, cache_dir=run / "cache", limit=cfg.data_limit or None).to(dev)
    log = CSVLog(run / "log.csv", ["step", "time", "loss", "swt", "dists", "map_mean", "lr"],
                 resumed_at=step if state is not None else None)
    precision = "bf16" if cfg.bf16 else "fp32"  # the frozen UNet's passes (unet_eps)
    stop = StopFlag()
    t0 = t_start = time.time()
    acc = {"loss": 0.0, "swt": 0.0, "dists": 0.0, "map": 0.0, "k": 0}

    def export() -> None:
        save_safetensors(model.state_dict(), run / "dgsa.safetensors",
                         metadata={"dgsa": dgsa_cfg.to_dict(), "step": step, "kind": "dgsa",
                                   "train": {"zeta": cfg.zeta, "step_rule": cfg.step_rule, "delta": cfg.delta}})

    def snapshot() -> dict:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng_state(), "config": asdict(cfg)}

    try:
        while step < cfg.steps and not stop.stop:
            if cfg.minutes and time.time() - t_start > cfg.minutes * 60:
                break
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = _batch(data, cfg.batch_size, True)
            b = x.shape[0]
            with torch.no_grad():
                y01, _ = degrade((x + 1) / 2, cfg.degradation, int(torch.randint(0, 2**62, ())), workers=workers)
                d = dblm(y01 * 2 - 1)
                join = table.lookup(d.sigmas.double()).floor().long().clamp(cfg.delta, diffusion.num_timesteps - 1)
            t = (torch.rand(b).to(dev) * (join[:, 0] - cfg.delta + 1).float()).long() + cfg.delta
            tp = t - cfg.delta
            src = torch.where((torch.rand(b).to(dev) < cfg.start_mix)[:, None, None, None], x, d.guides[:, 0])
            xt = diffusion.q_sample(src, t).requires_grad_(True)
            w = active_guides(t, join)
            eps = unet_eps(unet, diffusion, xt, t, precision)
            x0 = diffusion.x0_from_eps(xt, t, eps).clamp(-1, 1)
            gl = guidance_loss(residuals(x0, d.guides, d.sigmas * scale), w)
            (grad,) = torch.autograd.grad(gl.sum(), xt)
            with torch.no_grad():
                x_unguided = diffusion.ddim_step(xt.detach(), t, tp, x0.detach(), (d.std / 10).clamp(0, 1))
                step_vec = normalise_step(grad, gl.detach(), cfg.step_rule, cfg.zeta, x_unguided - xt.detach())
                if cfg.step_rule == "landweber":  # as in the sampler: x̂0-space step → x_{t−1} space
                    step_vec = step_vec * (diffusion.alpha_bar(t, xt) * diffusion.alpha_bar(tp, xt)).sqrt()
            a_map = model(combined_guide(d.guides, w), x0.detach(), t)
            x_prev = x_unguided - a_map * step_vec
            eps2 = unet_eps(unet, diffusion, x_prev, tp, precision)
            x0_prev = diffusion.x0_from_eps(x_prev, tp, eps2)
            l_swt = swt_l1(x0_prev, x, cfg.swt_levels, cfg.gammas)
            l_d = filterbank_dists(x0_prev, x).mean()
            loss = l_swt + cfg.dists_weight * l_d
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            acc["loss"] += loss.item()
            acc["swt"] += l_swt.item()
            acc["dists"] += l_d.item()
            acc["map"] += a_map.mean().item()
            acc["k"] += 1
            if step % cfg.log_every == 0:
                k = acc["k"]
                log.write({"step": step, "time": round(time.time() - t0, 1), "loss": acc["loss"] / k, "swt": acc["swt"] / k,
                           "dists": acc["dists"] / k, "map_mean": acc["map"] / k, "lr": lr})
                acc = {"loss": 0.0, "swt": 0.0, "dists": 0.0, "map": 0.0, "k": 0}
            if ckpt.due():
                ckpt.save(snapshot())
                export()
    finally:
        stop.restore(step)
        ckpt.save(snapshot())
        export()
        log.close()
    return run / "dgsa.safetensors"
