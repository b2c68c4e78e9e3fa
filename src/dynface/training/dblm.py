"""Train DBLM (method.md §2.3, §8 A2/B1): RM, then SDE, then TM+SDE end to end.

Stages (each resumable, all in one run directory):

1. ``rm``  — restorer RM: degraded face y (``diffbir`` preset by default) → x0, L1 loss (DifFace's
   SwinIR recipe).
2. ``sde`` — pre-train SDE on ``(k_σ ⊗ x0, σ)``, σ ~ U[0, sde_sigma_max] (ref px), L1 regression.
3. ``tm``  — TM + SDE end to end with a std* label (``label``), computed with the frozen RM on a grid of σ
   (0.5…12, step 0.25, ref px): the smallest σ on it such that
   - ``"psnr"`` (§8 B1 as first written; the shipped ``embedded-64``): ``PSNR(k_σ⊗RM(y), k_σ⊗x0) ≥
     psnr_threshold``. The threshold is absolute, so a restorer that already reaches it unblurred gets the
     grid's minimum, whose DSST start is t = 0: the diffusion then has nothing to do;
   - ``"masked"``: RM's remaining error in the guide is hidden by the noise of the guide's own DSST start
     step, ``10·log10((1 − ᾱ_t) / (ᾱ_t · MSE(k_σ⊗RM(y), k_σ⊗x0))) ≥ mask_db`` with ``t = DSST(σ)``: the
     start state ``√ᾱ_t ý + √(1−ᾱ_t) ε`` then differs from one built from ``k_σ⊗x0`` by an error ``mask_db``
     below the noise (docs/results/std_label.md).
   TM's target is ``k_{std*} ⊗ x0`` (L1) and ``SDE(TM(y))`` regresses std* (L1, weight ``std_weight``).

The result is ``dblm.safetensors`` (all three networks, the DBLMConfig in the metadata). With ``restorer``
(DifFace's published SwinIR ``.pth``, :mod:`dynface.models.swinir`) RM is that network, frozen: only ``sde`` and
``tm`` train, the file holds TM and SDE only and its metadata names the restorer (``rm``), which the pipeline
then needs (``--restorer``). Under torchrun every rank draws its own batches and gradients are averaged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..degrade import degrade
from ..models.dblm import DBLM, PRESETS, DBLMConfig
from ..models.io import load_checked, load_state_dict_file, save_safetensors
from ..ops import gaussian_blur
from .data import load_face_tensor, to_model_range
from .loop import (
    Checkpointer,
    CSVLog,
    StopFlag,
    degrade_workers,
    dist_info,
    rank_device,
    resume_into,
    rng_state,
    set_rng_state,
)

STAGES = ("rm", "sde", "tm")
# the paper's 512-px setting (DifFace's prior and SwinIR RM): TM needs a receptive field for σ ≈ 12 px at 512
TRAIN_PRESETS = {"ffhq512": DBLMConfig(size=512, tm_width=16, tm_mult=(1, 2, 4, 8, 8), tm_blocks=1, sde_width=16)}


@dataclass
class DBLMTrainConfig:
    preset: str = "embedded-64"
    dblm: dict = field(default_factory=dict)  # overrides of DBLMConfig fields
    degradation: str = "diffbir"
    batch_size: int = 32
    lr: float = 5e-4
    stage_lr: dict = field(default_factory=dict)  # optional per-stage overrides of lr, e.g. {sde: 1.0e-3}
    steps: dict = field(default_factory=lambda: {"rm": 3000, "sde": 1000, "tm": 2000})
    minutes: dict = field(default_factory=dict)  # optional per-stage time limits
    sde_sigma_max: float = 10.0
    label_grid: tuple[float, float, float] = (0.5, 12.0, 0.25)  # std* label grid (ref px)
    # §8 B1 suggests ≈30 dB "to tune"; PSNR depends on resolution: at 64 px, 30 dB saturates 86 % of the
    # labels on `diffbir` inputs, 24 dB spreads them (median ≈7, 10 % at the minimum) — see the model card.
    psnr_threshold: float = 24.0
    label: str = "psnr"  # "psnr" | "masked" (see the module docstring); LABELS
    # "masked": noise-to-error power ratio at the guide's start step, in dB; 23 dB = 10·log10(1/0.005), the
    # tolerance the DSST table itself uses to call two diffused sets indistinguishable (tol 0.005)
    mask_db: float = 23.0
    label_dsst: str | None = None  # "masked": DSST table (default: the preset's shipped one, else the package default)
    std_weight: float = 0.05
    hflip: bool = True
    checkpoint_minutes: float = 10.0
    log_every: int = 50
    seed: int = 0
    threads: int = 0
    degrade_workers: int = 0  # threads for the CPU half of the degradations; 0: auto (training.loop.degrade_workers)
    data_limit: int = 0
    restorer: str = ""  # DifFace's SwinIR .pth as the frozen RM (stages sde,tm; RM is then not exported)
    # an exported dblm.safetensors to continue from when the run has no checkpoint (e.g. a new machine): its
    # weights and per-stage progress (so each stage's cosine schedule goes on); AdamW starts afresh
    init_from: str = ""

    def dblm_config(self) -> DBLMConfig:
        presets = {**PRESETS, **TRAIN_PRESETS}
        if self.preset not in presets:
            raise ValueError(f"unknown DBLM preset {self.preset!r}; choose from {', '.join(sorted(presets))}")
        base = presets[self.preset]
        return DBLMConfig.from_dict({**base.to_dict(), **self.dblm}) if self.dblm else base


def psnr_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [−1, 1] (peak-to-peak 2), per sample."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def _smallest_sigma(restored: torch.Tensor, clean: torch.Tensor, cfg: DBLMConfig, grid: torch.Tensor,
                    ok: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Per sample, the first σ (ref px) of ``grid`` at which ``ok(j, k_σ⊗RM(y), k_σ⊗x0)`` holds (a bool per sample;
    ``j`` indexes ``grid``); samples that never pass get the largest grid value."""
    b = restored.shape[0]
    out = torch.full((b,), float(grid[-1]), device=restored.device)
    done = torch.zeros(b, dtype=torch.bool, device=restored.device)
    for j, s in enumerate(grid.tolist()):
        sw = cfg.to_working(torch.full((b,), s, device=restored.device))
        passed = ok(j, gaussian_blur(restored, sw), gaussian_blur(clean, sw))
        out[passed & ~done] = s
        done |= passed
        if bool(done.all()):
            break
    return out


