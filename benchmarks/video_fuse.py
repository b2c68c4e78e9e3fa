"""Videos: does fusing each face's crop with its crops in the frames before (``--fuse-frames``) give a better, steadier
restored face than restoring every frame on its own?

Clips made from UTKFace val faces, as a CCTV camera would film them: each face (its 200-px crop, edges replicated)
placed at ``--face-px`` px in a 320x240 frame (larger in proportion for a crop over 110 px) and filmed for
``--frames`` frames at 12 fps, one motion per clip in turn (``--kinds``): ``still``; ``pan`` (1.5 px a frame across,
swaying 3 px up and down); ``zoom`` (the face growing by half); ``talk`` (still, the mouth and chin opening and
closing twice a second, up to 6 px of the 200-px crop: motion inside the face); ``cut`` (another face at the same
place from the middle frame on: a cut between two cameras). Each frame then gets its own degradation: Gaussian blur
σ 1 px, grey noise of ``--noise`` levels, JPEG quality 50, and the clip is encoded as H.264 (CRF 12). Every clip is
restored by ``dynface restore`` 's job layer (:func:`dynface.jobs.run_job`, the default model, upscale 1,
``--detail``, HOG as for every video) once per ``--fuse`` value, and its frames are compared with the clean frames
on the face (the placed crop's middle 70 %). Faces are drawn at random (seed 0) among those HOG finds in a clean
frame: what is measured is the fusion, not the detector.

* **PSNR / SSIM** against the clean frame (``cut``: also on the 3 frames after the cut alone, where a face fused
  with the one before would show it);
* **flicker**: the mean absolute difference between consecutive restored frames' change and the clean frames'
  change (levels; 0: the face changes only as the scene does). The degraded input's own is given beside it.

    OMP_NUM_THREADS=1 python benchmarks/video_fuse.py --faces 10 --frames 16 --fuse 0,4 --out docs/results/video_fuse.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared" / "data" / "utkface" / "val"
FPS = 12
KINDS = ("still", "pan", "zoom", "talk", "cut")
INNER = 0.7  # the part of the placed crop scored (its middle: the face, not the replicated edges)


def _placement(kind: str, t: int, n: int, face_px: int, size: tuple[int, int]) -> tuple[float, float, float]:
    """(scale, x0, y0) of the 200-px crop in frame ``t`` of ``n`` (``size``: the frame's width and height)."""
    W, H = size
    s = face_px / 200
    if kind == "pan":
        cx, cy = W / 2 - 1.5 * (n - 1) / 2 + 1.5 * t, H / 2 + 3 * np.sin(2 * np.pi * t / 12)
    elif kind == "zoom":
        s *= 1 + 0.5 * t / max(1, n - 1)
        cx, cy = W / 2, H / 2
    else:
        cx, cy = W / 2, H / 2
    return s, cx - 100 * s, cy - 100 * s


def frame_size(face_px: int) -> tuple[int, int]:
    """320x240, or larger in proportion for a face over 110 px (even sides)."""
    f = max(1.0, face_px / 110)
    return 2 * round(160 * f), 2 * round(120 * f)


def clean_clip(faces: list[np.ndarray], kind: str, n: int, face_px: int) -> tuple[list[np.ndarray], list[tuple]]:
    """The clean frames (:func:`frame_size`) and, per frame, the scored box (x0, y0, x1, y1) in it."""
    size = frame_size(face_px)
    frames, boxes = [], []
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float32)
    bump = np.exp(-((xx - 100) ** 2 / (2 * 30**2) + (yy - 150) ** 2 / (2 * 20**2)))  # the mouth and chin
    for t in range(n):
        face = faces[1] if kind == "cut" and t >= n // 2 else faces[0]
        if kind == "talk":  # the mouth opening and closing twice a second: up to 6 px down at the chin
            dy = 6 * np.sin(np.pi * t / 6) ** 2 * bump
            face = cv2.remap(face, xx, (yy - dy).astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        s, x0, y0 = _placement(kind, t, n, face_px, size)
        big = cv2.copyMakeBorder(face, 400, 400, 400, 400, cv2.BORDER_REPLICATE)  # the crop's edges, replicated
        m = np.array([[s, 0, x0 - 400 * s], [0, s, y0 - 400 * s]])
        frames.append(cv2.warpAffine(big, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR))
        side, pad = 200 * s, 200 * s * (1 - INNER) / 2
        boxes.append((x0 + pad, y0 + pad, x0 + side - pad, y0 + side - pad))
    return frames, boxes


def degrade(frame: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    f = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), 1.0)
    f = np.clip(np.rint(f + rng.normal(0, noise, f.shape)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 50])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS, options={"crf": "12"})
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        for i, fr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)


