"""``dynface restore``: restore the faces of whole photographs (or of aligned face crops).

Flags follow GFPGAN / CodeFormer (``-i``, ``-o``, ``--aligned``, ``-s/--upscale``, ``-w/--fidelity``, ``--ext``,
``--suffix``, ``--only-center-face``, ``--draw-box``) plus the method's own (``--model``, ``--mode``, ``--steps``,
``--seed``, ``--precision``, ``--color-fix``, ``--detail``, ``--save-maps``) and batch safety
(``--skip-existing``, ``--threads``). This module only parses flags and prints; the work is done by
:mod:`dynface.jobs` (the same code the web app and the cluster engines use).

Outputs under ``-o`` (default ``results``)::

    cropped_faces/<stem>_NN.png      aligned input faces (whole photos only)
    restored_faces/<stem>_NN.png     restored faces (``--aligned``: restored_faces/<stem>.png)
    cmp/<stem>_NN.png                input | output side by side
    restored_imgs/<stem>.<ext>       the photo with its faces restored (whole photos only)
    restored_videos/<stem>.mp4       a video (.mp4/.mov/.mkv/.avi/...) with its frames' faces restored
    maps/<stem>_NN_<key>.png         with --save-maps: DGSA map and guides
    records/<stem>.json              per face: the restorer's record, bbox, landmarks, size, timing
    manifest.jsonl                   one line per input and run: status, reason, outputs, record (``dynface report``)

``--suffix S`` appends ``_S`` to the names in restored_faces/ and restored_imgs/; it must be a plain name (no
``/``, ``..`` or leading ``.``), and every output path is checked to stay inside ``-o``. Faces are numbered left
to right. Inputs sharing a stem are told apart by folder (``x/00.jpg``, ``y/00.jpg`` → ``x_00``, ``y_00``;
``2019/x/00.jpg``, ``2020/x/00.jpg`` → ``2019_x_00``, ``2020_x_00``) or, in one folder, by extension (``a.jpg``,
``a.png`` → ``a_jpg``, ``a_png``). Folders are read for .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff/.gif/.heic/.heif/
.hif/.avif files, in any case (GIF and multi-page TIFF: the first frame, with a note; HEIC/HEIF/AVIF are written as
JPEG with ``--ext auto``); hidden files and folders are skipped.

**Whole archives.** ``-r/--recursive`` also searches the input folders' sub-folders, depth first in name order.
Links to folders are not followed (no loops); the output folder (with ``--allow-input-dir``) and folders an
earlier ``restore`` wrote (``manifest.jsonl`` and ``records/``) are left out, with a note; a sub-folder that
cannot be read is noted and the rest goes on. The outputs stay flat: a file in a sub-folder is named after its path
below the folder given (``photos/2019/party/00.jpg`` → ``2019_party_00``), so its names do not depend on the rest of
the archive and ``--skip-existing`` restores only what was added since; ``manifest.jsonl`` maps each input path to
its outputs. Without ``-r`` sub-folders are not searched (a glob such as ``'photos/**/*.jpg'`` also reaches them,
named as above without the folder prefix).
A photo in which no face is found is reported as failed (``no_face``); with ``--keep-faceless`` it is written
upscaled as it is (``restored_imgs/`` and its record, 0 faces, a note), counted as restored in the head line
(``N restored (K without a face, written as they are)``), so a restored archive is complete.

**Aligned crops.** ``--aligned`` hands the crops to the model as they are (resized to its resolution), so they
are framed like its training data (the embedded models: UTKFace crops, template ``utkface64`` at 128 or 64 px).
Crops far from square (sides differing by more than ×1.25) or smaller than 16 px are refused. A crop larger than
the model comes back at its own size: with ``--detail keep`` (default) the restoration's band below the model's
Nyquist frequency and the crop's own detail above it; ``--detail restored``: the restoration upscaled (Lanczos).
Each record has the crop's side and ``scale_to_model``.
A crop in another framing (GFPGAN / CodeFormer / DifFace-style FFHQ-aligned crops: ``ffhq512``) is re-aligned by
the template-to-template similarity, restored, and pasted back into its own framing and size. ``--input-template
auto`` (default) tells each crop's framing from dlib's 5 points found on it (the nearest known template, when it
is clearly nearest: :func:`dynface.faces.guess_template`; the record keeps the distances); a crop whose face fits
no template clearly, or is not square, is aligned from those points; where no face is found a 256/512/1024-px crop
is taken as FFHQ-aligned and another in the model's own framing, with a note (``dynface.jobs._auto_framing``).
``--input-template NAME`` sets it for every crop.
(Leaving out ``--aligned`` also works: detection finds the face in the crop.)

**A batch never loses work.** Every file is written to a hidden temporary file and renamed; the record JSON
is written after the images and then the manifest line, so an input is *complete* when its record says ok, the
files it lists exist unchanged (the size and mtime the record keeps, else their SHA-256), the input has not
changed since (size and mtime) and the record was made with the same
output settings (``dynface.jobs.OUTPUT_FLAGS``: ``-w``, ``--model``, ``--ext``, ..., not ``--threads``);
``--skip-existing`` skips exactly those and restores the others again. Temporary files left by a killed run
are removed at the next start. A file that cannot be used (missing, empty, corrupt, not an image, no face, a
failed write) gets one line in the final summary and the batch goes on. Exit status: 0 when every input
succeeded (or was skipped as complete), 1 when any failed, 2 for usage errors (bad flags, no inputs, output
folder inside the input folder, model that cannot be loaded). The output folder may not be an input folder,
nor lie inside one unless ``--allow-input-dir``; inputs are never modified.

**Reproducibility.** ``--seed`` fixes the noise: face NN of the input whose bytes have the SHA-256 H uses
``dynface.jobs.face_seed(seed, H, NN)``, whatever ``--batch-size``, the file order, the file's name or
``--skip-existing`` do.
In bf16/fp16 (``--precision auto`` on CPUs with native bf16) and on GPUs a batch can change a face by ±1 level,
so there faces are restored one per call unless ``--fast-batches``.

**Threads.** ``--threads N`` sets torch's CPU threads. The default is the number of cores not already busy (at
least 1): torch's own default (all cores) slows down by ×50 when another process keeps the cores busy
(benchmarks/threads.py).

**Testing hook.** The environment variable ``DYNFACE_RESTORER_FACTORY=module:callable`` replaces
``DynFaceRestorer.from_pretrained`` (it is called with the same keyword arguments: ``name_or_path``,
``device``, ``mode``, ``steps``, ``precision``, and ``color_fix`` etc. when given). It exists for tests (fake or
slow restorers), and is announced on stderr when used. ``DYNFACE_DEBUG=1`` re-raises per-file errors.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from dynface import engines, jobs
from dynface.commands import sigterm_as_ctrl_c
from dynface.commands.argtypes import number
from dynface.jobs import FACTORY_ENV, MAX_FUSE_FRAMES, MAX_SEED, MODES, RestoreSettings, UsageError
from dynface.registry import DEFAULT_MODEL


# ------------------------------------------------------------------------------------------ arguments
def _steps(s: str) -> str:
    from dynface.diffusion import check_steps

    try:
        return check_steps(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _plain(s: str) -> str:
    from dynface.outputs import UnsafePathError, plain_name

    try:
        return plain_name(s, "suffix")
    except UnsafePathError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the faces of photographs and videos (or of aligned face crops)",
        description="Restore faces: detect, align, restore (DynFaceRestore), paste back. A restored face is a "
                    "generative model's estimate: plausible detail that can differ from the person's (glasses, "
                    "expression, marks), more so the smaller and worse the input; do not use it to identify anyone.",
        epilog=(
            "outputs: OUT/{cropped_faces,restored_faces,cmp,restored_imgs,records}/ (+ maps/ with --save-maps, "
            "restored_videos/ for videos) and "
            "OUT/manifest.jsonl (one line per input; `dynface report OUT` summarises it). An input is complete when "
            "its record and outputs are on disk (--skip-existing). "
            "exit status: 0 all inputs ok, 1 some failed (listed in the summary), 2 usage error. "
            "Details: pydoc dynface.commands.restore"
        ),
    )
    p.add_argument("-i", "--input", nargs="+", action="extend", required=True, metavar="PATH",
                   help="image or video file(s), folder(s) or glob pattern(s)")
    p.add_argument("-o", "--output", default="results", help="output folder (default: results)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="search the input folders' sub-folders too (whole archives; links to folders are not followed, "
                        "and folders written by dynface restore are left out)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: restore them directly, batched")
    p.add_argument("-s", "--upscale", type=number(float, 1, 8), default=2.0, help="final upscaling of the whole photo, 1-8 (default: 2)")
    p.add_argument("-w", "--fidelity", type=number(float, 0, 1), default=None, help="fidelity weight in [0, 1] (default 0.5: the guidance strength the model stores; 0: the prior alone, 1: twice the pull to the input)")
    p.add_argument("--ext", default="auto", choices=jobs.EXT_CHOICES, help="format of restored_imgs (default auto: like the input, jpg for HEIC/AVIF; png if it has alpha; "
                        "tif: a lossless master with every metadata block, 16 bits for a 16-bit input)")
    p.add_argument("--suffix", type=_plain, default=None, help="append _SUFFIX to restored face / image names (a plain name)")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH", help=f"embedded model name, model folder or prior file (default: {DEFAULT_MODEL})")
    p.add_argument("--mode", default="full", choices=MODES, help="method variant / ablation (default: full)")
    p.add_argument("--guidance", choices=("unet", "x0", "prox"), default=None,
                   help="guidance gradient: through the UNet (the paper's), w.r.t. x0 only (cheaper), or the Fourier proximal step "
                        "(default: the model's; x0 for the embedded models, unet for a bare prior)")
    p.add_argument("--dblm", metavar="PATH", help="DBLM weights, when --model is a bare prior file (e.g. DifFace's .pth)")
    p.add_argument("--restorer", metavar="PATH", help="DifFace's SwinIR (swinir_restoration512_L1.pth) as RM; without --dblm only --mode fixed_start/restorer_only")
    p.add_argument("--dgsa", metavar="PATH", help="DGSA weights, when --model is a bare prior file")
    p.add_argument("--dsst", metavar="PATH", help="DSST table JSON (default: the model's own, else the packaged 512-px table)")
    p.add_argument("--steps", type=_steps, default=None,
                   help="sampling steps: ddimN, N or a,b,c (2-1000 in all; default: the model's); ddim10 is an even "
                        "stride (0, 100, ..., 900), 10 spreads 10 steps over the whole range (0, 111, ..., 999)")
    p.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0, help="random seed (default: 0); each face's noise comes from the seed, "
                   "the input's content (SHA-256) and the face's number, so results do not depend on batching or on "
                   "the file's name")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="compute device (default: cpu)")
    p.add_argument("--precision", default="auto", choices=jobs.PRECISIONS,
                   help="compute precision (default auto: fp32, whose batches are nearly exact on a CPU; bf16 one "
                        "face a call for models of 128 px and more on CPUs with native bf16, and with --fast-batches)")
    p.add_argument("--color-fix", default=None, choices=jobs.COLOR_FIXES,
                   help="match the output's colours to the restorer's first estimate (default: the model's)")
    p.add_argument("--detail", default="keep", choices=jobs.DETAIL_MODES,
                   help="faces larger than the model: keep the input's detail above the model's resolution (keep, "
                        "default) or use the restoration alone, upscaled (restored)")
    p.add_argument("--grain", default="none", choices=jobs.GRAIN_MODES,
                   help="match: a face restored cleaner than the photo around it (film grain, scanner or sensor "
                        "noise) gets the difference as fresh grain, so that it does not show as a smooth patch "
                        "(default none: faces come back clean)")
    p.add_argument("--dust", action="store_true",
                   help="old prints: fill in the white dust specks and thin white scratches on the faces' skin "
                        "before restoring them (eyes, brows, nose, mouth, the hairline and the rest of the photo keep "
                        "theirs; faint ones and those on small faces may stay; the record's 'dust' counts what was "
                        "filled, --save-maps shows it)")
    p.add_argument("--descreen", action="store_true",
                   help="printed photos (newspaper, magazine, yearbook): smooth the halftone screen's dots away "
                        "before looking for faces (the whole photo; found from the scan itself, the record's "
                        "'descreen' says what; a screen too fine for the scan to show is left). Without it a photo "
                        "that looks printed gets a note")
    p.add_argument("--threads", type=number(int, 1), default=None,
                   help="CPU threads (default: the cores not already busy, at least 1)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet: minutes of compilation first, then faster on a GPU (×0.5–0.8 time); "
                        "no gain measured on CPUs")
    p.add_argument("--batch-size", type=number(int, 1), default=None, help="faces per restorer call (default 8 of 64 px, 2 of 128 px: "
                   "the model pixels that pay on a CPU; in fp32 on a CPU the faces of several photos or frames "
                   "share a call; models of 128 px and more go one face a call in bf16 on CPUs with native bf16; "
                   "otherwise each photo's own faces, all at once by default)")
    p.add_argument("--fast-batches", dest="deterministic", action="store_false",
                   help="batch faces even in bf16/fp16 or on a GPU, where a face's output can then differ by ±1 level "
                        "with its batch (faster on GPUs); by default such faces are restored one per call")
    p.add_argument("--exact", action="store_true",
                   help="restore every face in its own call, so each output is byte-identical whatever --batch-size, "
                        "file order or worker (fp32 batches differ by ±1 level in a few values: "
                        "docs/results/batch_invariance.md); slower on a CPU (about ×1.9 for whole photos)")
    p.add_argument(
        "--input-template",
        default="auto",
        metavar="NAME",
        help="with --aligned: the framing of the input crops, auto (default: told per crop from its landmarks: "
        "ffhq512, the model's own, or aligned from the landmarks when no template fits; with no face found, "
        "ffhq512 for 256/512/1024-px crops, else the model's) or a name: ffhq512 (GFPGAN/CodeFormer/DifFace-aligned "
        "faces) or utkface64 (the embedded models' own); when it differs from the model's, crops are re-aligned "
        "for it and the result is pasted back into the input's framing",
    )
    p.add_argument("--alignment", default="auto", choices=("auto", "ffhq", "template"),
                   help="how detected faces are framed: ffhq = the FFHQ dataset's own crop from dlib's points, "
                        "template = a 5-point template fit; auto (default) = ffhq for 512-px FFHQ priors, else template")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the photo's centre")
    p.add_argument("--keep-faceless", action="store_true",
                   help="write photos without a detected face too (upscaled, as they are; counted as restored, with a "
                        "note) instead of reporting them as failed: whole archives")
    p.add_argument("--clip", metavar="START-END",
                   help="videos: restore only this part (seconds, M:SS or H:MM:SS; either end may be left out: "
                        "1:10-1:25, 70-85, 1:10-, -30). Restoring takes about 1.4 s per face and frame on 2 CPU cores")
    p.add_argument("--fuse-frames", type=number(int, 0, MAX_FUSE_FRAMES), default=RestoreSettings.fuse_frames, metavar="N",
                   help="videos: each small face's crop (one the model enlarges: CCTV's, faces in the distance) is "
                        "averaged with the same face's crops in up to N frames before it, pixel by pixel where they "
                        "differ only as their noise does (a mouth that moves is left as it is), before it is "
                        "restored: less noise going into the model and less flicker coming out (default: %(default)s; "
                        f"0: each frame on its own; at most {MAX_FUSE_FRAMES})")
    p.add_argument("--videos", action="store_true",
                   help="also restore the videos found in the input folders (left out by default, with a note: "
                        "hours of work each); a video named with -i is always restored")
    p.add_argument("--strip-metadata", action="store_true",
                   help="write none of the input's metadata (EXIF: date taken, camera, GPS position, ...; XMP, "
                        "IPTC and text: captions, keywords, credits) into the restored photos, only the Software tag; the "
                        "colour profile and print resolution are kept. Default: kept, as photo managers sort by them")
    p.add_argument("--strip-location", action="store_true",
                   help="write the restored photos and videos without where they were taken (EXIF GPS, XMP and IPTC "
                        "places, a video's location tags); the date, camera, captions and copyright stay (--strip-metadata "
                        "drops everything)")
    p.add_argument("--draw-box", action="store_true",
                   help="draw the detected face boxes on restored_imgs, each numbered as its face's files (_00, _01, ...)")
    p.add_argument("--save-maps", action="store_true", help="also save the DGSA map and guides (maps/)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs restored completely by an earlier run (manifest, record and files)")
    p.add_argument("--allow-input-dir", action="store_true", help="allow the output folder to lie inside an input folder")
    p.add_argument("--detector", default="auto", choices=("auto", "hog", "cnn"),
                   help="dlib face detector: auto (default) = HOG, the CNN detector checking HOG's near misses (small, "
                        "soft faces), and where no face is found the CNN on a small copy (1-4 s more; it finds blurred, "
                        "noisy and dark faces HOG misses, from about a tenth of the photo's side; a video's frames: "
                        "the near misses only); hog = HOG only; cnn = the CNN at the photo's resolution (x10-70 slower: smaller and "
                        "turned faces too)")
    p.add_argument("--detect-side", type=number(int, 64), default=2000, metavar="PX",
                   help="detection runs on a copy of the photo at most PX on its longer side (default 2000): in larger "
                        "photos (scans) smaller faces are missed (a 7000-px scan: under about 140 px; with PX 7000, "
                        "80 px), slower, and the default copy is searched too; a photo without a face found, or whose "
                        "smallest face found is near the limit, says what it would take")
    p.add_argument("--detect-turned", action="store_true",
                   help="also search each photo turned a quarter each way: faces lying sideways (a scan stored "
                        "sideways, a person lying down) are found and restored upright, then put back as they lie; "
                        "detection takes about three times as long")
    p.add_argument("--no-detect-edges", dest="detect_edges", action="store_false",
                   help="do not search the photo padded at its edges: faces cut by the photo's edge (a person at the "
                        "edge of a group photo, someone entering a CCTV frame) are then seldom found; the padded "
                        "search makes detection about 2.3 times as long")
    p.add_argument("--max-megapixels", type=number(float, 0, lo_open=True), default=jobs.MAX_PIXELS / 1e6, metavar="MP",
                   help=f"largest input image, per file (default {jobs.MAX_PIXELS / 1e6:g} MP); larger ones are refused "
                        "before decoding. Raise it for big scans: memory grows with it (about 1.6 GB for a 24-MP scan "
                        "restored with -s 2)")
    p.add_argument("--bg-upsampler", default="lanczos", metavar="lanczos|MODULE:CALLABLE",
                   help="background upscaling: Lanczos, or a Python callable (rgb uint8 array, scale) -> array")
    p.add_argument("--min-score", type=number(float), default=0.0, help="detector confidence threshold (default 0; raise it against false detections)")
    p.add_argument("--border", default=RestoreSettings.border, choices=("constant", "reflect"),
                   help="fill of the crop's area outside the photo, for faces cut by its edge (default: reflect, the "
                        "photo mirrored; constant: facexlib's grey, as GFPGAN, which left a colour band along the cut)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    engines.add_arguments(p)  # --engine ray/--address/--workers/... (dynface.engines)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> int:
    stop = sigterm_as_ctrl_c()  # ends the job as Ctrl-C does: manifest, summary, no temporary file, exit 130
    try:
        return _run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop()


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    engines.prepare(args)
    if getattr(args, "max_megapixels", None) is not None:
        args.max_pixels = int(args.max_megapixels * 1e6)
    settings = RestoreSettings.from_namespace(args)
    out = Path(args.output).expanduser()
    notes: list[str] = []
    items, ignored = jobs.plan_inputs(args.input, out, settings, notes)
    for w in [*notes, *jobs.settings_warnings(settings)] if engines.reports() else []:  # torchrun: rank 0 says them
        print(f"note: {w}", file=sys.stderr)
    if os.environ.get(FACTORY_ENV):
        print(f"note: restorer from {FACTORY_ENV}={os.environ[FACTORY_ENV]} (testing hook)", file=sys.stderr)

    bar = None
    # without a terminal (a log file, nohup, cron) tqdm draws no bar: one plain line per input instead, so that an
    # overnight run's log shows how far it got, and one every PLAIN_EVERY_S within a long input (a video)
    plain = not args.quiet and not sys.stderr.isatty() and engines.reports()
    t_start, seen, last_line = time.monotonic(), [0], [time.monotonic()]

    def progress(p: jobs.Progress) -> None:
        if bar is None:
            return
        target = min(bar_base + p.fraction, bar.total)  # a video's frame count is the file's estimate: never past
        if target > bar.n:
            bar.update(target - bar.n)
        if p.message:
            bar.set_postfix_str(p.message[-30:], refresh=False)
            if plain and time.monotonic() - last_line[0] >= PLAIN_EVERY_S:
                last_line[0] = time.monotonic()
                print(f"[{bar_base + seen[0] + 1}/{len(items)}] at {p.message}", file=sys.stderr, flush=True)

    def on_result(r: jobs.FileResult) -> None:  # as it happens, above the bar; with -q the summary's line is enough
        if plain:
            seen[0] += 1
            last_line[0] = time.monotonic()
            print(_plain_line(r, bar_base + seen[0], len(items), seen[0], time.monotonic() - t_start), file=sys.stderr,
                  flush=True)
        elif r.status in ("failed", "no_face") and not args.quiet:
            tqdm.write(f"{_FAIL_LABEL[r.status]} {_shown(r.path)}: {r.error}", file=sys.stderr)

    # the bar starts after the skip check, at the number of complete inputs
    changed: dict[str, list[str]] = {}
    complete = engines.complete_inputs(args, out, settings, items, changed)  # the one skip check, shared with the job
    by_flags = {stem: [f for f in fl if f in jobs.OUTPUT_FLAGS] for stem, fl in changed.items()}
    if any(by_flags.values()):
        flags = sorted({f for fl in by_flags.values() for f in fl}, key=jobs.OUTPUT_FLAGS.index)
        print(f"note: {sum(map(bool, by_flags.values()))} input(s) restored again: their outputs in {out} were made "
              f"with other {', '.join('--' + f.replace('_', '-') for f in flags)}", file=sys.stderr)
    if retrained := [stem for stem, fl in changed.items() if "weights" in fl]:
        print(f"note: {len(retrained)} input(s) restored again: their outputs in {out} were made with other weight "
              "files at the same paths (their SHA-256 differs from the records')", file=sys.stderr)
    if altered := [stem for stem, fl in changed.items() if "outputs" in fl]:
        print(f"note: {len(altered)} input(s) restored again: an output in {out} is no longer the file its record "
              f"describes (replaced, edited or damaged; `dynface report --verify` lists them): "
              f"{', '.join(altered[:5])}{' ...' if len(altered) > 5 else ''}", file=sys.stderr)
    bar_base = len(complete[0]) if complete else 0
    bar = tqdm(total=len(items), initial=bar_base, unit="img", file=sys.stderr, disable=args.quiet or None, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}{postfix}]")
    t0 = time.perf_counter()
    try:
        summary = engines.run_job(args, out, settings, progress=progress, on_result=on_result, items=items, ignored=ignored,
                                  complete=complete)
    finally:
        bar.close()
    if engines.reports():  # under torchrun: rank 0 only
        _print_summary(summary, time.perf_counter() - t0)
    return summary.exit_code


PLAIN_EVERY_S = 60.0  # without a terminal: a line at least this often while an input is restored (a video's frame)


def _plain_line(r: jobs.FileResult, n: int, total: int, run: int, elapsed: float) -> str:
    """The progress line of an input without a terminal: ``[12/300] done a.jpg: 3 face(s), 4.2 s; 0:14:30 left``
    (the time left from this run's pace: ``run`` inputs in ``elapsed`` seconds)."""
    what = (f"{r.faces} face(s), {r.seconds:.1f} s" if r.status == "done" else f"{r.error}")
    left = (total - n) * elapsed / run if run else 0.0
    eta = f"; {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d} left" if n < total else ""
    return f"[{n}/{total}] {_FAIL_LABEL.get(r.status, r.status)} {_shown(r.path)}: {what}{eta}"


NOTE_GROUP = 3  # a note that more files share than this is printed once, with their count


def _note_lines(results: list[jobs.FileResult]) -> list[str]:
    """The summary's note lines: one per file and note, but a note shared by more than NOTE_GROUP files (an archive
    of phone photos: "EXIF orientation 6 applied ..." on each) once, with the count and the first files. The
    face-less note is counted in the head line instead."""
    by_note: dict[str, list[str]] = {}
    for r in results:
        for note in r.notes:
            if note == jobs.FACELESS_NOTE:
                continue
            paths = by_note.setdefault(note, [])
            if paths[-1:] != [r.path]:  # a file counts once per note
                paths.append(r.path)
    lines = []
    for r in results:
        for note in (n for n in r.notes if n in by_note):
            paths = by_note[note]
            if len(paths) <= NOTE_GROUP:
                lines.append(f"  note    {_shown(r.path)}: {note}")
            elif paths[0] == r.path:  # the group's line, where its first file is
                lines.append(f"  note    {len(paths)} files: {note} ({', '.join(map(_shown, paths[:2]))}, ...)")
    return lines


_FAIL_LABEL = {"failed": "FAILED", "no_face": "NO FACE"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(path: str) -> str:
    """A path as a line shows it: control characters (a newline in a file name split the line) as '?', as ls does."""
    return _CONTROL.sub("?", str(path))


def _print_summary(s: jobs.JobSummary, seconds: float | None = None) -> None:
    """The run's summary; ``seconds``: its wall time (the model's loading included), said with the faces restored:
    a run under -q, or in a log, gave no time at all."""
    n = s.total
    done, failed = s.done, s.failed
    faceless = [r for r in done if jobs.FACELESS_NOTE in r.notes]
    no_face = sum(r.status == "no_face" for r in failed)
    head = (f"dynface restore: {n} input(s): {len(done)} restored"
            + (f" ({len(faceless)} without a face, written as they are)" if faceless else "")
            + f", {len(s.skipped)} skipped (complete), {len(failed)} failed"
            + (f" ({no_face} without a face)" if no_face else ""))  # as `dynface report` counts them
    if s.interrupted or s.stopped:
        why = "interrupted" if s.interrupted else "stopped: the output's disk is full"
        head += f", {n - len(done) - len(s.skipped) - len(failed)} not processed ({why})"
    if seconds is not None:
        faces = sum(r.faces for r in done)
        head += f"; {faces} face(s) in {seconds:.1f} s" + (f" ({seconds / faces:.2f} s/face, all included)" if faces else "")
    lines = [head + f" -> {s.out}"]
    for r in failed:
        lines.append(f"  {_FAIL_LABEL[r.status]:<7} {_shown(r.path)}: {r.error}")
    lines += _note_lines(failed + done)  # a failed file's notes too (the pages of a file not read, ...)
    for m in s.manifest_errors:
        lines.append(f"  warning manifest line not written: {m}")
    if s.ignored:
        names = ", ".join(f.name for f in s.ignored[:5]) + (" ..." if len(s.ignored) > 5 else "")
        lines.append(f"  ignored {len(s.ignored)} file(s) without an image extension: {names}")
    print("\n".join(lines), flush=True)
