"""Where the first UNet call of a face lies relative to its start step: DifFace's convention, improved-diffusion's,
and ``auto`` (the default), at several step counts.

DifFace noises the input to its start step t0 and calls the UNet first at the next grid step below t0
(``start_convention="difface"``); on its own ``ddim250`` grid that is 4 steps below. On a coarse grid the gap is a
whole stride (``--steps 10``: up to 100 steps), and the UNet is asked to denoise more noise than it is told about:
the face keeps grain. ``iddpm`` calls the UNet at t0 itself (one more network evaluation); ``auto`` takes DifFace's
convention unless the first call would lie more than ``dynface.sampler.AUTO_MAX_GAP`` steps below t0.

Faces: the first ``--n`` of a seeded random sample of ``--faces`` (default: UTKFace val of ``../shared/data``),
resized whole to the model's size, degraded with the ``gfpgan`` preset (seed 0). Columns: PSNR and SSIM against
the ground truth, the median ratio of the output's high-frequency energy (mean squared Laplacian of the gray image)
to the ground truth's (grain shows as a ratio far above the restorer's), NFE and s/face.

    python benchmarks/start_convention.py [--n 32] [--steps ddim10,ddim25,ddim50] [--out docs/results/start_convention.md]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "utkface" / "val"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="a folder of aligned ground-truth faces")
    ap.add_argument("--n", type=int, default=32, help="how many faces (default: 32)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--steps", default="ddim10,ddim25,ddim50", help="comma-separated step settings")
    ap.add_argument("--conventions", default="difface,iddpm,auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench/start_convention.md")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image
    from scipy.ndimage import laplace
    from skimage.metrics import structural_similarity

    from dynface.degrade import degrade
    from dynface.imageio import IMAGE_EXTS
    from dynface.pipeline import DynFaceRestorer

    folder = Path(args.faces)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS) if folder.is_dir() else []
    if len(files) < args.n:
        print(f"start_convention.py: {folder} has {len(files)} image(s), {args.n} needed (--faces, --n)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    random.seed(1)
    files = random.sample(files, args.n)
    base = DynFaceRestorer.from_pretrained(args.model, precision="fp32")
    size = base.size
    hq = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.LANCZOS)) for f in files])
    x = torch.from_numpy(hq).permute(0, 3, 1, 2).float() / 255
    lq = (degrade(x, "gfpgan", 0)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def hf(a) -> float:
        return float((laplace(a.astype(np.float64).mean(-1)) ** 2).mean())

    rows = [("restorer_only", "-", "-")] + [("full", s, c) for s in args.steps.split(",") for c in args.conventions.split(",")]
    lines = ["| mode | steps | start convention | PSNR | SSIM | HF ratio (median) | NFE/face | s/face |", "|---|---|---|---|---|---|---|---|"]
    for mode, steps, conv in rows:
        r = base.with_config(mode=mode) if mode == "restorer_only" else base.with_config(mode=mode, steps=steps,
                                                                                       start_convention=conv)
        t0, outs, nfe = time.perf_counter(), [], []
        for i in range(0, len(lq), 8):
            res = r.restore(list(lq[i : i + 8]), seed=i)
            outs += list(res.images)
            nfe += [rec["nfe"] for rec in res.records]
        secs = (time.perf_counter() - t0) / len(lq)
        psnr = np.mean([10 * np.log10(255**2 / np.mean((o.astype(float) - h) ** 2)) for o, h in zip(outs, hq, strict=True)])
        ssim = np.mean([structural_similarity(o, h, channel_axis=-1) for o, h in zip(outs, hq, strict=True)])
        ratio = np.median([hf(o) / hf(h) for o, h in zip(outs, hq, strict=True)])
        lines.append(f"| {mode} | {steps} | {conv} | {psnr:.3f} | {ssim:.4f} | {ratio:.3f} | {np.mean(nfe):.2f} | {secs:.2f} |")
        print(lines[-1], flush=True)
    head = [f"# Start convention ({time.strftime('%Y-%m-%d')})", "",
            f"`python benchmarks/start_convention.py --n {args.n} --steps {args.steps} --conventions {args.conventions}"
            f" --model {args.model} --threads {args.threads}`: {args.n} random faces of `{folder.name}` at {size} px, "
            "`gfpgan` preset (seed 0), fp32. HF ratio: the output's mean squared Laplacian over the ground truth's "
            "(median over faces).", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
