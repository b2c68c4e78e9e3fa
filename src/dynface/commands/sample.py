"""``dynface sample``: unconditional faces from a prior, as one grid picture (is the prior any good?).

DDIM with η = 0 over ``--steps`` evenly spaced steps, from a fixed seed; ``dynface sample --model embedded-64 -n 64
--steps 100 --seed 0`` made ``docs/results/prior_samples_64.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from dynface.registry import DEFAULT_MODEL

OUT_EXTS = (".png", ".jpg", ".jpeg", ".webp")


def register(subparsers: argparse._SubParsersAction) -> None:
    from dynface.commands.argtypes import number
    from dynface.jobs import MAX_SEED

    p = subparsers.add_parser("sample", help="draw unconditional faces from a prior into a grid picture", description=__doc__)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"embedded model name, model folder or prior file (default: {DEFAULT_MODEL})")
    p.add_argument("-n", "--num", type=number(int, 1, 4096), default=64, help="number of faces (default 64)")
    p.add_argument("--steps", type=number(int, 1, 1000), default=100, help="DDIM steps, 1 to 1000 (default 100)")
    p.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0)
    p.add_argument("--batch", type=number(int, 1), default=16, help="faces per network call (bounds memory)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    p.add_argument("--threads", type=number(int, 1), default=None, metavar="N",
                   help="CPU threads (default: the cores not already busy, as `dynface restore`)")
    p.add_argument("-o", "--out", required=True, help=f"output picture ({', '.join(OUT_EXTS)})")
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


def _out_problem(out: Path) -> str | None:
    if out.is_dir():
        return f"-o {out}: is a folder; give the picture's file name"
    if out.suffix.lower() not in OUT_EXTS:
        return f"-o {out}: the picture's name must end in {', '.join(OUT_EXTS)}"
    if not out.parent.is_dir():
        return f"-o {out}: folder {out.parent} does not exist"
    return None


def run(args: argparse.Namespace) -> int:
    from dynface import jobs
    from dynface.devices import unavailable
    from dynface.imaging import save_grid
    from dynface.models.io import ModelLoadError

    out = Path(args.out).expanduser()
    why = _out_problem(out) or unavailable(args.device)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    jobs.apply_threads(jobs.RestoreSettings(threads=args.threads))
    try:
        x = draw(args.model, args.num, args.steps, args.seed, args.batch, args.device)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        save_grid(x, out, nrow=math.ceil(math.sqrt(args.num)))
    except OSError as e:
        print(f"error: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.num} samples ({args.steps} DDIM steps, seed {args.seed}) → {out}")
    return 0
