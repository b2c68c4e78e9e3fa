"""Faces smaller than the model: does restoring make them worse when they were clean, better when they were not?

A face of S px in a photo is restored at the model's size and scaled back to S px when pasted. An archivist's
audit saw one elderly face's age spots and wrinkles softened this way. Here: the first ``--n`` of a seeded random
sample of ``--faces`` (default: UTKFace val of ``../shared/data``), each resized whole to S px (Lanczos) as the
ground truth, given to the restorer as it is (``clean``) and mildly degraded as a scan or a phone would (Gaussian
blur σ 0.8 px, then JPEG quality 50: ``degraded``). The output is scaled back to S px (Lanczos). Columns, medians
over the faces: PSNR of the input and of the output against the ground truth (a clean input is the ground truth
itself), and the high-frequency energy (mean squared Laplacian of the grey image) of the input and of the output
over the ground truth's (below 1: smoother than the ground truth).

    python benchmarks/small_faces.py [--n 16] [--sizes 64,80,100] [--out docs/results/small_faces.md]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "utkface" / "val"


def hf_energy(a) -> float:
    """Mean squared 4-neighbour Laplacian of the grey (channel mean) image."""
    g = a.astype(float).mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float((lap**2).mean())


def scan_like(img):
    """Gaussian blur σ 0.8 px, then JPEG quality 50 (a PIL image in, a uint8 array out)."""
    import numpy as np
    from PIL import Image, ImageFilter

    buf = io.BytesIO()
    img.filter(ImageFilter.GaussianBlur(0.8)).save(buf, "JPEG", quality=50)
    return np.asarray(Image.open(buf).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="a folder of aligned faces")
    ap.add_argument("--n", type=int, default=16, help="how many faces (default: 16)")
    ap.add_argument("--sizes", default="64,80,100", help="face sizes in px, comma-separated (default 64,80,100)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/small_faces.md")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from dynface import DynFaceRestorer
    from dynface.atomicfile import atomic_write_text
    from dynface.metrics.psnr_ssim import psnr
    from dynface.training.data import list_images

    torch.set_num_threads(args.threads)
    files = list_images(args.faces)
    random.Random(1).shuffle(files)
    files = files[: args.n]
    r = DynFaceRestorer.from_pretrained(args.model, precision="fp32")
    rows = []
    t0 = time.perf_counter()
    for size in (int(v) for v in args.sizes.split(",")):
        got: dict[str, list[tuple[float, float, float, float]]] = {"clean": [], "degraded": []}
        for f in files:
            gt_img = Image.open(f).convert("RGB").resize((size, size), Image.LANCZOS)
            gt = np.asarray(gt_img)
            for kind, inp in (("clean", gt), ("degraded", scan_like(gt_img))):
                out = r.restore([inp], seed=0).images[0]
                back = np.asarray(Image.fromarray(out).resize((size, size), Image.LANCZOS))
                got[kind].append((psnr(inp, gt) if kind == "degraded" else float("inf"), psnr(back, gt),
                                  hf_energy(inp) / hf_energy(gt), hf_energy(back) / hf_energy(gt)))
        for kind, v in got.items():
            m = np.median(np.array(v), axis=0)
            rows.append(f"| {size} | {kind} | {'—' if kind == 'clean' else f'{m[0]:.2f}'} | {m[1]:.2f} | {m[2]:.2f} | "
                        f"{m[3]:.2f} |")
        print(f"  {size} px done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    text = "\n".join([
        "# Faces smaller than the model: restored, then scaled back",
        "",
        f"`python benchmarks/small_faces.py --n {args.n} --sizes {args.sizes}` (`{args.model}`, fp32, seed 0): "
        f"{args.n} random UTKFace val faces (seed 1) resized to S px; `clean` as they are, `degraded` blurred "
        "(σ 0.8 px) and JPEG-coded (quality 50). Medians over the faces; HF: mean squared Laplacian over the "
        "ground truth's.",
        "",
        "| S (px) | input | input PSNR | output PSNR | input HF | output HF |",
        "|---|---|---|---|---|---|",
        *rows,
    ]) + "\n"
    atomic_write_text(text, args.out)  # its folder made too
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
