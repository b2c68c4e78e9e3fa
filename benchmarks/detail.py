"""--detail keep vs restored on whole photos: detail (high-frequency energy) and colour of every pasted face.

For every photo the faces are detected and restored ONCE with the embedded model (library API,
``DynFaceRestorer.from_pretrained``); the same restored faces are then pasted back at each upscale with
``restore_photo(..., detail="keep" | "restored")`` (a replay restorer hands the model's outputs to the library's
own paste-back, so both modes see identical restorations).

Per face, in its region at the output scale (the detector's box, where the paste mask is 1: the face pasted whole;
in the feathered rim the output blends towards the untouched photo by design):
- HF energy: :func:`dynface.detail.laplacian_energy` (the mean squared 4-neighbour Laplacian of the BT.601 grey
  image, 0..255) of the input resized the same way (Lanczos), of the "restored" output and of the "keep" output;
- HF energy above the model's Nyquist: the same of the grey image's band above the model's Nyquist frequency
  (the image minus :func:`dynface.detail.low_band` with ``taper=(1, 1)``: a sharp FFT cut at the Nyquist), the
  detail the model cannot represent;
- HF energy above the input's Nyquist (the same with the cut at ``crop_side_px`` pixels per crop; upscale > 1
  only): detail the input did not have, i.e. what the restoration adds to a small face;
- colour: CIEDE2000 (skimage.color.deltaE_ciede2000) between the face's low band in the output and in the input,
  averaged over the box, the low band being the band below 2-4 cycles per aligned crop (colour and shading, no
  detail; :func:`dynface.detail.low_band` for an "8-px model");
- the crossover ``keep`` chose per face (``detail_cut_cycles`` in the face's record, cycles per aligned crop; the
  model's Nyquist is ``model_px / 2``), and whether the restoration's shift was range-limited
  (``detail_range_limited``: it would have clipped the input's texture at 0 or 255).

- the same HF energy at the photo's own resolution (upscale > 1: the output reduced back by area averaging), where
  the input's detail is: at the upscaled resolution a smooth Lanczos upscale holds little but rounding noise.

Exit 1 when a face larger than the model (``detail_kept``) has less HF energy (all frequencies) with "keep" than the
input, at the output's resolution or at the photo's own, by any amount (no tolerance: :func:`dynface.detail.keep_detail`
guarantees both on the final uint8 output). The
energy above the model's Nyquist is reported, not asserted (a lower crossover can only add the input's band back).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detail.py --out docs/results/detail_keep.md --pics docs/results/detail

``--cache DIR`` keeps the model's restorations (one .npz per photo, model, steps and seed) so that a re-run with
other paste settings skips the sampling; the tables are byte-identical either way.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from dynface.atomicfile import atomic_write_text
from dynface.detail import laplacian_energy, low_band
from dynface.faces import detect_faces, face_box_out, paste_face, restore_photo, upscale_background
from dynface.imaging import atomic_save_image
from dynface.registry import DEFAULT_MODEL

DEFAULT_DIRS = ["/work/shared/data/whole_photos/gfpgan", "/work/shared/data/whole_photos/difface"]
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
NOTES_MARKER = "## Notes"


class Replay:
    """A restorer that returns precomputed faces (the embedded model's outputs for this photo)."""

    def __init__(self, size: int, template_name: str, images: list[np.ndarray]):
        self.size, self.template_name, self.images = size, template_name, images

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, **kw):
        n = len(faces)
        imgs, self.images = self.images[:n], self.images[n:]
        return SimpleNamespace(images=imgs, records=[{} for _ in imgs], maps={})


