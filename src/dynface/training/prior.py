"""Train the diffusion prior (ε-prediction UNet; hybrid loss when the preset learns σ)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ..diffusion import GaussianDiffusion, ScheduleConfig
from ..imaging import save_grid
from ..models.io import load_weights, save_safetensors
from ..models.unet import PRESETS, UNetConfig, UNetModel
from .data import load_face_tensor, to_model_range
from .loop import (
    EMA,
    Checkpointer,
    CSVLog,
    StopFlag,
    dist_info,
    rank_device,
    resume_into,
    rng_state,
    set_rng_state,
    unwrap,
)


@dataclass
class PriorTrainConfig:
    preset: str = "embedded-64"
    unet: dict = field(default_factory=dict)  # overrides of the preset's UNetConfig fields
    batch_size: int = 32  # per process
    lr: float = 2e-4
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_steps: int = 1_000_000
    max_minutes: float = 0.0  # 0 = no time limit
    bf16: bool = True  # autocast (CPU or CUDA)
    hflip: bool = True
    checkpoint_minutes: float = 10.0
    sample_minutes: float = 30.0
    sample_count: int = 16
    log_every: int = 50
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = default)
    data_limit: int = 0
    init_from: str = ""  # safetensors EMA weights to start from when no checkpoint exists
    channels_last: bool = False  # NHWC activations (faster convolutions on a GPU's tensor cores)
    compile: bool = False  # one torch.compile of the UNet's forward (the training step's backward follows)

    def unet_config(self) -> UNetConfig:
        base = PRESETS[self.preset]
        return UNetConfig.from_dict({**base.to_dict(), **self.unet}) if self.unet else base


def grid_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps (1 to T), descending: every T/steps-th from T − 1 when that divides T (the grids made so
    far), else evenly spaced from T − 1 to 0 (the stride T // steps made 334 of 300 and 1000 of 600)."""
    steps = max(1, min(int(steps), T))
    if T % steps == 0:
        return list(range(T - 1, -1, -(T // steps)))
    return [int(t) for t in torch.linspace(T - 1, 0, steps).round()]


@torch.no_grad()
def sample_grid(model: UNetModel, diffusion: GaussianDiffusion, n: int, size: int, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Unconditional DDIM(η=0) samples from the model, for progress grids, over :func:`grid_timesteps`."""
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    x = torch.randn(n, model.cfg.in_channels, size, size, generator=g).to(dev)
    ts = grid_timesteps(diffusion.num_timesteps, steps)
    for i, t in enumerate(ts):
        tt = torch.full((n,), t, device=dev)
        tp = torch.full((n,), ts[i + 1] if i + 1 < len(ts) else -1, device=dev)
        eps, _ = diffusion.split_output(model(x, tt), x.shape[1])
        x0 = diffusion.x0_from_eps(x, tt, eps).clamp(-1, 1)
        x = diffusion.ddim_step(x, tt, tp, x0, eta=0.0)
    return x


def train_prior(cfg: PriorTrainConfig, data_dir: str, out_dir: str, resume: bool = True, device: str = "cpu",
                on_export: Callable[[Path, dict], None] | None = None) -> Path:
    """Train (or continue) a prior; returns ``OUT/ema.safetensors``.

    The EMA file's metadata counts ``images_seen`` across runs (carried over from ``init_from``'s metadata).
    ``on_export(path, info)`` is called after each export of the EMA (every checkpoint and at the end) with
    ``info = {"step", "images_seen", "final"}``: a caller can copy the weights elsewhere (e.g. a lent
    GPU's output folder, so that a killed run loses little).
    """
    rank, world = dist_info()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = rank_device(device, rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions
        torch.backends.cuda.matmul.allow_tf32 = True
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "samples").mkdir(exist_ok=True)
    torch.manual_seed(cfg.seed + rank)

    ucfg = cfg.unet_config()
    model = UNetModel(ucfg).to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    sched = ScheduleConfig(learn_sigma=ucfg.learn_sigma)
    diffusion = GaussianDiffusion.from_config(sched).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=dev.type == "cuda")
    ckpt = Checkpointer(run, cfg.checkpoint_minutes, rank)
    step = base_seen = 0
    state = ckpt.load() if resume else None
    if state is not None:
        resume_into(model, state, "model", run / "last.pt")
        ema = EMA(model, cfg.ema_decay)
        resume_into(ema.model, state, "ema", run / "last.pt")
        opt.load_state_dict(state["opt"])
        step = state["step"]
        base_seen = int(state.get("images_seen0", 0))
        set_rng_state(state["rng"])  # exact continuation for one process
        if world > 1:  # the saved state is rank 0's: give every rank its own stream again
            torch.manual_seed(cfg.seed + rank + step * world)
    else:
        if cfg.init_from:
            base_seen = int(load_weights(model, cfg.init_from).get("images_seen", 0))
        ema = EMA(model, cfg.ema_decay)
    ddp_model = DDP(model) if world > 1 else model
    fwd = torch.compile(ddp_model) if cfg.compile else ddp_model

    data = load_face_tensor(data_dir, ucfg.image_size, cache_dir=run / "cache", limit=cfg.data_limit or None)
    if dev.type == "cuda":  # uint8 faces fit on the device (8k faces at 64 px: 100 MB): no per-step host copies
        data = data.to(dev)
    n = data.shape[0]
    log = CSVLog(run / "log.csv", ["step", "time", "loss", "mse", "vb", "lr", "img_per_s"],
                 resumed_at=step if state is not None else None) if rank == 0 else None
    stop = StopFlag()
    t_start = last_sample = time.time()
    # running sums stay on the device: one host sync per log line, not three per step (matters on a GPU)
    def fresh_sums() -> dict:
        return {"loss": torch.zeros((), device=dev), "mse": torch.zeros((), device=dev), "vb": torch.zeros((), device=dev), "k": 0}

    t_log, seen, acc = time.time(), 0, fresh_sums()

    def snapshot() -> dict:
        return {"model": unwrap(model).state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                "step": step, "rng": rng_state(), "config": asdict(cfg), "unet": ucfg.to_dict(), "images_seen0": base_seen}

    def export(final: bool = False) -> None:
        if rank == 0:
            images_seen = base_seen + step * cfg.batch_size * world
            save_safetensors(ema.model.state_dict(), run / "ema.safetensors",
                             metadata={"unet": ucfg.to_dict(), "schedule": asdict(sched), "step": step, "kind": "prior",
                                       "images_seen": images_seen})
            if on_export is not None:
                on_export(run / "ema.safetensors", {"step": step, "images_seen": images_seen, "final": final})

    try:
        while step < cfg.max_steps and not stop.stop:
            if cfg.max_minutes and time.time() - t_start > cfg.max_minutes * 60:
                break
            idx = torch.randint(0, n, (cfg.batch_size,), device=data.device)  # drawn there: a host copy would sync
            x0 = to_model_range(data[idx]).to(dev)
            if cfg.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            if cfg.hflip:
                flip = torch.rand(cfg.batch_size, device=dev) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            t = torch.randint(0, diffusion.num_timesteps, (cfg.batch_size,), device=dev)
            noise = torch.randn_like(x0)
            xt = diffusion.q_sample(x0, t, noise)
            lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                out = fwd(xt, t)
            losses = diffusion.training_losses(out.float(), x0, xt, t, noise)
            loss = losses["loss"].mean()
            if dev.type == "cpu" and not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            ema.update(unwrap(model), step)
            seen += cfg.batch_size * world
            acc["loss"] += loss.detach()
            acc["mse"] += losses["mse"].detach().mean()
            if "vb" in losses:
                acc["vb"] += losses["vb"].detach().mean()
            acc["k"] += 1
            if step % cfg.log_every == 0:
                k = acc["k"]
                means = {key: acc[key].item() / k for key in ("loss", "mse", "vb")}
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(f"non-finite loss before step {step}")
                now = time.time()
                if log is not None:
                    log.write({"step": step, "time": round(now - t_start, 1), **means, "lr": lr,
                               "img_per_s": round(seen / (now - t_log), 2)})
                t_log, seen, acc = now, 0, fresh_sums()
            if ckpt.due():
                ckpt.save(snapshot())
                export()
            if rank == 0 and cfg.sample_minutes and time.time() - last_sample > cfg.sample_minutes * 60:
                xs = sample_grid(ema.model, diffusion, cfg.sample_count, ucfg.image_size, seed=cfg.seed)
                save_grid(xs, run / "samples" / f"step{step:07d}.png", nrow=int(math.sqrt(cfg.sample_count)))
                last_sample = time.time()
    finally:
        stop.restore(step, say=rank == 0)
        ckpt.save(snapshot())
        export(final=True)
        if log is not None:
            log.close()
    return run / "ema.safetensors"
