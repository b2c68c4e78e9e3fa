"""Colour benchmark: ΔE of restorations against ground truth, with each low-frequency colour fix, and the
mean colour of prior samples against the data's.

    python benchmarks/colour.py restore --hq ../shared/data/utkface/val --limit 100 --steps ddim50 [--modes full]
    python benchmarks/colour.py prior --data ../shared/data/utkface/val -n 256 --steps 100

``restore``: a seeded random ``--limit`` of ``--hq`` is degraded with ``dynface degrade``'s own code
(``--preset``, ``--seed``, ``--size`` = the model's) into the work folder. Each mode is sampled ONCE with
``color_fix="none"``; the raw sampler output (before the [0,1] clamp) and ``RM(y)`` are captured at the
pipeline's own colour-fix call, and every fix variant is then applied exactly as the pipeline applies it
(fix → (x+1)/2 → clamp → uint8). A check restores the first batch with the pipeline's ``color_fix`` set
and asserts that it equals the captured path. Each variant's folder is scored by ``dynface evaluate``'s
code (PSNR, SSIM, IDA, FD) and by ΔE here:

* ΔE76 / ΔE2000: CIE76 and CIEDE2000 colour differences (skimage, D65, sRGB) per pixel between the
  restored face and the ground truth, averaged over pixels, then over faces;
* ΔE76 of the means: between the mean CIELAB colour of each restored face and that of its ground truth
  (a whole-face colour cast), averaged over faces.

``prior``: ``-n`` unconditional samples exactly as ``dynface sample`` draws them (DDIM η=0, ``--steps``,
batches of 16 seeded ``seed + i``), against the faces of ``--data`` at the model size: the ΔE76/ΔE2000
between the two sets' mean CIELAB colours, each set's mean chroma, and the spread of per-face mean
colours.

Writes JSON (``--out``); the markdown in docs/results/colour.md is written from these numbers by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _lab(imgs: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) sRGB → CIELAB (D65) float64."""
    from skimage.color import rgb2lab

    return rgb2lab(imgs.astype(np.float64) / 255.0)


def delta_e(restored: np.ndarray, gt: np.ndarray) -> dict:
    """Per-face colour differences of one pair of uint8 (H, W, 3) images."""
    from skimage.color import deltaE_cie76, deltaE_ciede2000

    a, b = _lab(restored), _lab(gt)
    return {
        "de76": float(deltaE_cie76(a, b).mean()),
        "de2000": float(deltaE_ciede2000(a, b).mean()),
        "de76_mean_colour": float(np.linalg.norm(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0))),
        "dL_mean": float(a[..., 0].mean() - b[..., 0].mean()),
    }


VARIANTS = {  # name → (method, wavelet levels)
    "none": ("none", None),
    "wavelet": ("wavelet", 5),  # StableSR/DiffBIR: 5 levels (σ_eff ≈ 13 px whatever the resolution)
    "wavelet_l2": ("wavelet", 2),  # the same band as a fraction of the face as 5 levels at 512 px (64 = 512/8 → 5−3)
    "adain": ("adain", None),
}


def _apply(raw: torch.Tensor, ref: torch.Tensor, variant: str) -> list[np.ndarray]:
    from dynface.colorfix import adain_fix, wavelet_fix
    from dynface.pipeline import _to_uint8

    method, levels = VARIANTS[variant]
    if method == "none":
        x = raw
    elif method == "wavelet":
        x = wavelet_fix(raw, ref.to(raw.dtype), levels)
    else:
        x = adain_fix(raw, ref.to(raw.dtype))
    return _to_uint8(((x + 1) / 2).clamp(0, 1))


def _score(restored: Path, hq: Path, out: Path, metrics: str) -> dict:
    """``dynface evaluate`` on one folder, as benchmarks/quality.py runs it (its defaults; faces dlib cannot find
    are left out and counted; a metric with no valid face reads NaN)."""
    import quality as Q

    opts = argparse.Namespace(face_fallback="none", frechet_method="eigh", lpips_weights=None, fid_weights=None)
    return Q.score(restored, hq, out, metrics.split(","), opts)


