"""Experiment: does a *spatial* guidance-scale map beat a constant one at the same mean strength?

Runs ``full`` with the model's own DGSA, ``no_dgsa`` (constant 0.5) and two hand-made maps in DGSA's place,
each scaled to mean 0.5 before clamping to [0, 1]: ``edge`` (strong where the blurred guide has gradients:
contours) and ``invedge`` (the reverse: strong on flat regions). Scores PSNR, IDA, BRISQUE and FD with
``dynface evaluate`` and writes a markdown table.

    python benchmarks/dgsa_oracle_maps.py --pairs runs/cal_w0.5/pairs --out docs/results/dgsa_oracle_maps.md

``--pairs``: a folder written by ``dynface degrade`` (lq/, hq/). Use training faces, not val: this is a
design experiment for DGSA's objective.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
MAPS = ("const", "dgsa", "edge", "invedge")


def edge_strength(guide: torch.Tensor) -> torch.Tensor:
    """Sobel magnitude of the binomially blurred grey guide, divided by its 95th percentile (B,1,H,W)."""
    g = guide.mean(1, keepdim=True)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    g = F.conv2d(F.pad(g, (2, 2, 2, 2), mode="reflect"), ((k[:, None] * k[None]) / 256)[None, None])
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gp = F.pad(g, (1, 1, 1, 1), mode="reflect")
    e = (F.conv2d(gp, sx[None, None]) ** 2 + F.conv2d(gp, sx.T[None, None]) ** 2).sqrt()
    return e / e.flatten(1).quantile(0.95, dim=1).clamp_min(1e-6).reshape(-1, 1, 1, 1)


class HandMap(torch.nn.Module):
    """Stands in for DGSA: ``forward(guide, x0, t)`` → (B,1,H,W) in [0,1] with mean 0.5 before clamping."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, guide: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = edge_strength(guide).clamp(0, 1)
        m = e if self.kind == "edge" else 1 - e
        return (m * 0.5 / m.mean((1, 2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--steps", default="ddim50")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--maps", default=",".join(MAPS))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "dgsa_oracle")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "dgsa_oracle_maps.md")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("dynface_bench_quality", ROOT / "benchmarks" / "quality.py")
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    from dynface.pipeline import DynFaceRestorer

    keys, lq, _, _ = q.load_pairs(args.pairs, None)
    base = DynFaceRestorer.from_pretrained(args.model, steps=args.steps)
    ev_args = argparse.Namespace(face_fallback="none", frechet_method="eigh", lpips_weights=None, fid_weights=None)
    rows = []
    for name in [m.strip() for m in args.maps.split(",") if m.strip()]:
        mode = "no_dgsa" if name == "const" else "full"
        r = base.with_config(mode=mode)
        if name in ("edge", "invedge"):
            r.dgsa = HandMap(name)
        t0 = time.perf_counter()
        q.restore_all(r, mode, keys, lq, base.size, 8, args.seed, args.work / name)
        ev = q.score(args.work / name, args.pairs / "hq", args.work / f"{name}.json", ["psnr", "ida", "brisque", "fd"], ev_args)
        rows.append((name, ev["mean"]["psnr"], ev["mean"]["ida"], ev["mean"]["brisque"], ev["set"]["fd"]["value"],
                     time.perf_counter() - t0))
        print(rows[-1], flush=True)
    cmd = " ".join(["python benchmarks/dgsa_oracle_maps.py", *sys.argv[1:]])
    lines = [f"# Spatial vs constant guidance maps ({time.strftime('%Y-%m-%d')})", "",
             f"`{cmd}`: {len(keys)} faces of `{args.pairs}`, model `{args.model}` at its default ζ, `{args.steps}`, "
             f"seed {args.seed}.", "",
             "| map | PSNR ↑ | IDA ↓ | BRISQUE ↓ | FD ↓ |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {p:.2f} | {i:.4f} | {b:.2f} | {f:.2f} |" for n, p, i, b, f, _ in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
