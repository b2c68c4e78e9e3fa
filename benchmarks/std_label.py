"""Where do DSST start steps come from? std* predictions and the std* labels on a paired set.

    python benchmarks/std_label.py --hq ../shared/data/utkface/val --preset gfpgan --seed 0 [--dblm PATH]

The faces of ``--hq`` are degraded with ``dynface degrade``'s code (``--preset``, ``--seed``, the model's
size) into ``--work``. For every face: ``std* = SDE(TM(y))`` of the model's DBLM (or ``--dblm``) and its DSST
start step (exactly as the pipeline computes it), ``PSNR(RM(y), x0)``, and the training labels of
:mod:`dynface.training.dblm` computed with the same frozen RM against the ground truth: ``psnr`` at the
shipped threshold, and ``masked`` at several ``mask_db``. Prints distributions (share at t = 0, quantiles,
share in the paper's [690, 925]) and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def dist(v: np.ndarray, is_step: bool) -> dict:
    q = np.percentile(v, [10, 25, 50, 75, 90]).round(2).tolist()
    out = {"n": int(v.size), "mean": round(float(v.mean()), 3), "p10_25_50_75_90": q}
    if is_step:
        out.update(at_0=round(float((v == 0).mean()), 3), below_300=round(float((v < 300).mean()), 3),
                   in_690_925=round(float(((v >= 690) & (v <= 925)).mean()), 3), max=int(v.max()))
    else:
        out.update(at_min=round(float((v <= v.min() + 1e-9).mean()), 3), min=round(float(v.min()), 3))
    return out


def main(argv: list[str] | None = None) -> int:
    import quality as Q

    from dynface.metrics.psnr_ssim import psnr
    from dynface.pipeline import DynFaceRestorer
    from dynface.training.dblm import DBLMTrainConfig, make_labeler

    ap = argparse.ArgumentParser(prog="benchmarks/std_label.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--preset", default="gfpgan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="a seeded random K of --hq (default: all)")
    ap.add_argument("--model", default="embedded-64")
    ap.add_argument("--dblm", type=Path, default=None, help="DBLM weights in place of the model's")
    ap.add_argument("--mask-db", default="10,15,20,25", help="mask_db values of the 'masked' label")
    ap.add_argument("--psnr-threshold", default="24", help="psnr_threshold values of the 'psnr' label (the first is the shipped one)")
    ap.add_argument("--work", type=Path, default=Path("runs/std_label"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    r = DynFaceRestorer.from_pretrained(args.model, mode="restorer_only", precision="fp32", dblm=args.dblm)
    size = r.size
    pairs = args.work / f"pairs_{args.preset}_{args.seed}_{args.limit or 'all'}"
    if not (pairs / "manifest.json").exists():
        src = args.hq.resolve()
        if args.limit:
            src = Q.random_subset(src, args.work / f"subset_{args.limit}", args.limit, args.seed)
        Q.make_pairs(src, pairs, args.preset, args.seed, size, None)
    keys, lq, hq, _ = Q.load_pairs(pairs, None)
    to_t = lambda d: torch.from_numpy(np.stack([d[k] for k in keys])).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    y, x0 = to_t(lq), to_t(hq)

    std, starts, restored = [], [], []
    with torch.no_grad():
        for i in range(0, len(keys), 64):
            d = r.dblm(y[i:i + 64])
            std.append(d.std)
            starts.append(r.start_steps(d.sigmas)[:, 0])
            restored.append(d.restored)
    std, starts, restored = torch.cat(std), torch.cat(starts), torch.cat(restored)
    u8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    rm_u8, x_u8 = u8(restored), u8(x0)
    p_rm = np.array([psnr(a, b) for a, b in zip(rm_u8, x_u8, strict=True)])
    p_lq = np.array([psnr(a, b) for a, b in zip(u8(y), x_u8, strict=True)])

    dcfg = r.dblm.cfg
    tcfg = DBLMTrainConfig()
    grid = torch.arange(tcfg.label_grid[0], tcfg.label_grid[1] + 1e-9, tcfg.label_grid[2])
    res: dict = {
        "command": "python benchmarks/std_label.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": len(keys), "preset": args.preset, "seed": args.seed, "model": args.model,
        "dblm": str(args.dblm) if args.dblm else "model's",
        "predicted": {"std_star": dist(std.numpy(), False), "start_step": dist(starts.numpy(), True)},
        "psnr_rm": dist(p_rm, False), "psnr_lq": dist(p_lq, False),
        "rm_psnr_ge_threshold": {t: round(float((p_rm >= float(t)).mean()), 3) for t in args.psnr_threshold.split(",")},
        "labels": {},
    }
    variants = [("psnr", float(t)) for t in args.psnr_threshold.split(",")] + [("masked", float(m)) for m in args.mask_db.split(",") if m]
    for kind, val in variants:
        cfg = DBLMTrainConfig(label=kind, psnr_threshold=val if kind == "psnr" else tcfg.psnr_threshold,
                              mask_db=val if kind == "masked" else tcfg.mask_db)
        lab = torch.cat([make_labeler(cfg, dcfg, grid)(restored[i:i + 128], x0[i:i + 128]) for i in range(0, len(keys), 128)])
        sig = r.dblm.guide_sigmas(lab.float())
        st = r.start_steps(sig)[:, 0]
        name = f"{kind}@{val:g}"
        res["labels"][name] = {"label": dist(lab.numpy(), False), "start_step": dist(st.cpu().numpy(), True),
                               "mae_vs_predicted_std": round(float((lab - std).abs().mean()), 3),
                               "corr_vs_predicted_std": round(float(np.corrcoef(lab.numpy(), std.numpy())[0, 1]), 3)}
    out = args.out or (args.work / f"std_label_{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
