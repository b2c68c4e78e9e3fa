"""Held-out denoising loss of one or more priors: ε-MSE on clean validation faces at fixed timesteps.

The number the prior is trained to lower, measured on faces it never saw, with the same noise for every
prior compared (seeded), so checkpoints can be ranked without sampling:

    python benchmarks/prior_val.py --data ../shared/data/utkface/val PRIOR.safetensors [PRIOR2 ...]

Prints a markdown table: mean ε-MSE at t = 50, 250, 500, 750, 950 and averaged over all 1000 steps
(stratified: every face gets every probe step once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

PROBES = (50, 250, 500, 750, 950)


@torch.no_grad()
def eps_mse(unet, diffusion, faces: torch.Tensor, steps: list[int], seed: int, batch: int = 64) -> dict[int, float]:
    from dynface.training.data import to_model_range

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(faces.shape, generator=g)
    out = {}
    for t in steps:
        tot = 0.0
        for i in range(0, faces.shape[0], batch):
            x0 = to_model_range(faces[i:i + batch])
            tt = torch.full((x0.shape[0],), t)
            xt = diffusion.q_sample(x0, tt, noise[i:i + batch])
            eps, _ = diffusion.split_output(unet(xt, tt), x0.shape[1])
            tot += float(((eps - noise[i:i + batch]) ** 2).mean(dim=(1, 2, 3)).sum())
        out[t] = tot / faces.shape[0]
    return out


def main() -> int:
    from dynface.diffusion import GaussianDiffusion
    from dynface.pipeline import load_prior, prior_schedule
    from dynface.training.data import load_face_tensor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("priors", nargs="+")
    ap.add_argument("--data", required=True, help="folder of clean faces (not used in training)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many faces (0 = all)")
    ap.add_argument("--grid", type=int, default=20, help="steps for the all-t average (every 1000/grid)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = ["| prior | train step | " + " | ".join(f"t={t}" for t in PROBES) + " | mean over t |",
            "|---|---|" + "---|" * (len(PROBES) + 1)]
    grid = list(range(1000 // args.grid // 2, 1000, 1000 // args.grid))
    faces_at: dict[int, torch.Tensor] = {}  # decoded once per resolution, shared by the priors compared
    for path in args.priors:
        unet, meta = load_prior(path)
        size = unet.cfg.image_size
        if size not in faces_at:
            faces_at[size] = load_face_tensor(args.data, size, limit=args.limit or None)
        faces = faces_at[size]
        diffusion = GaussianDiffusion.from_config(prior_schedule(meta, unet))
        probe = eps_mse(unet, diffusion, faces, list(PROBES), args.seed)
        mean = sum(eps_mse(unet, diffusion, faces, grid, args.seed).values()) / len(grid)
        rows.append(f"| `{Path(path).as_posix()}` | {meta.get('step', '?')} | " + " | ".join(f"{probe[t]:.4f}" for t in PROBES)
                    + f" | {mean:.4f} |")
    print(f"ε-MSE on {faces.shape[0]} faces of {args.data} (seed {args.seed}; lower is better)\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
