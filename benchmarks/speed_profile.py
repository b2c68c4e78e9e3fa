"""Where does ``full`` spend its time? A breakdown for one model on the CPU (or any device).

    python benchmarks/speed_profile.py [--model embedded-64] [--threads 2] [--steps ddim50] [--precision fp32,bf16]

On one batch of degraded faces (``--hq DIR``: a seeded random ``--batch`` of it, ``gfpgan`` preset; default:
the astronaut faces of ``benchmarks/quality.py --quick``), per precision:

* components, each the median of ``--reps`` timed calls on the batch: DBLM forward; UNet forward without
  grad (what ``fixed_start``/``guidance=x0`` need per step); UNet forward with grad + backward to x_t (what
  ``guidance=unet``, the paper's ∂/∂x_t, needs per step); the DGSA map;
* end to end: ``full`` with ``guidance`` = ``unet`` (default), ``x0`` and ``none`` at the same steps and seeds,
  and ``full`` at other step counts: s/face and NFE/face from the pipeline's records.

All rows of one run share the machine state; compare ratios within a run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def profile(r, prec: str, y: torch.Tensor, lq: list, args) -> tuple[dict, dict]:
    """(component times per batch, end-to-end rows) for one precision."""
    from dynface.sampler import _autocast

    dev, b = r.device, y.shape[0]
    t_mid = torch.full((b,), 500, device=dev)
    xt = torch.randn_like(y)

    def unet_fwd():
        with torch.no_grad(), _autocast(dev, prec):
            r.unet(xt, t_mid)

    def unet_fwd_bwd():
        xa = xt.clone().requires_grad_(True)
        with torch.enable_grad():
            with _autocast(dev, prec):
                out = r.unet(xa, t_mid)
            torch.autograd.grad(out.float().square().sum(), xa)

    def dblm():
        with torch.no_grad():
            r.dblm(y)

    with torch.no_grad():
        guide = r.dblm(y).guides[:, 0]

    def dgsa():
        with torch.no_grad():
            r.dgsa(guide, y, t_mid)

    comp = {"dblm": _median_time(dblm, args.reps), "unet_fwd": _median_time(unet_fwd, args.reps),
            "unet_fwd_bwd": _median_time(unet_fwd_bwd, args.reps)}
    if r.dgsa is not None:
        comp["dgsa"] = _median_time(dgsa, args.reps)
    e2e = {}
    variants = [("full (guidance unet)", {}), ("full (guidance x0)", {"guidance": "x0"}), ("full (guidance none)", {"guidance": "none"})]
    variants += [(f"full {st}", {"steps": st}) for st in args.other_steps.split(",") if st]
    for label, kw in variants:
        rr = r.with_config(**kw)
        rr.restore(lq[:1], seed=0)  # warm-up
        t0 = time.perf_counter()
        out = rr.restore(lq, seed=0)
        wall = time.perf_counter() - t0
        e2e[label] = {"s_face": wall / b, "nfe": float(np.mean([rec["nfe"] for rec in out.records])),
                      "start": float(np.mean([rec["start_step"] for rec in out.records]))}
        print(f"  {prec} {label}: {e2e[label]}", flush=True)
    return comp, e2e


def main(argv: list[str] | None = None) -> int:
    import quality as Q

    from dynface.degrade import degrade
    from dynface.pipeline import DynFaceRestorer
    ap = argparse.ArgumentParser(prog="benchmarks/speed_profile.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--hq", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", default="ddim50")
    ap.add_argument("--other-steps", default="ddim25,ddim100")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = DynFaceRestorer.from_pretrained(args.model, device=args.device, steps=args.steps, precision="fp32", color_fix="none")
    s = base.size
    if args.hq:
        import random

        from dynface.training.data import list_images, load_square

        files = list_images(args.hq)
        random.Random(0).shuffle(files)
        hq = np.stack([load_square(f, s) for f in files[: args.batch]])
    else:
        faces = Q.quick_faces(s)
        hq = np.stack([faces[k] for k in sorted(faces)] * (args.batch // len(faces) + 1))[: args.batch]
    x = torch.from_numpy(hq).permute(0, 3, 1, 2).float() / 255
    y01, _ = degrade(x, "gfpgan", 0)
    lq = list((y01.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    y = base._prepare(lq)
    print(f"model {args.model}, batch {args.batch} at {s} px, {args.threads} threads, steps {args.steps}, device {base.device}; "
          f"torch {torch.__version__}", flush=True)

    rows = [(prec, *profile(base.with_config(precision=prec), prec, y, lq, args))
            for prec in [p.strip() for p in args.precision.split(",") if p.strip()]]

    print()
    for prec, comp, e2e in rows:
        per = {k: v / args.batch for k, v in comp.items()}
        print(f"### {prec}\n")
        print(f"| component (per face, batch {args.batch}) | ms |")
        print("|---|---|")
        for k, v in per.items():
            print(f"| {k} | {v * 1000:.1f} |")
        print(f"| backward share of one guided step: (fwd_bwd − fwd) / fwd_bwd | {(1 - comp['unet_fwd'] / comp['unet_fwd_bwd']) * 100:.0f} % |")
        print()
        print("| end to end | s/face | NFE/face | mean start | s per NFE | est. UNet share |")
        print("|---|---|---|---|---|---|")
        for label, v in e2e.items():
            unet_cost = per["unet_fwd"] if "x0" in label or "none" in label else per["unet_fwd_bwd"]
            share = v["nfe"] * unet_cost / v["s_face"] if v["s_face"] else float("nan")
            print(f"| {label} | {v['s_face']:.3f} | {v['nfe']:.1f} | {v['start']:.0f} | {v['s_face'] / max(v['nfe'], 1):.4f} | {share * 100:.0f} % |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
