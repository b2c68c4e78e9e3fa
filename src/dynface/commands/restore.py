"""``dynface restore``: restore the faces of whole photographs (or of aligned face crops).

Flags follow GFPGAN / CodeFormer (``-i``, ``-o``, ``--aligned``, ``-s/--upscale``, ``-w/--fidelity``, ``--ext``,
``--suffix``, ``--only-center-face``, ``--draw-box``) plus the method's own (``--model``, ``--mode``, ``--steps``,
``--seed``, ``--precision``, ``--save-maps``) and batch safety (``--skip-existing``).

Outputs under ``-o`` (default ``results``)::

    cropped_faces/<stem>_NN.png      aligned input faces (whole photos only)
    restored_faces/<stem>_NN.png     restored faces (``--aligned``: restored_faces/<stem>.png)
    cmp/<stem>_NN.png                input | output side by side
    restored_imgs/<stem>.<ext>       the photo with its faces restored (whole photos only)
    maps/<stem>_NN_<key>.png         with --save-maps: DGSA map and guides
    records/<stem>.json              per face: the restorer's record, bbox, landmarks, timing

``--suffix S`` appends ``_S`` to the names in restored_faces/ and restored_imgs/. Faces are numbered left to
right. Inputs sharing a stem are told apart by folder (``x/00.jpg``, ``y/00.jpg`` → ``x_00``, ``y_00``) or,
in one folder, by extension (``a.jpg``, ``a.png`` → ``a_jpg``, ``a_png``).

**Aligned crops.** ``--aligned`` hands the crops to the model as they are (resized to its resolution), so they
must be framed like its training data (the embedded 64-px model: UTKFace crops, template ``utkface64``).
GFPGAN / CodeFormer-style FFHQ-aligned crops need ``--input-template ffhq512``: each crop is re-aligned by the
template-to-template similarity, restored, and pasted back into its own framing and size. (Leaving out
``--aligned`` also works: detection finds the face in the crop.)

**A batch never loses work.** Every file is written to a hidden temporary file and renamed; the record JSON
is written LAST, so an input is *complete* exactly when ``records/<stem>.json`` exists, and
``--skip-existing`` skips those (it does not compare settings: use a new ``-o`` for new settings). Temporary
files left by a killed run are removed at the next start. A file that cannot be used (missing, empty, corrupt, not an image, no face)
gets one line in the final summary and the batch goes on. Exit status: 0 when every input succeeded (or was
skipped as complete), 1 when any failed, 2 for usage errors (bad flags, no inputs, output folder inside the
input folder, model that cannot be loaded). The output folder may not be an input folder, nor lie inside one
unless ``--allow-input-dir``; inputs are never modified.

**Reproducibility.** ``--seed`` fixes the noise: in a photo, face NN uses ``seed + NN``; with ``--aligned``,
the k-th input (sorted order) uses ``seed + k``, whatever ``--batch-size`` or ``--skip-existing`` do.

**Testing hook.** The environment variable ``DYNFACE_RESTORER_FACTORY=module:callable`` replaces
``DynFaceRestorer.from_pretrained`` (it is called with the same keyword arguments: ``name_or_path``,
``device``, ``mode``, ``steps``, ``precision``). It is read only here, exists for tests (fake or slow
restorers), and is announced on stderr when used. ``DYNFACE_DEBUG=1`` re-raises per-file errors.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import re
import sys
import time
from pathlib import Path

MODES = ("full", "no_dsst", "no_dgsa", "single_guide", "fixed_start", "restorer_only")
SUBDIRS = ("cropped_faces", "restored_faces", "cmp", "restored_imgs", "records", "maps")
FACTORY_ENV = "DYNFACE_RESTORER_FACTORY"


class UsageError(Exception):
    pass


class InputError(Exception):
    """A per-file problem: one line in the summary."""


# ------------------------------------------------------------------------------------------ arguments
def _fidelity(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {s}")
    return v


def _upscale(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 1.0 <= v <= 8.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 8, got {s}")
    return v


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def _steps(s: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_,.:\-]+", s):
        raise argparse.ArgumentTypeError(f"unusable --steps value {s!r}")
    return s


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the faces of photographs (or of aligned face crops)",
        description="Restore faces: detect, align, restore (DynFaceRestore), paste back.",
        epilog=(
            "outputs: OUT/{cropped_faces,restored_faces,cmp,restored_imgs,records}/ (+ maps/ with --save-maps); "
            "records/<stem>.json is written last and marks an input complete (--skip-existing). "
            "exit status: 0 all inputs ok, 1 some failed (listed in the summary), 2 usage error. "
            "Details: pydoc dynface.commands.restore"
        ),
    )
    p.add_argument("-i", "--input", nargs="+", required=True, metavar="PATH", help="image file(s), folder(s) or glob pattern(s)")
    p.add_argument("-o", "--output", default="results", help="output folder (default: results)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: restore them directly, batched")
    p.add_argument("-s", "--upscale", type=_upscale, default=2.0, help="final upscaling of the whole photo, 1-8 (default: 2)")
    p.add_argument("-w", "--fidelity", type=_fidelity, default=None, help="fidelity weight in [0, 1] (default: the model's)")
    p.add_argument("--ext", default="auto", choices=("auto", "png", "jpg", "webp"), help="format of restored_imgs (default auto: like the input; png if it has alpha)")
    p.add_argument("--suffix", default=None, help="append _SUFFIX to restored face / image names")
    p.add_argument("--model", default="embedded-64", metavar="NAME|PATH", help="embedded model name, model folder or prior file (default: embedded-64)")
    p.add_argument("--mode", default="full", choices=MODES, help="method variant / ablation (default: full)")
    p.add_argument("--guidance", choices=("unet", "x0", "prox"), default=None,
                   help="guidance gradient: through the UNet (paper, default), w.r.t. x0 only (cheaper), or the Fourier proximal step")
    p.add_argument("--dblm", metavar="PATH", help="DBLM weights, when --model is a bare prior file (e.g. DifFace's .pth)")
    p.add_argument("--dgsa", metavar="PATH", help="DGSA weights, when --model is a bare prior file")
    p.add_argument("--dsst", metavar="PATH", help="DSST table JSON (default: the model's own, else the packaged 512-px table)")
    p.add_argument("--steps", type=_steps, default=None, help="sampling steps (model default when omitted)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="compute device (default: cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="compute precision (default: fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet: minutes of compilation first, then faster on a GPU (×0.5–0.8 time); "
                        "no gain measured on CPUs")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="faces per restorer call (default: a photo's faces at once; 8 aligned crops)")
    p.add_argument(
        "--input-template",
        default=None,
        metavar="NAME",
        help="with --aligned: the framing of the input crops (e.g. ffhq512 for GFPGAN/CodeFormer-aligned faces); when it "
        "differs from the model's, crops are re-aligned for it and the result is pasted back into the input's framing",
    )
    p.add_argument("--alignment", default="auto", choices=("auto", "ffhq", "template"),
                   help="how detected faces are framed: ffhq = the FFHQ dataset's own crop from dlib's points, "
                        "template = a 5-point template fit; auto (default) = ffhq for 512-px FFHQ priors, else template")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the photo's centre")
    p.add_argument("--draw-box", action="store_true", help="draw the detected face boxes on restored_imgs")
    p.add_argument("--save-maps", action="store_true", help="also save the DGSA map and guides (maps/)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose record JSON already exists (completed earlier)")
    p.add_argument("--allow-input-dir", action="store_true", help="allow the output folder to lie inside an input folder")
    p.add_argument("--detector", default="hog", choices=("hog", "cnn"), help="dlib face detector (default: hog)")
    p.add_argument("--bg-upsampler", default="lanczos", metavar="lanczos|MODULE:CALLABLE",
                   help="background upscaling: Lanczos, or a Python callable (rgb uint8 array, scale) -> array")
    p.add_argument("--min-score", type=float, default=0.0, help="detector confidence threshold (raise it against false detections)")
    p.add_argument("--border", default="constant", choices=("constant", "reflect"), help="fill of crop areas outside the photo (default: constant)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ inputs/outputs
def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def collect_inputs(specs: list[str]) -> tuple[list[Path], list[Path], list[Path]]:
    """(image files, folders given, files ignored for their extension). Folders: their image files (not
    recursive, hidden files skipped); files and glob matches: taken as they are."""
    from dynface.imageio import is_image_name

    files: list[Path] = []
    folders: list[Path] = []
    ignored: list[Path] = []
    for s in specs:
        p = Path(s).expanduser()
        if p.is_dir():
            folders.append(p)
            for f in sorted(p.iterdir()):
                if f.name.startswith(".") or not f.is_file():
                    continue
                (files if is_image_name(f) else ignored).append(f)
        elif p.exists() or p.is_symlink():
            files.append(p)
        elif glob.has_magic(s):
            for m in sorted(glob.glob(os.path.expanduser(s), recursive=True)):
                q = Path(m)
                if q.is_file() and not q.name.startswith("."):
                    files.append(q)
        else:
            raise UsageError(f"input not found: {s}")
    seen: set[Path] = set()
    uniq = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(f)
    return uniq, folders, ignored


def check_output_dir(out: Path, files: list[Path], folders: list[Path], allow_inside: bool) -> None:
    out_r = out.resolve()
    in_dirs = {f.resolve().parent for f in files} | {d.resolve() for d in folders}
    for d in sorted(in_dirs):
        if out_r == d:
            raise UsageError(f"the output folder {out} is the input folder {d}; choose another -o")
        if _within(out_r, d) and not allow_inside:
            raise UsageError(f"the output folder {out} lies inside the input folder {d}; choose another -o or pass --allow-input-dir")
    for f in files:
        fr = f.resolve()
        for sub in SUBDIRS:
            if _within(fr, out_r / sub):
                raise UsageError(f"input {f} lies in the output folder's {sub}/; it would be overwritten")


def assign_stems(files: list[Path]) -> list[str]:
    """Output stem per input. Inputs sharing a stem are told apart by their folder's name when they come from
    different folders (difface/00.jpg → difface_00), else by their extension (a.jpg → a_jpg)."""

    def clean(s: str) -> str:
        return re.sub(r"[\x00-\x1f/\\]", "_", s) or "image"

    base = [clean(f.stem) for f in files]
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(base):
        groups.setdefault(b, []).append(i)
    names = list(base)
    for b, idx in groups.items():
        if len(idx) == 1:
            continue
        parents = [files[i].resolve().parent for i in idx]
        for i, par in zip(idx, parents, strict=True):
            name = b
            if len(set(parents)) > 1:
                name = f"{clean(par.name)}_{b}"
            if sum(1 for q in parents if q == par) > 1:  # same folder: a.jpg and a.png
                name = f"{name}_{files[i].suffix.lstrip('.').lower() or 'noext'}"
            names[i] = name
    stems, used = [], set()
    for s in names:
        k, s0 = 1, s
        while s in used:
            k += 1
            s = f"{s0}_{k}"
        used.add(s)
        stems.append(s)
    return stems


def record_path(out: Path, stem: str) -> Path:
    return out / "records" / f"{stem}.json"


def is_complete(out: Path, stem: str) -> bool:
    p = record_path(out, stem)
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("status") == "ok"
    except (OSError, ValueError):
        return False


_TMP_RE = re.compile(r"^\..+\.tmp(\d+)$")


def clean_stale_temp_files(out: Path) -> int:
    """Remove temporary files left by a run that was killed (their process no longer exists)."""
    n = 0
    for sub in SUBDIRS:
        d = out / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            m = _TMP_RE.match(f.name)
            if not m or not f.is_file():
                continue
            pid = int(m.group(1))
            if pid != os.getpid() and _pid_alive(pid):
                continue
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_record(out: Path, stem: str, rec: dict) -> None:
    from dynface.imaging import atomic_write_text

    atomic_write_text(json.dumps(rec, indent=1, default=_json_default) + "\n", record_path(out, stem))


# ------------------------------------------------------------------------------------------ the restorer
def load_restorer(args: argparse.Namespace):
    kw = dict(name_or_path=args.model, device=args.device, mode=args.mode, steps=args.steps, precision=args.precision)
    kw.update({k: getattr(args, k) for k in ("guidance", "dblm", "dgsa", "dsst") if getattr(args, k, None)})
    spec = os.environ.get(FACTORY_ENV)
    if spec:
        mod, _, attr = spec.partition(":")
        if not mod or not attr:
            raise UsageError(f"{FACTORY_ENV} must be module:callable, got {spec!r}")
        print(f"note: restorer from {FACTORY_ENV}={spec} (testing hook)", file=sys.stderr)
        r = getattr(importlib.import_module(mod), attr)(**kw)
    else:
        from dynface.pipeline import DynFaceRestorer

        r = DynFaceRestorer.from_pretrained(**kw)
    return r.compiled() if getattr(args, "compile", False) else r


def load_bg_upsampler(spec: str):
    if spec in ("", "lanczos", "none"):
        return None
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise UsageError(f"--bg-upsampler must be 'lanczos' or module:callable, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"--bg-upsampler {spec}: {e}") from None
    if not callable(fn):
        raise UsageError(f"--bg-upsampler {spec} is not callable")
    return fn


def _side_by_side(a, b):
    import numpy as np
    from PIL import Image

    if a.shape[:2] != b.shape[:2]:
        a = np.asarray(Image.fromarray(a).resize((b.shape[1], b.shape[0]), Image.LANCZOS))
    return np.concatenate([a, b], axis=1)


def _settings(args: argparse.Namespace, restorer, upscale: float | None = None) -> dict:
    return {
        "model": args.model,
        "model_name": getattr(restorer, "name", None),
        "mode": args.mode,
        "steps": args.steps,
        "seed": args.seed,
        "fidelity": args.fidelity,
        "upscale": args.upscale if upscale is None else upscale,
        "device": args.device,
        "precision": args.precision,
        "compile": bool(getattr(args, "compile", False)),
        "aligned": bool(args.aligned),
        "only_center_face": bool(args.only_center_face),
        "detector": None if args.aligned else args.detector,
        "alignment": None if args.aligned else args.alignment,
        "bg_upsampler": None if args.aligned else args.bg_upsampler,
        "template": getattr(restorer, "template_name", None),
        "size": int(restorer.size),
    }


# ------------------------------------------------------------------------------------------ per input
def process_photo(path: Path, stem: str, out: Path, args, restorer, detector, bg_upsampler=None) -> dict:
    from dynface.faces import restore_photo
    from dynface.imageio import ImageReadError, capped_upscale, output_ext, read_image, save_image, write_like_input

    t0 = time.perf_counter()
    try:
        img = read_image(path)
    except ImageReadError as e:
        raise InputError(str(e).removeprefix(f"{path}: ")) from None
    t_read = time.perf_counter() - t0
    notes = list(img.notes)
    if img.was_gray:
        notes.append("grayscale input: restored in RGB, saved as grayscale")
    w, h = img.size
    s = capped_upscale(w, h, args.upscale)
    if s < args.upscale:
        notes.append(f"upscale reduced from {args.upscale:g} to {s:.3f} (output limited to the memory budget)")
    res = restore_photo(
        img.rgb, restorer, upscale=s, only_center_face=args.only_center_face, draw_box=args.draw_box,
        detector=detector, seed=args.seed, fidelity=args.fidelity, return_maps=args.save_maps,
        batch_size=args.batch_size, border=args.border, bg_upsampler=bg_upsampler, alignment=args.alignment,
    )
    if not res.faces:
        raise InputError("no face found")
    t1 = time.perf_counter()
    sfx = f"_{args.suffix}" if args.suffix else ""
    faces_rec = []
    for i, (crop, face, rec) in enumerate(zip(res.crops, res.restored, res.records, strict=True)):
        name = f"{stem}_{i:02d}"
        files = {
            "cropped_face": save_image(crop, out / "cropped_faces" / f"{name}.png"),
            "restored_face": save_image(face, out / "restored_faces" / f"{name}{sfx}.png"),
            "cmp": save_image(_side_by_side(crop, face), out / "cmp" / f"{name}.png"),
        }
        if args.save_maps:
            for key, lst in res.maps.items():
                if i < len(lst):
                    files[f"map_{key}"] = save_image(lst[i], out / "maps" / f"{name}_{key}.png")
        rec = dict(rec)
        rec["files"] = {k: str(v.relative_to(out)) for k, v in files.items()}
        faces_rec.append(rec)
    ext = output_ext(args.ext, path, img.alpha is not None)
    photo_path = out / "restored_imgs" / f"{stem}{sfx}.{ext}"
    notes += write_like_input(res.photo, img, photo_path)
    t_write = time.perf_counter() - t1
    total = time.perf_counter() - t0
    for r in faces_rec:
        r["timing"]["read_s"] = round(t_read, 4)
    return {
        "status": "ok",
        "input": str(path),
        "stem": stem,
        "image": img.info(),
        "output_size": [int(res.photo.shape[1]), int(res.photo.shape[0])],
        "restored_img": str(photo_path.relative_to(out)),
        "num_faces": len(faces_rec),
        "faces": faces_rec,
        "notes": notes,
        "timing": {"read_s": round(t_read, 4), **{k: round(v, 4) for k, v in res.timing.items()}, "write_s": round(t_write, 4), "total_s": round(total, 4)},
        "_settings_upscale": s,
    }


def process_aligned_batch(items: list[tuple[int, Path, str]], out: Path, args, restorer) -> list[tuple[Path, str, str | None, list[str]]]:
    """Restore aligned crops; returns (path, stem, error or None, notes) per item. Calls the restorer once per run
    of consecutive readable inputs, with seed = --seed + the first one's index."""
    import numpy as np

    from dynface.faces import estimate_affine, paste_face, template_for, warp_face
    from dynface.imageio import ImageReadError, read_image, save_image, to_output_image

    results: dict[int, tuple[Path, str, str | None, list[str]]] = {}
    loaded = []
    size = int(restorer.size)
    tmpl = getattr(args, "input_template", None)
    convert = bool(tmpl) and tmpl != getattr(restorer, "template_name", None)
    affines: dict[int, np.ndarray] = {}
    crops: dict[int, np.ndarray] = {}
    for k, path, stem in items:
        t0 = time.perf_counter()
        try:
            img = read_image(path)
        except ImageReadError as e:
            results[k] = (path, stem, str(e).removeprefix(f"{path}: "), [])
            continue
        if convert:
            w, h = img.size
            if w != h:
                results[k] = (path, stem, f"not square ({w}x{h}): cannot use --input-template {tmpl}", [])
                continue
            affines[k] = estimate_affine(template_for(tmpl, w), template_for(restorer.template_name, size))
            crops[k] = warp_face(img.rgb, affines[k], size, args.border)
        else:
            crops[k] = img.rgb
        loaded.append((k, path, stem, img, time.perf_counter() - t0))
    runs: list[list] = []
    for item in loaded:
        if runs and runs[-1][-1][0] + 1 == item[0]:
            runs[-1].append(item)
        else:
            runs.append([item])
    sfx = f"_{args.suffix}" if args.suffix else ""
    fext = args.ext if args.ext in ("png", "jpg", "webp") else "png"
    for run_items in runs:
        t0 = time.perf_counter()
        outp = restorer.restore(
            [crops[it[0]] for it in run_items], seed=args.seed + run_items[0][0], fidelity=args.fidelity, return_maps=args.save_maps
        )
        t_restore = (time.perf_counter() - t0) / len(run_items)
        maps = getattr(outp, "maps", None) or {}
        for j, (k, path, stem, img, t_read) in enumerate(run_items):
            t1 = time.perf_counter()
            face = np.asarray(outp.images[j], dtype=np.uint8)
            notes = list(img.notes)
            if convert:  # back into the input's framing
                framed = img.rgb.copy()
                paste_face(framed, face, affines[k], size)
                face = framed
                notes.append(f"re-aligned from the {tmpl} framing to the model's {restorer.template_name}; result pasted back")
            files = {}
            fpath = out / "restored_faces" / f"{stem}{sfx}.{fext}"
            save_image(to_output_image(face, img, fext, notes), fpath)
            files["restored_face"] = fpath
            files["cmp"] = save_image(_side_by_side(img.rgb, face), out / "cmp" / f"{stem}.png")
            if args.save_maps:
                for key, lst in maps.items():
                    if j < len(lst):
                        files[f"map_{key}"] = save_image(lst[j], out / "maps" / f"{stem}_{key}.png")
            if img.was_gray:
                notes.append("grayscale input: restored in RGB, saved as grayscale")
            rec = {
                "status": "ok",
                "input": str(path),
                "stem": stem,
                "image": img.info(),
                "num_faces": 1,
                "faces": [{
                    "index": 0,
                    "aligned_input": True,
                    "input_template": tmpl if convert else None,
                    "affine": np.round(affines[k], 6).tolist() if convert else None,
                    "restorer": dict(outp.records[j]) if j < len(outp.records) else {},
                    "files": {kk: str(v.relative_to(out)) for kk, v in files.items()},
                    "timing": {"read_s": round(t_read, 4), "restore_s_shared": round(t_restore, 4), "write_s": round(time.perf_counter() - t1, 4)},
                }],
                "notes": notes,
                "settings": _settings(args, restorer),
            }
            write_record(out, stem, rec)
            results[k] = (path, stem, None, notes)
    return [results[k] for k, _, _ in items]


