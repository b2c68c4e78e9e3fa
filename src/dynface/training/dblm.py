"""Train DBLM (method.md §2.3, §8 A2/B1): RM, then SDE, then TM+SDE end to end.

Stages (each resumable, all in one run directory):

1. ``rm``  — restorer RM: degraded face y (``diffbir`` preset by default) → x0, L1 loss (DifFace's
   SwinIR recipe).
2. ``sde`` — pre-train SDE on ``(k_σ ⊗ x0, σ)``, σ ~ U[0, sde_sigma_max] (ref px), L1 regression.
3. ``tm``  — TM + SDE end to end with the std* label of §8 B1: the smallest σ on a grid (0.5…12,
   step 0.25, ref px) with ``PSNR(k_σ⊗RM(y), k_σ⊗x0) ≥ psnr_threshold``, computed with the frozen RM.
   TM's target is ``k_{std*} ⊗ x0`` (L1) and ``SDE(TM(y))`` regresses std* (L1, weight ``std_weight``).

The result is ``dblm.safetensors`` (all three networks, the DBLMConfig in the metadata).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..degrade import degrade
from ..models.dblm import DBLM, PRESETS, DBLMConfig
from ..models.io import save_safetensors
from ..ops import gaussian_blur
from .data import load_face_tensor, to_model_range
from .loop import Checkpointer, CSVLog, StopFlag, rng_state, set_rng_state

STAGES = ("rm", "sde", "tm")


@dataclass
class DBLMTrainConfig:
    preset: str = "embedded-64"
    dblm: dict = field(default_factory=dict)  # overrides of DBLMConfig fields
    degradation: str = "diffbir"
    batch_size: int = 32
    lr: float = 5e-4
    steps: dict = field(default_factory=lambda: {"rm": 3000, "sde": 1000, "tm": 2000})
    minutes: dict = field(default_factory=dict)  # optional per-stage time limits
    sde_sigma_max: float = 10.0
    label_grid: tuple[float, float, float] = (0.5, 12.0, 0.25)  # std* label grid (ref px)
    # §8 B1 suggests ≈30 dB "to tune"; PSNR depends on resolution: at 64 px, 30 dB saturates 86 % of the
    # labels on `diffbir` inputs, 24 dB spreads them (median ≈7, 10 % at the minimum) — see the model card.
    psnr_threshold: float = 24.0
    std_weight: float = 0.05
    hflip: bool = True
    checkpoint_minutes: float = 10.0
    log_every: int = 50
    seed: int = 0
    threads: int = 0
    data_limit: int = 0

    def dblm_config(self) -> DBLMConfig:
        base = PRESETS[self.preset]
        return DBLMConfig.from_dict({**base.to_dict(), **self.dblm}) if self.dblm else base


def psnr_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [−1, 1] (peak-to-peak 2), per sample."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


@torch.no_grad()
def std_star_labels(restored: torch.Tensor, clean: torch.Tensor, cfg: DBLMConfig, grid: torch.Tensor, threshold: float) -> torch.Tensor:
    """§8 B1: per sample, the smallest σ (ref px) of ``grid`` where blurring hides RM's error.

    Samples that never reach the threshold get the largest grid value.
    """
    b = restored.shape[0]
    out = torch.full((b,), float(grid[-1]))
    done = torch.zeros(b, dtype=torch.bool)
    for s in grid.tolist():
        sw = cfg.to_working(torch.full((b,), s))
        ok = psnr_per_sample(gaussian_blur(restored, sw), gaussian_blur(clean, sw)) >= threshold
        new = ok & ~done
        out[new] = s
        done |= ok
        if bool(done.all()):
            break
    return out


def _batch(data: torch.Tensor, bs: int, hflip: bool) -> torch.Tensor:
    idx = torch.randint(0, data.shape[0], (bs,))
    x = to_model_range(data[idx])
    if hflip:
        flip = torch.rand(bs) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def train_dblm(cfg: DBLMTrainConfig, data_dir: str, out_dir: str, resume: bool = True, stages: tuple[str, ...] = STAGES) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    dcfg = cfg.dblm_config()
    model = DBLM(dcfg)
    ckpt = Checkpointer(run, cfg.checkpoint_minutes)
    state = ckpt.load() if resume else None
    progress = {s: 0 for s in STAGES}
    opt_states: dict = {}
    torch.manual_seed(cfg.seed)
    if state is not None:
        model.load_state_dict(state["model"])
        progress.update(state["progress"])
        opt_states = state.get("opt", {})
        set_rng_state(state["rng"])
    data = load_face_tensor(data_dir, dcfg.size, cache_dir=run / "cache", limit=cfg.data_limit or None)
    log = CSVLog(run / "log.csv", ["stage", "step", "time", "loss", "l_img", "l_std", "label_mean", "lr"])
    stop = StopFlag()
    grid = torch.arange(cfg.label_grid[0], cfg.label_grid[1] + 1e-9, cfg.label_grid[2])
    t0 = time.time()

    def export() -> None:
        save_safetensors(model.state_dict(), run / "dblm.safetensors",
                         metadata={"dblm": dcfg.to_dict(), "progress": progress, "kind": "dblm",
                                   "train": {"degradation": cfg.degradation, "psnr_threshold": cfg.psnr_threshold}})

    def snapshot(opts: dict) -> dict:
        return {"model": model.state_dict(), "progress": dict(progress), "opt": opts, "rng": rng_state(), "config": asdict(cfg)}

    try:
        for stage in stages:
            params = {"rm": model.rm, "sde": model.sde, "tm": [model.tm, model.sde]}[stage]
            mods = params if isinstance(params, list) else [params]
            opt = torch.optim.AdamW([p for m in mods for p in m.parameters()], lr=cfg.lr)
            if stage in opt_states:
                opt.load_state_dict(opt_states[stage])
            total = cfg.steps.get(stage, 0)
            t_stage = time.time()
            acc = {"loss": 0.0, "l_img": 0.0, "l_std": 0.0, "label": 0.0, "k": 0}
            while progress[stage] < total and not stop.stop:
                if cfg.minutes.get(stage) and time.time() - t_stage > cfg.minutes[stage] * 60:
                    break
                step = progress[stage]
                lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))  # cosine decay
                for g in opt.param_groups:
                    g["lr"] = lr
                x = _batch(data, cfg.batch_size, cfg.hflip)
                l_img = l_std = label_mean = torch.zeros(())
                if stage == "sde":
                    sig = torch.rand(cfg.batch_size) * cfg.sde_sigma_max
                    xb = gaussian_blur(x, dcfg.to_working(sig))
                    l_std = F.l1_loss(model.sde(xb), sig)
                    loss = l_std
                else:
                    y01, _ = degrade((x + 1) / 2, cfg.degradation, int(torch.randint(0, 2**62, ())))
                    y = y01 * 2 - 1
                    if stage == "rm":
                        l_img = F.l1_loss(model.rm(y), x)
                        loss = l_img
                    else:
                        with torch.no_grad():
                            label = std_star_labels(model.rm(y), x, dcfg, grid, cfg.psnr_threshold)
                        target = gaussian_blur(x, dcfg.to_working(label))
                        tm_out = model.tm(y)
                        l_img = F.l1_loss(tm_out, target)
                        l_std = F.l1_loss(model.sde(tm_out), label)
                        loss = l_img + cfg.std_weight * l_std
                        label_mean = label.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for m in mods for p in m.parameters()], 1.0)
                opt.step()
                progress[stage] = step + 1
                acc["loss"] += loss.item()
                acc["l_img"] += float(l_img.detach())
                acc["l_std"] += float(l_std.detach())
                acc["label"] += float(label_mean)
                acc["k"] += 1
                if progress[stage] % cfg.log_every == 0:
                    k = acc["k"]
                    log.write({"stage": stage, "step": progress[stage], "time": round(time.time() - t0, 1), "loss": acc["loss"] / k,
                               "l_img": acc["l_img"] / k, "l_std": acc["l_std"] / k, "label_mean": acc["label"] / k, "lr": lr})
                    acc = {"loss": 0.0, "l_img": 0.0, "l_std": 0.0, "label": 0.0, "k": 0}
                if ckpt.due():
                    opt_states[stage] = opt.state_dict()
                    ckpt.save(snapshot(opt_states))
                    export()
            opt_states[stage] = opt.state_dict()
            if stop.stop:
                break
    finally:
        stop.restore()
        ckpt.save(snapshot(opt_states))
        export()
        log.close()
    return run / "dblm.safetensors"