def run_restore(args) -> int:
    import quality as Q
    from PIL import Image

    import dynface.pipeline as pl

    torch.set_num_threads(args.threads)
    restorer = pl.DynFaceRestorer.from_pretrained(args.model, steps=args.steps, precision=args.precision, color_fix="none",
                                                  dblm=args.dblm)
    size = restorer.size
    work = Path(args.work or tempfile.mkdtemp(prefix="dynface-colour-"))
    pairs = work / "pairs"
    if not (pairs / "manifest.json").exists():
        src = Q.random_subset(args.hq.resolve(), work / "subset_hq", args.limit, args.seed)
        Q.make_pairs(src, pairs, args.preset, args.seed, size, args.limit)
    keys, lq, hq, _ = Q.load_pairs(pairs, args.limit)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_fix = pl.apply_color_fix

    def capture(content, reference, method):
        captured.append((content.detach().clone(), reference.detach().clone()))
        return real_fix(content, reference, method)

    results: dict = {"keys": keys, "rows": []}
    t_all = time.time()
    for mode in ["bicubic", "restorer_only", *modes]:
        if mode in ("bicubic", "restorer_only"):
            outs = {"none": [lq[k] for k in keys]} if mode == "bicubic" else {
                "none": [img for i in range(0, len(keys), args.batch)
                         for img in restorer.with_config(mode="restorer_only").restore([lq[k] for k in keys[i:i + args.batch]]).images]}
            secs, sampling = 0.0, {}
        else:
            r = restorer.with_config(mode=mode)
            captured.clear()
            recs: list[dict] = []
            pl.apply_color_fix = capture
            t0 = time.time()
            try:
                for i in range(0, len(keys), args.batch):
                    recs += r.restore([lq[k] for k in keys[i:i + args.batch]], seed=args.seed + i).records
                    print(f"  {mode}: {min(i + args.batch, len(keys))}/{len(keys)} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            finally:
                pl.apply_color_fix = real_fix
            secs = (time.time() - t0) / len(keys)
            starts = np.array([rec["start_step"] for rec in recs])
            sampling = {"nfe": float(np.mean([rec["nfe"] for rec in recs])), "start_at_0": float((starts == 0).mean()),
                        "start_median": float(np.median(starts)), "start_mean": float(starts.mean())}
            outs = {v: [img for raw, ref in captured for img in _apply(raw, ref, v)] for v in variants}
            # the captured path is the pipeline's: restore the first batch with the pipeline's own colour fix
            v = "wavelet" if "wavelet" in variants else variants[0]
            chk = r.with_config(color_fix=VARIANTS[v][0]).restore([lq[k] for k in keys[:args.batch]], seed=args.seed).images
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(chk, outs[v][:args.batch], strict=True))
            assert diff <= 1, f"{mode}/{v}: pipeline and captured path differ by {diff} grey levels"
        for v, imgs in outs.items():
            d = work / "restored" / f"{mode}__{v}"
            d.mkdir(parents=True, exist_ok=True)
            for k, img in zip(keys, imgs, strict=True):
                Image.fromarray(img).save(d / f"{k}.png")
            ev = _score(d, pairs / "hq", work / "eval" / f"{mode}__{v}.json", args.metrics)
            de = [delta_e(img, hq[k]) for k, img in zip(keys, imgs, strict=True)]
            row = {"mode": mode, "color_fix": v, "n": len(keys), "s_per_face_sampling": secs, **sampling,
                   **{m: ev["mean"].get(m) for m in args.metrics.split(",")},
                   **{f"valid_{m}": ev["counts"]["valid"].get(m) for m in ("ida",)},
                   **{f: float(np.mean([x[f] for x in de])) for f in de[0]}}
            results["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    results.update(command="python benchmarks/colour.py " + " ".join(sys.argv[1:]), seconds=time.time() - t_all,
                   model=args.model, dblm=str(args.dblm) if args.dblm else None, steps=args.steps, precision=args.precision, preset=args.preset, seed=args.seed,
                   limit=args.limit, threads=args.threads, work=str(work))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    fmt = {"psnr": "PSNR {:.2f}", "ssim": "SSIM {:.4f}", "ida": "IDA {:.4f}", "fd": "FD {:.2f}"}
    for row in results["rows"]:  # the --metrics asked for (a metric with no valid face is NaN)
        scores = " ".join(fmt.get(m, m + " {:.4g}").format(row[m]) for m in args.metrics.split(","))
        print(f"{row['mode']:14s} {row['color_fix']:11s} {scores} "
              f"dE76 {row['de76']:.2f} dE2000 {row['de2000']:.2f} dE76(mean col) {row['de76_mean_colour']:.2f}")
    return 0


