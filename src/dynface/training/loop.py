"""Shared training machinery: EMA, checkpoints (time-based and on SIGTERM), resume, CSV log, DDP.

A run directory holds ``last.pt`` (model, EMA, optimizer, step, RNG states, config; written to a
temporary file and renamed), ``log.csv`` and ``samples/``. ``--resume`` continues from ``last.pt``, or
from a shipped safetensors file of EMA weights (``init_from``) when no checkpoint exists yet.
"""

from __future__ import annotations

import copy
import csv
import io
import os
import pickle
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from dynface.atomicfile import atomic_path, atomic_write_text


class EMA:
    """Exponential moving average of a model's parameters (with the usual warm-up of the decay)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_p, p = list(self.model.parameters()), [q.detach() for q in model.parameters()]
        if len(ema_p) != len(p):
            raise ValueError("EMA and model have different parameter lists")
        torch._foreach_lerp_(ema_p, p, 1 - d)  # one fused kernel per dtype/device group, not one per tensor
        for be, b in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(b)


def dist_info() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def degrade_workers(requested: int, dev: torch.device) -> int:
    """Threads for the per-sample CPU half of on-the-fly degradation (``dynface.degrade.apply_degradation``).

    ``requested`` > 0 is taken as is. 0 (auto): on a GPU, up to 8 threads, one core kept free (measured on the
    H200: one thread held the 128-px DBLM at ≈ 8 steps/s of batch 64), shared among the ranks on this machine
    (torchrun's ``LOCAL_WORLD_SIZE``); on the CPU 1, since torch's own threads already use the cores there."""
    if requested > 0:
        return requested
    if dev.type != "cuda":
        return 1
    ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, ((os.cpu_count() or 2) - 1) // ranks))


def rank_device(device: str, rank: int) -> torch.device:
    """The device of ``rank``: ``cuda`` means one GPU per rank (round robin over the visible ones)."""
    return torch.device(f"cuda:{rank % max(1, torch.cuda.device_count())}" if device == "cuda" else device)


def rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class StopFlag:
    """Set by SIGTERM/SIGINT so the loop can checkpoint and exit cleanly."""

    def __init__(self) -> None:
        self.stop = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread
                pass

    def _handler(self, signum, frame) -> None:
        self.stop = True

    def restore(self, step: int | None = None, say: bool = True) -> None:
        """Put the old handlers back; when a signal stopped the run, say so (``say``: rank 0; with ``step``), as a
        finished run is silent: a scheduler or a user sees that it was stopped, and how to go on."""
        for sig, h in self._old.items():
            signal.signal(sig, h)
        if self.stop and say:
            at = f" at step {step}" if step is not None else ""
            print(f"stopped{at} by Ctrl-C or SIGTERM: the checkpoint is saved; run the same command with --resume to go on",
                  file=sys.stderr, flush=True)


def resume_into(module: nn.Module, state: dict[str, Any], key: str, path: Path) -> None:
    """``module.load_state_dict(state[key])`` for ``--resume``, or a one-line ValueError when the checkpoint is not
    this run's kind (another preset, config or trainer) instead of torch's list of every key."""
    try:
        module.load_state_dict(state[key])
    except (KeyError, RuntimeError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        first = lines[min(1, len(lines) - 1)][:160]  # torch's first line only names the module
        raise ValueError(f"{path}: the checkpoint does not fit this run ({key}: {first}); was it made with another "
                         "preset, config or trainer? Give another --out, or leave out --resume") from None


class CSVLog:
    """``log.csv``, one row per ``log_every`` steps; with ``echo`` (rank 0) each row is printed to stderr too, so that a
    run of hours shows its progress (step, loss, speed) where it was started."""

    def __init__(self, path: Path, fields: list[str], echo: bool = True, resumed_at: int | dict[str, int] | None = None):
        """``resumed_at`` (a resumed run): the checkpoint's step, or its step per ``stage`` (DBLM); the earlier rows
        past it (logged after the last checkpoint by a run killed later: their steps are done again) are dropped,
        and ``time`` goes on from the last kept row's instead of restarting at 0."""
        self.path, self.fields, self.echo = path, fields, echo
        self.time0 = 0.0
        if resumed_at is not None and path.exists():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if _row_kept(resumed_at, r)]
            if len(keep) < len(rows):
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(keep)
                atomic_write_text(buf.getvalue(), path)
            try:
                self.time0 = float(keep[-1].get("time") or 0.0) if keep else 0.0
            except ValueError:
                self.time0 = 0.0
        new = not path.exists()
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=fields)
        if new:
            self.w.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self.time0 and isinstance(row.get("time"), int | float):
            row = {**row, "time": round(self.time0 + row["time"], 1)}
        self.w.writerow({k: row.get(k, "") for k in self.fields})
        self.f.flush()
        if self.echo:
            cells = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k in self.fields
                     if (v := row.get(k, "")) != "" and v is not None]
            print(f"{self.path.parent.name}: " + ", ".join(cells), file=sys.stderr, flush=True)

    def close(self) -> None:
        self.f.close()


def _row_kept(resumed_at: int | dict[str, int], row: dict) -> bool:
    """Whether a log row is one the checkpoint covers (its step is at most the checkpoint's, for its stage)."""
    try:
        at = resumed_at.get(row["stage"], 0) if isinstance(resumed_at, dict) else resumed_at
        return int(row["step"]) <= at
    except (KeyError, TypeError, ValueError):  # a damaged row (a kill -9 mid-write): dropped
        return False


class Checkpointer:
    """Time-based checkpointing of a training state to ``RUN_DIR/last.pt`` (rank 0 only)."""

    def __init__(self, run_dir: Path, every_minutes: float, rank: int = 0):
        self.run_dir, self.every, self.rank = run_dir, every_minutes * 60.0, rank
        self.last = time.time()

    def due(self) -> bool:
        return time.time() - self.last >= self.every

    def save(self, state: dict[str, Any]) -> None:
        if self.rank == 0:
            atomic_torch_save(state, self.run_dir / "last.pt")
        self.last = time.time()

    def load(self) -> dict[str, Any] | None:
        p = self.run_dir / "last.pt"
        if not p.exists():
            return None
        try:
            state = torch.load(p, map_location="cpu", weights_only=False)  # our own file: RNG states need pickle
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(f"{p}: cannot read the checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
        if not isinstance(state, dict) or not ("step" in state or "progress" in state):  # prior, dgsa / dblm
            raise ValueError(f"{p}: not a dynfacerestore training checkpoint")
        return state


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
