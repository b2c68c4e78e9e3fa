"""Printed photos (``restore --descreen``): how often the halftone screen is found, how often the face is found with
and without descreening, and how far the restored face is from the clean photo's restoration.

Prints: UTKFace validation faces (200 px; those that are prints already are left out) enlarged ×3 with Lanczos (a
600-px face, a small print scanned at 600 dpi), printed and scanned by ``dynface.degrade.add_halftone``: one black
screen at 45° of 4.5 px (133 lpi at 600 dpi) and of 6 px (100 lpi), and four colour screens of 6 px. Faces are looked
for as ``dynface restore`` does (HOG); a face not found is not restored (the print comes back as it is). Error:
mean absolute difference in levels (RGB) in the clean face's box from the clean photo restored (for the one-ink
prints, the clean photo's grey); dots left: the RMS of what is finer than the screen (luma minus its Gaussian of
σ = the period) in that box, less the clean restoration's. Also the screens found in the real prints among UTKFace's
own faces (yearbook photos), and an example of each (``descreen_example.jpg``: the print, restored, restored with
``--descreen``).

    python benchmarks/descreen.py [--n 16] [--model embedded-128] [--out docs/results/descreen.md]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "utkface"
PRINTS = (("one ink, 4.5 px (133 lpi at 600 dpi)", 4.5, False), ("one ink, 6 px (100 lpi)", 6.0, False),
          ("four colours, 6 px", 6.0, True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="faces (default 16)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--real", type=int, default=4000, help="UTKFace train faces searched for real prints (4000)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file (and an example picture "
                                                "beside it: descreen_example.jpg)")
    args = ap.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from dynface.atomicfile import atomic_path, atomic_write_text
    from dynface.degrade import add_halftone
    from dynface.descreen import descreen, find_screen
    from dynface.faces import FaceDetector, detect_faces, restore_photo
    from dynface.pipeline import DynFaceRestorer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    r = DynFaceRestorer.from_pretrained(args.model)
    det = FaceDetector()

    def restored(img: np.ndarray) -> tuple[np.ndarray, bool]:
        faces = detect_faces(img, det)
        if not faces:
            return img, False
        return restore_photo(img, r, faces=faces, seeds=[0] * len(faces), upscale=1).photo, True

    def err(x: np.ndarray, ref: np.ndarray, box) -> float:
        return float(np.abs(x.astype(np.float64) - ref)[box[1] : box[3], box[0] : box[2]].mean())

    def fine(x: np.ndarray, box, sigma: float) -> float:
        x0, y0, x1, y1 = box
        y = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float((y - cv2.GaussianBlur(y, (0, 0), sigma))[y0:y1, x0:x1].std())

    rows = {name: [] for name, _, _ in PRINTS}  # (found, faces plain, faces descreened, err plain, err descr., dots)
    examples: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    n = 0
    for f in sorted(glob.glob(str(DATA / "val" / "*"))):
        if n == args.n:
            break
        small = np.asarray(Image.open(f).convert("RGB"))
        if find_screen(small) is not None:
            continue  # a print already
        img = np.asarray(Image.fromarray(small).resize((600, 600), Image.LANCZOS))
        faces = detect_faces(img, det)
        if not faces:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in faces[0].bbox)
        box = (max(0, x0), max(0, y0), min(600, x1), min(600, y1))
        gray = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        refs = {False: restored(gray)[0], True: restored(img)[0]}
        for name, period, colour in PRINTS:
            print_ = add_halftone(img if colour else gray, period, 45.0, colour=colour)
            ref = refs[colour]
            screen = find_screen(print_)
            plain, found_plain = restored(print_)
            fixed, found_fixed = restored(descreen(print_, screen)) if screen else (plain, found_plain)
            base = fine(ref, box, period)
            rows[name].append((screen is not None, found_plain, found_fixed, err(plain, ref, box), err(fixed, ref, box),
                               fine(plain, box, period) - base, fine(fixed, box, period) - base))
            if name not in examples:
                examples[name] = np.concatenate([a[box[1] : box[3], box[0] : box[2]] for a in (print_, plain, fixed)],
                                                axis=1)
        n += 1
        print(f"face {n}/{args.n}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    real = sorted(glob.glob(str(DATA / "train" / "*")))[: args.real]
    found_real = []
    for f in real:
        s = find_screen(np.asarray(Image.open(f).convert("RGB")))
        if s is not None:
            found_real.append((Path(f), s))
    real_example = None
    if found_real:
        path, s = max(found_real, key=lambda x: x[1].strength_db)
        small = np.asarray(Image.open(path).convert("RGB"))
        real_example = np.concatenate([small, restored(small)[0], restored(descreen(small, s))[0]], axis=1)

    lines = [f"Printed photos: {n} UTKFace val faces enlarged to 600 px and printed as halftones, `{args.model}`, `-s 1`",
             f"Command: `python benchmarks/descreen.py --n {args.n}`"
             + (f" (model {args.model})" if args.model != "embedded-128" else ""), "",
             "| print | screen found | face found: without / with `--descreen` | error from the clean photo restored, "
             "levels: without / with | dots left (RMS finer than the screen): without / with |",
             "|---|---|---|---|---|"]
    for name, _, _ in PRINTS:
        a = np.array(rows[name], dtype=float)
        lines.append(f"| {name} | {100 * a[:, 0].mean():.0f} % | {100 * a[:, 1].mean():.0f} % / "
                     f"{100 * a[:, 2].mean():.0f} % | {a[:, 3].mean():.1f} / {a[:, 4].mean():.1f} | "
                     f"{a[:, 5].mean():.1f} / {a[:, 6].mean():.1f} |")
    periods = sorted(s.period_px for _, s in found_real)
    lines += [
        "",
        f"- Real prints: of the first {len(real)} UTKFace train faces, {len(found_real)} have a screen found "
        + (f"(periods {periods[0]:.1f}–{periods[-1]:.1f} px at 200 px; looked at: yearbook portraits)" if periods
           else "") + "; they get the note that suggests `--descreen`.",
        "- A face not found is not restored: its error is the print's own. `descreen_example.jpg`: for each print "
        "above, the print, restored, restored with `--descreen` (face boxes)"
        + ("; last row: the real print with the strongest screen, at its 200 px." if real_example is not None else "."),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
        if examples:
            side = min(320, *(e.shape[0] for e in examples.values()))  # panels of 320 px: the file stays small
            sheet = [cv2.resize(e, (e.shape[1] * side // e.shape[0], side), interpolation=cv2.INTER_AREA)
                     for e in examples.values()]
            if real_example is not None:
                sheet.append(cv2.resize(real_example, (sheet[0].shape[1], sheet[0].shape[1] * real_example.shape[0]
                                                       // real_example.shape[1])))
            width = min(s.shape[1] for s in sheet)
            with atomic_path(Path(args.out).with_name("descreen_example.jpg")) as tmp:
                Image.fromarray(np.concatenate([s[:, :width] for s in sheet], axis=0)).save(tmp, "JPEG", quality=85)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