def run_prior(args) -> int:
    from dynface.commands.sample import draw
    from dynface.training.data import list_images, load_square

    torch.set_num_threads(args.threads)
    t0 = time.time()
    x = draw(args.model, args.num, args.steps, args.seed, args.batch)  # exactly as `dynface sample`
    size = x.shape[-1]
    samples = (((x + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    secs = time.time() - t0
    data = np.stack([load_square(f, size) for f in list_images(args.data)])

    def stats(imgs: np.ndarray) -> dict:
        lab = _lab(imgs).reshape(len(imgs), -1, 3).mean(axis=1)  # per-face mean Lab
        m = lab.mean(0)
        return {"n": len(imgs), "mean_lab": m.tolist(), "mean_rgb": imgs.reshape(-1, 3).mean(0).tolist(),
                "per_face_mean_lab_std": lab.std(0).tolist(), "mean_chroma": float(np.hypot(lab[:, 1], lab[:, 2]).mean()),
                "per_face": lab}

    s, d = stats(samples), stats(data)
    from skimage.color import deltaE_cie76, deltaE_ciede2000

    ms, md = np.array(s["mean_lab"]), np.array(d["mean_lab"])
    # per sample: distance of its mean colour to the data's mean colour, vs the same for real faces
    dist_s = deltaE_cie76(s["per_face"], md[None])
    dist_d = deltaE_cie76(d["per_face"], md[None])
    thr = float(np.percentile(dist_d, 95))
    out = {
        "command": "python benchmarks/colour.py " + " ".join(sys.argv[1:]),
        "model": args.model, "steps": args.steps, "seed": args.seed, "seconds_sampling": secs,
        "samples": {k: v for k, v in s.items() if k != "per_face"},
        "data": {k: v for k, v in d.items() if k != "per_face"} | {"folder": str(args.data)},
        "de76_of_set_means": float(deltaE_cie76(ms, md)),
        "de2000_of_set_means": float(deltaE_ciede2000(ms, md)),
        "per_face_de76_to_data_mean": {"samples_mean": float(dist_s.mean()), "data_mean": float(dist_d.mean()),
                                       "data_p95": thr, "samples_beyond_data_p95": float((dist_s > thr).mean())},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("samples", "data")}, indent=1))
    print("samples", out["samples"]["mean_lab"], "chroma", out["samples"]["mean_chroma"])
    print("data   ", out["data"]["mean_lab"], "chroma", out["data"]["mean_chroma"])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/colour.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restore")
    r.add_argument("--hq", type=Path, required=True)
    r.add_argument("--limit", type=int, default=100)
    r.add_argument("--preset", default="gfpgan")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--model", default="embedded-64")
    r.add_argument("--dblm", type=Path, default=None, help="DBLM weights in place of the model's")
    r.add_argument("--steps", default="ddim50")
    r.add_argument("--precision", default="fp32")
    r.add_argument("--modes", default="full")
    r.add_argument("--variants", default=",".join(VARIANTS))
    r.add_argument("--metrics", default="psnr,ssim,ida,fd")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--work", type=Path, default=None)
    r.add_argument("--out", type=Path, default=Path("runs/colour/restore.json"))
    p = sub.add_parser("prior")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", default="embedded-64")
    p.add_argument("-n", "--num", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/colour/prior.json"))
    args = ap.parse_args(argv)
    return run_restore(args) if args.cmd == "restore" else run_prior(args)


if __name__ == "__main__":
    sys.exit(main())