# ------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    debug = os.environ.get("DYNFACE_DEBUG", "") not in ("", "0")
    files, folders, ignored = collect_inputs(args.input)
    if not files:
        where = ", ".join(args.input)
        extra = f" ({len(ignored)} file(s) without an image extension)" if ignored else ""
        raise UsageError(f"no input images found in {where}{extra}")
    out = Path(args.output).expanduser()
    check_output_dir(out, files, folders, args.allow_input_dir)
    stems = assign_stems(files)
    if args.input_template:
        from dynface.faces import load_templates

        if not args.aligned:
            raise UsageError("--input-template is for --aligned inputs")
        if args.input_template not in load_templates():
            raise UsageError(f"unknown --input-template {args.input_template!r}; known: {', '.join(sorted(load_templates()))}")
    bg_upsampler = None if args.aligned else load_bg_upsampler(args.bg_upsampler)
    try:
        for sub in SUBDIRS:
            if sub == "maps" and not args.save_maps:
                continue
            if args.aligned and sub in ("cropped_faces", "restored_imgs"):
                continue
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out}: {e}") from None
    clean_stale_temp_files(out)

    todo = [(k, f, s) for k, (f, s) in enumerate(zip(files, stems, strict=True))]
    skipped = [(f, s) for _, f, s in todo if args.skip_existing and is_complete(out, s)]
    skip_set = {s for _, s in skipped}
    todo = [t for t in todo if t[2] not in skip_set]

    failures: list[tuple[Path, str]] = []
    done: list[tuple[Path, list[str]]] = []
    restorer = None
    if args.precision == "fp16" and args.device == "cpu":
        print("note: --precision fp16 on a CPU is emulated and slow (×4 the time of fp32 for embedded-64 on "
              "2 cores); bf16 is the fast CPU choice (×0.6)", file=sys.stderr)
    if todo:
        try:
            restorer = load_restorer(args)
        except UsageError:
            raise
        except Exception as e:
            if debug:
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UsageError(f"cannot load model {args.model!r}: {msg}") from None

    from tqdm import tqdm

    bar = tqdm(total=len(files), initial=len(skipped), unit="img", file=sys.stderr, disable=args.quiet or None, dynamic_ncols=True)
    interrupted = False
    try:
        if args.aligned:
            bs = args.batch_size or 8
            i = 0
            while i < len(todo):
                chunk = todo[i : i + bs]
                i += len(chunk)
                try:
                    res = process_aligned_batch(chunk, out, args, restorer)
                except Exception as e:
                    if debug:
                        raise
                    msg = _one_line(e)
                    res = [(p, s, msg, []) for _, p, s in chunk if not is_complete(out, s)]
                for path, _stem, err, notes in res:
                    if err:
                        failures.append((path, err))
                        tqdm.write(f"FAILED {path}: {err}", file=sys.stderr)
                    else:
                        done.append((path, notes))
                bar.update(len(chunk))
        else:
            from dynface.faces import FaceDetector

            detector = FaceDetector(kind=args.detector, min_score=args.min_score)
            for _k, path, stem in todo:
                bar.set_postfix_str(path.name[-30:], refresh=False)
                try:
                    rec = process_photo(path, stem, out, args, restorer, detector, bg_upsampler)
                    s = rec.pop("_settings_upscale")
                    rec["settings"] = _settings(args, restorer, s)
                    write_record(out, stem, rec)  # LAST: marks the input complete
                    done.append((path, rec["notes"]))
                except InputError as e:
                    failures.append((path, str(e)))
                    tqdm.write(f"FAILED {path}: {e}", file=sys.stderr)
                except Exception as e:  # never a traceback for one bad file
                    if debug:
                        raise
                    failures.append((path, _one_line(e)))
                    tqdm.write(f"FAILED {path}: {_one_line(e)}", file=sys.stderr)
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    _summary(files, done, skipped, failures, ignored, out, interrupted)
    if interrupted:
        return 130
    return 0 if not failures else 1


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def _summary(files, done, skipped, failures, ignored, out: Path, interrupted: bool) -> None:
    n = len(files)
    head = f"dynface restore: {n} input(s): {len(done)} restored, {len(skipped)} skipped (complete), {len(failures)} failed"
    if interrupted:
        head += f", {n - len(done) - len(skipped) - len(failures)} not processed (interrupted)"
    lines = [head + f" -> {out}"]
    for p, err in failures:
        lines.append(f"  FAILED  {p}: {err}")
    for p, notes in done:
        for note in notes:
            lines.append(f"  note    {p}: {note}")
    if ignored:
        names = ", ".join(f.name for f in ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        lines.append(f"  ignored {len(ignored)} file(s) without an image extension: {names}")
    print("\n".join(lines), flush=True)
