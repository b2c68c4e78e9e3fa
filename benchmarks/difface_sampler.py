"""DifFace's sampler conventions vs improved-diffusion's, on a degraded val subset (issue 12 part 2).

Restores one folder of LQ faces with every requested (mode, steps, start_convention, eps_source) variant,
the same per-face seeds in every variant, then scores each with ``dynface evaluate`` (PSNR, FD) against HQ.
Prints a markdown table with the difference of each variant from the first one of its mode/steps.

    dynface degrade -i ../shared/data/utkface/val -o WORK/data --preset gfpgan --size 64 --limit 48 --seed 0
    python benchmarks/difface_sampler.py --lq WORK/data/lq --hq WORK/data/hq --work WORK \\
        --runs fixed_start:ddim250 full:ddim50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VARIANTS = (("difface", "model"), ("iddpm", "clipped_x0"), ("iddpm", "model"), ("difface", "clipped_x0"))


def restore_folder(restorer, mode: str, steps: str, conv: str, eps: str, lq: list[Path], out: Path, batch: int) -> dict:
    """Restore ``lq`` into ``out`` with one variant of ``restorer`` (a loaded DynFaceRestorer, networks shared)."""
    r = restorer.with_config(mode=mode, steps=steps, start_convention=conv, eps_source=eps)
    out.mkdir(parents=True, exist_ok=True)
    nfe, t0 = [], time.perf_counter()
    for i in range(0, len(lq), batch):
        chunk = lq[i:i + batch]
        faces = [np.asarray(Image.open(p).convert("RGB")) for p in chunk]
        res = r.restore(faces, seeds=list(range(i, i + len(chunk))))
        for p, img, rec in zip(chunk, res.images, res.records, strict=True):
            Image.fromarray(img).save(out / (p.stem + ".png"))
            nfe.append(rec["nfe"])
    return {"nfe": float(np.mean(nfe)), "s_face": (time.perf_counter() - t0) / len(lq)}


def evaluate(restored: Path, hq: Path, out_json: Path) -> dict:
    cmd = [sys.executable, "-m", "dynface.cli", "evaluate", "--restored", str(restored), "--hq", str(hq),
           "--metrics", "psnr,fd", "--out", str(out_json), "-q"]
    subprocess.run(cmd, check=True)
    data = json.loads(out_json.read_text())
    means = data.get("mean") or data.get("means") or data.get("summary") or data
    return {k: float(means[k]) for k in ("psnr", "fd") if k in means}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lq", required=True)
    ap.add_argument("--hq", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--runs", nargs="+", default=["fixed_start:ddim250"], help="MODE:STEPS[:all] (all = the 4 variants)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lq = sorted(p for p in Path(args.lq).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    from dynface.pipeline import DynFaceRestorer

    restorer = DynFaceRestorer.from_pretrained(args.model, precision="fp32")  # loaded once; each variant a with_config
    work = Path(args.work)
    print(f"{len(lq)} faces from {args.lq}; model {args.model}; PSNR (RGB, dB) and FD-MobileNetV2 by `dynface evaluate`\n")
    print("| mode | steps | start_convention | eps_source | NFE/face | PSNR ↑ | Δ PSNR | FD ↓ | Δ FD | s/face |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        mode, steps, *rest = run.split(":")
        variants = VARIANTS if rest == ["all"] else VARIANTS[:2]
        base = None
        for conv, eps in variants:
            name = f"{mode}_{steps}_{conv}_{eps}"
            info = restore_folder(restorer, mode, steps, conv, eps, lq, work / name, args.batch)
            m = evaluate(work / name, Path(args.hq), work / f"{name}.json")
            base = base or m
            print(f"| {mode} | {steps} | {conv} | {eps} | {info['nfe']:.1f} | {m['psnr']:.3f} | {m['psnr'] - base['psnr']:+.3f} "
                  f"| {m['fd']:.2f} | {m['fd'] - base['fd']:+.2f} | {info['s_face']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