@torch.no_grad()
def std_star_labels(restored: torch.Tensor, clean: torch.Tensor, cfg: DBLMConfig, grid: torch.Tensor, threshold: float) -> torch.Tensor:
    """§8 B1: per sample, the smallest σ (ref px) of ``grid`` where blurring hides RM's error.

    Samples that never reach the threshold get the largest grid value.
    """
    return _smallest_sigma(restored, clean, cfg, grid, lambda _j, r, c: psnr_per_sample(r, c) >= threshold)


LABELS = ("psnr", "masked")


def label_dsst_path(cfg: DBLMTrainConfig) -> Path:
    """The DSST table the ``masked`` label uses: ``label_dsst``, else the preset's shipped table."""
    if cfg.label_dsst:
        return Path(cfg.label_dsst)
    from ..pipeline import DEFAULT_DSST
    from ..registry import WEIGHTS_DIR

    shipped = WEIGHTS_DIR / cfg.preset / "dsst.json"
    return shipped if shipped.exists() else DEFAULT_DSST


@torch.no_grad()
def std_star_labels_masked(restored: torch.Tensor, clean: torch.Tensor, cfg: DBLMConfig, grid: torch.Tensor,
                           grid_alphas: torch.Tensor, mask_db: float) -> torch.Tensor:
    """Per sample, the smallest σ of ``grid`` whose guide error is ``mask_db`` below its start step's noise.

    ``grid_alphas[j]`` is ᾱ at the DSST start step of ``grid[j]``. The noise-to-error ratio
    ``(1 − ᾱ)/(ᾱ·MSE(k_σ⊗RM(y), k_σ⊗x0))`` (images in [−1, 1]) grows with σ: the blur shrinks the error and
    the start step (hence the noise) grows. Samples that never reach ``mask_db`` get the largest grid value.
    """
    alphas = grid_alphas.tolist()  # ᾱ as Python floats (any device)

    def ok(j: int, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mse = (r - c).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12)
        return 10 * torch.log10(((1 - alphas[j]) / alphas[j]) / mse) >= mask_db

    return _smallest_sigma(restored, clean, cfg, grid, ok)