def hf_energy(img: np.ndarray, box: tuple[int, int, int, int], where: np.ndarray, scale: float = 1.0) -> float:
    """:func:`laplacian_energy` inside ``box``, over the pixels where ``where`` (box-sized) is set (the Laplacian is
    taken with a one-pixel margin, so it equals that of the whole image there); ``scale`` > 1: at the photo's own
    resolution (``img`` upscaled by ``scale``, reduced back by area averaging)."""
    x0, y0, x1, y1 = box
    X0, Y0, X1, Y1 = _region(box, 1, img.shape)
    sel = np.zeros((Y1 - Y0, X1 - X0), bool)
    sel[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = where
    return laplacian_energy(img[Y0:Y1, X0:X1], sel, scale)


def _region(box, pad: int, shape) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    H, W = shape[:2]
    return max(0, x0 - pad), max(0, y0 - pad), min(W, x1 + pad), min(H, y1 + pad)


def hf_energy_above(img: np.ndarray, box: tuple[int, int, int, int], where: np.ndarray, crop_side_out: float, model_px: float) -> float:
    """:func:`hf_energy` of the band above the model's Nyquist (computed on a padded region around ``box``)."""
    X0, Y0, X1, Y1 = _region(box, int(math.ceil(crop_side_out / 4)), img.shape)
    g = (img[Y0:Y1, X0:X1].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    hp = (g - low_band(g[:, :, None], model_px * (X1 - X0) / crop_side_out, taper=(1.0, 1.0))[:, :, 0]).astype(np.float64)
    x0, y0, x1, y1 = box
    sel = np.zeros(hp.shape, bool)
    sel[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = where
    return laplacian_energy(hp, sel)


def delta_e_low(out: np.ndarray, ref: np.ndarray, box: tuple[int, int, int, int], where: np.ndarray, crop_side_out: float) -> float:
    """Mean CIEDE2000 between the low bands (below 2-4 cycles per aligned crop) of ``out`` and ``ref`` inside ``box``."""
    x0, y0, x1, y1 = box
    X0, Y0, X1, Y1 = _region(box, int(math.ceil(crop_side_out / 4)), out.shape)
    # "a model of 8 px per crop": its Nyquist is 4 cycles per crop; model_px counts across the region's width
    mpx = 8.0 * (X1 - X0) / crop_side_out
    lo = [np.clip(low_band(a[Y0:Y1, X0:X1], mpx), 0, 255)[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] / 255.0
          for a in (out, ref)]
    return float(np.mean(deltaE_ciede2000(rgb2lab(lo[0]), rgb2lab(lo[1]))[where]))


def side_by_side(tiles: list[np.ndarray], max_height: int = 300, gap: int = 4) -> np.ndarray:
    """Tiles in a row: at their own pixels up to ``max_height``, shrunk (Lanczos) above it, and enlarged 2x
    (nearest neighbour, so the pixels stay visible) when under half of it."""
    h0 = tiles[0].shape[0]
    height = max_height if h0 > max_height else (2 * h0 if 2 * h0 <= max_height else h0)
    rs = []
    for t in tiles:
        w = max(1, round(t.shape[1] * height / t.shape[0]))
        # nearest neighbour when enlarging: show the pixels as they are
        resample = Image.NEAREST if height > t.shape[0] else Image.LANCZOS
        rs.append(np.array(Image.fromarray(t).resize((w, height), resample)))
    out = np.full((height, sum(r.shape[1] for r in rs) + gap * (len(rs) - 1), 3), 255, np.uint8)
    x = 0
    for r in rs:
        out[:, x : x + r.shape[1]] = r
        x += r.shape[1] + gap
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--steps", default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--upscales", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder for the model's restored faces (one .npz per photo, model, steps and seed): a re-run "
                         "with other paste settings skips the sampling")
    ap.add_argument("--out", type=Path, default=None, help="markdown report")
    ap.add_argument("--pics", type=Path, default=None, help="folder for before/after PNGs")
    ap.add_argument("--pic-faces", nargs="*", default=["gfpgan/Blake_Lively.jpg:0", "gfpgan/00.jpg:0", "gfpgan/10045.png:0", "difface/02.png:0", "difface/01.jpg:0"],
                    help="DIR/NAME:FACE to draw (upscale 2)")
    a = ap.parse_args(argv)

    import torch

    from dynface.pipeline import DynFaceRestorer

    t_load = time.perf_counter()
    restorer = DynFaceRestorer.from_pretrained(a.model, steps=a.steps)
    steps = restorer.cfg.sampler.steps
    print(f"model {a.model}: {restorer.size} px, steps {steps}, torch threads {torch.get_num_threads()} "
          f"({time.perf_counter() - t_load:.1f}s to load)", flush=True)
    photos = sorted(p for d in a.dirs for p in Path(d).iterdir() if p.suffix.lower() in EXTS)
    rows: list[dict] = []
    pics: dict[str, list[np.ndarray]] = {}
    want_pics = set(a.pic_faces or [])
    for p in photos:
        name = f"{p.parent.name}/{p.name}"
        img = np.array(Image.open(p).convert("RGB"))
        t0 = time.perf_counter()
        faces = detect_faces(img)
        cached = None
        if a.cache is not None:
            cached = a.cache / f"{p.parent.name}_{p.name}_{a.model}_{steps}_s{a.seed}.npz".replace("/", "_")
        if cached is not None and cached.exists():
            restored = list(np.load(cached)["faces"])
            how = f"restorations read from {cached}"
        else:
            restored = restore_photo(img, restorer, faces=faces, upscale=1.0, seed=a.seed, detail="restored").restored
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cached, faces=np.stack(restored) if restored else np.zeros((0, restorer.size, restorer.size, 3), np.uint8))
            how = f"restored in {time.perf_counter() - t0:.1f}s"
        print(f"{name}: {img.shape[1]}x{img.shape[0]}, {len(faces)} face(s), {how}", flush=True)
        for up in a.upscales:
            ref = upscale_background(img, up)
            outs = {}
            for mode in ("restored", "keep"):
                rep = Replay(restorer.size, restorer.template_name, list(restored))
                outs[mode] = restore_photo(img, rep, faces=faces, upscale=up, detail=mode)
            for i, f in enumerate(faces):
                rec = outs["keep"].records[i]
                sxy = (ref.shape[1] / img.shape[1], ref.shape[0] / img.shape[0])
                box = face_box_out(f.bbox, sxy, ref.shape)  # the box restore_photo checks
                canvas = np.zeros_like(ref)  # where the face is pasted whole (outside: the feathered blend)
                paste_face(canvas, np.full((restorer.size,) * 2 + (3,), 255, np.uint8), outs["keep"].affines[i], restorer.size, sxy)
                where = canvas[box[1] : box[3], box[0] : box[2], 0] == 255
                if where.sum() < 9:
                    continue
                co = rec["crop_side_out_px"]
                row = {
                    "photo": name, "face": i, "upscale": up, "crop_px": rec["crop_side_px"], "crop_out_px": rec["crop_side_out_px"],
                    "scale_to_model": rec["scale_to_model"], "kept": rec["detail_kept"],
                    "cut": rec.get("detail_cut_cycles"), "limited": bool(rec.get("detail_range_limited")),
                    "face_px": int(where.sum()),
                    **{f"hf_{k}": hf_energy(v, box, where) for k, v in (("in", ref), ("restored", outs["restored"].photo), ("keep", outs["keep"].photo))},
                    **{f"hfp_{k}": hf_energy(v, box, where, sxy[0]) for k, v in (("in", ref), ("restored", outs["restored"].photo), ("keep", outs["keep"].photo))},
                    **{f"hfa_{k}": hf_energy_above(v, box, where, co, restorer.size)
                       for k, v in (("in", ref), ("restored", outs["restored"].photo), ("keep", outs["keep"].photo))},
                    **{f"hfn_{k}": hf_energy_above(v, box, where, co, rec["crop_side_px"])
                       for k, v in (("in", ref), ("keep", outs["keep"].photo))},
                    "de_restored": delta_e_low(outs["restored"].photo, ref, box, where, co),
                    "de_keep": delta_e_low(outs["keep"].photo, ref, box, where, co),
                }
                rows.append(row)
                key = f"{name}:{i}"
                if key in want_pics and up == max(a.upscales):
                    x0, y0, x1, y1 = box
                    m = (x1 - x0) // 5
                    sl = np.s_[max(0, y0 - m) : y1 + m, max(0, x0 - m) : x1 + m]
                    pics[key] = [ref[sl], outs["restored"].photo[sl], outs["keep"].photo[sl]]

    # ---- report
    def x(r, k, base="hf_in"):
        return r[k] / max(r[base], 1e-9)

    def cut_cell(r):
        if not r["kept"] or r["cut"] is None:
            return "– (not applied)"
        return f"{r['cut']:g}" + (" (range-limited)" if r["limited"] else "")

    def hfn_cell(r):
        return f"{r['hfn_in']:.2f} → {r['hfn_keep']:.2f}" if r["upscale"] > 1 else "–"

    bad = [r for r in rows if r["kept"] and (r["hf_keep"] < r["hf_in"] or r["hfp_keep"] < r["hfp_in"])]
    head = ("| photo | face | up | crop px photo → out | model/crop | keep: cut (cycles/crop) | HF in | HF restored ×in | HF keep ×in "
            "| HF at the photo's px: restored ×in | keep ×in "
            "| HF>Nyq in | HF>Nyq restored ×in | HF>Nyq keep ×in | HF>input Nyq: in → keep | ΔE00 low restored | ΔE00 low keep |")
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        lines.append(
            f"| {r['photo']} | {r['face']} | {r['upscale']:g} | {r['crop_px']:.0f} → {r['crop_out_px']:.0f} | {r['scale_to_model']:.2f} "
            f"| {cut_cell(r)} | {r['hf_in']:.1f} | {x(r, 'hf_restored'):.2f} | {x(r, 'hf_keep'):.3f} "
            f"| {x(r, 'hfp_restored', 'hfp_in'):.2f} | {x(r, 'hfp_keep', 'hfp_in'):.3f} "
            f"| {r['hfa_in']:.1f} | {x(r, 'hfa_restored', 'hfa_in'):.2f} | {x(r, 'hfa_keep', 'hfa_in'):.3f} "
            f"| {hfn_cell(r)} "
            f"| {r['de_restored']:.2f} | {r['de_keep']:.2f} |")
    table = "\n".join(lines)
    print(table)

    def ratios(sel, k, base="hf_in"):
        v = [x(r, k, base) for r in sel]
        return f"median {np.median(v):.2f}, min {min(v):.2f}, max {max(v):.2f}" if v else "no faces"

    def de(sel, k):
        v = [r[k] for r in sel]
        return f"mean {np.mean(v):.2f}, max {max(v):.2f}" if v else "no faces"

    def mean(sel, k):
        return f"mean {np.mean([r[k] for r in sel]):.2f}" if sel else "no faces"

    big = [r for r in rows if r["kept"]]
    small = [r for r in rows if not r["kept"]]
    small2 = [r for r in small if r["upscale"] > 1]
    cuts: dict[str, int] = {}
    for r in big:
        cuts[f"{r['cut']:g}"] = cuts.get(f"{r['cut']:g}", 0) + 1
    summary = [
        f"- {len(big)} face×upscale rows larger than the model (keep applied), HF energy (all frequencies) ×input: "
        f"keep {ratios(big, 'hf_keep')}; restored {ratios(big, 'hf_restored')}; "
        f"rows with keep < input: {sum(r['hf_keep'] < r['hf_in'] for r in big)} (asserted: 0, no tolerance)",
        f"  - at the photo's own resolution (upscale > 1: the output reduced back): keep {ratios(big, 'hfp_keep', 'hfp_in')}; "
        f"restored {ratios(big, 'hfp_restored', 'hfp_in')}; rows with keep < input: "
        f"{sum(r['hfp_keep'] < r['hfp_in'] for r in big)} (asserted: 0, no tolerance)",
        f"  - above the model's Nyquist: keep {ratios(big, 'hfa_keep', 'hfa_in')}; restored {ratios(big, 'hfa_restored', 'hfa_in')}; "
        f"rows with keep < input: {sum(r['hfa_keep'] < r['hfa_in'] for r in big)} (reported)",
        "  - crossover chosen (cycles per crop: rows): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(cuts.items(), key=lambda kv: -float(kv[0])))
        + f"; restoration's shift range-limited (it would have clipped the input's texture): {sum(r['limited'] for r in big)} rows",
        f"- {len(small)} rows not larger than the model (keep = restored): HF energy ×input {ratios(small, 'hf_keep')}",
        f"  - above the input's Nyquist (upscale > 1: detail the input did not have), mean squared Laplacian: "
        f"input {mean(small2, 'hfn_in')}, restored {mean(small2, 'hfn_keep')}",
        f"- ΔE00 of the face's low band against the input's: keep {de(rows, 'de_keep')}; restored {de(rows, 'de_restored')}",
    ]
    print("\n".join(summary))
    if a.pics is not None:
        for key, tiles in pics.items():
            fn = key.replace("/", "_").replace(".", "_").replace(":", "_face") + ".png"
            atomic_save_image(side_by_side(tiles), a.pics / fn, optimize=True)
            print(f"wrote {a.pics / fn}")
    if a.out is not None:
        notes = ""
        if a.out.exists():  # hand-written notes below the marker survive a re-run
            old = a.out.read_text(encoding="utf-8")
            if NOTES_MARKER in old:
                notes = old[old.index(NOTES_MARKER):]
        cmd = "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detail.py " + " ".join(sys.argv[1:] if argv is None else argv)
        text = (f"# --detail keep vs restored ({a.model}, steps {steps}, seed {a.seed})\n\n"
                f"Generated by `{cmd.strip()}` ({len(photos)} photos, upscales {', '.join(f'{u:g}' for u in a.upscales)}; "
                f"see the script's docstring for the definitions).\n\n"
                + "\n".join(summary) + "\n\n" + table + "\n\n" + (notes or NOTES_MARKER + "\n"))
        atomic_write_text(text, a.out)
        print(f"wrote {a.out}")
    if bad:
        for r in bad:
            print(f"FAIL {r['photo']} face {r['face']} upscale {r['upscale']:g}: HF energy with keep "
                  f"{r['hf_keep']:.4f} (at the photo's px {r['hfp_keep']:.4f}) < input {r['hf_in']:.4f} ({r['hfp_in']:.4f})",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
