"""Calibrate the analytic DSST against method.md §3.3.

Builds the analytic table (tol 0.005, ``max`` aggregation, DifFace linear schedule 1e-4→0.02 over 1000
steps, 512 px, σ in 512-px units) from the clean faces of a folder (all sub-folders, centre-cropped and
resized to 512), prints our t_σ beside method.md's calibration row and exits 1 if any σ in 2…10 differs
by more than ``--max-diff`` steps (2 when the folder is missing or empty).

    .venv/bin/python benchmarks/dsst_calibration.py [--data ../shared/data/hq_ffhq_aligned]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dynface.diffusion import GaussianDiffusion, ScheduleConfig
from dynface.dsst import METHOD_CALIBRATION, DSSTConfig, build_dsst
from dynface.training.data import list_images, load_square

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/hq_ffhq_aligned"
CHECKED = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of clean aligned faces")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--max-diff", type=int, default=25, help="allowed |ours − method.md| for σ in 2…10")
    args = p.parse_args(argv)
    try:
        files = list_images(args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    faces = torch.from_numpy(np.stack([load_square(f, args.size) for f in files]).transpose(0, 3, 1, 2).copy())
    cfg = DSSTConfig(tol=0.005, aggregation="max", mode="analytic", image_size=args.size, num_images=None)
    ac = GaussianDiffusion.from_config(ScheduleConfig()).alphas_cumprod
    table = build_dsst(faces, ac, cfg, schedule="linear 1e-4..0.02, T=1000")
    elapsed = time.perf_counter() - t0

    sigmas = list(METHOD_CALIBRATION)
    ours = table.lookup(torch.tensor(sigmas), as_int=True).tolist()
    print(f"{len(files)} faces from {args.data} at {args.size} px, analytic, tol 0.005, max ({elapsed:.1f} s)")
    print(f"{'sigma':>8}" + "".join(f"{s:>6g}" for s in sigmas))
    print(f"{'ours':>8}" + "".join(f"{t:>6d}" for t in ours))
    print(f"{'method':>8}" + "".join(f"{METHOD_CALIBRATION[s]:>6d}" for s in sigmas))
    diffs = {s: t - METHOD_CALIBRATION[s] for s, t in zip(sigmas, ours, strict=True)}
    print(f"{'diff':>8}" + "".join(f"{d:>+6d}" for d in diffs.values()))
    bad = {s: d for s, d in diffs.items() if s in CHECKED and abs(d) > args.max_diff}
    if bad:
        print(f"FAIL: |diff| > {args.max_diff} at sigma {sorted(bad)}", file=sys.stderr)
        return 1
    print(f"OK: |diff| <= {args.max_diff} for sigma 2..10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
