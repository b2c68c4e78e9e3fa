"""Where the photo path puts a face's 5 points, in photos that are dark, faded or worn: against the clean photo's.

A face is aligned to the model's template from the 5 points dlib's 68-point predictor gives on the detector's box
(:meth:`dynface.faces.FaceDetector.landmarks68`): points off by a tenth of the eye distance tilt and shift the crop
the restorer sees. Each of the first ``--n`` faces of a seeded sample of ``--faces`` (default: UTKFace val) is put in
the photos of ``benchmarks/groups.py`` (``portrait``, ``old print``, ``dark``) and a ``faded`` one (the portrait's
levels × 0.35 + 120, grey noise σ 3: a print gone pale). The reference is the clean portrait's 5 points (HOG's box,
levels as they are). For each photo the points are predicted on HOG's box (its best candidate over the face, down
to a score of -1: the near misses ``--detector auto`` checks) and on the CNN detector's (the box of ``auto``'s look
at the whole photo), with the region's levels as they are and stretched (``levels``, the default since it was
measured here: :func:`dynface.faces.stretch_levels`). Error: the mean distance of the 5 points, in eye distances of
the reference. Columns: median and 90th percentile over the faces, and the median per UTKFace race label.

    python benchmarks/landmarks.py [--n 200] [--out docs/results/landmarks.md]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("portrait", "faded", "old print", "dark")


def faded(portrait: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = portrait.astype(np.float32) * 0.35 + 120 + rng.normal(0.0, 3.0, portrait.shape[:2])[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def point_error(pts68: np.ndarray, ref68: np.ndarray) -> float:
    """Mean distance of the 5 points of ``pts68`` from those of ``ref68``, in the reference's eye distances."""
    from dynface.faces import landmarks68_to_5

    a, b = landmarks68_to_5(np.asarray(pts68)), landmarks68_to_5(np.asarray(ref68))
    return float(np.linalg.norm(a - b, axis=1).mean() / np.linalg.norm(b[1] - b[0]))


def _box_over(found: list, region: np.ndarray) -> np.ndarray | None:
    from dynface.faces import _overlap

    over = [(b, s) for b, s in found if _overlap(b, region) > 0.5]
    return max(over, key=lambda bs: bs[1])[0] if over else None


def measure(files: list[Path], progress=print) -> list[dict]:
    """Per face: {name, race, errors: {"condition|box|levels": error}} (faces HOG misses on the clean portrait are
    left out: no reference)."""
    import groups
    from PIL import Image

    from dynface.faces import CNN_SIDE, DETECT_MAX_SIDE, WEAK_SCORE, FaceDetector

    det = FaceDetector(kind="hog", edges=False)
    rows = []
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        face = np.asarray(Image.open(path).convert("RGB"))
        made = groups.detection_photos(face, seed=i)
        photos = {c: p for c, (p, _) in made.items()}
        photos["faded"] = faded(photos["portrait"], i)
        region = np.array(made["portrait"][1], dtype=float)
        ref_box = _box_over(det._found(photos["portrait"], DETECT_MAX_SIDE), region)
        if ref_box is None:
            continue
        ref = FaceDetector.landmarks68(photos["portrait"], ref_box, levels=False)
        lab = groups.labels(path.name)
        errors = {}
        for cond in CONDITIONS:
            img = photos[cond]
            boxes = {"hog": _box_over(det._found(img, DETECT_MAX_SIDE, threshold=WEAK_SCORE), region),
                     "cnn": _box_over(det._found(img, CNN_SIDE, kind="cnn", upsample=0), region)}
            for kind, box in boxes.items():
                if box is None:
                    continue
                for levels in (False, True):
                    errors[f"{cond}|{kind}|{levels}"] = point_error(FaceDetector.landmarks68(img, box, levels=levels), ref)
        rows.append({"name": path.name, "race": lab["race"] if lab else None, "errors": errors})
        if (i + 1) % 50 == 0 or i + 1 == len(files):
            progress(f"landmarks: {i + 1}/{len(files)} faces ({time.perf_counter() - t0:.0f} s)")
    return rows


def render(rows: list[dict], command: str, commit: str) -> str:
    import groups

    races = [r for r in groups.RACES if any(row["race"] == r for row in rows)]
    out = ["# Where the 5 points fall in dark, faded and worn photos", "",
           "Written by `benchmarks/landmarks.py` (its docstring says how each number is made):", "", "```bash", command,
           "```", "", f"Commit {commit}, {time.strftime('%Y-%m-%d')}. {len(rows)} faces. Error of the 5 points against "
           "the clean portrait's, in eye distances: median and 90th percentile; then the median per race label.", "",
           "| photo | box | levels | faces | median | p90 | " + " | ".join(races) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(races)]
    for cond in CONDITIONS:
        for kind in ("hog", "cnn"):
            for levels in (False, True):
                key = f"{cond}|{kind}|{levels}"
                v = np.array([row["errors"][key] for row in rows if key in row["errors"]])
                if not len(v):
                    continue
                per = [np.array([row["errors"][key] for row in rows if key in row["errors"] and row["race"] == r])
                       for r in races]
                out.append(f"| {cond} | {kind} | {'stretched' if levels else 'as they are'} | {len(v)} | "
                           f"{np.median(v):.3f} | {np.percentile(v, 90):.3f} | "
                           + " | ".join(f"{np.median(x):.3f}" if len(x) else "–" for x in per) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "utkface" / "val")
    ap.add_argument("--n", type=int, default=200, help="faces of a seeded random sample (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "landmarks.md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality as qb

    if not args.faces.is_dir():
        ap.error(f"--faces {args.faces}: not a folder")
    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    random.Random(args.seed).shuffle(files)
    command = "python benchmarks/landmarks.py " + " ".join(sys.argv[1:] if argv is None else argv)
    commit = qb._commit()
    rows = measure(files[: args.n])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, command, commit))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
