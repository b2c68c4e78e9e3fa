"""``dynface sample``: unconditional faces from a prior, as one grid picture (is the prior any good?).

DDIM with η = 0 over ``--steps`` evenly spaced steps, from a fixed seed; the same command that made
``docs/results/prior_samples_64.png``.
"""

from __future__ import annotations

import argparse
import math
import sys

from dynface.registry import DEFAULT_MODEL


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="draw unconditional faces from a prior into a grid picture", description=__doc__)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"embedded model name, model folder or prior file (default: {DEFAULT_MODEL})")
    p.add_argument("-n", "--num", type=int, default=64, help="number of faces (default 64)")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="faces per network call (bounds memory)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("-o", "--out", required=True, help="output picture (.png)")
    p.set_defaults(func=run)


def draw(model: str, num: int, steps: int = 100, seed: int = 0, batch: int = 16, device: str = "cpu"):
    """``num`` unconditional samples of ``model``'s prior, (num, C, S, S) in [−1, 1] on the CPU: DDIM η = 0 over
    ``steps`` steps, in batches of ``batch`` seeded ``seed + i`` (i = the batch's first index). Raises
    :class:`dynface.models.io.ModelLoadError` for a model that cannot be loaded."""
    import torch

    from dynface.diffusion import GaussianDiffusion
    from dynface.pipeline import load_prior, prior_schedule
    from dynface.registry import resolve
    from dynface.training.prior import sample_grid

    unet, meta = load_prior(resolve(model).prior)
    diffusion = GaussianDiffusion.from_config(prior_schedule(meta, unet)).to(device)
    unet = unet.to(device)
    chunks = [sample_grid(unet, diffusion, min(batch, num - i), unet.cfg.image_size, steps=steps, seed=seed + i)
              for i in range(0, num, batch)]
    return torch.cat(chunks).cpu()


def run(args: argparse.Namespace) -> int:
    from dynface.imaging import save_grid
    from dynface.models.io import ModelLoadError

    if args.num < 1 or args.steps < 1 or args.batch < 1:
        print("error: --num, --steps and --batch must be positive", file=sys.stderr)
        return 2
    try:
        x = draw(args.model, args.num, args.steps, args.seed, args.batch, args.device)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_grid(x, args.out, nrow=math.ceil(math.sqrt(args.num)))
    print(f"{args.num} samples ({args.steps} DDIM steps, seed {args.seed}) → {args.out}")
    return 0
