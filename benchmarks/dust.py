"""White dust and scratches on faces (``restore --dust``): how much of it the pre-pass fills in, what it touches on
clean faces, and what is left of the dust after restoring with and without it.

Prints: UTKFace validation faces (200 px) enlarged ×3 with Lanczos (a 600-px face, as a scan of a small print), with
an old print's dust added in the face's box (``dynface.degrade.add_dust``: 12 specks of radius 1.2–5 px, 2 scratches
1.4–3 px wide; seeded per face). Dust pixels: those the dust covers at ≥ 10 % opacity on the skin the pass looks at
(``dynface.dust.face_regions``: skin minus eyes with brows, nose and mouth; the rest is left by design, and its
share is reported). Error: mean absolute difference in levels (RGB) from the clean print, or from the clean print's
restoration. Restoring: ``restore_photo`` at ``-s 1`` with the face's seed fixed, so that the dust is the only
difference.

    python benchmarks/dust.py [--n 24] [--model embedded-128] [--out docs/results/dust.md]
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "utkface" / "val"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="faces (default 24)")
    ap.add_argument("--model", default="embedded-128")
    ap.add_argument("--data", default=str(DATA), help="a folder of face photos (default: UTKFace val)")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file (and an example picture "
                                                "beside it: dust_example.jpg)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from dynface.atomicfile import atomic_path, atomic_write_text
    from dynface.degrade import add_dust
    from dynface.dust import face_regions, remove_dust
    from dynface.faces import FaceDetector, detect_faces, restore_photo
    from dynface.pipeline import DynFaceRestorer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    r = DynFaceRestorer.from_pretrained(args.model)
    det = FaceDetector()
    files = sorted(glob.glob(str(Path(args.data) / "*")))
    pre, fp, post, shares, example = [], [], [], [], None
    t0 = time.perf_counter()
    for f in files:
        if len(pre) == args.n:
            break
        img = np.asarray(Image.open(f).convert("RGB").resize((600, 600), Image.LANCZOS))
        faces = detect_faces(img, det)
        if not faces:
            continue
        face = faces[0]
        skin, prot, (x0, y0, x1, y1) = face_regions(face, img.shape)
        dusty, alpha = add_dust(img, np.random.default_rng(len(pre)), region=(x0, y0, x1, y1), scale=2.0)
        looked = np.zeros(img.shape[:2], bool)
        looked[y0:y1, x0:x1] = skin & ~prot
        placed = alpha >= 0.1
        on = looked & placed
        shares.append(on.sum() / max(1, placed.sum()))

        def err(a, b, m=on):
            return float(np.abs(a.astype(np.float64) - b)[m].mean())

        cleaned, (info,) = remove_dust(dusty, [face])
        clean_out, (clean_info,) = remove_dust(img, [face])
        pre.append((err(dusty, img), err(cleaned, img), info["specks"]))
        fp.append((clean_info["specks"], clean_info["pixels"], err(clean_out, img, looked)))
        kw = {"faces": [face], "seeds": [0], "upscale": 1}
        ref = restore_photo(img, r, **kw).photo
        plain = restore_photo(dusty, r, **kw).photo
        fixed = restore_photo(dusty, r, dust=True, **kw).photo
        ref_dust = restore_photo(img, r, dust=True, **kw).photo
        box = np.zeros(img.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        post.append((err(plain, ref), err(fixed, ref), err(ref_dust, ref, box)))
        if example is None:
            example = np.concatenate([dusty[y0:y1, x0:x1], plain[y0:y1, x0:x1], fixed[y0:y1, x0:x1]], axis=1)
        print(f"face {len(pre)}/{args.n}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    a, b, c = np.array(pre), np.array(fp), np.array(post)
    n = len(a)
    rows = [
        ["dust pixels, before the restorer", f"{a[:, 0].mean():.1f}", f"{a[:, 1].mean():.1f}"],
        ["dust pixels, restored (against the clean print restored)", f"{c[:, 0].mean():.1f}", f"{c[:, 1].mean():.1f}"],
    ]
    lines = [f"White dust and scratches on faces: {n} UTKFace val faces enlarged to 600 px, 12 specks and 2 scratches "
             f"each, `{args.model}`, `-s 1`",
             f"Command: `python benchmarks/dust.py --n {args.n}`" + (f" (model {args.model})" if args.model != "embedded-128" else ""),
             "", "| mean error, levels | without `--dust` | with `--dust` |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"- Specks and scratches found per face: {a[:, 2].mean():.1f} (of 14 placed; "
        f"{100 * np.mean(shares):.0f} % of the dust pixels lay on the skin the pass looks at, the rest on eyes with "
        "brows, nose, mouth, hair or background, where it is left).",
        f"- Clean faces: {int((b[:, 0] > 0).sum())} of {n} had something filled in ({b[:, 0].mean():.2f} sets, "
        f"{b[:, 1].mean():.0f} px a face on average; the skin it looks at changed by {b[:, 2].mean():.3f} levels on "
        f"average); restored with `--dust`, the clean print's face box differs from its plain restoration by "
        f"{c[:, 2].mean():.3f} levels.",
        "- Example (`dust_example.jpg`): the dusty print, restored, restored with `--dust`.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(text, args.out)
        if example is not None:
            with atomic_path(Path(args.out).with_name("dust_example.jpg")) as tmp:
                Image.fromarray(example).save(tmp, "JPEG", quality=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
