"""Probe a restorer (RM) recipe on the CPU: does the residual U-Net learn, and how fast per step?

Trains a ``RestorerNet`` from scratch on ``diffbir``-degraded faces for a few hundred steps and prints, every 25 steps,
the training L1 next to the input's own L1 ``|y − x|`` on the same batches (their ratio: 1.0 = the identity,
lower = it restores), the mean gradient norm (before clipping at 1.0, as the trainer clips), and the L1 on 48 fixed
val faces (degradation seed 123) next to theirs. The numbers of docs/results/embedded-128/rm_recipe.md came from

    OMP_NUM_THREADS=2 python scripts/rm_probe.py --name A --lr 1e-3 --crop 64             # round 0's RM, 64-px crops
    OMP_NUM_THREADS=2 python scripts/rm_probe.py --name B --lr 3e-4 --crop 64
    OMP_NUM_THREADS=2 python scripts/rm_probe.py --name C --lr 1e-3 --crop 64 --zero-res
    OMP_NUM_THREADS=2 python scripts/rm_probe.py --name D --size 64 --width 16 --mult 1,2,4   # embedded-64's RM
    OMP_NUM_THREADS=2 python scripts/rm_probe.py --name E --lr 3e-4 --unshuffle 2          # the 128-px RM now

Every run draws the same batches (seed 0) from the first 4,000 training faces, AdamW, batch 16, constant lr.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from dynface.degrade import degrade
from dynface.models.dblm import RestorerNet
from dynface.training.data import load_face_tensor, to_model_range


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/utkface/train")
    p.add_argument("--val", default="../shared/data/utkface/val")
    p.add_argument("--cache", default="runs/rm_probe_cache")
    p.add_argument("--name", default="probe")
    p.add_argument("--size", type=int, default=128, help="face size (px)")
    p.add_argument("--crop", type=int, default=0, help="train on random crops of this side (0: whole faces)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--mult", default="1,2,4,4")
    p.add_argument("--unshuffle", type=int, default=1)
    p.add_argument("--zero-res", action="store_true", help="zero-initialise each residual block's last convolution")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bs", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = load_face_tensor(a.data, a.size, cache_dir=a.cache, limit=4000)
    xv = to_model_range(load_face_tensor(a.val, a.size, cache_dir=a.cache, limit=48))
    yv = degrade((xv + 1) / 2, "diffbir", 123)[0] * 2 - 1
    net = RestorerNet(a.width, tuple(int(m) for m in a.mult.split(",")), 2, unshuffle=a.unshuffle)
    if a.zero_res:
        for m in net.modules():
            if type(m).__name__ == "_Res":
                torch.nn.init.zeros_(m.body[2].weight)
                torch.nn.init.zeros_(m.body[2].bias)
    print(f"{a.name}: {sum(q.numel() for q in net.parameters()):,} parameters", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr)
    acc = [0.0, 0.0, 0.0]
    t0 = time.time()
    for step in range(1, a.steps + 1):
        x = to_model_range(data[torch.randint(0, data.shape[0], (a.bs,))])
        y = degrade((x + 1) / 2, "diffbir", int(torch.randint(0, 2**62, ())))[0] * 2 - 1
        if 0 < a.crop < a.size:
            i, j = torch.randint(0, a.size - a.crop + 1, (2,)).tolist()
            x, y = x[..., i:i + a.crop, j:j + a.crop], y[..., i:i + a.crop, j:j + a.crop]
        loss = F.l1_loss(net(y), x)
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0).item()
        opt.step()
        acc = [acc[0] + loss.item(), acc[1] + F.l1_loss(y, x).item(), acc[2] + grad_norm]
        if step % 25 == 0:
            with torch.no_grad():
                val = F.l1_loss(net(yv), xv).item()
            print(f"{a.name} step {step} {time.time() - t0:.0f}s train L1 {acc[0] / 25:.4f} input {acc[1] / 25:.4f} "
                  f"ratio {acc[0] / acc[1]:.3f} grad {acc[2] / 25:.2f} | val L1 {val:.4f} input "
                  f"{F.l1_loss(yv, xv).item():.4f} ratio {val / F.l1_loss(yv, xv).item():.3f}", flush=True)
            acc = [0.0, 0.0, 0.0]


if __name__ == "__main__":
    main()