def make_labeler(cfg: DBLMTrainConfig, dcfg: DBLMConfig, grid: torch.Tensor):
    """``labeler(restored, clean) -> std*`` for ``cfg.label``."""
    if cfg.label == "psnr":
        return lambda restored, clean: std_star_labels(restored, clean, dcfg, grid, cfg.psnr_threshold)
    if cfg.label != "masked":
        raise ValueError(f"unknown std* label {cfg.label!r}; choose from {', '.join(LABELS)}")
    from ..diffusion import GaussianDiffusion
    from ..dsst import DSSTTable

    path = label_dsst_path(cfg)
    table = DSSTTable.load(path)
    size = table.metadata.get("image_size")
    if size is not None and int(size) != dcfg.size:
        raise ValueError(f"the 'masked' std* label needs a DSST table built at {dcfg.size} px, but {path} is for {size} px: "
                         "build one (`dynface dsst`) and pass it as label_dsst")
    diffusion = GaussianDiffusion.from_config()
    last = diffusion.num_timesteps - 1
    built = table.metadata.get("num_timesteps")
    if built is not None and int(built) != diffusion.num_timesteps:
        raise ValueError(f"the 'masked' std* label needs a DSST table of the {diffusion.num_timesteps}-step schedule, "
                         f"but {path} indexes a {built}-step one: build one (`dynface dsst`) and pass it as label_dsst")
    steps = table.lookup(grid.double()).floor().long().clamp(0, last)  # as the pipeline's start_steps
    alphas = diffusion.alphas_cumprod[steps]
    return lambda restored, clean: std_star_labels_masked(restored, clean, dcfg, grid, alphas, cfg.mask_db)


