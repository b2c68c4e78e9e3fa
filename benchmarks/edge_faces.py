"""Faces cut by the photo's edge: found with the edge search (the default) and without (``--no-detect-edges``).

dlib's detector scans windows that must lie inside the image, so a face cut by the edge (a person at the edge of a
group photo, someone entering a CCTV frame) was seldom found. The edge search scans the detection copy once more,
padded by edge replication (``faces.EDGE_PAD``), and adds the faces by the edge the plain scan missed.

Cases: the first ``--n`` of a seeded random sample of ``--faces`` (default: UTKFace val of ``../shared/data``),
each upscaled ×2 (Lanczos) into a photo, first whole, then cut through the face on one side (left, right, top,
bottom) at each of ``--cuts`` of the photo's side (``border.cut``). Columns per cut: faces found (of the cases),
the 5 points' largest error against the whole photo's points (in eye distances; median and 90th percentile), faces
found besides one (none should be). Then whole photos (``--photos``, default ``../shared/data/whole_photos``) and
skimage's pictures without a face: the faces found each way (they should agree). Detection time of the two ways is
summed over everything and given as a ratio (same run, same machine).

    python benchmarks/edge_faces.py [--n 40] [--out docs/results/edge_faces.md]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from border import SIDES, cut  # benchmarks/border.py: the same cut

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "utkface" / "val"
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "whole_photos"
FACELESS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera", "page")
WAYS = {"--no-detect-edges": False, "default (edge search)": True}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default=str(DEFAULT_FACES), help="a folder of aligned faces")
    ap.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="a folder (searched recursively) of whole photos")
    ap.add_argument("--n", type=int, default=40, help="how many faces (default: 40)")
    ap.add_argument("--cuts", default="0.1,0.2,0.3,0.4", help="shares of the photo's side cut away")
    ap.add_argument("--out", default="runs/bench/edge_faces.md")
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image
    from skimage import data

    from dynface.atomicfile import atomic_write_text
    from dynface.faces import FaceDetector
    from dynface.imageio import read_image
    from dynface.training.data import list_images

    cuts = [float(c) for c in args.cuts.split(",")]
    dets = {name: FaceDetector(edges=e) for name, e in WAYS.items()}
    spent = dict.fromkeys(WAYS, 0.0)

    def detect(name, img):
        t = time.perf_counter()
        faces = dets[name].detect(img)
        spent[name] += time.perf_counter() - t
        return faces

    files = list_images(args.faces)
    random.Random(0).shuffle(files)
    found = {(name, c): [0, 0, [], 0] for name in WAYS for c in [0.0, *cuts]}  # cases, found, errors, extra faces
    by_side = {(name, c, side): 0 for name in WAYS for c in [0.0, *cuts] for side in (*SIDES, "none")}  # found
    used = 0
    for f in files[: args.n]:
        face = Image.open(f).convert("RGB")
        big = np.asarray(face.resize((face.width * 2, face.height * 2), Image.LANCZOS))
        ref = detect("--no-detect-edges", big)
        if len(ref) != 1:
            continue  # no whole face to measure against
        used += 1
        for c in [0.0, *cuts]:
            for side in SIDES if c else ("none",):
                img = np.ascontiguousarray(cut(big, side, c)) if c else big
                k = round(c * big.shape[1 if side in ("left", "right") else 0])
                off = np.array({"left": (k, 0), "top": (0, k)}.get(side, (0, 0)))
                for name in WAYS:
                    got = detect(name, img)
                    row = found[name, c]
                    row[0] += 1
                    if got:
                        row[1] += 1
                        by_side[name, c, side] += 1
                        row[2].append(float(np.abs(got[0].landmarks + off - ref[0].landmarks).max() / ref[0].eye_distance))
                        row[3] += len(got) - 1
        print(f"  {used} faces", flush=True)

    pictures = {p.relative_to(args.photos).as_posix(): read_image(p).rgb
                for p in (list_images(args.photos) if Path(args.photos).is_dir() else [])}
    for n in FACELESS:
        a = np.asarray(getattr(data, n)())
        pictures[f"skimage {n}"] = np.ascontiguousarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])
    counts = {p: {name: len(detect(name, img)) for name in WAYS} for p, img in pictures.items()}

    def q(v, p):
        return f"{np.percentile(v, p):.3f}" if v else "—"

    lines = [
        "# Faces cut by the photo's edge: the edge search",
        "",
        f"`python benchmarks/edge_faces.py --n {args.n} --cuts {args.cuts}` (dlib HOG, the default detector): {used} "
        "random UTKFace val faces (seed 0) upscaled ×2 into a photo, whole and cut through the face on each side by "
        "the share of the photo given. Error: the 5 points' largest error against the whole photo's points, in eye "
        "distances. Extra: faces found besides one.",
        "",
        "| cut | way | found | error p50 | error p90 | extra |",
        "|---|---|---|---|---|---|",
    ]
    for c in [0.0, *cuts]:
        for name in WAYS:
            n, k, err, extra = found[name, c]
            lines.append(f"| {c:.0%} | {name} | {k}/{n} | {q(err, 50)} | {q(err, 90)} | {extra} |")
    lines += ["", f"Found by the side cut (of {used} each; without / with the edge search):", "",
              "| cut | " + " | ".join(SIDES) + " |", "|---|" + "---|" * len(SIDES)]
    for c in cuts:
        lines.append(f"| {c:.0%} | " + " | ".join(" / ".join(str(by_side[name, c, side]) for name in WAYS)
                                                  for side in SIDES) + " |")
    same = sum(len(set(v.values())) == 1 for v in counts.values())
    lines += ["", f"Whole photos and pictures without a face: the same number of faces found on {same} of "
              f"{len(counts)}.", "", "| picture | " + " | ".join(WAYS) + " |", "|---|" + "---|" * len(WAYS)]
    lines += [f"| {p} | " + " | ".join(str(v[name]) for name in WAYS) + " |" for p, v in counts.items()]
    base = spent["--no-detect-edges"]
    lines += ["", f"Detection time, all of the above: {base:.1f} s without, {spent['default (edge search)']:.1f} s with "
              f"the edge search (×{spent['default (edge search)'] / base:.2f})."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(text, args.out)  # its folder made too
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
