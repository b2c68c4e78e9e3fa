"""Derive the ``utkface64`` 5-point face template from the embedded prior's training crops.

The embedded 64-px prior is trained on UTKFace "aligned & cropped" 200×200 faces resized whole to 64×64
(``dynface.training.data.load_square``). To restore a face from a whole photo, it must be cropped with the same
geometry, so the template is measured on those crops with the very detector used at restore time:

1. each crop is padded by ``--pad`` (25 %) with edge replication, so the face is not touched by the border;
2. ``dynface.faces.FaceDetector`` (dlib HOG, no upsampling, weak detections confirmed by the CNN detector,
   68 points → FFHQ/facexlib 5 points) runs on it;
   the detection nearest the centre is kept and the padding subtracted;
3. robust average: per coordinate, the median and MAD (scaled by 1.4826) over all detections; detections with
   any coordinate more than ``--outlier-k`` (4) robust standard deviations from the median are dropped; the
   rest are averaged;
4. the mean is mapped from 200 px to 64 px keeping pixel centres: ``p64 = (p200 + 0.5)·64/200 − 0.5``.

The result is merged into ``src/dynface/data/templates.json`` (key ``utkface64``) with the counts, the spread
and this recipe. Usage::

    .venv/bin/python benchmarks/derive_template.py --data ../shared/data/utkface/train [--limit N] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dynface.atomicfile import atomic_write_text  # noqa: E402
from dynface.faces import FFHQ_TEMPLATE_512, FaceDetector  # noqa: E402
from dynface.imageio import ImageReadError, read_image  # noqa: E402

NAMES = ["left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="folder of UTKFace 200x200 training crops")
    p.add_argument("--limit", type=int, default=0, help="random sample of N crops (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pad", type=float, default=0.25, help="padding added around each crop, fraction of its side")
    p.add_argument("--outlier-k", type=float, default=4.0)
    p.add_argument("--target", type=int, default=64, help="template size (the prior's resolution)")
    p.add_argument("--name", default="utkface64")
    p.add_argument("--out", type=Path, default=ROOT / "src" / "dynface" / "data" / "templates.json")
    args = p.parse_args(argv)

    files = sorted(f for f in args.data.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit and args.limit < len(files):
        files = sorted(random.Random(args.seed).sample(files, args.limit))
    det = FaceDetector(upsample=0)
    pts, sizes, missed, t0 = [], set(), 0, time.time()
    for i, f in enumerate(files):
        try:
            rgb = read_image(f).rgb
        except ImageReadError:
            missed += 1
            continue
        h, w = rgb.shape[:2]
        sizes.add((w, h))
        pad = int(round(args.pad * max(h, w)))
        big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = det.detect(big)
        if not faces:
            missed += 1
            continue
        c = np.array([w / 2 + pad, h / 2 + pad])
        face = min(faces, key=lambda fc: float(np.linalg.norm(np.array(fc.center) - c)))
        pts.append(face.landmarks - pad)
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(files)} crops, {len(pts)} faces, {time.time() - t0:.0f} s", file=sys.stderr)
    if len(sizes) != 1:
        print(f"error: crops of several sizes {sorted(sizes)}", file=sys.stderr)
        return 1
    src = float(next(iter(sizes))[0])
    a = np.array(pts)  # (N, 5, 2)
    med = np.median(a, axis=0)
    mad = np.median(np.abs(a - med), axis=0) * 1.4826
    keep = np.all(np.abs(a - med) <= args.outlier_k * np.maximum(mad, 0.5), axis=(1, 2))
    mean = a[keep].mean(0)
    std = a[keep].std(0)
    tmpl = (mean + 0.5) * (args.target / src) - 0.5

    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.setdefault("format", "dynface-face-templates")
    out.setdefault("version", 1)
    out.setdefault("convention", "5 points (x, y) in pixel coordinates of a size x size crop, pixel centres at integers: "
                   "left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner (image left/right)")
    t = out.setdefault("templates", {})
    t["ffhq512"] = {
        "size": 512,
        "points": FFHQ_TEMPLATE_512.tolist(),
        "source": "facexlib / GFPGAN / CodeFormer FFHQ 512 template (retinaface landmarks)",
    }
    t[args.name] = {
        "size": args.target,
        "points": np.round(tmpl, 4).tolist(),
        "points_source_px": np.round(mean, 3).tolist(),
        "source_size": int(src),
        "std_source_px": np.round(std, 3).tolist(),
        "median_source_px": np.round(med, 3).tolist(),
        "crops_sampled": len(files),
        "faces_detected": len(pts),
        "faces_used": int(keep.sum()),
        "source": f"UTKFace aligned&cropped training crops ({args.data.name}/)",
        "method": (
            f"benchmarks/derive_template.py: dlib HOG (upsample 0; detections scoring < 0.3 confirmed by the CNN detector) + 68-point predictor reduced to 5 points on each "
            f"crop padded by {args.pad:.0%} (edge replication); detections with any coordinate beyond "
            f"{args.outlier_k} x 1.4826 MAD of the per-coordinate median dropped; mean of the rest; "
            f"p{args.target} = (p{int(src)} + 0.5) * {args.target}/{int(src)} - 0.5"
        ),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(out, indent=1) + "\n", args.out)
    print(json.dumps({k: v for k, v in t[args.name].items() if k != "method"}, indent=1))
    for n, q in zip(NAMES, tmpl, strict=True):
        print(f"  {n:12s} {q[0]:7.3f} {q[1]:7.3f}")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
