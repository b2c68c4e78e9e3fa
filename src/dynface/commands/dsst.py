"""``dynface build-dsst``: build the dynamic starting-step table (DSST, method.md §3) from clean faces.

σ in the table is in pixels at 512 px (``ref_size``); the table is built for a prior working at
``--size`` px with the DifFace linear schedule (β 1e-4→0.02, 1000 steps).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-dsst",
        help="build the DSST table (blur σ → starting step) from a folder of clean faces",
        description=__doc__,
    )
    p.add_argument("--data", required=True, help="folder of clean aligned faces (searched recursively)")
    p.add_argument("--size", type=int, required=True, help="working size N of the prior (faces resized to N×N)")
    p.add_argument("--out", required=True, help="output JSON table")
    p.add_argument("--mode", choices=("analytic", "empirical"), default="analytic")
    p.add_argument("--tol", type=float, default=0.005, help="tolerance on the log radial PSD gap (default 0.005)")
    p.add_argument("--aggregation", choices=("max", "mean"), default="max", help="over radial bins (default max)")
    p.add_argument(
        "--num-images",
        type=int,
        default=256,
        help="at most this many faces, a seeded random subset (default 256; 0 = all)",
    )
    p.add_argument("--seed", type=int, default=0, help="subset and noise seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dynface.diffusion import GaussianDiffusion, ScheduleConfig
    from dynface.dsst import DSSTConfig, build_dsst, select_indices
    from dynface.training.data import list_images, read_faces, unread_note

    try:
        cfg = DSSTConfig(
            tol=args.tol,
            aggregation=args.aggregation,
            mode=args.mode,
            image_size=args.size,
            num_images=args.num_images or None,
            seed=args.seed,
        )
        files = list_images(args.data)
        files = [files[i] for i in select_indices(len(files), cfg.num_images, cfg.seed)]
        arr, bad = read_faces(files, cfg.image_size)
    except (ValueError, OSError) as e:  # a bad flag, a missing folder, an unreadable face (imageio.ImageReadError)
        print(f"dynface build-dsst: error: {e}", file=sys.stderr)
        return 2
    if bad:
        print(f"dynface build-dsst: note: {unread_note(bad, len(files), args.data)}; left out", file=sys.stderr)
    faces = torch.from_numpy(arr)
    sched = ScheduleConfig()
    table = build_dsst(
        faces,
        GaussianDiffusion.from_config(sched).alphas_cumprod,
        cfg,
        schedule=f"{sched.schedule} {sched.beta_start:g}..{sched.beta_end:g}, T={sched.num_timesteps}",
    )
    table.save(args.out)
    shown = [s for s in (1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0) if table.sigmas[0] <= s <= table.sigmas[-1]]
    steps = table.lookup(torch.tensor(shown), as_int=True).tolist()
    print(
        f"DSST ({cfg.mode}, tol {cfg.tol:g}, {cfg.aggregation}) from {len(faces)} faces at {cfg.image_size} px -> {args.out}"
    )
    print("  " + ", ".join(f"σ={s:g}: t={t}" for s, t in zip(shown, steps, strict=True)))
    if table.metadata["saturated_sigmas"]:
        print(f"  warning: no step meets tol for σ ≥ {table.metadata['saturated_sigmas'][0]:g} (t set to T−1)")
    return 0
