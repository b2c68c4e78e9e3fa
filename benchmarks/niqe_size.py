"""Where NIQE stops ranking sharp faces above blurred ones: mean NIQE of clean faces resized to each side, sharp and
blurred (Gaussian, sigma = 1, 2, 4 px per 128 px of side). ``dynface.metrics.niqe.MEANINGFUL_SIDE`` comes from it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/niqe_size.py --faces ../shared/data/hq_ffhq_aligned/celeba_hq_1024
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dynface.metrics.niqe import niqe

SIDES = (128, 192, 256, 288, 320, 384, 512)
BLURS = (0, 1, 2, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, required=True, help="folder of clean face images (PNG/JPEG)")
    ap.add_argument("--limit", type=int, default=8, help="how many faces (sorted by name; default 8)")
    args = ap.parse_args()
    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    if not files:
        raise SystemExit(f"no PNG/JPEG faces in {args.faces}")
    print(f"mean NIQE of {len(files)} faces; columns: sharp, then Gaussian blur sigma = " + ", ".join(f"{b} px" for b in BLURS[1:])
          + " per 128 px of side")
    print("| side | " + " | ".join("sharp" if b == 0 else f"blur {b}" for b in BLURS) + " | sharp best |")
    print("|---" * (len(BLURS) + 2) + "|")
    for side in SIDES:
        row = []
        for b in BLURS:
            vals = []
            for f in files:
                im = Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC)
                if b:
                    im = im.filter(ImageFilter.GaussianBlur(b * side / 128))
                vals.append(niqe(np.asarray(im)))
            row.append(float(np.mean(vals)))
        print(f"| {side} | " + " | ".join(f"{v:.2f}" for v in row) + f" | {'yes' if row[0] < min(row[1:]) else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
