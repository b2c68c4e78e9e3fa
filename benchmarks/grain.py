"""Grain at the paste-back: ``--grain none`` (a clean restored face in a grainy photo) against ``match``.

A family-photo audit found a restored face pasted whole into a grainy print as a smooth patch whose edge follows the
crop's square. Cases: gray prints made from the astronaut (skimage), shrunk so that the face is smaller than the model
(pasted whole), with film grain of ``--grain`` levels (seeded), and the clean photo itself; each restored with
``restore_photo`` at ``-s 2`` once per mode. Columns: the grain (``dynface.grain.grain_level``: the 10 % quantile of
the luma high band's block deviations) of the face's inner region and of a ring around the face, in the photo
upscaled by Lanczos and in each output, and the grain ``match`` added (the record's ``grain_added``).

    python benchmarks/grain.py [--grain 8,14] [--out docs/results/grain.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def regions(shape, bbox, up: float):
    """(the face's inner region, a ring from 1/5 to 1/2 of the box's side around it), as boolean masks of the
    output."""
    import numpy as np

    x0, y0, x1, y1 = (int(v * up) for v in bbox)
    w = x1 - x0
    inner = np.zeros(shape[:2], bool)
    inner[y0 + w // 4 : y1 - w // 8, x0 + w // 6 : x1 - w // 6] = True
    ring = np.zeros(shape[:2], bool)
    ring[max(0, y0 - w // 2) : y1 + w // 2, max(0, x0 - w // 2) : x1 + w // 2] = True
    ring[max(0, y0 - w // 5) : y1 + w // 5, max(0, x0 - w // 5) : x1 + w // 5] = False
    return inner, ring


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grain", default="8,14", help="grain levels (σ) of the prints, comma-separated (default 8,14)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--side", type=int, default=320, help="the print's side in px (default 320: the face ~60 px)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    from dynface.atomicfile import atomic_write_text
    from dynface.faces import FaceDetector, restore_photo
    from dynface.grain import grain_level
    from dynface.pipeline import DynFaceRestorer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    r = DynFaceRestorer.from_pretrained(args.model)
    clean = np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((args.side, args.side), Image.LANCZOS),
                       dtype=np.float64)
    cases = [("clean", clean)]
    for i, g in enumerate(float(v) for v in args.grain.split(",")):
        noise = np.random.default_rng(i).normal(0, g, clean.shape)
        cases.append((f"grain {g:g}", clean + noise))
    rows = []
    for name, gray in cases:
        img = np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        faces = FaceDetector().detect(img)
        if not faces:
            print(f"{name}: no face found", file=sys.stderr)
            continue
        up = np.asarray(Image.fromarray(img).resize((2 * img.shape[1], 2 * img.shape[0]), Image.LANCZOS))
        inner, ring = regions(up.shape, faces[0].bbox, 2)
        row = [name, f"{faces[0].bbox[2] - faces[0].bbox[0]:.0f}", f"{grain_level(up, inner, 2):.2f}",
               f"{grain_level(up, ring, 2):.2f}"]
        for mode in ("none", "match"):
            t = time.perf_counter()
            res = restore_photo(img, r, upscale=2, faces=faces[:1], grain=mode, seeds=[0])
            row.append(f"{grain_level(res.photo, inner, 2):.2f}")
            if mode == "match":
                row += [f"{grain_level(res.photo, ring, 2):.2f}", f"{res.records[0].get('grain_added', 0):.2f}"]
            print(f"{name} {mode}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        rows.append(row)
    head = ["print", "face box px", "face grain, photo", "ring grain, photo", "face grain, none", "face grain, match",
            "ring grain, match", "added"]
    lines = [f"Grain at the paste-back: gray astronaut prints of {args.side} px, `{args.model}`, `-s 2`, one face",
             f"Command: `python benchmarks/grain.py --grain {args.grain}" + (f" --side {args.side}`" if args.side != 320 else "`"),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Read \"face grain, none/match\" against \"face grain, photo\": the same region of the input enlarged (the "
              "face's own features count in all three, so they are above the ring's); \"ring grain, match\" stays near the "
              "photo's (the ring reaches into the pasted crop)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