def read_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def scores(frames: list[np.ndarray], clean: list[np.ndarray], boxes: list[tuple], cut: int | None) -> dict:
    """PSNR, SSIM (on the face box of each frame), flicker (see the module's notes), and after a cut."""
    from skimage.metrics import structural_similarity

    psnr, ssim, flick = [], [], []
    prev = None
    for t, (f, c, b) in enumerate(zip(frames, clean, boxes, strict=True)):
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        a, g = f[y0:y1, x0:x1].astype(np.float64), c[y0:y1, x0:x1].astype(np.float64)
        psnr.append(10 * np.log10(255**2 / max(np.mean((a - g) ** 2), 1e-10)))
        ssim.append(structural_similarity(a, g, channel_axis=2, data_range=255))
        if prev is not None and (cut is None or t != cut):
            # the change since the frame before, on this frame's box (the face moves by a pixel or two a frame)
            pa, pg = prev[0][y0:y1, x0:x1].astype(np.float64), prev[1][y0:y1, x0:x1].astype(np.float64)
            flick.append(float(np.mean(np.abs((a - pa) - (g - pg)))))
        prev = (f, c)
    out = {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "flicker": float(np.mean(flick))}
    if cut is not None:
        out["psnr_after_cut"] = float(np.mean(psnr[cut : cut + 3]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=8, help="clips (one val face each; a cut takes a second face)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--face-px", type=int, default=110, help="the 200-px crop's side in the frame (default %(default)s)")
    ap.add_argument("--noise", type=float, default=12.0, help="grey noise σ, levels (default %(default)s)")
    ap.add_argument("--fuse", default="0,4", help="--fuse-frames values to compare (default %(default)s)")
    ap.add_argument("--model", default=None, help="default: the library's default model")
    ap.add_argument("--detail", default="keep", help="--detail (default %(default)s)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="the motions, in turn (default %(default)s)")
    ap.add_argument("--val", type=Path, default=VAL)
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here, and a JSON beside it")
    args = ap.parse_args(argv)
    from dynface import jobs
    from dynface.registry import DEFAULT_MODEL

    fuse = [int(v) for v in args.fuse.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    if set(kinds) - set(KINDS):
        ap.error(f"--kinds: unknown {sorted(set(kinds) - set(KINDS))}; known: {', '.join(KINDS)}")
    files = sorted(p for p in args.val.glob("*.jpg"))
    if not files:
        print(f"video_fuse.py: no faces in {args.val}", file=sys.stderr)
        return 2
    from dynface.faces import FaceDetector

    hog = FaceDetector(kind="hog")
    picked = []  # faces HOG finds in a clean frame (what is measured here is the fusion, not the detector)
    for p in random.Random(0).sample(files, len(files)):
        face = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        if hog.detect(clean_clip([face], "still", 1, args.face_px)[0][0]):
            picked.append(p)
        if len(picked) == 2 * args.faces:
            break
    model = args.model or DEFAULT_MODEL
    started = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rows: list[dict] = []
    restorer = jobs.load_restorer(jobs.RestoreSettings(model=model))
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.faces):
            kind = kinds[i % len(kinds)]
            faces = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in picked[2 * i : 2 * i + 2]]
            clean, boxes = clean_clip(faces, kind, args.frames, args.face_px)
            rng = np.random.default_rng(i)
            src = Path(tmp) / f"clip{i:02d}_{kind}.mp4"
            write_video(src, [degrade(f, rng, args.noise) for f in clean])
            cut = args.frames // 2 if kind == "cut" else None
            row = {"clip": src.stem, "kind": kind, "faces": [p.name for p in picked[2 * i : 2 * i + (2 if cut else 1)]],
                   "input": scores(read_video(src), clean, boxes, cut)}
            for k in fuse:
                s = jobs.RestoreSettings(model=model, upscale=1.0, fuse_frames=k, detail=args.detail)
                out = Path(tmp) / f"out{i}_{k}"
                t0 = time.perf_counter()
                summ = jobs.run_job([src], out, s, restorer=restorer)
                if not summ.done:
                    raise SystemExit(f"video_fuse.py: {src.name}: {[(r.status, r.error) for r in summ.results]}")
                rec = summ.done[0].record
                got = read_video(out / rec["restored_video"])
                row[f"fuse{k}"] = {**scores(got, clean, boxes, cut), "s": time.perf_counter() - t0,
                                   "frames_with_faces": rec["frames_with_faces"], "fused": rec["fused"]}
            rows.append(row)
            print("ROW " + json.dumps(row), flush=True)
    text = render(rows, fuse, args, model, started)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"started": started, "args": {k: str(v) for k, v in vars(args).items()},
                                                             "rows": rows}, indent=1))
    return 0


def render(rows: list[dict], fuse: list[int], args, model: str, started: dict) -> str:
    cols = ["input"] + [f"fuse{k}" for k in fuse]
    names = {"input": "degraded input"} | {f"fuse{k}": f"--fuse-frames {k}" for k in fuse}
    lines = ["# Videos: faces fused over frames (`--fuse-frames`)", "",
             f"{len(rows)} clips of {args.frames} frames ({args.kinds.replace(',', ', ')} in turn), UTKFace val faces at "
             f"{args.face_px} px in {'x'.join(map(str, frame_size(args.face_px)))} frames, blur σ 1, noise {args.noise:g} levels, JPEG 50, H.264; model "
             f"`{model}`, upscale 1, `--detail {args.detail}`. Started at `{started['commit']}` on {started['date']}.", "",
             "Command: `OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "?") + " python benchmarks/video_fuse.py "
             + " ".join(sys.argv[1:]) + "`", "",
             "| clips | what | PSNR (dB) | SSIM | flicker (levels) | PSNR after a cut |", "|---|---|---|---|---|---|"]
    for kind in ("all", *KINDS):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not sel:
            continue
        for c in cols:
            m = {k: np.mean([r[c][k] for r in sel]) for k in ("psnr", "ssim", "flicker")}
            cut = [r[c]["psnr_after_cut"] for r in sel if "psnr_after_cut" in r[c]]
            lines.append(f"| {kind} ({len(sel)}) | {names[c]} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['flicker']:.2f} | "
                         + (f"{np.mean(cut):.2f}" if cut else "") + " |")
    lines += ["", "Per clip (PSNR / flicker; the record's `fused`: faces fused, mean summed weight, noise σ seen):", "",
              "| clip | " + " | ".join(names[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            cell = f"{r[c]['psnr']:.2f} / {r[c]['flicker']:.2f}"
            if "fused" in r[c] and r[c]["fused"]["faces_fused"]:
                f = r[c]["fused"]
                cell += f" ({f['faces_fused']}, {f['mean_weight']}, σ {f['noise_levels']})"
            cells.append(cell)
        lines.append(f"| {r['clip']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