def _allreduce_mean(grads: list[torch.Tensor]) -> None:
    """Average gradients over the ranks in one collective (DDP's effect, without its module wrapper)."""
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _batch(data: torch.Tensor, bs: int, hflip: bool) -> torch.Tensor:
    idx = torch.randint(0, data.shape[0], (bs,)).to(data.device)  # CPU draws: the same stream on any device
    x = to_model_range(data[idx])
    if hflip:
        flip = torch.rand(bs).to(data.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def _load_init(trained: torch.nn.Module, dcfg: DBLMConfig, path: str) -> dict[str, int]:
    """Load an exported DBLM file into ``trained`` (strict; same architecture) and return its stage progress."""
    sd, meta = load_state_dict_file(path)
    if diff := DBLMConfig.from_dict(meta.get("dblm", {})).differences(dcfg):
        raise ValueError(f"{path}: its DBLM architecture differs from the config's ({', '.join(diff)}); "
                         "cannot continue from it")
    load_checked(trained, sd, name=path)
    return {k: int(v) for k, v in meta.get("progress", {}).items() if k in STAGES}


def train_dblm(cfg: DBLMTrainConfig, data_dir: str, out_dir: str, resume: bool = True, stages: tuple[str, ...] = STAGES,
               device: str = "cpu") -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    dcfg = cfg.dblm_config()
    for name, per_stage in (("stage_lr", cfg.stage_lr), ("steps", cfg.steps), ("minutes", cfg.minutes)):
        if unknown := sorted(set(per_stage) - set(STAGES)):
            raise ValueError(f"{name}: unknown stage(s) {', '.join(unknown)}; "
                             f"the stages are {', '.join(STAGES)}")
    rank, world = dist_info()  # torchrun: data-parallel, gradients all-reduced every step
    dev = rank_device(device, rank)
    workers = degrade_workers(cfg.degrade_workers, dev)
    model = DBLM(dcfg).to(dev)
    if cfg.restorer:  # the published RM, frozen: only SDE and TM train against it
        if "rm" in stages:
            raise ValueError("with a restorer (--restorer) RM is frozen: train --stages sde,tm")
        from ..models.swinir import load_swinir

        model.rm = load_swinir(cfg.restorer, io="signed").to(dev).requires_grad_(False)
    ckpt = Checkpointer(run, cfg.checkpoint_minutes, rank)
    state = ckpt.load() if resume else None
    progress = {s: 0 for s in STAGES}
    opt_states: dict = {}
    torch.manual_seed(cfg.seed)

    # with an external RM only TM and SDE are trained, checkpointed and exported (RM is reloaded from cfg.restorer)
    trained = torch.nn.ModuleDict({"tm": model.tm, "sde": model.sde}) if cfg.restorer else model

    if state is not None:  # (strict; an older checkpoint may still carry the external RM's weights)
        kept = {k: v for k, v in state.get("model", {}).items() if not (cfg.restorer and k.startswith("rm."))}
        resume_into(trained, {"model": kept}, "model", run / "last.pt")
        progress.update(state["progress"])
        opt_states = state.get("opt", {})
        set_rng_state(state["rng"])
    elif cfg.init_from:
        progress.update(_load_init(trained, dcfg, cfg.init_from))
    if world > 1:  # same weights everywhere, a different batch stream per rank
        for t in trained.state_dict().values():  # (an external RM is the same file on every rank)
            dist.broadcast(t, 0)
        torch.manual_seed(cfg.seed + 1000 * rank + sum(progress.values()))
    data = load_face_tensor(data_dir, dcfg.size, cache_dir=run / "cache", limit=cfg.data_limit or None).to(dev)
    log = CSVLog(run / ("log.csv" if rank == 0 else f"log_rank{rank}.csv"), ["stage", "step", "time", "loss", "l_img", "l_std", "label_mean", "lr"],
                 echo=rank == 0, resumed_at=dict(progress) if state is not None else None)
    stop = StopFlag()
    grid = torch.arange(cfg.label_grid[0], cfg.label_grid[1] + 1e-9, cfg.label_grid[2])
    labeler = make_labeler(cfg, dcfg, grid)
    t0 = time.time()

    def export() -> None:
        if rank != 0:
            return
        extra = {}
        if cfg.restorer:  # TM and SDE only; the pipeline loads RM from the same restorer file (--restorer)
            extra["rm"] = {"arch": "swinir", "file": Path(cfg.restorer).name}
        save_safetensors(trained.state_dict(), run / "dblm.safetensors",
                         metadata={**extra, "dblm": dcfg.to_dict(), "progress": progress, "kind": "dblm",
                                   "train": {"degradation": cfg.degradation, "psnr_threshold": cfg.psnr_threshold,
                                             "label": cfg.label, "mask_db": cfg.mask_db}})

    def snapshot(opts: dict) -> dict:
        return {"model": trained.state_dict(), "progress": dict(progress), "opt": opts, "rng": rng_state(), "config": asdict(cfg)}

    try:
        for stage in stages:
            params = {"rm": model.rm, "sde": model.sde, "tm": [model.tm, model.sde]}[stage]
            mods = params if isinstance(params, list) else [params]
            opt = torch.optim.AdamW([p for m in mods for p in m.parameters()], lr=cfg.lr)
            if stage in opt_states:
                opt.load_state_dict(opt_states[stage])
            total = cfg.steps.get(stage, 0)
            base_lr = float(cfg.stage_lr.get(stage, cfg.lr))
            t_stage = time.time()
            acc = {"loss": 0.0, "l_img": 0.0, "l_std": 0.0, "label": 0.0, "k": 0}
            while progress[stage] < total and not stop.stop:
                if cfg.minutes.get(stage) and time.time() - t_stage > cfg.minutes[stage] * 60:
                    break
                step = progress[stage]
                lr = base_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))  # cosine decay
                for g in opt.param_groups:
                    g["lr"] = lr
                x = _batch(data, cfg.batch_size, cfg.hflip)
                l_img = l_std = label_mean = torch.zeros(())
                if stage == "sde":
                    sig = (torch.rand(cfg.batch_size) * cfg.sde_sigma_max).to(dev)
                    xb = gaussian_blur(x, dcfg.to_working(sig))
                    l_std = F.l1_loss(model.sde(xb), sig)
                    loss = l_std
                else:
                    y01, _ = degrade((x + 1) / 2, cfg.degradation, int(torch.randint(0, 2**62, ())), workers=workers)
                    y = y01 * 2 - 1
                    if stage == "rm":
                        l_img = F.l1_loss(model.rm(y), x)
                        loss = l_img
                    else:
                        with torch.no_grad():
                            label = labeler(model.rm(y), x)
                        target = gaussian_blur(x, dcfg.to_working(label))
                        tm_out = model.tm(y)
                        l_img = F.l1_loss(tm_out, target)
                        l_std = F.l1_loss(model.sde(tm_out), label)
                        loss = l_img + cfg.std_weight * l_std
                        label_mean = label.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    _allreduce_mean([p.grad for m in mods for p in m.parameters() if p.grad is not None])
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
        stop.restore(say=rank == 0)
        ckpt.save(snapshot(opt_states))
        export()
        log.close()
    return run / "dblm.safetensors"
