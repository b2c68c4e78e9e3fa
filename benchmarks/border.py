"""What a face cut by the photo's edge gets outside the photo: ``--border constant`` (facexlib's grey, GFPGAN's
choice) or ``reflect`` (the photo mirrored at its edge).

The crop handed to the model covers some area outside the photo; only the part inside is pasted back, but the
model sees the whole crop. An archivist's audit found a colour band along the edge of a face cut by the bottom of
a scan with ``constant`` (the last ~8 px shifted by R −14, B +16 levels) and none with ``reflect``.

Cases: the first ``--n`` of a seeded random sample of ``--faces`` (default: UTKFace val of ``../shared/data``),
each upscaled ×2 (Lanczos) into a photo and cut on one side (left, right, top, bottom) through its face, at
``--cut`` of the photo's side; restored with ``restore_photo`` (``-s 1``) once per border mode. Columns, over the
faces found in both modes: the colour shift along the cut (the mean signed change per channel, output − input, in
the ``--band`` px of the face box next to the edge; the largest channel's absolute value, in levels), median and
90th percentile; and the mean absolute change over the face box (the restoration's whole effect).

    python benchmarks/border.py [--n 24] [--out docs/results/border.md]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "utkface" / "val"
SIDES = ("left", "right", "top", "bottom")


def cut(img, side: str, frac: float):
    """``img`` with ``frac`` of its width (left/right) or height (top/bottom) cut away on ``side``."""
    h, w = img.shape[:2]
    k = round(frac * (w if side in ("left", "right") else h))
    return {"left": img[:, k:], "right": img[:, : w - k], "top": img[k:], "bottom": img[: h - k]}[side]


def edge_shift(photo, inp, bbox, side: str, band: int) -> tuple[float, float]:
    """(largest channel's |mean signed change| in the ``band`` px of the face box along ``side``'s edge, mean |change|
    over the face box), in 8-bit levels."""
    import numpy as np

    h, w = inp.shape[:2]
    x0, y0, x1, y1 = (round(v) for v in bbox)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    d = photo[y0:y1, x0:x1].astype(float) - inp[y0:y1, x0:x1].astype(float)
    strip = {"left": d[:, :band], "right": d[:, -band:], "top": d[:band], "bottom": d[-band:]}[side]
    return float(np.abs(strip.reshape(-1, 3).mean(0)).max()), float(np.abs(d).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="a folder of aligned faces")
    ap.add_argument("--n", type=int, default=24, help="how many faces (default: 24)")
    ap.add_argument("--cut", type=float, default=0.2, help="the share of the photo's side cut away (default 0.2)")
    ap.add_argument("--band", type=int, default=8, help="the band along the edge, px (default 8)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/border.md")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from dynface import DynFaceRestorer
    from dynface.atomicfile import atomic_write_text
    from dynface.faces import FaceDetector
    from dynface.training.data import list_images

    torch.set_num_threads(args.threads)
    files = list_images(args.faces)
    random.Random(0).shuffle(files)
    files = files[: args.n]
    r = DynFaceRestorer.from_pretrained(args.model, precision="fp32")
    rows: dict[str, list[tuple[float, float]]] = {"constant": [], "reflect": []}
    per_side = {s: {"constant": [], "reflect": []} for s in SIDES}
    found = tried = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        face = Image.open(f).convert("RGB")
        big = np.asarray(face.resize((face.width * 2, face.height * 2), Image.LANCZOS))
        for side in SIDES:
            img = np.ascontiguousarray(cut(big, side, args.cut))
            tried += 1
            res = {}
            for border in rows:
                out = r.restore_photo(img, upscale=1, border=border, detector=FaceDetector(), seed=0)
                if len(out.faces) == 1:
                    res[border] = edge_shift(out.photo, img, out.faces[0].bbox, side, args.band)
            if len(res) == 2:
                found += 1
                for border, v in res.items():
                    rows[border].append(v)
                    per_side[side][border].append(v[0])
        print(f"  {i + 1}/{len(files)} faces ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    def q(v, p):
        return float(np.percentile(v, p)) if v else float("nan")

    lines = [
        "# A face cut by the photo's edge: `--border constant` against `reflect`",
        "",
        f"`python benchmarks/border.py --n {args.n} --cut {args.cut:g} --band {args.band}` (`{args.model}`, fp32, "
        f"`-s 1`): {args.n} random UTKFace val faces (seed 0), each upscaled ×2 and cut through the face on one side "
        f"({args.cut:.0%} of the photo's side away), 4 sides: {found} of {tried} cut faces found in both modes.",
        "Edge shift: the largest channel's |mean change| (output − input, 8-bit levels) in the "
        f"{args.band} px of the face box along the cut; face |Δ|: the mean absolute change over the face box.",
        "",
        "| border | edge shift p50 | edge shift p90 | edge shift max | face abs change (mean) |",
        "|---|---|---|---|---|",
    ]
    for border, v in rows.items():
        e = [a for a, _ in v]
        lines.append(f"| `{border}` | {q(e, 50):.2f} | {q(e, 90):.2f} | {max(e, default=float('nan')):.2f} | "
                     f"{np.mean([b for _, b in v]) if v else float('nan'):.2f} |")
    lines += ["", "By side (edge shift p50 / p90, levels):", "", "| side | faces | `constant` | `reflect` |", "|---|---|---|---|"]
    for side, d in per_side.items():
        c, rf = d["constant"], d["reflect"]
        lines.append(f"| {side} | {len(c)} | {q(c, 50):.2f} / {q(c, 90):.2f} | {q(rf, 50):.2f} / {q(rf, 90):.2f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(text, args.out)  # its folder made too
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
