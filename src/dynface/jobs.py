"""The job layer of ``dynface restore``: every front end (CLI, web app, cluster engines) restores files through here.

A job is a list of input files, an output folder ``OUT`` and one :class:`RestoreSettings`::

    summary = run_job(["photos/"], Path("out"), RestoreSettings(upscale=2))

:func:`run_job` = :func:`plan_inputs` (collect files, give each a unique output stem, check the output folder) →
skip inputs that are complete (``skip_existing``) → :func:`load_restorer` → :func:`restore_items` (read, restore,
write every output atomically, then ``records/<stem>.json``) → one line per input in ``OUT/manifest.jsonl``
(:class:`Manifest`). Nothing here prints: progress goes to a callback (:class:`Progress`), and the
:class:`JobSummary` says what happened. A bad file never raises: it becomes a :class:`FileResult` with status
``failed`` (or ``no_face``) and a one-line reason. Whole-job problems raise :class:`UsageError`.

**Outputs** under ``OUT`` (every path built by :func:`dynface.outputs.output_path`)::

    cropped_faces/<stem>_NN.png      aligned input faces (whole photos only)
    restored_faces/<stem>_NN.png     restored faces (aligned crops: restored_faces/<stem>.<ext>)
    cmp/<stem>_NN.png                input | output side by side
    restored_imgs/<stem>.<ext>       the photo with its faces restored (whole photos only)
    restored_videos/<stem>.mp4       a video with the faces of every frame restored (H.264, its sound as AAC)
    maps/<stem>_NN_<key>.png         with save_maps: DGSA map and guides
    records/<stem>.json              per face: the restorer's record, bbox, landmarks, size, timing; the outputs'
                                     SHA-256, size and mtime
    records/<stem>.json.pending      only while an input's outputs are written (:func:`note_pending_outputs`)
    manifest.jsonl                   one JSON line per input and attempt (see :class:`Manifest`)
    jobs.jsonl                       a start and an end line per job (:func:`begin_job`, :func:`end_job`)

**Seeds do not depend on scheduling.** Face ``i`` of an input whose bytes have the SHA-256 ``h`` gets its noise
from ``face_seed(seed, h, i)`` (a BLAKE2b hash), not from its place in a batch nor from its name (a copy under
another name is restored to the same bytes). With a restorer whose ``restore``
accepts ``seeds=`` (``DynFaceRestorer`` does) the bytes of every output are the same whichever batch size, file
order, worker or machine restores it, up to the batch's own effect on the networks' last float bits: on a CPU in
fp32 that is ±1 level in a few values of a few faces (embedded-64: 71 of 196,608 values between batch 8 and one
per call, ``docs/results/batch_invariance.md``; tests/test_jobs.py checks exact bytes on the tiny model, which
shows none); in bf16/fp16 or on an accelerator it is far more (bf16: 8,938 values, ±1), so there faces go to the
restorer one per call (:func:`per_face`) unless ``deterministic=False``. Restorers
without ``seeds`` (test fakes) get the old ``seed + position`` seeds. Precision "auto" on a CPU builds the restorer
in fp32 (:func:`_build_precision`) so that faces can batch (nearly) exactly: aligned crops ``batch_size`` at a time, and the
faces of whole photos across photos, ``batch_size`` faces per call (:func:`cross_photo_batches`; photos are
written in input order as soon as all their faces are restored).

**Complete inputs.** An input is complete when its record says ``ok``, every file the record lists exists and is
the file it describes (:func:`altered_outputs`), the input file has the size and modification time recorded then,
and the settings and weight files are those of the record (:func:`changed_flags`, :func:`changed_weights`).
``skip_existing`` skips exactly those; a file that changed, or whose outputs were deleted or edited, is restored
again. The manifest is appended after the record, so a
run killed in between leaves a record without a manifest line: the next ``skip_existing`` run adds the line.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dynface import provenance
from dynface.outputs import OutputFolderError, check_output_folder, safe_resolve
from dynface.registry import DEFAULT_MODEL

__all__ = [
    "MODES", "SUBDIRS", "FACTORY_ENV", "UsageError", "InputError", "RestoreSettings", "InputItem", "FileResult",
    "Progress", "JobSummary", "Manifest", "plan_inputs", "load_restorer", "face_seed", "seed_key", "restore_items", "run_job",
    "collect_inputs", "InputScan", "is_restore_output", "assign_stems", "check_output_dir", "check_settings", "validate_steps", "default_threads",
    "apply_threads", "usable_cpus", "is_complete", "altered_outputs", "changed_weights", "clean_stale_temp_files", "clean_interrupted_outputs", "interrupted_inputs", "settings_warnings", "start_job", "begin_job", "end_job", "read_job_lines", "JOBS_NAME", "as_done",
    "append_line", "restore_logged", "prepare_output", "complete_results", "changed_flags", "output_flags", "record_path", "load_bg_upsampler", "MANIFEST_NAME",
    "one_line", "first_line", "cross_photo_batches", "PHOTO_QUEUE_MAX_PIXELS",
]

# MODES, PRECISIONS and COLOR_FIXES repeat dynface.pipeline's / dynface.colorfix's choices so that the CLI can parse
# (and `--help` print) without importing torch; tests/test_jobs.py checks that the copies match
MODES = ("full", "no_dsst", "no_dgsa", "single_guide", "fixed_start", "restorer_only")
SUBDIRS = ("cropped_faces", "restored_faces", "cmp", "restored_imgs", "records", "maps", "restored_videos")
FACTORY_ENV = "DYNFACE_RESTORER_FACTORY"
MANIFEST_NAME = "manifest.jsonl"
EXT_CHOICES = ("auto", "png", "jpg", "webp", "tif")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COLOR_FIXES = ("wavelet", "adain", "none")
DETAIL_MODES = ("keep", "restored")
GRAIN_MODES = ("none", "match")  # = dynface.grain.GRAIN_MODES (grain imports cv2, which this module does not need)
MAX_SEED = 2**63 - 1  # = dynface.pipeline.MAX_SEED (torch.Generator's range), here so that importing jobs needs no torch
FACELESS_NOTE = "no face found: written upscaled, as it is (--keep-faceless)"
NO_FACE_HINT = ("--detector cnn (much slower) looks for blurred and dark faces at the photo's whole resolution, "
                "--detect-turned for faces lying sideways; --keep-faceless writes a photo without a face found as it is")
MAX_FUSE_FRAMES = 16  # --fuse-frames' largest value (each kept crop is the model's size: 16 x 49 KB a face at 128 px)
FOLLOW_S = 0.5  # videos: a face the detector misses is followed from the frame before for up to this long
REFUSED_HOLD_S = 1.0  # videos: a near miss the CNN turned down is not checked again for this long (the same place)
NO_FACE_HINT_VIDEO = NO_FACE_HINT.replace("a photo without a face found", "a video without a face found")
MIN_ALIGNED_SIDE = 16  # px: smaller aligned crops are refused
NEAR_LIMIT = 2.0  # a photo whose smallest face found is under this many times the detection limit gets a note
MAX_ALIGNED_ASPECT = 1.25  # longer side / shorter side: beyond this an aligned crop is refused (it would stretch)
MAX_PIXELS = 80_000_000  # = dynface.imageio.MAX_PIXELS (not imported here: imageio pulls in torch; a test checks)


class UsageError(ValueError):
    """A problem with the whole job (bad settings, no inputs, unusable output folder, model that cannot load). A
    ``ValueError``, as the Python API's other refusals of bad arguments are; its text names the command line's flag,
    which is the :class:`RestoreSettings` field of the same name."""


class StopRequested(BaseException):  # noqa: N818
    """Raised by a progress callback (at a sampling step) to stop a job now, keeping what is done: the inputs
    finished stay, and a video being restored keeps the frames already encoded (its record's status "partial", so
    that ``--skip-existing`` restores it again). A BaseException, so that the per-file ``except Exception`` lets it
    through. The web page's time limit, Stop button and closed page raise it (``dynface.webapp.RequestTimeLimit``)."""


class InputError(Exception):
    """A per-file problem: one line in the summary (and the notes gathered before it, e.g. the pages not read)."""

    def __init__(self, message: str, notes: list[str] | None = None):
        super().__init__(message)
        self.notes = list(notes or [])


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class RestoreSettings:
    """Every ``dynface restore`` flag except ``-i``/``-o``/``-q``, with the CLI's defaults."""

    model: str = DEFAULT_MODEL
    mode: str = "full"
    steps: str | None = None
    seed: int = 0
    fidelity: float | None = None
    upscale: float = 2.0
    aligned: bool = False
    ext: str = "auto"
    suffix: str | None = None
    device: str = "cpu"
    precision: str = "auto"
    compile: bool = False
    batch_size: int | None = None
    save_maps: bool = False
    skip_existing: bool = False
    threads: int | None = None
    detail: str = "keep"
    grain: str = "none"  # "match": faces cleaner than the photo around them get the difference as grain (dynface.grain)
    dust: bool = False  # fill in the white dust and scratches on faces before restoring them (dynface.dust)
    descreen: bool = False  # smooth a printed photo's halftone screen away before looking for faces (dynface.descreen)
    color_fix: str | None = None
    guidance: str | None = None
    dblm: str | None = None
    dgsa: str | None = None
    dsst: str | None = None
    restorer: str | None = None
    input_template: str | None = "auto"  # with aligned: the crops' framing; auto: told per crop from its landmarks
    alignment: str = "auto"
    only_center_face: bool = False
    draw_box: bool = False
    detector: str = "auto"  # faces.DETECTORS: HOG, the CNN checking its near misses and looking where it finds none
    detect_side: int = 2000  # detection runs on a copy at most this many px on its longer side (faces.DETECT_MAX_SIDE)
    detect_turned: bool = False  # also search the photo turned a quarter each way (faces lying sideways)
    detect_edges: bool = True  # also search the photo padded at its edges (faces cut by the photo's edge)
    bg_upsampler: str = "lanczos"
    min_score: float = 0.0
    border: str = "reflect"  # = faces.DEFAULT_BORDER (faces is not imported here: it pulls in dlib and cv2)
    allow_input_dir: bool = False
    recursive: bool = False  # folders given as inputs: their sub-folders too
    keep_faceless: bool = False  # a photo without a detected face: written upscaled, as it is ("done"), not no_face
    strip_metadata: bool = False  # write none of the input's EXIF, XMP or text (date, camera, GPS, captions), only Software
    strip_location: bool = False  # write the metadata without where it was taken (GPS, XMP and IPTC places, a video's location)
    deterministic: bool = True  # restore one face per call where batching could change the output (see per_face)
    exact: bool = False  # one face per call always: outputs byte-identical whatever the batching (see per_face)
    max_pixels: int = MAX_PIXELS  # largest decoded input, per file; every read in this layer is capped by it
    clip: str | None = None  # videos: the part to restore, "START-END" (dynface.video.parse_clip); None: all of it
    videos: bool = False  # folders given as inputs: restore the videos in them too (videos named as inputs always are)
    fuse_frames: int = 4  # videos: a small face's crop fused with its crops in up to this many frames before (= dynface.temporal.FUSE_FRAMES)

    @classmethod
    def from_namespace(cls, ns: Any) -> RestoreSettings:
        """Settings from an argparse namespace (or any object) with attributes of the same names."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def validate_steps(s: str | int) -> str:
    """``--steps``: :func:`dynface.diffusion.check_steps` (imported here when needed: importing jobs needs no torch)."""
    from dynface.diffusion import check_steps

    return check_steps(s)


def check_settings(settings: RestoreSettings) -> None:
    """Raise :class:`UsageError` for settings no input can be restored with (what the CLI's parser checks, for
    front ends that build :class:`RestoreSettings` themselves)."""
    from dynface.outputs import UnsafePathError, plain_name

    s = settings
    if s.mode not in MODES:
        raise UsageError(f"unknown mode {s.mode!r}; choose from {', '.join(MODES)}")
    if s.ext not in EXT_CHOICES:
        raise UsageError(f"--ext must be one of {', '.join(EXT_CHOICES)}, got {s.ext!r}")
    if s.suffix is not None:
        try:
            plain_name(s.suffix, "--suffix")
        except UnsafePathError as e:
            raise UsageError(str(e)) from None
        if len(s.suffix.encode("utf-8", "surrogateescape")) > SUFFIX_MAX_BYTES:
            raise UsageError(f"--suffix is too long ({len(s.suffix.encode('utf-8', 'surrogateescape'))} bytes; "
                             f"at most {SUFFIX_MAX_BYTES})")
    if s.steps is not None:
        try:
            validate_steps(s.steps)
        except ValueError as e:
            raise UsageError(f"--steps: {e}") from None
    if isinstance(s.seed, bool) or not (isinstance(s.seed, int) and 0 <= s.seed <= MAX_SEED):
        raise UsageError(f"--seed must be a whole number between 0 and {MAX_SEED}, got {s.seed!r}")
    if s.fidelity is not None and not (_is_number(s.fidelity) and 0.0 <= s.fidelity <= 1.0):
        raise UsageError(f"--fidelity must be a number in [0, 1], got {s.fidelity!r}")
    if not (_is_number(s.upscale) and 1.0 <= s.upscale <= 8.0):
        raise UsageError(f"--upscale must be a number between 1 and 8, got {s.upscale!r}")
    if s.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {s.precision!r}")
    if s.color_fix is not None and s.color_fix not in COLOR_FIXES:
        raise UsageError(f"--color-fix must be one of {', '.join(COLOR_FIXES)}, got {s.color_fix!r}")
    if s.detail not in DETAIL_MODES:
        raise UsageError(f"--detail must be one of {', '.join(DETAIL_MODES)}, got {s.detail!r}")
    if s.grain not in GRAIN_MODES:
        raise UsageError(f"--grain must be one of {', '.join(GRAIN_MODES)}, got {s.grain!r}")
    for name in ("batch_size", "threads"):
        v = getattr(s, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if s.exact and not s.deterministic:
        raise UsageError("--exact and --fast-batches contradict each other: --exact restores one face per call")
    if isinstance(s.max_pixels, bool) or not isinstance(s.max_pixels, int) or s.max_pixels < 1:
        raise UsageError(f"max_pixels must be a whole number >= 1, got {s.max_pixels!r}")
    from dynface.faces import ALIGNMENTS, AUTO_TEMPLATE, BORDERS, DETECTORS, load_templates

    for flag, value, known in (("--alignment", s.alignment, ALIGNMENTS), ("--detector", s.detector, DETECTORS),
                               ("--border", s.border, BORDERS)):
        if value not in known:
            raise UsageError(f"{flag} must be one of {', '.join(known)}, got {value!r}")
    if isinstance(s.fuse_frames, bool) or not isinstance(s.fuse_frames, int) or not 0 <= s.fuse_frames <= MAX_FUSE_FRAMES:
        raise UsageError(f"--fuse-frames must be a whole number from 0 to {MAX_FUSE_FRAMES}, got {s.fuse_frames!r}")
    if isinstance(s.detect_side, bool) or not isinstance(s.detect_side, int) or s.detect_side < 64:
        raise UsageError(f"--detect-side must be a whole number >= 64, got {s.detect_side!r}")
    if s.clip is not None:
        from dynface.video import parse_clip

        try:
            parse_clip(s.clip)
        except ValueError as e:  # named as the option, as the other settings' messages are
            raise UsageError(str(e) if str(e).startswith("--clip") else f"--clip: {e}") from None
    if s.input_template and s.input_template != AUTO_TEMPLATE:
        if not s.aligned:
            raise UsageError("--input-template is for --aligned inputs")
        if s.input_template not in load_templates():
            raise UsageError(f"unknown --input-template {s.input_template!r}; known: {AUTO_TEMPLATE}, "
                             f"{', '.join(sorted(load_templates()))}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def settings_warnings(settings: RestoreSettings) -> list[str]:
    """Notes worth printing before a job starts."""
    out = []
    if settings.device == "cpu" and settings.precision in ("bf16", "fp16"):
        from dynface.pipeline import slow_cpu_precision  # torch is loaded for the job anyway

        if why := slow_cpu_precision(settings.precision):
            out.append("--" + why)
    if settings.fidelity == 0 and settings.mode != "restorer_only":
        out.append("--fidelity 0: no guidance, the prior alone from the start step; faces come back as the prior "
                   "imagines them and need not keep their identity (0.5 is the default)")
    if settings.aligned and settings.grain != "none":
        out.append("--grain matches a face to the photo around it when it is pasted back: aligned crops have none "
                   "(it does nothing with --aligned)")
    return out


# ------------------------------------------------------------------------------------------ threads
def usable_cpus() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Intra-op threads when ``--threads`` is not given: the cores this process may use that are not already
    busy (1-minute load average), at least 1. Torch's default (one thread per core) collapses when another
    process keeps the cores busy: its threads wait for each other at every operation (issue 11 B1: a 64-px face
    took 236 s instead of 4 s). benchmarks/threads.py measures it."""
    n = usable_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(n, int(n - load + 0.5)))


def apply_threads(settings: RestoreSettings) -> int:
    """Set torch's intra-op threads from ``settings.threads`` (or :func:`default_threads`); returns the number."""
    import torch

    n = settings.threads or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class InputItem:
    path: Path
    stem: str
    index: int  # position in the sorted job (0-based)


@dataclass
class InputScan:
    """What :func:`collect_inputs` found."""

    files: list[Path]  # the input files, in job order, each once
    folders: list[Path]  # the folders given as inputs
    ignored: list[Path]  # files without an image extension in those folders
    left_out: list[Path] = field(default_factory=list)  # sub-folders not searched: the output folder, earlier outputs
    unreadable: list[str] = field(default_factory=list)  # "folder: reason" for sub-folders that could not be listed
    subfolders: int = 0  # sub-folders not searched because the search was not recursive
    same: list[tuple[Path, Path]] = field(default_factory=list)  # (kept, left out): two names of one file (a link)
    below: dict[Path, tuple[str, ...]] = field(default_factory=dict)  # a file found in a sub-folder: that folder's path
    linked_folders: list[Path] = field(default_factory=list)  # links to folders met by -r: not followed (no loops)
    videos: list[Path] = field(default_factory=list)  # videos in the folders, left out (collect_inputs' ``videos``)


def _is_video(path) -> bool:
    """:func:`dynface.video.is_video_name`, imported when asked (dynface.video imports numpy, which importing this
    module does not need)."""
    from dynface.video import is_video_name

    return is_video_name(path)


def is_restore_output(folder: Path) -> bool:
    """True for a folder that ``dynface restore`` wrote (it holds ``manifest.jsonl`` and ``records/``); False for one
    that cannot be looked into (another user's private folder: the scan then notes it as unreadable)."""
    try:
        return (folder / "manifest.jsonl").is_file() and (folder / "records").is_dir()
    except OSError:
        return False


def _scan_folder(top: Path, scan: InputScan, recursive: bool, exclude: set[Path], rel: tuple[str, ...] = (),
                 videos: bool = False) -> None:
    """Add ``top``'s entries to ``scan`` in name order, with ``recursive`` depth first into its sub-folders (``rel``:
    the path of ``top`` below the folder given). Hidden entries are skipped; links to folders are not followed (no
    loops); the folders in ``exclude`` and earlier ``restore`` outputs go to ``scan.left_out``. A sub-folder that
    cannot be listed is noted, not fatal. Videos are inputs with ``videos``, else listed in ``scan.videos``."""
    from dynface.imageio import is_image_name

    try:
        entries = sorted(top.iterdir())
    except OSError as e:
        if not rel:
            raise UsageError(f"cannot read the input folder {top}: {e.strerror or e}") from None
        scan.unreadable.append(f"{top}: {e.strerror or e}")
        return
    for f in entries:
        if f.name.startswith("."):
            continue
        if f.is_dir():
            if not recursive:
                scan.subfolders += 1
            elif f.is_symlink():
                scan.linked_folders.append(f)
            elif safe_resolve(f) in exclude or is_restore_output(f):
                scan.left_out.append(f)
            else:
                _scan_folder(f, scan, recursive, exclude, (*rel, f.name), videos)
            continue
        if not f.is_file() and not f.is_symlink():
            continue  # sockets, fifos
        if _is_video(f):
            (scan.files if videos else scan.videos).append(f)
        else:
            (scan.files if is_image_name(f) else scan.ignored).append(f)
        if rel:
            scan.below[f] = rel


def collect_inputs(specs: Sequence[str | Path], recursive: bool = False, exclude: Sequence[Path] = (),
                   videos: bool = False) -> InputScan:
    """The inputs of a job. Folders: their image files (hidden files skipped; with ``recursive`` also those of
    every sub-folder, see :func:`_scan_folder`; ``exclude``: folders never searched, e.g. the output folder; their
    videos only with ``videos``: hours of work each, they are left out of an archive unless asked for);
    files and glob matches: taken as they are. A symlink that does not lead to a file (broken, or a loop), or a file
    named that does not exist beside others that do, is kept as an input, so that it is reported as failed instead of
    dropped (only when nothing named exists is it a :class:`UsageError`). Each file is kept once."""
    scan = InputScan(files=[], folders=[], ignored=[])
    missing: list[Path] = []
    excluded = {safe_resolve(d) for d in exclude}
    for spec in specs:
        s = str(spec)
        if not s.strip():  # `-i "$EMPTY"`: Path("") is the current folder, which nobody meant
            raise UsageError("an input is empty (an unset shell variable?); name a file, folder or pattern")
        p = Path(s).expanduser()
        if p.is_dir():
            scan.folders.append(p)
            _scan_folder(p, scan, recursive, excluded, videos=videos)
        elif p.exists() or p.is_symlink():
            scan.files.append(p)
        elif glob.has_magic(s):
            for m in sorted(glob.glob(os.path.expanduser(s), recursive=True)):
                q = Path(m)
                if q.name.startswith(".") or q.is_dir():
                    continue
                if q.is_file() or q.is_symlink():
                    scan.files.append(q)
        else:  # a typo among many inputs fails its own line ("no such file"), not the whole run (failure audit)
            missing.append(p)
    if missing and not scan.files and not scan.folders:
        raise UsageError(f"input not found: {missing[0]}")
    scan.files += missing
    first: dict[Path, int] = {}
    uniq: list[Path] = []
    for f in scan.files:
        r = safe_resolve(f)
        k = first.get(r)
        if k is None:
            first[r] = len(uniq)
            uniq.append(f)
        elif uniq[k] != f:  # another name of a file already in: a link to it, or it beside a link
            keep_new = uniq[k].is_symlink() and not f.is_symlink()  # the file's own name rather than a link's
            scan.same.append((f, uniq[k]) if keep_new else (uniq[k], f))
            if keep_new:
                uniq[k] = f
    scan.files = uniq
    return scan


def check_output_dir(out: Path, files: list[Path], folders: list[Path], allow_inside: bool) -> None:
    """:func:`dynface.outputs.check_output_folder` for ``restore``'s sub-folders, as a :class:`UsageError`."""
    try:
        check_output_folder(out, files, folders, SUBDIRS, allow_inside)
    except OutputFolderError as e:
        raise UsageError(str(e)) from None


# an output name is STEM[_NN][_SUFFIX][_key].ext: a stem of at most 180 bytes, a --suffix of at most 32 and
# "_000_restorer.png" stay within outputs.plain_name's 240 bytes (file systems allow 255, temporary names add 12)
STEM_MAX_BYTES = 180
SUFFIX_MAX_BYTES = 32


def _cap_bytes(s: str, n: int = STEM_MAX_BYTES) -> str:
    """``s`` cut to at most ``n`` bytes of UTF-8, never inside a character (a name of 80 CJK characters is 240)."""
    b = s.encode("utf-8", "surrogateescape")
    return s if len(b) <= n else b[:n].decode("utf-8", "ignore")


def _clean_stem(s: str) -> str:
    """A plain file-name component from a file's stem: no separators or control characters, no leading dot, at most
    :data:`STEM_MAX_BYTES` bytes."""
    s = re.sub(r"[\x00-\x1f\x7f/\\]", "_", s)
    if s.startswith("."):
        s = "_" + s.lstrip(".")
    return _cap_bytes(s) or "image"


def _telling_depth(folders: set[Path]) -> int:
    """The fewest trailing folder names (at least 1) that tell ``folders`` apart: 1 for x/ and y/, 2 for a/x/ and
    b/x/ (the root itself never counts)."""
    depth = 1
    longest = max((len(f.parts) - 1 for f in folders), default=1)
    while depth < longest and len({f.parts[1:][-depth:] for f in folders}) < len(folders):
        depth += 1
    return depth


def assign_stems(files: list[Path], below: Sequence[tuple[str, ...]] | None = None) -> list[str]:
    """Output stem per input (a plain name). ``below[i]``: the sub-folders between the folder given and file ``i``
    (a recursive search), which lead its stem (2019/party/00.jpg → 2019_party_00), so that a stem does not
    depend on the other files. Inputs still sharing a stem are told apart by their folder's name when they come
    from different folders (difface/00.jpg → difface_00; as many folder names as it takes: a/x/00.jpg,
    b/x/00.jpg → a_x_00, b_x_00), else by their extension (a.jpg → a_jpg)."""
    below = below or [()] * len(files)
    base = [_clean_stem("_".join([*sub, f.stem])) for f, sub in zip(files, below, strict=True)]
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(base):
        groups.setdefault(b, []).append(i)
    names = list(base)
    for b, idx in groups.items():
        if len(idx) == 1:
            continue
        parents = [safe_resolve(files[i]).parent for i in idx]
        depth = _telling_depth(set(parents))
        for i, par in zip(idx, parents, strict=True):
            name = b
            if len(set(parents)) > 1:
                name = "_".join([*map(_clean_stem, par.parts[1:][-depth:]), b])
            if sum(1 for q in parents if q == par) > 1:  # same folder: a.jpg and a.png
                name = f"{name}_{files[i].suffix.lstrip('.').lower() or 'noext'}"
            names[i] = name
    stems, used = [], set()
    for s in names:
        k, s = 1, _cap_bytes(s)  # folder names and extensions added above may have made it longer
        s0 = s
        while s in used:
            k += 1
            s = f"{_cap_bytes(s0, STEM_MAX_BYTES - len(str(k)) - 1)}_{k}"
        used.add(s)
        stems.append(s)
    return stems


def plan_inputs(inputs: Sequence[str | Path], out: Path, settings: RestoreSettings,
                notes: list[str] | None = None) -> tuple[list[InputItem], list[Path]]:
    """Collect the input files (``settings.recursive``: from sub-folders too, never from ``out`` or an earlier
    ``restore`` output), give each a unique output stem and check the output folder. Returns (items in sorted
    job order, files ignored for their extension); lines worth telling the user go to ``notes`` when given (folders
    left out or unreadable); raises :class:`UsageError`."""
    check_settings(settings)
    out = Path(out).expanduser()
    scan = collect_inputs(list(inputs), recursive=settings.recursive, exclude=[out], videos=settings.videos)
    files, ignored = scan.files, scan.ignored
    if notes is not None:
        if scan.videos:
            names = ", ".join(f.name for f in scan.videos[:3]) + (" ..." if len(scan.videos) > 3 else "")
            notes.append(f"left out {len(scan.videos)} video(s) found in the folders (each takes about 1.4 s per face "
                         f"and frame on 2 CPU cores: name one with -i, or --videos restores them all): {names}")
        if scan.left_out:
            names = ", ".join(map(str, scan.left_out[:3])) + (" ..." if len(scan.left_out) > 3 else "")
            notes.append(f"left out {len(scan.left_out)} folder(s) written by dynface restore (this run's or earlier): {names}")
        notes.extend(f"cannot read the folder {u}; its files are left out" for u in scan.unreadable)
        notes.extend(f"{b} is the same file as {a} (a link): restored once, as {a.name}" for a, b in scan.same)
        if scan.linked_folders:
            names = ", ".join(map(str, scan.linked_folders[:3])) + (" ..." if len(scan.linked_folders) > 3 else "")
            notes.append(f"left out {len(scan.linked_folders)} link(s) to folders (not followed; give the folder itself "
                         f"with -i to restore it): {names}")
        if scan.subfolders and files:
            notes.append(f"{scan.subfolders} sub-folder(s) not searched (-r/--recursive searches them)")
    if not files:
        where = ", ".join(map(str, inputs)) or "(no inputs given)"
        extra = [f"{len(ignored)} file(s) without an image extension"] if ignored else []
        if scan.videos:
            extra.append(f"{len(scan.videos)} video(s), restored only with --videos or when named")
        if scan.subfolders:
            extra.append(f"{scan.subfolders} sub-folder(s), searched only with -r/--recursive")
        raise UsageError(f"no input images found in {where}" + (f" ({'; '.join(extra)})" if extra else ""))
    if notes is not None and settings.clip is not None and not any(_is_video(f) for f in files):
        notes.append(f"--clip {settings.clip} is for videos, and none is among the inputs")
    if settings.aligned and any(_is_video(f) for f in files):
        raise UsageError("--aligned is for face crops; a video's frames are whole pictures (leave out --aligned)")
    check_output_dir(out, files, scan.folders, settings.allow_input_dir)
    renamed: list[tuple[Path, str]] = []
    stems = keep_earlier_stems(files, assign_stems(files, [scan.below.get(f, ()) for f in files]), out, renamed)
    if notes is not None and renamed:
        shown = ", ".join(f"{f} as {s}" for f, s in renamed[:3]) + (" ..." if len(renamed) > 3 else "")
        notes.append(f"{len(renamed)} input(s) named apart from another file an earlier run restored into {out} under "
                     f"the same name (its outputs are kept): {shown}")
    return [InputItem(f, s, k) for k, (f, s) in enumerate(zip(files, stems, strict=True))], ignored


def keep_earlier_stems(files: list[Path], stems: list[str], out: Path,
                       renamed: list[tuple[Path, str]] | None = None) -> list[str]:
    """``stems`` made to agree with what earlier runs restored into ``out`` (its manifest's latest line per stem):

    - a file restored earlier under another stem is named as then, where that name is free in this run: ``a.jpg``
      restored as ``a`` stays ``a`` when ``a.png`` comes beside it later (:func:`assign_stems` would now name them
      ``a_jpg``, ``a_png``), so a grown archive's names do not change and ``--skip-existing`` does not restore it
      again;
    - a file whose stem an earlier run gave to another file that still exists, with other bytes (``dB/img_0.jpg``
      after ``dA/img_0.jpg`` was restored into the same folder), is named apart, ``dB_img_0`` (``_2``, ... if that is
      taken too), instead of overwriting the other's outputs; ``renamed`` (when given) gets (file, new stem). A stem
      whose file is gone (a moved or renamed archive) is taken over, and a byte-equal copy shares it."""
    from dynface.engines.torchrun import PART_PREFIX

    latest: dict[str, dict] = {}
    # the manifest, then the parts a killed torchrun launch left (rank 0 merges them later: every rank sees them)
    for path in [Path(out) / MANIFEST_NAME, *sorted(Path(out).glob(f"{PART_PREFIX}*.jsonl"))]:
        latest.update(Manifest(path).load() if path.is_file() else {})
    done = {stem: safe_resolve(Path(d["path"])) for stem, d in latest.items() if d.get("status") == "done" and d.get("path")}
    by_path = {p: stem for stem, p in done.items()}
    mine = [safe_resolve(f) for f in files]
    taken, out_stems = set(stems), list(stems)
    for i, f in enumerate(mine):
        old = by_path.get(f)
        if old is not None and old != out_stems[i] and old not in taken:
            taken.discard(out_stems[i])
            taken.add(old)
            out_stems[i] = old
    held = set(mine)

    def other_file(stem: str, f: Path) -> bool:  # the stem is an existing other file's, with other bytes
        p = done.get(stem)
        if p is None or p == f or p in held:  # p in held: this run names that file itself
            return False
        try:
            if not p.is_file():
                return False
            if p.stat().st_size != f.stat().st_size:
                return True
            return provenance.file_sha256(p) != provenance.file_sha256(f)
        except OSError:
            return False

    for i, f in enumerate(mine):
        if by_path.get(f) == out_stems[i] or not other_file(out_stems[i], f):
            continue
        base = _clean_stem(f"{files[i].parent.name}_{out_stems[i]}") if files[i].parent.name else out_stems[i]
        new, k = base, 2
        while new in taken or new in done:
            new = f"{_cap_bytes(base, STEM_MAX_BYTES - len(f'_{k}'))}_{k}"
            k += 1
        taken.add(new)
        out_stems[i] = new
        if renamed is not None:
            renamed.append((files[i], new))
    return out_stems


# ------------------------------------------------------------------------------------------ seeds
def face_seed(run_seed: int, key: str, face_index: int = 0) -> int:
    """The noise seed of face ``face_index`` of the input ``key`` (:func:`seed_key`: the SHA-256 of its bytes) in a
    run seeded ``run_seed``: a stable 63-bit BLAKE2b hash, the same in every process, worker and machine (unlike
    Python's ``hash``)."""
    data = f"dynface-face-seed\x00{int(run_seed)}\x00{key}\x00{int(face_index)}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & MAX_SEED


def seed_key(img, stem: str) -> str:
    """What an input's faces are seeded by: the SHA-256 of its bytes (``dynface.imageio.LoadedImage.sha256``), so a
    copy under another name, in another folder or sent through the web page is restored to the same bytes (two
    copies of one exhibit gave two restorations when the name was the key); its stem when no hash was taken."""
    return getattr(img, "sha256", None) or stem


# ------------------------------------------------------------------------------------------ records and completeness
def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def record_path(out: Path, stem: str) -> Path:
    from dynface.outputs import output_path

    return output_path(out, "records", f"{stem}.json")


def write_record(out: Path, stem: str, rec: dict) -> None:
    """Write ``stem``'s record (the last write of an input: it marks it complete), with the SHA-256 of each output it
    lists (``outputs_sha256``). The outputs the record it
    replaces listed and this one does not (a photo restored again with another ``--ext``, or with fewer faces) are
    removed then: they belong to no record any more, and would stand beside the new ones as if current."""
    from dynface.atomicfile import atomic_write_text

    aside = _retired_path(out, stem)
    old = _read_record(out, stem) or _read_json(aside)
    rec["outputs_sha256"], rec["outputs_stat"] = _output_hashes(out, _record_files(rec))  # in place: the manifest
    # line embeds them too
    try:
        atomic_write_text(json.dumps(rec, indent=1, default=_json_default) + "\n", record_path(out, stem))
    except BaseException as e:  # a full disk: the input fails, and its outputs, which no record lists, go (audit)
        _remove_outputs(out, _record_files(rec))
        _pending_path(out, stem).unlink(missing_ok=True)
        full = _as_output_full(e, out)
        if full is not e:
            raise full from e
        raise
    aside.unlink(missing_ok=True)
    _pending_path(out, stem).unlink(missing_ok=True)
    if old is not None:
        _remove_outputs(out, sorted(set(_record_files(old)) - set(_record_files(rec))))


def _remove_outputs(out: Path, rels: Sequence[str]) -> None:
    """Remove the outputs ``rels`` (``sub/name``) under ``out`` (records and names outside the output folders are
    left; a file that cannot be removed is left)."""
    from dynface.outputs import UnsafePathError, output_path

    for rel in rels:
        sub, _, name = rel.partition("/")
        if sub not in SUBDIRS or sub == "records":
            continue
        try:
            output_path(out, sub, name).unlink(missing_ok=True)
        except (UnsafePathError, OSError):
            pass


def _output_hashes(out: Path, rels: list[str]) -> tuple[dict[str, str | None], dict[str, dict]]:
    """SHA-256 of each output (``sub/name`` under ``out``), so that an auditor can tell a file is the one the record
    describes (None for one that cannot be read), and its size and mtime, so that ``--skip-existing`` can tell it
    cheaply (:func:`altered_outputs`)."""
    from dynface.outputs import UnsafePathError, output_path

    digests: dict[str, str | None] = {}
    stats: dict[str, dict] = {}
    for rel in rels:
        sub, _, name = rel.partition("/")
        try:
            p = output_path(out, sub, name)
            st = p.stat()
            digests[rel] = provenance.file_sha256(p)
            stats[rel] = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
        except (UnsafePathError, OSError):
            digests[rel] = None
    return digests, stats


def altered_outputs(out: Path, rec: dict, *, verify: bool = False) -> list[str]:
    """The outputs of record ``rec`` that are no longer the files it describes: missing, or another size, or (when
    their mtime differs, or with ``verify`` always) other bytes than its ``outputs_sha256``. A file only copied
    (another mtime) is hashed and still counts as the same. Records written before outputs were hashed: only
    presence is checked (``verify``: nothing to compare)."""
    hashes, stats = rec.get("outputs_sha256"), rec.get("outputs_stat")
    if not isinstance(hashes, dict):
        return [rel for rel in _record_files(rec) if not (Path(out) / rel).is_file()]
    stats = stats if isinstance(stats, dict) else {}
    bad = []
    for rel, digest in hashes.items():
        p = Path(out) / rel
        then = stats.get(rel) if isinstance(stats.get(rel), dict) else {}
        try:
            st = p.stat()
            same = st.st_size == then.get("size", st.st_size) and st.st_mtime_ns == then.get("mtime_ns")
            if verify or not same:
                same = st.st_size == then.get("size", st.st_size) and provenance.file_sha256(p) == digest
        except (OSError, ValueError):
            same = False
        if not same:
            bad.append(rel)
    return bad


def _retired_path(out: Path, stem: str) -> Path:
    from dynface.outputs import output_path

    return output_path(out, "records", f"{stem}.json.replaced")  # not a record: records end in .json


def retire_record(out: Path, stem: str) -> None:
    """Before an input's outputs are written again: its record (if any) is set aside (``records/STEM.json.replaced``)
    until :func:`write_record` writes the new one, so that a run killed in between leaves the input incomplete
    instead of new outputs under the old record (a kill -9 there left a 225-px photo made with -w 1 under a record
    saying 450 px and the default fidelity, which --skip-existing and report took as done). write_record still
    removes the outputs only the set-aside record listed."""
    p = record_path(out, stem)
    if p.is_file():
        os.replace(p, _retired_path(out, stem))


def _pending_path(out: Path, stem: str) -> Path:
    from dynface.outputs import output_path

    return output_path(out, "records", f"{stem}.json.pending")  # not a record either


def note_pending_outputs(out: Path, stem: str, rels: list[str]) -> Path:
    """Before an input's outputs are written: list them in ``records/STEM.json.pending`` (with this process's id and
    host), removed by :func:`write_record`. A run killed while writing them leaves the list behind, and the next run
    into ``out`` removes the listed files that no record lists (:func:`clean_interrupted_outputs`): a ``kill -9``
    between a photo's face files and its record left face files that no record or manifest line named."""
    from dynface.atomicfile import atomic_write_text

    path = _pending_path(out, stem)
    atomic_write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": round(time.time(), 3),
                                  "outputs": list(rels)}) + "\n", path)
    return path


def _pending_stem(path: Path) -> str | None:
    return path.name[: -len(".json.pending")] if path.name.endswith(".json.pending") else None


def interrupted_inputs(out: Path, *, include_running: bool = False) -> dict[str, dict]:
    """{stem: its pending list} of the inputs whose outputs a run was writing when it was killed: a pending list of
    a process of this host that no longer runs, or of this process. ``include_running``: also the lists of processes
    still running, and of other hosts (whose processes cannot be checked from here)."""
    found: dict[str, dict] = {}
    d = Path(out) / "records"
    if not d.is_dir():
        return found
    for f in sorted(d.iterdir()):
        stem = _pending_stem(f)
        info = _read_json(f) if stem else None
        if stem is None or info is None:
            continue
        if include_running or not pending_running(info):
            found[stem] = info
    return found


def pending_running(info: dict) -> bool:
    """Whether the process that wrote pending list ``info`` may still be writing: it runs on this host (and is not
    this process), or it ran on another host, which cannot be checked from here."""
    pid = info.get("pid")
    return info.get("host") != socket.gethostname() or (isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid))


def clean_interrupted_outputs(out: Path) -> int:
    """Remove the outputs that killed runs were writing and no record lists (:func:`note_pending_outputs`), with
    their pending lists; returns how many files were removed. An input whose record was written before the kill keeps
    its outputs; so does one restored again whose old record was set aside (:func:`retire_record`) when every output
    it lists is still the file it describes (the kill came before they were written over): the record is put back.
    Any other input without a record is restored again by the next run, as before."""
    from dynface.outputs import UnsafePathError, output_path

    n = 0
    for stem, info in interrupted_inputs(out).items():
        aside = _retired_path(out, stem)
        if not record_path(out, stem).exists() and (old := _read_json(aside)) is not None and not altered_outputs(
                out, old, verify=True):  # killed before it wrote over the set-aside record's outputs: they stand
            os.replace(aside, record_path(out, stem))
        keep = set(_record_files(_read_record(out, stem) or {}))
        for rel in info.get("outputs") or []:
            sub, _, name = str(rel).partition("/")
            if rel in keep or sub not in SUBDIRS or sub == "records":
                continue
            try:
                p = output_path(out, sub, name)
                if p.is_file():
                    p.unlink()
                    n += 1
            except (UnsafePathError, OSError):
                pass
        _pending_path(out, stem).unlink(missing_ok=True)
    return n


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _source_info(path: Path) -> dict | None:
    try:
        st = path.stat()
    except (OSError, RuntimeError):
        return None
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _record_files(rec: dict) -> list[str]:
    files = []
    for key in ("restored_img", "restored_video"):
        if rec.get(key):
            files.append(rec[key])
    for face in rec.get("faces", []):
        files.extend(v for v in (face.get("files") or {}).values() if isinstance(v, str))
    return files


def _read_record(out: Path, stem: str) -> dict | None:
    return _read_json(record_path(out, stem))


def is_complete(out: Path, stem: str, path: Path | None = None) -> bool:
    """Whether ``stem`` was restored completely: its record says ok, every file it lists is on disk and is the file
    the record describes (:func:`altered_outputs`), and (when the record knows the input's size and mtime and
    ``path`` is given) the input has not changed since."""
    from functools import partial

    rec = _complete_record(out, stem, partial(_source_info, path) if path is not None else None)
    return rec is not None and not altered_outputs(out, rec)


def _complete_record(out: Path, stem: str, source: Callable[[], dict | None] | None = None,
                     on_disk: set[str] | None = None) -> dict | None:
    """The record of ``stem`` when it is complete (:func:`is_complete`), else None. ``source``: gives the input's
    :func:`_source_info` now (None: the input is not compared); ``on_disk``: see :func:`_all_on_disk`."""
    rec = _read_record(out, stem)
    if not rec or rec.get("status") != "ok":
        return None
    if not _all_on_disk(out, _record_files(rec), on_disk):
        return None
    src = rec.get("source")
    if source is not None and isinstance(src, dict):
        if source() != {"size": src.get("size"), "mtime_ns": src.get("mtime_ns")}:
            return None
    return rec


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
    """Whether process ``pid`` of this host still runs: it exists and is not a zombie (a killed process its parent
    has not waited for yet: ``timeout -s KILL`` leaves one for a moment, a script that kills without waiting for
    as long as it runs)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): existence is all we can tell
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


# ------------------------------------------------------------------------------------------ results, progress, manifest
@dataclass
class FileResult:
    path: str
    stem: str
    status: str  # "done" | "failed" | "no_face" | "skipped"
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # paths relative to OUT
    record: dict | None = None
    seconds: float = 0.0
    faces: int = 0
    source: dict | None = None  # {"size", "mtime_ns"} of the input when it was read


@dataclass
class Progress:
    files_done: int
    files_total: int
    faces_done: int
    step: int | None
    steps_total: int | None
    message: str
    fraction: float = 0.0  # files done including the running batch's share (for a smooth bar)


@dataclass
class JobSummary:
    out: Path
    total: int  # inputs planned
    results: list[FileResult] = field(default_factory=list)  # restored now (done / failed / no_face)
    skipped: list[FileResult] = field(default_factory=list)  # complete already (skip_existing)
    ignored: list[Path] = field(default_factory=list)  # files without an image extension in the folders given
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped before its end (a full disk), when it did
    threads: int | None = None
    manifest_errors: list[str] = field(default_factory=list)  # lines that could not be appended
    job: dict | None = None  # the id of the job's start line (:func:`begin_job`), when it wrote one

    @property
    def done(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "done"]

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status in ("failed", "no_face")]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.manifest_errors else 0  # a line not written: the run is not all on record


_LINE_TYPES: dict[str, type | tuple[type, ...]] = {
    "stem": str, "status": str, "path": str, "error": str, "outputs": list, "notes": list, "faces": int,
    "seconds": (int, float), "size": int, "mtime_ns": int, "time": (int, float), "record": dict}


def manifest_line_ok(d: Any) -> bool:
    """Whether ``d`` (a parsed manifest line) has a stem and a status and every known key of its type: a line that
    was edited or written by something else must not crash ``report`` or ``--skip-existing``."""
    if not isinstance(d, dict) or not isinstance(d.get("stem"), str) or not isinstance(d.get("status"), str):
        return False
    for key, kind in _LINE_TYPES.items():
        v = d.get(key)
        if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
            return False
        if isinstance(v, float) and not math.isfinite(v):  # 1e400 or NaN: report --json would print Infinity
            return False
    return all(isinstance(x, str) for x in (d.get("outputs") or []) + (d.get("notes") or []))


class Manifest:
    """``OUT/manifest.jsonl``: one JSON line per input and attempt, appended atomically (one ``write`` of the whole
    line to a file opened with O_APPEND under an exclusive flock, then fsync), so concurrent writers and a kill
    never tear a line (a line torn otherwise is ended before the next one is written, and skipped by readers).

    Keys: ``path`` (as given), ``stem``, ``size`` and ``mtime_ns`` of the input, ``status`` (done / failed /
    no_face), ``error`` (one line), ``notes``, ``outputs`` (relative to OUT), ``faces``, ``seconds``, ``time``
    (UNIX time of the line) and ``record`` (the content of records/<stem>.json for done inputs).
    The last line of a stem wins (:meth:`load`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.unreadable = 0  # lines the last read skipped (torn, foreign or malformed)

    def append(self, result: FileResult) -> None:
        src = result.source or _source_info(Path(result.path)) or {}
        line = {
            "path": result.path,
            "stem": result.stem,
            "size": src.get("size"),
            "mtime_ns": src.get("mtime_ns"),
            "status": result.status,
            "error": result.error,
            "notes": list(result.notes),
            "outputs": list(result.outputs),
            "faces": result.faces,
            "seconds": round(float(result.seconds), 4),
            "time": round(time.time(), 3),
            "record": result.record,
        }
        self.append_lines([line])

    def append_lines(self, lines: list[dict]) -> None:
        """Append ready-made lines (e.g. another manifest's) in one locked ``write``, the way :meth:`append` does."""
        if not lines:
            return
        data = b"".join((json.dumps(d, default=_json_default, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
                        for d in lines)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _lock(fd)  # writers of this manifest take turns: the torn-line check and the write are one step
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":  # a torn line (a writer killed mid-line): end it first
                data = b"\n" + data
            n = os.write(fd, data)
            if n != len(data):  # a full disk: no half line is left for later runs to skip
                os.ftruncate(fd, end)
                raise OSError(f"short write to {self.path} ({n} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def lines(self) -> list[dict]:
        """Every readable line, in order; a torn, foreign or malformed line (:func:`manifest_line_ok`) is skipped and
        counted in :attr:`unreadable`."""
        self.unreadable = 0
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for ln in raw.splitlines():
            if not ln.strip():
                continue
            try:
                d = json.loads(ln)
            except ValueError:
                d = None
            if manifest_line_ok(d):
                out.append(d)
            else:
                self.unreadable += 1
        return out

    def load(self) -> dict[str, dict]:
        """The last line per stem."""
        return {d["stem"]: d for d in self.lines()}


def _lock(fd: int) -> None:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
    except (ImportError, OSError):  # no flock (Windows, some network filesystems): O_APPEND alone
        pass


def _same_input(rec: dict, path: Path) -> bool:
    """Whether record ``rec`` was made from ``path``: the same path, or a file with the same bytes (``image.sha256``)."""
    made_from = rec.get("input")
    if not isinstance(made_from, str) or made_from == str(path) or safe_resolve(Path(made_from)) == safe_resolve(path):
        return True
    digest = (rec.get("image") or {}).get("sha256")
    try:
        return isinstance(digest, str) and provenance.file_sha256(path) == digest
    except OSError:
        return False


def _manifest_says_complete(entry: dict | None, out: Path, source: Callable[[], dict | None],
                            on_disk: set[str] | None = None) -> bool:
    """``source``: gives the input's :func:`_source_info` (called only when the line says done)."""
    if not entry or entry.get("status") != "done":
        return False
    src = source()
    if src is None or (entry.get("size"), entry.get("mtime_ns")) != (src["size"], src["mtime_ns"]):
        return False
    return _all_on_disk(out, entry.get("outputs") or [], on_disk)


def _all_on_disk(out: Path, rels: list[str], on_disk: set[str] | None = None) -> bool:
    """Every output (relative to ``out``) exists and is not empty (one stat each). ``on_disk``: outputs found
    already (not checked again), to which those found here are added."""
    from stat import S_ISREG

    for rel in rels:
        if on_disk is not None and rel in on_disk:
            continue
        try:
            st = (out / rel).stat()
        except (OSError, ValueError):
            return False
        if not S_ISREG(st.st_mode) or st.st_size == 0:
            return False
        if on_disk is not None:
            on_disk.add(rel)
    return True


# the flags that shape a restore's output files (their names, pixels or set): a record made with other values is
# not complete for this run (--skip-existing restores it again). Left out: how the work is done (threads, batch
# size, device, compile, engine), which changes at most the rounding ("Reproducible whatever the batching").
OUTPUT_FLAGS = ("model", "mode", "steps", "seed", "fidelity", "upscale", "aligned", "ext", "suffix", "precision",
                "detail", "color_fix", "guidance", "dblm", "dgsa", "dsst", "restorer", "input_template", "alignment",
                "only_center_face", "draw_box", "detector", "detect_side", "detect_turned", "detect_edges", "bg_upsampler", "min_score", "border", "save_maps", "exact",
                "strip_metadata", "clip", "grain", "dust", "descreen", "strip_location", "fuse_frames")


def output_flags(settings: RestoreSettings) -> dict:
    """:data:`OUTPUT_FLAGS` as ``settings`` has them, as a record stores them (``settings.flags``, JSON values)."""
    return json.loads(json.dumps({k: getattr(settings, k) for k in OUTPUT_FLAGS}))


def changed_flags(rec: dict, settings: RestoreSettings) -> list[str]:
    """The :data:`OUTPUT_FLAGS` whose value in record ``rec`` differs from ``settings``' (none for a record written
    before records kept them). Maps asked for now and not then count; maps made then and not asked for now do not."""
    then = (rec.get("settings") or {}).get("flags")
    if not isinstance(then, dict):
        return []
    now = output_flags(settings)  # a flag the record does not know (a later version's) counts as unchanged
    return [k for k in OUTPUT_FLAGS if k in then and then[k] != now[k] and not (k == "save_maps" and not now[k])
            and not (k in ("clip", "fuse_frames") and not rec.get("restored_video"))  # a photo: the same whatever these
            and not (k == "descreen" and rec.get("restored_video"))]  # and a video whatever --descreen


def _current_weights(settings: RestoreSettings | None) -> dict[str, str]:
    """{role: SHA-256} of the weight files ``settings`` would load (:func:`dynface.registry.weight_paths`); empty
    when the model cannot be resolved here (the load then fails with its reason)."""
    from dynface.registry import resolve, weight_paths

    if settings is None:
        return {}
    try:
        paths = weight_paths(resolve(settings.model), settings.dblm, settings.dgsa, settings.dsst, settings.restorer)
    except Exception:
        return {}
    return {role: d["sha256"] for role, d in provenance.weight_files(paths).items()}


def changed_weights(rec: dict, current: dict[str, str]) -> list[str]:
    """The roles whose weight file now has another SHA-256 than the one record ``rec`` names (a model retrained or
    replaced at the same path: no flag differs, but the outputs would)."""
    then = (rec.get("settings") or {}).get("weights")
    if not isinstance(then, dict):
        return []
    return [role for role, d in then.items()
            if role in current and isinstance(d, dict) and d.get("sha256") != current[role]]


def _note_lost_outputs(out: Path, stem: str, changed: dict[str, list[str]] | None) -> None:
    """For an input found incomplete: ``changed[stem] = ["outputs"]`` when its record says ok but an output it lists
    is missing or empty (a lost output, restored again with the note an edited one gets)."""
    if changed is None:
        return
    rec = _read_record(out, stem)
    if rec is not None and rec.get("status") == "ok" and not _all_on_disk(out, _record_files(rec)):
        changed[stem] = ["outputs"]


def complete_results(items: list[InputItem], out: Path, manifest: Manifest | None = None,
                     settings: RestoreSettings | None = None,
                     changed: dict[str, list[str]] | None = None) -> tuple[list[FileResult], list[FileResult]]:
    """(complete inputs as ``skipped`` results, complete ones the manifest lacks a ``done`` line for).

    Complete: the manifest's last line for the stem says done for this very file (size and mtime) and every
    output it lists is on disk, and the record agrees (:func:`is_complete`); or, when the manifest has no line
    for it (a run killed between the record and the manifest line, or a run before manifests), the record alone.
    A record made from another path counts only when that file's bytes equal this one's (its ``image.sha256``: a
    copy with the same size and mtime is not the same photo). With ``settings``, a record made with other
    :data:`OUTPUT_FLAGS` or other weight files (:func:`changed_weights`) is not complete either, nor one whose outputs
    are no longer the files it describes (:func:`altered_outputs`); ``changed`` (when given) gets the flags' names
    per stem, ``"weights"`` and ``"outputs"`` for the others."""
    from functools import cache, partial

    entries = manifest.load() if manifest is not None else {}  # the one read of the manifest
    current_weights = cache(partial(_current_weights, settings))  # hashed once, when a record is first compared
    skipped, missing = [], []
    for it in items:
        source = cache(partial(_source_info, it.path))  # the input is stat'ed once, when first needed
        on_disk: set[str] = set()  # outputs listed by both the manifest line and the record are checked once
        e = entries.get(it.stem)
        if e is not None and e.get("path") not in (None, str(it.path)) and safe_resolve(Path(e["path"])) != safe_resolve(it.path):
            e = None  # the stem belonged to another file
        if e is not None and not _manifest_says_complete(e, out, source, on_disk):
            _note_lost_outputs(out, it.stem, changed)
            continue
        rec = _complete_record(out, it.stem, source, on_disk)
        if rec is None or not _same_input(rec, it.path):
            _note_lost_outputs(out, it.stem, changed)
            continue
        flags = changed_flags(rec, settings) if settings is not None else []
        if settings is not None and changed_weights(rec, current_weights()):
            flags.append("weights")
        if altered_outputs(out, rec):
            flags.append("outputs")
        if flags:
            if changed is not None:
                changed[it.stem] = flags
            continue
        r = FileResult(str(it.path), it.stem, "skipped", outputs=_record_files(rec) + [f"records/{it.stem}.json"],
                       record=rec, faces=int(rec.get("num_faces", 0) or 0), source=source())
        skipped.append(r)
        if e is None or e.get("status") != "done":
            missing.append(r)
    return skipped, missing


# ------------------------------------------------------------------------------------------ the restorer
def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


RESTORER_FIELDS = ("model", "device", "mode", "steps", "precision", "guidance", "dblm", "dgsa", "dsst", "restorer",
                   "color_fix", "compile", "deterministic", "exact")  # what load_restorer reads (deterministic and
# exact through _build_precision)


def restorer_key(settings: RestoreSettings) -> tuple:
    """Equal for two settings exactly when :func:`load_restorer` would build the same restorer (a cache key)."""
    return (*(getattr(settings, f, None) for f in RESTORER_FIELDS), os.environ.get(FACTORY_ENV))


def check_model(settings: RestoreSettings) -> None:
    """:class:`UsageError` for a model that cannot be found or a device that cannot be used, without loading any
    weights (nothing to check with the testing hook :data:`FACTORY_ENV`: it names its own models)."""
    if os.environ.get(FACTORY_ENV):
        return
    from dynface.devices import unavailable
    from dynface.models.io import ModelLoadError
    from dynface.registry import resolve

    try:
        resolve(settings.model)
    except ModelLoadError as e:
        raise UsageError(f"cannot load model {settings.model!r}: {first_line(e)}") from None
    why = unavailable(settings.device)
    if why:
        raise UsageError(why)


def load_restorer(settings: RestoreSettings):
    """The restorer for ``settings`` (``DynFaceRestorer.from_pretrained``, or the callable named by the
    ``DYNFACE_RESTORER_FACTORY=module:callable`` testing hook, called with the same keyword arguments).
    ``color_fix`` is passed only when set; ``precision`` is :func:`_build_precision`'s (left out for a hook that takes
    none when it is "auto"). Raises :class:`UsageError` when the model cannot be loaded."""
    debug = _debug()
    kw: dict[str, Any] = dict(name_or_path=settings.model, device=settings.device, mode=settings.mode,
                              steps=settings.steps, precision=_build_precision(settings))
    kw.update({k: getattr(settings, k) for k in ("guidance", "dblm", "dgsa", "dsst", "restorer", "color_fix") if getattr(settings, k, None)})
    spec = os.environ.get(FACTORY_ENV)
    try:
        if spec:
            mod, _, attr = spec.partition(":")
            if not mod or not attr:
                raise UsageError(f"{FACTORY_ENV} must be module:callable, got {spec!r}")
            factory = getattr(importlib.import_module(mod), attr)
        else:
            from dynface.pipeline import DynFaceRestorer

            factory = DynFaceRestorer.from_pretrained
        if not _accepts(factory, "precision") and settings.precision == "auto":
            kw.pop("precision")
        for k in ("color_fix", "restorer"):
            if k in kw and not _accepts(factory, k):
                raise UsageError(f"--{k.replace('_', '-')} is not supported by this restorer")
        with warnings.catch_warnings():  # the job's front end says it (settings_warnings), once
            warnings.filterwarnings("ignore", message="precision (bf16|fp16) on ", category=RuntimeWarning)
            r = factory(**kw)
    except UsageError:
        raise
    except Exception as e:
        if debug:
            raise
        raise UsageError(f"cannot load model {settings.model!r}: {first_line(e)}") from None
    if _per_face_bf16(settings, r):  # a model of 128 px or more: bf16 one face a call is the faster exact choice
        r = r.with_config(precision="bf16")
    return r.compiled() if settings.compile else r


BF16_FROM_SIZE = 128
"""With ``--precision auto`` on a CPU with native bf16, a restorer of this many pixels or more computes in bf16, one
face a call (:func:`per_face`), instead of fp32 batches (:func:`_build_precision`): on 2 cores
``benchmarks/photo_speed.py --model embedded-128 --repeats 3`` (8 one-face photos, NFE 22, whole job, a quiet
machine) gave bf16 one face a call 1.39 / 1.46 s/face against fp32 cross-photo batches of 4 1.74, of 2 1.71, one
photo a call 1.76 / 1.79 (docs/results/photo_speed_embedded128.md); ``embedded-64`` keeps fp32 batches (0.87 against
bf16's 1.63: docs/results/photo_speed.md)."""


def _per_face_bf16(settings: RestoreSettings, restorer) -> bool:
    """Whether ``restorer``, built in fp32 for "auto" (:func:`_build_precision`), computes in bf16 instead:
    :data:`BF16_FROM_SIZE`. Decided from the settings and the model alone, so every batch and worker computes alike."""
    if _build_precision(settings) != "fp32" or settings.precision != "auto" or not hasattr(restorer, "with_config"):
        return False
    if int(getattr(restorer, "size", 0) or 0) < BF16_FROM_SIZE:
        return False
    from dynface.pipeline import resolve_precision

    return resolve_precision("auto", "cpu") == "bf16"


def _build_precision(settings: RestoreSettings) -> str:
    """The ``precision`` :func:`load_restorer` builds the restorer with: ``settings.precision``, except that with
    "auto" on a CPU (``deterministic``) faces get "fp32" even where auto means bf16 (a CPU with native bf16:
    :func:`dynface.pipeline.resolve_precision`; elsewhere auto is fp32 anyway): bf16 is not batch-invariant, so
    :func:`per_face` would restore them one per call, while fp32 batches are nearly exact (±1 level in a few values:
    :func:`per_face`). Aligned crops batch within a
    chunk; the faces of whole photos batch across photos (:func:`cross_photo_batches`), since archives are mostly one
    face per photo. Measured on 2 cores (embedded-64, `full`): benchmarks/speed.py (8 crops, NFE 18): bf16 one face
    per call 1.2 s/face, fp32 one per call 1.43, fp32 in batches of 8 0.92; benchmarks/photo_speed.py (8 one-face
    photos, NFE 29, whole job): one photo per call 1.53 s/face in bf16 and 1.55 in fp32, cross-photo fp32 batches
    0.87 (×0.57). A job of one single-face photo gains nothing and may be up to ×1.2 slower than in bf16. Models of
    :data:`BF16_FROM_SIZE` px or more are switched to bf16 one face a call after loading (:func:`load_restorer`).
    Decided from the settings alone, so every batch size and worker computes alike; records keep ``precision`` (the
    setting) and ``precision_used`` (what the restorer computes in)."""
    if settings.precision == "auto" and settings.deterministic and not settings.exact and settings.device == "cpu":
        return "fp32"  # with exact, faces go one per call anyway: auto's own choice (bf16 where native) is faster
    return settings.precision


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


def _debug() -> bool:
    """``DYNFACE_DEBUG=1``: re-raise per-file errors instead of turning them into failed results."""
    return os.environ.get("DYNFACE_DEBUG", "") not in ("", "0")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    msg = str(e).strip().splitlines()
    return msg[0].strip() if msg else type(e).__name__


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no space left, over quota, over the size
# limit: every file after would fail the same way


class OutputFull(OSError):
    """An output could not be written for lack of space (:data:`DISK_FULL_ERRNOS`): the file fails, and a run of the
    CLI stops there (the files after it would be restored for nothing)."""


def _as_output_full(e: BaseException, out: Path) -> BaseException:
    """``e`` as an :class:`OutputFull` that names the output folder and what to do, when it is a full disk."""
    if isinstance(e, OSError) and not isinstance(e, OutputFull) and e.errno in DISK_FULL_ERRNOS:
        full = OutputFull(f"cannot write to {out}: {e.strerror or e} (free some space, then run again with "
                          "--skip-existing: what is done is kept)")
        full.errno = e.errno
        return full
    return e


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (decoders and torch wrap long multi-line texts)."""
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


def _record_settings(settings: RestoreSettings, restorer, upscale: float | None = None) -> dict:
    cfg = getattr(restorer, "cfg", None)
    sampler = getattr(cfg, "sampler", None)
    return {
        "model": settings.model,
        "model_name": getattr(restorer, "name", None),
        "mode": settings.mode,
        "steps": settings.steps,
        "seed": settings.seed,
        "fidelity": settings.fidelity,
        "upscale": settings.upscale if upscale is None else upscale,
        "device": settings.device,
        "precision": settings.precision,
        "precision_used": getattr(sampler, "precision", None),
        "color_fix": getattr(cfg, "color_fix", settings.color_fix),
        "detail": settings.detail,
        "compile": bool(settings.compile),
        "aligned": bool(settings.aligned),
        "only_center_face": bool(settings.only_center_face),
        "detector": None if settings.aligned else settings.detector,
        "alignment": None if settings.aligned else settings.alignment,
        "bg_upsampler": None if settings.aligned else settings.bg_upsampler,
        "template": getattr(restorer, "template_name", None),
        "size": int(restorer.size),
        # how the faces were seeded: by the input's SHA-256 (records before it say "face_seed": by its stem)
        "seeds": "face_seed(sha256)" if _accepts(restorer.restore, "seeds") else "seed+position",
        "threads": _torch_threads(),
        "batching": "per-face" if per_face(restorer, settings) else "batched",
        "batch_size": None if per_face(restorer, settings) else settings.batch_size,  # None: the job layer's default
        "keep_faceless": bool(settings.keep_faceless),
        "software": provenance.software(),
        "weights": provenance.weights(restorer),
        "flags": output_flags(settings),  # as given: what --skip-existing compares (changed_flags)
    }


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _side_by_side(a, b):
    import numpy as np
    from PIL import Image

    if a.shape[:2] != b.shape[:2]:
        a = np.asarray(Image.fromarray(a).resize((b.shape[1], b.shape[0]), Image.LANCZOS))
    return np.concatenate([a, b], axis=1)


def _save_like(a, path: Path, img, altered: str | None = None) -> None:
    """Save ``a`` (uint8 HxWx3: a face, a side-by-side picture) in the colours of the input ``img`` (a
    dynface.imageio.LoadedImage): gray when it was, with its ICC profile where the file can hold it (an Adobe RGB
    photo's faces were saved without it and shown as sRGB: red -10 levels), and the ``Software`` tag saying what it
    is (``altered``, default: restored faces; an unrestored crop must not be taken for a restored one, nor the
    other way round)."""
    from dynface import imageio

    im = _gray_if(a, img.was_gray)
    mode = "L" if img.was_gray else "RGB"
    imageio.save_image(im, path, icc_profile=imageio.fitting_profile(img.icc_profile, mode, Path(path).suffix),
                       exif=imageio.software_exif(altered or imageio.FACES_RESTORED))


def _gray_note(ext: str) -> str:
    from dynface.imageio import stored_gray

    return ("grayscale input: restored in RGB, saved as grayscale" if stored_gray("L", ext) else
            f"grayscale input: restored in RGB, saved as RGB (.{ext.lower().lstrip('.')} has no grayscale)")


def _gray_if(a, was_gray: bool):
    """``a`` (uint8 HxWx3) as an 8-bit gray image when the input was gray (its outputs are saved as it was), else as is."""
    if not was_gray:
        return a
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.asarray(a, dtype=np.uint8)).convert("L")


def per_face(restorer, settings: RestoreSettings) -> bool:
    """Whether faces go to the restorer one per call so that no output depends on its batch: with
    ``settings.deterministic`` (default), when the restorer computes in reduced precision (bf16/fp16 autocast) or
    on an accelerator. fp32 batches are *nearly* batch-invariant on a CPU, not exactly: ``benchmarks/batch_invariance.py``
    (embedded-64, 16 gfpgan crops, batch 8 against one per call) found 71 of 196,608 uint8 values different (4 faces,
    ±1 level) in fp32 and 8,938 (11 faces, ±1) in bf16; oneDNN and the GEMMs pick their kernels by shape, so the
    networks' last float bits depend on the batch (``docs/results/batch_invariance.md``). The tiny test models stay
    bit-identical.
    ``deterministic=False`` (``--fast-batches``) batches anyway: faster on a GPU, outputs may differ by ±1.
    Cost on 2 CPU cores (embedded-64, ddim25, 8 aligned faces, one run): bf16 one per call ×1.7 the time of bf16 in
    one batch; fp32 in one batch (deterministic) ×1.2, so ``--precision fp32`` is the faster exact choice there.
    ``settings.exact`` (``--exact``): one face per call whatever the precision and device, so every output is
    byte-identical whatever the batch size, file order or worker (on the same machine and torch)."""
    if settings.exact:
        return True
    if not settings.deterministic:
        return False
    cfg = getattr(restorer, "cfg", None)
    precision = getattr(getattr(cfg, "sampler", None), "precision", None)
    device = getattr(getattr(restorer, "device", None), "type", None)
    return (precision is not None and precision != "fp32") or (device is not None and device != "cpu")


# ------------------------------------------------------------------------------------------ restoring
class _Tracker:
    """Turns restorer callbacks into :class:`Progress` events."""

    def __init__(self, progress: Callable[[Progress], None] | None, files_total: int):
        self.progress = progress
        self.files_total = files_total
        self.files_done = 0
        self.faces_done = 0
        self.batch_files = 0.0  # files in the running restorer call (their share of the bar)
        self.partial = 0.0  # share of files restored but not yet written
        self.message = ""

    def emit(self, step: int | None = None, steps_total: int | None = None) -> None:
        if self.progress is None:
            return
        frac = self.files_done + self.partial
        if step is not None and steps_total:
            frac += self.batch_files * min(1.0, step / steps_total)
        self.progress(Progress(self.files_done, self.files_total, self.faces_done, step, steps_total, self.message, float(frac)))

    def restore(self, restorer, faces, batch_files: float, **kw):
        """``restorer.restore(faces, **kw)`` with a per-step callback when the restorer takes one."""
        self.batch_files = batch_files
        if self.progress is not None and _accepts(restorer.restore, "callback"):
            kw["callback"] = lambda step, total: self.emit(step, total)
        out = restorer.restore(faces, **kw)
        self.faces_done += len(faces)
        self.partial += batch_files
        self.batch_files = 0.0
        self.emit()
        return out


class _SeedingRestorer:
    """What restore_photo sees: the restorer, with progress callbacks and (when supported) per-face seeds."""

    def __init__(self, restorer, tracker: _Tracker, n_faces: int):
        self._r, self._t, self._n = restorer, tracker, max(1, n_faces)

    def __getattr__(self, name):
        return getattr(self._r, name)

    def restore(self, faces, **kw):
        return self._t.restore(self._r, faces, len(faces) / self._n, **kw)


def _write_outputs(out: Path, stem: str, writes: list[tuple[str, str, Callable[[Path], Any]]]) -> dict[str, str]:
    """Run each ``(key, "sub/name", writer(path))`` for input ``stem``; returns {key: relative path}. Paths via
    output_path. Its record is set aside first (:func:`retire_record`). When one fails, the files written before it
    are removed again: a failed input leaves no outputs its record and the manifest do not list (the error is raised
    on)."""
    from dynface.outputs import output_path

    retire_record(out, stem)
    pending = note_pending_outputs(out, stem, [rel for _, rel, _ in writes])
    files: dict[str, str] = {}
    written: list[Path] = []
    try:
        for key, rel, writer in writes:
            sub, name = rel.split("/", 1)
            p = output_path(out, sub, name)
            writer(p)
            written.append(p)
            files[key] = f"{sub}/{name}"
    except BaseException as e:
        for p in written:
            p.unlink(missing_ok=True)
        pending.unlink(missing_ok=True)
        full = _as_output_full(e, out)
        if full is not e:
            raise full from e
        raise
    return files


@dataclass
class _PhotoInput:
    """A whole photo read and searched for faces (what writing its outputs needs of it besides the restoration)."""

    item: InputItem
    img: Any  # dynface.imageio.LoadedImage
    notes: list[str]
    up: float  # the upscale used (capped by imageio.capped_upscale)
    faces: list  # dynface.faces.Face, at least one
    source: dict | None
    read_s: float
    detect_s: float
    t0: float  # perf_counter when reading began
    screen: dict | None = None  # the halftone screen found (dynface.descreen), and whether it was smoothed away


def _screen_of(img, s: RestoreSettings, notes: list[str]) -> dict | None:
    """A printed photo's halftone screen (:func:`dynface.descreen.find_screen`): with ``--descreen`` smoothed away
    in ``img.rgb`` (before faces are looked for), else only said, with the flag to use; its record entry (None: no
    screen found, and none asked for)."""
    from dynface.descreen import descreen, find_screen

    screen = find_screen(img.rgb if img.rgb16 is None else img.rgb16)  # a smooth 16-bit ramp rounded to 8 bits
    dpi = img.dpi[0] if img.dpi else None  # has regular steps, which looked printed (audit)
    if screen is None:
        if s.descreen:
            notes.append("--descreen: no halftone screen found (not a printed photo, or its dots too fine for the "
                         "scan's resolution to show); the photo was restored as it is")
            return {"found": False, "applied": False}
        return None
    ruling = f", {dpi / screen.period_px:.0f} lines per inch at {dpi:.0f} dpi" if dpi else ""
    what = f"a halftone screen of {screen.period_px:.1f} px at {screen.angle_deg:.0f}°{ruling}"
    if s.descreen:
        img.rgb = descreen(img.rgb, screen)
        if img.rgb16 is not None:  # a 16-bit scan's depth, smoothed alike
            img.rgb16 = descreen(img.rgb16, screen)
        notes.append(f"descreened: {what}, smoothed away (a Gaussian of σ {screen.sigma_px:.1f} px over the whole "
                     "photo) before its faces were looked for")
    else:
        notes.append(f"this photo looks printed ({what}): --descreen smooths the dots away before looking for "
                     "faces (dots can hide a face from the detector, and are restored as detail)")
    return {"found": True, "applied": bool(s.descreen), **screen.record(dpi)}


def _read_photo(it: InputItem, s: RestoreSettings, detector) -> _PhotoInput:
    """Read a photo and detect its faces; raises :class:`InputError` (unreadable, no face found)."""
    from dynface import imageio
    from dynface.faces import detect_faces, smallest_face

    t0 = time.perf_counter()
    src = _source_info(it.path)
    try:
        img = imageio.read_image(it.path, max_pixels=s.max_pixels)
    except imageio.ImageReadError as e:
        raise InputError(str(e).removeprefix(f"{it.path}: ")) from None
    t_read = time.perf_counter() - t0
    notes = list(img.notes)
    if img.was_gray:
        notes.append(_gray_note(imageio.output_ext(s.ext, it.path, img.alpha is not None)))
    w, h = img.size
    up = imageio.capped_upscale(w, h, s.upscale)
    if up < s.upscale:
        notes.append(imageio.upscale_note(w, h, s.upscale, up))
    screen = _screen_of(img, s, notes)
    t_read = time.perf_counter() - t0  # looking for a screen (and smoothing it) is part of reading
    t1 = time.perf_counter()
    faces = detect_faces(img.rgb, detector, s.only_center_face)
    t_detect = time.perf_counter() - t1
    closer = max(w, h)
    limit = smallest_face(w, h, s.detect_side) if closer > s.detect_side else 0
    nearer = smallest_face(w, h, closer) if limit else 0
    if nearer < limit:  # faces that small vanish in the detection copy: say so, and how to look closer (not when a
        # closer look finds no smaller faces: a 4000-px scan's 2000-px copy is searched upsampled once, the whole scan
        # not, both down to about 80 px; family-photo audit)
        how = (f"faces smaller than about {limit} px in this {w}x{h} photo are missed (detection ran on a copy "
               f"{s.detect_side} px on its longer side; --detect-side {closer}: about {nearer} px, slower)")
        least = min((f.bbox[2] - f.bbox[0] for f in faces), default=None)
        if least is None:
            notes.append(how)
        elif least < NEAR_LIMIT * limit:  # a group photo's faces are alike: the found smallest hint at ones missed
            notes.append(f"the smallest face found is about {least:.0f} px, near the detection limit: {how}")
    if not faces:
        if not s.keep_faceless:
            if s.detector != "cnn":  # HOG misses turned, blurred and dark faces the CNN finds (investigator audit); the
                # default's second look is the CNN on a small copy, which misses small faces
                notes.append(NO_FACE_HINT)
            raise InputError("no face found", notes)
        notes.append(FACELESS_NOTE)
    return _PhotoInput(it, img, notes, up, faces, src, t_read, t_detect, t0, screen)


def _unrestored(it: InputItem, e: Exception, t0: float) -> FileResult:
    """The result of a photo that failed before any face was restored (unreadable, no face, alignment): ``no_face``
    for :class:`InputError` "no face found", else ``failed`` with the error on one line."""
    notes: list[str] = []
    if isinstance(e, InputError):
        status, msg, notes = ("no_face" if str(e) == "no face found" else "failed"), str(e), e.notes
    else:
        status, msg = "failed", one_line(e)
    return FileResult(str(it.path), it.stem, status, msg, notes, seconds=time.perf_counter() - t0, source=_source_info(it.path))


def _process_photo(it: InputItem, out: Path, s: RestoreSettings, restorer, detector, bg_upsampler, tracker: _Tracker) -> FileResult:
    """One photo on its own: read, detect, :func:`dynface.faces.restore_photo`, write (the per-photo path)."""
    from dynface.faces import restore_photo

    x = _read_photo(it, s, detector)
    kw: dict[str, Any] = {}
    if _accepts(restorer.restore, "seeds"):
        kw["seeds"] = [face_seed(s.seed, seed_key(x.img, it.stem), i) for i in range(len(x.faces))]
    proxy = _SeedingRestorer(restorer, tracker, len(x.faces))
    tracker.message = it.path.name
    res = restore_photo(
        x.img.rgb, proxy, upscale=x.up, only_center_face=s.only_center_face, draw_box=s.draw_box, faces=x.faces,
        seed=s.seed, fidelity=s.fidelity, return_maps=s.save_maps, batch_size=1 if per_face(restorer, s) else s.batch_size,
        border=s.border,
        bg_upsampler=bg_upsampler, alignment=s.alignment, detail=s.detail, grain=s.grain, dust=s.dust, **kw,
    )
    return _write_photo(out, s, restorer, x, res)


def _write_photo(out: Path, s: RestoreSettings, restorer, x: _PhotoInput, res, busy_s: float | None = None) -> FileResult:
    """Write the outputs of a restored photo (``res``: a :class:`dynface.faces.PhotoResult`), then its record (LAST:
    it marks the input complete). ``busy_s``: the seconds this photo took before writing (None: the wall time since
    it was read; a photo restored in shared calls counts its own share instead)."""
    from dynface import imageio
    from dynface.faces import edge_gap

    it, img = x.item, x.img
    notes = list(x.notes)
    t2 = time.perf_counter()
    sfx = f"_{s.suffix}" if s.suffix else ""
    faces_rec = []

    writes = []  # one _write_outputs call: a failed write removes all this photo had written, the faces' files too
    for i, (crop, face) in enumerate(zip(res.crops, res.restored, strict=True)):
        name = f"{it.stem}_{i:02d}"
        writes += [  # a gray photo's faces are saved gray too, like the photo
            (f"{i}/cropped_face", f"cropped_faces/{name}.png",
             lambda p, a=crop: _save_like(a, p, img, imageio.CROP_NOT_RESTORED)),
            (f"{i}/restored_face", f"restored_faces/{name}{sfx}.png", lambda p, a=face: _save_like(a, p, img)),
            (f"{i}/cmp", f"cmp/{name}.png",
             lambda p, a=crop, b=face: _save_like(_side_by_side(a, b), p, img, imageio.SIDE_BY_SIDE)),
        ]
        if s.save_maps:
            for key, lst in res.maps.items():
                if i < len(lst) and lst[i] is not None:
                    writes.append((f"{i}/map_{key}", f"maps/{name}_{key}.png", lambda p, a=lst[i]: imageio.save_image(a, p)))
    ext = imageio.output_ext(s.ext, it.path, img.alpha is not None)
    photo_rel = f"restored_imgs/{it.stem}{sfx}.{ext}"
    box: list[list[str]] = []
    altered = imageio.FACES_RESTORED if res.restored else "no face found: upscaled as it is"  # --keep-faceless
    deep = s.bg_upsampler in ("", "lanczos", "none")  # a 16-bit input's depth is kept around Lanczos's background
    writes.append(("photo", photo_rel, lambda p: box.append(imageio.write_like_input(res.photo, img, p, altered=altered,
                                                                                 keep_exif=not s.strip_metadata,
                                                                                 deep=deep,
                                                                                 keep_location=not s.strip_location))))
    files = _write_outputs(out, it.stem, writes)
    written = list(files.values())
    for i, rec in enumerate(res.records):
        rec = dict(rec)
        rec["files"] = {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith(f"{i}/")}
        rec.setdefault("timing", {})["read_s"] = round(x.read_s, 4)
        rec["timing"]["detect_s"] = round(x.detect_s, 4)
        faces_rec.append(rec)
    notes += box[0] if box else []
    ph, pw = img.rgb.shape[:2]
    cut = [f"_{i:02d}" for i, f in enumerate(res.faces) if edge_gap(f.bbox, pw, ph) < 0]
    if cut:  # found by the edge search, mostly: say what the grey in their crops is
        notes.append(f"{len(cut)} face(s) cut by the photo's edge ({', '.join(cut)}): restored from what the photo "
                     "holds; their face crops are grey beyond the edge")
    same = [f"_{i:02d}" for i, r in enumerate(res.records) if r.get("detail_kept") and r.get("detail_cut_cycles") == 0]
    if same:  # counted as restored, yet unchanged: a halftone clipping's face (family-photo audit) said nothing
        notes.append(f"{len(same)} face(s) came back as they went in ({', '.join(same)}): with --detail keep every "
                     "mix left less fine detail than the photo's own (a halftone, heavy grain, or a sharp face larger "
                     "than the model); --detail restored pastes the model's face whole")
    t_write = time.perf_counter() - t2
    total = time.perf_counter() - x.t0 if busy_s is None else busy_s + t_write
    rec = {
        "status": "ok",
        "input": str(it.path),
        "stem": it.stem,
        "source": x.source,
        "image": img.info(keep_exif=not s.strip_metadata, out_ext=ext),
        **({"descreen": x.screen} if x.screen is not None else {}),
        "output_size": [int(res.photo.shape[1]), int(res.photo.shape[0])],
        "restored_img": photo_rel,
        "num_faces": len(faces_rec),
        "faces": faces_rec,
        "notes": notes,
        "timing": {"read_s": round(x.read_s, 4), **{k: round(v, 4) for k, v in res.timing.items()}, "detect_s": round(x.detect_s, 4),
                   "write_s": round(t_write, 4), "total_s": round(total, 4)},
        "settings": _record_settings(s, restorer, x.up),
    }
    write_record(out, it.stem, rec)  # LAST: marks the input complete
    return FileResult(str(it.path), it.stem, "done", None, notes, written + [f"records/{it.stem}.json"], rec, total,
                      len(faces_rec), x.source)


@dataclass(eq=False)  # compared and hashed by identity
class _Queued:
    """A photo or a video frame searched and aligned whose faces wait for (or went through) shared restorer calls
    (:class:`_FaceQueue`)."""

    prep: Any  # dynface.faces.PreparedPhoto
    key: str  # face i is seeded face_seed(settings.seed, key, i): the input's SHA-256 (seed_key)
    share: float = 1.0  # its part of the progress bar (a photo: 1; a frame: 1 / the video's frames)
    name: str | None = None  # a photo's file name: the progress message while its faces are restored
    item: Any = None  # the caller's: a photo's _PhotoInput, a frame's (pts, time)
    ids: list[int] | None = None  # per face, the index its seed is drawn with (a video's: its track; None: its position)
    restored: list = field(default_factory=list)
    recs: list = field(default_factory=list)
    maps: dict[str, list] = field(default_factory=dict)
    restore_s: float = 0.0  # its faces' share of the restorer calls' time
    done_faces: int = 0

    def __post_init__(self):
        self.restored = [None] * self.n
        self.recs = [None] * self.n

    @property
    def n(self) -> int:
        return len(self.prep.crops)


class _FaceQueue:
    """The faces of consecutive photos or video frames (:class:`_Queued`, in order) restored in shared restorer calls
    of ``bs`` faces; each unit whose faces are all restored is handed to ``ready(unit)`` in order (a unit without a
    face as soon as the units before it are). A restorer call that raises fails the units with a face in it through
    ``failed(unit, message)`` (their other faces are dropped; the others go on), or, without ``failed``, raises on.
    ``seeded``: the restorer takes per-face ``seeds``; ``return_maps`` is passed on (photos' ``--save-maps``)."""

    def __init__(self, restorer, s: RestoreSettings, tracker: _Tracker, bs: int, ready: Callable[[_Queued], None], *,
                 failed: Callable[[_Queued, str], None] | None = None, seeded: bool = True, return_maps: bool = False):
        self.restorer, self.s, self.tracker, self.bs = restorer, s, tracker, max(1, bs)
        self.ready, self.failed, self.seeded, self.return_maps = ready, failed, seeded, return_maps
        self.queue: list[_Queued] = []  # added, not yet handed to ready (in order)
        self.pending: list[tuple[_Queued, int]] = []  # faces not yet restored (in order)

    def add(self, q: _Queued, *, most: int | None = None) -> None:
        """Queue ``q``'s faces, then restore every full call (and, with ``most``, calls until at most ``most`` units
        wait) and hand on what is ready."""
        self.queue.append(q)
        self.pending.extend((q, i) for i in range(q.n))
        self.step(most=most)

    def step(self, flush: bool = False, most: int | None = None) -> None:
        """Restore full calls (``flush``: all pending faces) and hand on the units that are ready."""
        while self.pending and (flush or len(self.pending) >= self.bs or (most is not None and len(self.queue) > most)):
            batch = self.pending[: self.bs]
            del self.pending[: self.bs]
            self._run(batch)
            self._hand_on()
        self._hand_on()

    def _run(self, batch: list[tuple[_Queued, int]]) -> None:
        import numpy as np

        s, units = self.s, list(dict.fromkeys(q for q, _ in batch))
        names = [q.name for q in units if q.name]
        if names:
            self.tracker.message = ", ".join(names) if len(names) <= 3 else f"{names[0]} … {names[-1]} ({len(names)} photos)"
        kw: dict[str, Any] = {"seed": s.seed, "fidelity": s.fidelity}
        if self.return_maps:
            kw["return_maps"] = True
        if self.seeded:
            kw["seeds"] = [face_seed(s.seed, q.key, i if q.ids is None else q.ids[i]) for q, i in batch]
        t0 = time.perf_counter()
        try:
            outp = self.tracker.restore(self.restorer, [q.prep.crops[i] for q, i in batch],
                                        sum(q.share / q.n for q, _ in batch), **kw)
            if len(outp.images) != len(batch):
                raise RuntimeError(f"the restorer returned {len(outp.images)} faces for {len(batch)} inputs")
        except Exception as e:
            if self.failed is None or _debug():
                raise
            for q in units:
                self.queue.remove(q)
                self.pending[:] = [f for f in self.pending if f[0] is not q]
                self.failed(q, one_line(e))
            return
        dt = (time.perf_counter() - t0) / len(batch)
        maps = getattr(outp, "maps", None) or {}
        for j, (q, i) in enumerate(batch):
            q.restored[i] = np.asarray(outp.images[j], dtype=np.uint8)
            q.recs[i] = dict(outp.records[j]) if j < len(outp.records) else {}
            for name, lst in maps.items():
                if j < len(lst):
                    q.maps.setdefault(name, [None] * q.n)[i] = lst[j]
            q.restore_s += dt
            q.done_faces += 1

    def _hand_on(self) -> None:
        while self.queue and self.queue[0].done_faces == self.queue[0].n:
            q = self.queue.pop(0)
            if not q.n:  # restored by no call: its share of the bar is done now
                self.tracker.partial += q.share
            self.ready(q)


VIDEO_QUEUE_FRAMES = 32  # frames read ahead at most while their faces wait for a shared restorer call


def _process_video(it: InputItem, out: Path, s: RestoreSettings, restorer, detector, bg_upsampler,
                   tracker: _Tracker) -> FileResult:
    """A video (``s.clip``: the part of it): each frame read, searched for faces, aligned, restored and pasted back
    like a photo (:func:`dynface.faces.prepare_photo`, :func:`dynface.faces.finish_photo`), and encoded, in order,
    into a temporary file renamed onto ``restored_videos/<stem>.mp4`` when the last frame is in; then its record.
    The faces of consecutive frames share restorer calls of ``s.batch_size`` (:func:`default_batch_size`) faces when
    photos' faces may (:func:`cross_photo_batches`; else one face per call), at most :data:`VIDEO_QUEUE_FRAMES`
    frames ahead (:class:`_FaceQueue`, as photos'). Each face is followed from frame to frame
    (:class:`dynface.temporal.FaceTracks`) and has the same seed in every frame (the file's SHA-256 and its track's
    id): a face then flickers less from frame to frame than with a seed per frame (measured on CCTV-like frames:
    temporal std 1.93 against 2.18 levels), and its crop is fused with its crops in up to ``s.fuse_frames`` frames
    before. Frames without a face are written as they are (upscaled); a video
    without a face in any frame is ``no_face`` (``keep_faceless``: written all the same). A :class:`StopRequested`
    once frames are encoded keeps them (record status "partial")."""

    from dynface import imageio, video
    from dynface.atomicfile import durable_replace, temp_path
    from dynface.faces import _overlap, detect_faces, face_size_record, finish_photo, follow_faces, prepare_photo
    from dynface.outputs import output_path
    from dynface.temporal import FaceTracks

    t0 = time.perf_counter()
    src = _source_info(it.path)
    clip = video.parse_clip(s.clip)
    try:
        reader = video.VideoReader(it.path, _torch_threads())
    except video.VideoError as e:
        raise InputError(str(e)) from None
    with reader:
        info = reader.info
        if info.width * info.height > s.max_pixels:
            raise InputError(f"frames of {info.width}x{info.height} are above the {s.max_pixels / 1e6:g}-MP limit "
                             "(--max-megapixels raises it)")
        notes: list[str] = []
        up = imageio.capped_upscale(info.width, info.height, s.upscale)
        if up < s.upscale:
            notes.append(imageio.upscale_note(info.width, info.height, s.upscale, up))
        total = info.frames_in(clip)
        key = provenance.file_sha256(it.path)
        sfx = f"_{s.suffix}" if s.suffix else ""
        rel = f"restored_videos/{it.stem}{sfx}.mp4"
        final = output_path(out, *rel.split("/"))
        final.parent.mkdir(exist_ok=True)
        tmp = temp_path(final)  # renamed by _write_outputs once the video is complete
        bs = (s.batch_size or default_batch_size(restorer)) if cross_photo_batches(restorer, s) else 1
        # the recording's tags (date, place, camera) as photos keep their EXIF, unless --strip-metadata; and what
        # the video now is, as a restored photo's Software tag says it
        kept = {} if s.strip_metadata else reader.metadata
        if s.strip_location:  # "location", a phone's "com.apple.quicktime.location.ISO6709", "location-eng"
            kept = {k: v for k, v in kept.items() if "location" not in k.lower()}
        tags = {**kept, "comment": imageio.FACES_RESTORED + (f"; {kept['comment']}" if kept.get("comment") else "")}
        counts: list[int] = []
        followed: list[int] = []  # per frame, faces followed from the frame before (follow_faces)
        tracks = FaceTracks(s.fuse_frames)  # each face's crops in the frames before, fused into its crop
        fusions: list[dict] = []  # per face and frame, what dynface.temporal.fuse did
        hold = max(1, round(FOLLOW_S * info.fps)) if info.fps else 1
        refuse_hold = max(1, round(REFUSED_HOLD_S * info.fps)) if info.fps else 1
        refused: list[tuple[Any, int]] = []  # near misses the CNN turned down, with their frame (REFUSED_HOLD_S)
        last: list[tuple[Any, int]] = []  # the faces of the frame before, with the frames since each was detected
        times = {"detect_s": 0.0, "restore_s": 0.0, "paste_s": 0.0, "encode_s": 0.0}
        writer = first_pts = last_t = stopped = None

        def write(q: _Queued) -> None:  # a frame whose faces are all restored, in order
            nonlocal writer, first_pts, last_t
            pts, t = q.item
            last_t = t
            t1 = time.perf_counter()
            res = finish_photo(q.prep, q.restored, q.recs, upscale=up, draw_box=s.draw_box,
                               bg_upsampler=bg_upsampler, detail=s.detail, grain=s.grain)
            t2 = time.perf_counter()
            if writer is None:
                end = None if clip.end is None else reader.t0 + clip.end  # the sound: from this frame on
                writer = video.VideoWriter(tmp, res.photo.shape[1], res.photo.shape[0], reader.rate,
                                           reader.stream.time_base, (it.path, reader.t0 + t, end),
                                           reader.colorspace, _torch_threads(), tags)
                first_pts = pts
            writer.write(res.photo, None if pts is None or first_pts is None else pts - first_pts)
            times["restore_s"] += q.restore_s
            times["paste_s"] += t2 - t1
            times["encode_s"] += time.perf_counter() - t2
            if not q.n:
                tracker.emit()

        faces_q = _FaceQueue(restorer, s, tracker, bs, write, seeded=_accepts(restorer.restore, "seeds"))

        def read_frames() -> None:  # each frame searched, aligned and queued; written as its faces are restored
            nonlocal last, refused
            for k, t, pts, rgb in reader.frames(clip):
                tracker.message = f"{it.path.name} frame {k + 1}/{total or '?'}"
                t1 = time.perf_counter()
                refused_now: list = []
                faces = detect_faces(rgb, detector, s.only_center_face, skip=lambda b, old=refused: any(
                    _overlap(b, r) > 0.5 for r, _ in old), refused=refused_now)
                refused = [(r, kr) for r, kr in refused if k - kr < refuse_hold] + [(r, k) for r in refused_now]
                ages = [0] * len(faces)
                if last and not s.only_center_face:  # faces the detector missed here, but found up to FOLLOW_S before
                    young = [(f, a) for f, a in last if a < hold]
                    for j, f in follow_faces(rgb, [f for f, _ in young], faces):
                        faces.append(f)
                        ages.append(young[j][1] + 1)
                    order = sorted(range(len(faces)), key=lambda j: faces[j].center)  # left to right, as detected
                    faces, ages = [faces[j] for j in order], [ages[j] for j in order]
                last = list(zip(faces, ages, strict=True))
                followed.append(sum(1 for a in ages if a))
                prep = prepare_photo(rgb, restorer, faces=faces, only_center_face=s.only_center_face, border=s.border,
                                     alignment=s.alignment, dust=s.dust)
                prep.crops, how = tracks.fuse([f.bbox for f in prep.faces], prep.crops,
                                              [face_size_record(m, prep.size)["scale_to_model"] for m in prep.affines])
                fusions.extend(how)
                counts.append(len(prep.crops))
                times["detect_s"] += time.perf_counter() - t1
                share = 1 / total if total and k < total else 0.0  # of the bar; frames past the file's estimate: none
                faces_q.add(_Queued(prep, key, share, item=(pts, t), ids=tracks.ids), most=VIDEO_QUEUE_FRAMES)
            faces_q.step(flush=True)

        try:
            try:
                read_frames()
            except StopRequested as e:  # keep the frames encoded so far (the web page's Stop and time limit)
                if writer is None or not writer.frames:
                    raise
                stopped = e
                counts[writer.frames :], followed[writer.frames :] = [], []
            if writer is None:
                raise InputError(f"no frame in --clip {s.clip} (the video is {info.duration_s or 0:.1f} s long)"
                                 if not clip.whole else "no frame of this video can be decoded")
            if not any(counts):
                if not s.keep_faceless:
                    raise InputError("no face found", [*notes, f"no face in any of its {len(counts)} frame(s)",
                                                        NO_FACE_HINT_VIDEO])
                notes.append(FACELESS_NOTE)
            t4 = time.perf_counter()
            # stopped: the sound up to the end of the last frame written
            writer.finish(None if stopped is None or last_t is None else
                          reader.t0 + last_t + (1 / info.fps if info.fps else 0.0))
            times["encode_s"] += time.perf_counter() - t4
            files = _write_outputs(out, it.stem, [("video", rel, lambda p: durable_replace(tmp, p))])
        except video.VideoError as e:
            raise InputError(str(e)) from None
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
    if info.hdr:
        notes.append((f"an HDR video ({info.hdr}, BT.2020): " if info.hdr != "BT.2020" else "a video in BT.2020 colours: ")
                     + "its frames were read as an ordinary (SDR, BT.709) screen shows them, and the restored video "
                       "is SDR")
    if reader.deinterlaced:
        notes.append("its interlaced frames were deinterlaced (FFmpeg's bwdif, a frame per frame) before faces were "
                     "looked for")
    if reader.bad_packets:
        notes.append(f"{reader.bad_packets} damaged packet(s) of the video could not be decoded and were left out")
    if stopped is not None:
        notes.append(f"stopped after {len(counts)} of {total or '?'} frame(s) ({stopped}): the restored video holds "
                     "those")
    elif clip.whole and info.frames and len(counts) < 0.98 * info.frames - 1:  # a cut-off copy or download
        notes.append(f"only {len(counts)} of the {info.frames} frames its index lists could be read: the file looks "
                     "cut off or damaged; the restored video holds those")
    if info.audio and not writer.has_audio:
        notes.append("its sound track gave no sound for these frames (cut off or damaged?): the restored video has "
                     "none")
    if counts and not all(counts):
        notes.append(f"{counts.count(0)} of {len(counts)} frame(s) without a face found: written as they are")
    if any(followed):
        notes.append(f"{sum(followed)} face(s) in {sum(1 for n in followed if n)} frame(s) followed from the frame "
                     f"before: the detector missed them there (up to {FOLLOW_S:g} s after it last found them)")
    total_s = time.perf_counter() - t0
    rec = {
        "status": "ok" if stopped is None else "partial",  # partial: not complete for --skip-existing
        "input": str(it.path),
        "stem": it.stem,
        "source": src,
        "video": info.to_dict(),
        "clip": None if clip.whole else {"start_s": clip.start, "end_s": clip.end},
        "frames": len(counts),
        "frames_with_faces": sum(1 for c in counts if c),
        "faces_per_frame": counts,
        "followed_per_frame": followed,
        "fused": _fusion_summary(s.fuse_frames, fusions[: sum(counts)]),
        "output_size": [writer.width, writer.height],
        "audio_kept": writer.has_audio,
        "metadata_kept": sorted(kept),
        "deinterlaced": reader.deinterlaced,
        "restored_video": files["video"],
        "num_faces": sum(counts),
        "faces": [],
        "notes": notes,
        "timing": {**{k: round(v, 4) for k, v in times.items()}, "total_s": round(total_s, 4)},
        "settings": _record_settings(s, restorer, up),
    }
    write_record(out, it.stem, rec)  # LAST: marks the input complete
    return FileResult(str(it.path), it.stem, "done", None, notes, [files["video"], f"records/{it.stem}.json"], rec,
                      total_s, sum(counts), src)


def _fusion_summary(frames: int, fusions: list[dict]) -> dict:
    """A video record's ``fused``: ``--fuse-frames``, the faces (of all frames) fused with at least one frame
    before, those left as they came for being larger than the model (:data:`dynface.temporal.MIN_SCALE`), the mean
    over the fused of the neighbours' summed weight (:func:`dynface.temporal.fuse`: ``frames`` for a still face, 0
    where it moved), and the median noise σ (levels) their pairs of crops showed."""
    done = [f for f in fusions if f["fused"]]
    return {"frames": frames, "faces_fused": len(done), "faces_larger": sum(1 for f in fusions if f.get("larger")),
            "mean_weight": round(sum(f["weight"] for f in done) / len(done), 3) if done else None,
            "noise_levels": round(statistics.median(f["noise"] for f in done), 2) if done else None}


PHOTO_QUEUE_MAX_PIXELS = 64_000_000
"""Cross-photo batches: the most decoded pixels (width x height, summed) of the photos read and waiting for their
faces' shared restorer calls. A photo that would go past it is queued only after the queue was restored and written
(a photo larger than it on its own is restored alone). 64 MP: ~250 MB of RGB(A) uint8, eight 8-MP phone photos."""


BATCH_PIXELS = 8 * 64 * 64
"""Faces per shared restorer call when ``--batch-size`` is not given: this many model pixels (8 faces of 64 px, 2 of
128, 1 from 182 px on). On 2 CPU cores calls of 8 faces made 64-px faces ×0.59 the time of one photo per call
(``docs/results/photo_speed.md``) but 128-px faces slower: a 24-frame video with ``embedded-128`` took 32.4 s of
restoring in calls of 8 against 27.4 one face a call and 27.1 in calls of 4."""


def default_batch_size(restorer) -> int:
    """Faces per shared restorer call by default (:data:`BATCH_PIXELS`), at most 8."""
    size = int(getattr(restorer, "size", 64) or 64)
    return max(1, min(8, BATCH_PIXELS // (size * size)))


def cross_photo_batches(restorer, settings: RestoreSettings) -> bool:
    """Whether the faces of several photos share restorer calls (:func:`_restore_photos_batched`): when the restorer
    takes per-face ``seeds`` and computes (nearly) batch-invariantly (not :func:`per_face`; with "auto" on a CPU it is
    built in fp32 for that: :func:`_build_precision`), so every output is the same whatever the grouping, up to ±1
    level in a few values (:func:`per_face`). Else each photo
    goes to the restorer on its own (:func:`_process_photo`)."""
    return _accepts(restorer.restore, "seeds") and not per_face(restorer, settings)


def _restore_photos_batched(items: list[InputItem], out: Path, s: RestoreSettings, restorer, detector, bg_upsampler,
                            tracker: _Tracker, finish: Callable[[FileResult, int, float], None],
                            check: Callable[[], None] = lambda: None) -> None:
    """Restore the faces of several photos in shared restorer calls of ``s.batch_size`` (:func:`default_batch_size`)
    faces (:class:`_FaceQueue`), face ``i`` of the photo with bytes of SHA-256 ``h`` seeded ``face_seed(s.seed, h,
    i)``: photos are read, searched and aligned one after another and their crops queued; each full batch is restored,
    and every photo whose faces are all restored is pasted back and written (record LAST), in input order. The queue
    is also restored and written before it would hold more than :data:`PHOTO_QUEUE_MAX_PIXELS` decoded pixels, and at
    the end. A photo that cannot be read, has no face or fails to align gets its result at once; a failing restorer
    call fails the photos with a face in it (their other faces are dropped) and the others go on. ``finish(result, index, share)``: ``share`` is the part of the
    photo the restorer finished (for the progress bar)."""
    from dynface.faces import finish_photo, prepare_photo

    debug = _debug()

    def failed(q: _Queued, msg: str) -> None:
        x = q.item
        finish(FileResult(str(x.item.path), x.item.stem, "failed", msg, list(x.notes),
                          seconds=x.read_s + x.detect_s + q.restore_s, source=x.source), x.item.index, q.done_faces / q.n)

    def write(q: _Queued) -> None:
        x = q.item
        try:
            res = finish_photo(q.prep, q.restored, q.recs, q.maps, upscale=x.up, draw_box=s.draw_box,
                               bg_upsampler=bg_upsampler, detail=s.detail, restore_s=q.restore_s, grain=s.grain)
            busy = (x.read_s + x.detect_s + q.prep.timing.get("dust_s", 0.0) + q.prep.timing.get("align_s", 0.0)
                    + q.restore_s + res.timing["paste_s"])
            r = _write_photo(out, s, restorer, x, res, busy_s=busy)
        except Exception as e:  # e.g. a full disk: this photo fails, the others stand
            if debug:
                raise
            r = FileResult(str(x.item.path), x.item.stem, "failed", one_line(e), list(x.notes),
                           seconds=time.perf_counter() - x.t0, source=x.source)
        finish(r, x.item.index, 1.0)

    faces_q = _FaceQueue(restorer, s, tracker, s.batch_size or default_batch_size(restorer), write, failed=failed,
                         return_maps=s.save_maps)
    for it in items:
        check()  # before reading the next photo: raises to stop the run (a full disk)
        tracker.message = it.path.name
        t0 = time.perf_counter()
        try:
            x = _read_photo(it, s, detector)
            prep = prepare_photo(x.img.rgb, restorer, faces=x.faces, only_center_face=s.only_center_face, border=s.border,
                                 alignment=s.alignment, dust=s.dust)
        except Exception as e:  # never a traceback for one bad file
            if debug and not isinstance(e, InputError):
                raise
            finish(_unrestored(it, e, t0), it.index, 0.0)
            continue
        w, h = x.img.size
        if faces_q.queue and sum(_pixels(q) for q in faces_q.queue) + int(w) * int(h) > PHOTO_QUEUE_MAX_PIXELS:
            faces_q.step(flush=True)
        faces_q.add(_Queued(prep, seed_key(x.img, it.stem), name=it.path.name, item=x))
    faces_q.step(flush=True)


def _pixels(q: _Queued) -> int:
    """The decoded pixels of a queued photo (:data:`PHOTO_QUEUE_MAX_PIXELS`)."""
    w, h = q.item.img.size
    return int(w) * int(h)


FFHQ_CROP_SIDES = (256, 512, 1024)  # the sides of FFHQ-aligned crops as GFPGAN, CodeFormer and DifFace write them
# the advice of the notes on crops taken in the model's framing that may be FFHQ's (the web page names it as the
# command line's: webapp._for_the_page)
FFHQ_ADVICE = "restore it with --input-template ffhq512"
FFHQ_HINT = f"if this crop is FFHQ-aligned (as GFPGAN, CodeFormer and DifFace write them), {FFHQ_ADVICE}"


def _aligned_check(w: int, h: int, model_template: str | None = None) -> tuple[str | None, str | None]:
    """(error, note) for an aligned crop of w x h pixels, taken in the model's own framing (``model_template``)."""
    if min(w, h) < MIN_ALIGNED_SIDE:
        return f"too small for an aligned face crop ({w}x{h}; at least {MIN_ALIGNED_SIDE}x{MIN_ALIGNED_SIDE} px)", None
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ALIGNED_ASPECT:
        return (f"not square ({w}x{h}): an aligned face crop would be stretched; crop it square or leave out --aligned "
                "to detect the face"), None
    if w != h:
        return None, f"not square ({w}x{h}): stretched to a square for the model"
    if w in FFHQ_CROP_SIDES and model_template is not None and model_template != "ffhq512":
        return None, f"{w}x{h}: {FFHQ_HINT}; it was taken as the model's own, tighter {model_template} framing"
    return None, None


LANDMARKS = "landmarks"  # --input-template auto: a crop aligned from the 5 points found on it, not from a template


def _auto_framing(rgb, model_tmpl: str | None) -> tuple[str | None, Any, str | None]:
    """--input-template auto for one aligned crop: (where to re-align it from: a template name, :data:`LANDMARKS`
    (the points found on it), or None for the model's own framing; what :func:`dynface.faces.guess_template` saw,
    or None when it was not asked; a note when the framing could not be told from a template). Only for a model that
    names its framing.

    - a known framing, clearly: re-aligned from that template (exact; the landmarks of a degraded face are noisy);
    - a face found, but no template fits clearly (rotated, shifted, scaled, another tool's framing, a crop that is not
      square): re-aligned from its own 5 points, as a photo's face is (the size rule below took a tight crop saved at
      512 px as FFHQ and restored its nose and mouth only);
    - no face found (too degraded for the detector): FFHQ-aligned when its side is one FFHQ crops come in
      (:data:`FFHQ_CROP_SIDES`: in a degraded FFHQ set, 2 of 17 crops had no face found), else the model's own."""
    from dynface.faces import FaceError, guess_template

    h, w = rgb.shape[:2]
    if model_tmpl is None:
        return None, None, None
    try:
        guess = guess_template(rgb)
    except FaceError as e:  # dlib missing
        return None, None, f"its framing could not be told ({one_line(e)}): taken as the model's own {model_tmpl} framing"
    several = (f"; {guess.faces} faces were found on it and the largest was restored: leave out --aligned to restore "
               "them all") if guess.faces > 1 else ""
    if guess.name is not None:
        return guess.name, guess, (several.removeprefix("; ") or None)
    if guess.points is not None:  # _write_aligned says how it was aligned
        return LANDMARKS, guess, (several.removeprefix("; ") or None)
    if w == h and w in FFHQ_CROP_SIDES and model_tmpl != "ffhq512":  # the sides FFHQ crops come in (a tight one: 200)
        return "ffhq512", guess, (f"its framing could not be told ({guess.reason}): taken as FFHQ-aligned, as "
                                  f"{w}-px aligned crops are (GFPGAN's, CodeFormer's, DifFace's, the BFR test "
                                  f"sets'); if it is in the model's own framing, restore it with --input-template "
                                  f"{model_tmpl}")
    return None, guess, f"its framing could not be told ({guess.reason}): taken as the model's own {model_tmpl} framing; {FFHQ_HINT}"


@dataclass
class _AlignedInput:
    """An aligned crop read and ready for the restorer (what :func:`_write_aligned` needs of it besides the result)."""

    item: InputItem
    img: Any  # dynface.imageio.LoadedImage: the decoded input
    crop: Any  # uint8 (size, size, 3) or the input's own pixels: what the restorer gets
    affine: Any  # with --input-template: 2x3 map from the input to the model's crop (the result is pasted back); else None
    notes: list[str]
    source: dict | None
    read_s: float
    template: str | None = None  # the framing the crop was re-aligned from (with ``affine``)
    guess: Any = None  # --input-template auto: what dynface.faces.guess_template saw
    dust: dict | None = None  # --dust: what dynface.dust filled in


def _stretched(crop, size: int):
    """A crop a little off square (``_aligned_check``'s note says so) stretched to the model's square here, as
    ``DynFaceRestorer.restore`` would (the same Lanczos resize), without the warning it gives Python callers."""
    if crop.shape[0] == crop.shape[1]:
        return crop
    import numpy as np
    from PIL import Image

    return np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS))


def _process_aligned_chunk(chunk: list[InputItem], out: Path, s: RestoreSettings, restorer, tracker: _Tracker,
                           on_result: Callable[[FileResult], None]) -> None:
    """Restore aligned crops in one restorer call per chunk (per run of consecutive inputs for restorers without
    ``seeds``). Every input gets its own FileResult: a failing write fails that input only."""
    import numpy as np

    from dynface import imageio
    from dynface.faces import AUTO_TEMPLATE, estimate_affine, template_for, warp_face

    size = int(restorer.size)
    model_tmpl = getattr(restorer, "template_name", None)
    loaded: list[_AlignedInput] = []
    for it in chunk:
        t0 = time.perf_counter()
        src = _source_info(it.path)
        try:
            img = imageio.read_image(it.path, max_pixels=s.max_pixels)
        except imageio.ImageReadError as e:
            on_result(FileResult(str(it.path), it.stem, "failed", str(e).removeprefix(f"{it.path}: "), source=src))
            continue
        w, h = img.size
        notes = list(img.notes)
        tmpl, guess = s.input_template, None
        if tmpl == AUTO_TEMPLATE:
            tmpl, guess, note = _auto_framing(img.rgb, model_tmpl)
            if note:
                notes.append(note)
        found = None
        if s.dust:  # on the input's own pixels, before it is re-aligned or its detail is kept
            found = _aligned_dust(img, tmpl, guess, model_tmpl)
        if tmpl and tmpl != model_tmpl:
            if tmpl == LANDMARKS:  # aligned from the face's own points, as a photo's face is
                affine = estimate_affine(guess.points, template_for(restorer.template_name, size))
            elif w != h:
                on_result(FileResult(str(it.path), it.stem, "failed", f"not square ({w}x{h}): cannot use --input-template {tmpl}", source=src))
                continue
            else:
                affine = estimate_affine(template_for(tmpl, w), template_for(restorer.template_name, size))
            crop = warp_face(img.rgb, affine, size, s.border)
        else:
            err, note = _aligned_check(w, h, None if s.input_template else model_tmpl)
            if err:
                on_result(FileResult(str(it.path), it.stem, "failed", err, source=src))
                continue
            if note:
                notes.append(note)
            affine, crop, tmpl = None, img.rgb, None
        loaded.append(_AlignedInput(it, img, crop, affine, notes, src, time.perf_counter() - t0, tmpl, guess, found))
    if not loaded:
        return
    with_seeds = _accepts(restorer.restore, "seeds")
    runs: list[list[_AlignedInput]]
    if per_face(restorer, s):
        runs = [[x] for x in loaded]
    elif with_seeds:
        runs = [loaded]
    else:  # the old rule: seed + position of the first of a run of consecutive inputs
        runs = []
        for x in loaded:
            if runs and runs[-1][-1].item.index + 1 == x.item.index:
                runs[-1].append(x)
            else:
                runs.append([x])
    tracker.message = f"{len(loaded)} crop(s)"
    for run in runs:
        t0 = time.perf_counter()
        kw: dict[str, Any] = {"seed": s.seed + run[0].item.index, "fidelity": s.fidelity, "return_maps": s.save_maps}
        if with_seeds:
            kw["seeds"] = [face_seed(s.seed, seed_key(x.img, x.item.stem), 0) for x in run]
        try:
            outp = tracker.restore(restorer, [_stretched(x.crop, size) for x in run], float(len(run)), **kw)
        except Exception as e:
            if _debug():
                raise
            for x in run:
                on_result(FileResult(str(x.item.path), x.item.stem, "failed", one_line(e), source=x.source))
            continue
        t_restore = (time.perf_counter() - t0) / len(run)
        maps = getattr(outp, "maps", None) or {}
        for j, x in enumerate(run):
            it = x.item
            t1 = time.perf_counter()
            try:
                res = _write_aligned(out, s, restorer, x, np.asarray(outp.images[j], dtype=np.uint8),
                                     dict(outp.records[j]) if j < len(outp.records) else {},
                                     {key: lst[j] for key, lst in maps.items() if j < len(lst)})
                res.record["faces"][0]["timing"] = {"read_s": round(x.read_s, 4), "restore_s_shared": round(t_restore, 4),
                                                    "write_s": round(time.perf_counter() - t1, 4)}
                res.record["source"] = x.source
                write_record(out, it.stem, res.record)  # LAST: marks the input complete
                res.source, res.seconds = x.source, x.read_s + t_restore + time.perf_counter() - t1
                on_result(res)
            except Exception as e:  # e.g. a full disk: this input fails, the others of the batch stand
                if _debug():
                    raise
                on_result(FileResult(str(it.path), it.stem, "failed", one_line(e), list(x.notes), source=x.source))


def _aligned_dust(img, tmpl: str | None, guess, model_tmpl: str | None) -> dict:
    """``--dust`` on an aligned crop: its white dust and scratches filled in (``img.rgb`` is replaced), the face's
    points being its framing's (``tmpl``; the model's when None; the points found on it for :data:`LANDMARKS`).
    Returns what was filled (:func:`dynface.dust.remove_dust`)."""
    import numpy as np

    from dynface.dust import remove_dust
    from dynface.faces import Face, template_for

    w, h = img.size
    if tmpl == LANDMARKS:
        pts = np.asarray(guess.points, dtype=np.float64)
    else:
        side = max(w, h)
        pts = template_for(tmpl or model_tmpl or "ffhq512", side) * np.array([w / side, h / side])
    img.rgb, (found,) = remove_dust(img.rgb, [Face((0.0, 0.0, float(w), float(h)), pts)])
    return found


def _write_aligned(out: Path, s: RestoreSettings, restorer, x: _AlignedInput, face, restorer_rec: dict,
                   face_maps: dict) -> FileResult:
    """Write the outputs of one restored aligned crop (``face``: the restorer's uint8 output, ``restorer_rec`` its
    record, ``face_maps`` its maps when ``save_maps``) and return its result with the record (not written yet).
    The size record and the detail rule are :func:`dynface.faces.face_size_record` / :func:`~dynface.faces.keeps_detail`."""
    import numpy as np

    from dynface import imageio
    from dynface.faces import crop_size_record, face_size_record, keeps_detail, paste_face

    it, img = x.item, x.img
    notes = list(x.notes)
    size = int(restorer.size)
    sfx = f"_{s.suffix}" if s.suffix else ""
    fext = s.ext if s.ext in imageio.WRITE_EXTS else "png"
    w, h = img.size
    if x.affine is not None:  # --input-template: back into the input's framing (the output keeps the input's size)
        size_rec = face_size_record(x.affine, size, None)
        kept = s.detail == "keep" and keeps_detail(size_rec)
        split: dict = {}
        framed = img.rgb.copy()
        paste_face(framed, face, x.affine, size, model_px=size if kept else None, info=split)
        face = framed
        if x.template == LANDMARKS:
            why = x.guess.reason if x.guess.reason.startswith("not square") else "no known template fits it clearly"
            notes.append(f"its framing is not a known one ({why}): aligned from the face's own landmarks to the model's "
                         f"{restorer.template_name}; result pasted back")
        else:
            told = " (told from its landmarks)" if x.guess is not None and x.guess.name else ""
            notes.append(f"re-aligned from the {x.template} framing{told} to the model's {restorer.template_name}; result pasted back")
        size_rec["detail_kept"] = kept
        size_rec.update(split)
    else:
        size_rec = crop_size_record(float(w), size)
        if max(w, h) > size:
            # the model restored it at its own (smaller) size: give it back at the input's size, with the detail rule
            # (on the longer side: a crop up to 1.25:1 was stretched to the model's square)
            from dynface.detail import merge_detail

            split = {}  # the crossover merge_detail chose (detail_cut_cycles, ...), for the record
            face = merge_detail(face, img.rgb, model_px=size * w / max(w, h), mode=s.detail, info=split)
            how = "upscaled (--detail restored)"
            if s.detail == "keep":
                cut = split.get("detail_cut_cycles")
                how = ("the input unchanged: the restoration had less detail at every crossover" if cut == 0 else
                       f"its detail above {cut:g} cycles per crop kept from the input" if cut else "its detail kept from the input")
            notes.append(f"restored at the model's {size} px (the crop is {w}x{h}); returned at {w}x{h}, {how}")
            size_rec["detail_kept"] = s.detail == "keep"
            size_rec.update(split)
        else:
            size_rec["detail_kept"] = False
    if img.was_gray:
        notes.append(_gray_note(fext))
    writes = [  # the restored crop is the input's result, as restored_imgs/ is a photo's: its profile, EXIF, dpi
        ("restored_face", f"restored_faces/{it.stem}{sfx}.{fext}", lambda p: notes.extend(imageio.write_like_input(face, img, p, keep_exif=not s.strip_metadata,
                                                                                      keep_location=not s.strip_location))),
        ("cmp", f"cmp/{it.stem}.png", lambda p: _save_like(_side_by_side(img.rgb, face), p, img, imageio.SIDE_BY_SIDE)),
    ]
    if x.affine is not None:  # re-aligned: what the model was given, as a photo's cropped_faces/
        writes.append(("cropped_face", f"cropped_faces/{it.stem}.png",
                       lambda p: _save_like(np.asarray(x.crop), p, img, imageio.CROP_NOT_RESTORED)))
    if s.save_maps:
        for key, a in face_maps.items():
            writes.append((f"map_{key}", f"maps/{it.stem}_{key}.png", lambda p, a=a: imageio.save_image(a, p)))
    files = _write_outputs(out, it.stem, writes)
    convert = x.affine is not None
    rec = {
        "status": "ok",
        "input": str(it.path),
        "stem": it.stem,
        "image": img.info(keep_exif=not s.strip_metadata, out_ext=fext),
        "num_faces": 1,
        "faces": [{
            "index": 0,
            "aligned_input": True,
            "input_template": x.template,
            **(x.guess.record() if x.guess is not None else {}),
            "affine": np.round(x.affine, 6).tolist() if convert else None,
            **size_rec,
            "detail": s.detail,
            "restorer": restorer_rec,
            **({"dust": x.dust} if x.dust is not None else {}),
            "files": files,
        }],
        "notes": notes,
        "settings": _record_settings(s, restorer),
    }
    return FileResult(str(it.path), it.stem, "done", None, notes, list(files.values()) + [f"records/{it.stem}.json"], rec, 0.0, 1)


def restore_items(items: list[InputItem], out: Path, settings: RestoreSettings, restorer,
                  progress: Callable[[Progress], None] | None = None, *,
                  on_result: Callable[[FileResult], None] | None = None,
                  stop_when_full: bool = False) -> list[FileResult]:
    """Read, restore and write ``items`` under ``out`` (which must exist, with its sub-folders: :func:`prepare_output`).
    Never raises for a bad file: each input gets one :class:`FileResult` (in ``items`` order), also handed to
    ``on_result`` as soon as it is final. ``progress`` gets a :class:`Progress` per sampling step (restorers with a
    ``callback``), per restorer call and per file. ``KeyboardInterrupt`` propagates (the results so far went to
    ``on_result``); so does :class:`OutputFull` after the input it failed, with ``stop_when_full``."""
    out = Path(out)
    debug = _debug()
    tracker = _Tracker(progress, len(items))
    results: dict[int, FileResult] = {}

    def finish(r: FileResult, k: int, share: float = 1.0) -> None:
        """``share``: the part of this input the restorer finished (taken off the bar's partial count)."""
        results[k] = r
        tracker.files_done += 1
        tracker.partial = max(0.0, tracker.partial - share)
        tracker.emit()
        if on_result is not None:
            on_result(r)
        if stop_when_full and r.status == "failed" and (r.error or "").startswith(OutputFull.__name__ + ": "):
            full.append(r.error.removeprefix(OutputFull.__name__ + ": "))

    full: list[str] = []

    def check() -> None:
        """Before new work: a full disk stops it (what was restored already is written, or fails, first)."""
        if full:
            raise OutputFull(full[0])

    if settings.aligned:
        bs = settings.batch_size or default_batch_size(restorer)
        by_path = {(str(it.path), it.stem): it.index for it in items}
        for i in range(0, len(items), bs):
            check()
            chunk = items[i : i + bs]
            _process_aligned_chunk(chunk, out, settings, restorer, tracker, lambda r: finish(r, by_path[(r.path, r.stem)]))
    else:
        from dynface.faces import FaceDetector

        bg = load_bg_upsampler(settings.bg_upsampler)
        def detector_of(kind: str, look: bool = True) -> FaceDetector:
            return FaceDetector(kind=kind, min_score=settings.min_score, max_side=settings.detect_side,
                                turned=settings.detect_turned, edges=settings.detect_edges, look=look)

        detector = detector_of(settings.detector)
        # a video's frames: without the CNN's look at the whole frame (1–4 s for each frame without a face); HOG's
        # near misses are checked as in photos, each turned down not again for REFUSED_HOLD_S (_process_video)
        frames = detector_of("auto", look=False) if settings.detector == "auto" else detector
        clips = [it for it in items if _is_video(it.path)]
        photos = [it for it in items if not _is_video(it.path)]
        if photos and cross_photo_batches(restorer, settings):
            _restore_photos_batched(photos, out, settings, restorer, detector, bg, tracker, finish, check)
            photos = []
        for it in photos + clips:  # photos one per restorer call (reduced precision, or an accelerator), and videos
            check()
            tracker.message = it.path.name
            t0 = time.perf_counter()
            try:
                if _is_video(it.path):
                    r = _process_video(it, out, settings, restorer, frames, bg, tracker)
                else:
                    r = _process_photo(it, out, settings, restorer, detector, bg, tracker)
            except Exception as e:  # never a traceback for one bad file
                if debug and not isinstance(e, InputError):
                    raise
                r = _unrestored(it, e, t0)
            finish(r, it.index)
    return [results[it.index] for it in items if it.index in results]


def prepare_output(out: Path, settings: RestoreSettings, videos_only: bool = False) -> None:
    """Create ``out`` and the sub-folders the settings write to (``videos_only``: a job of videos, which write none of
    the photos' folders); remove temporary files and half-written outputs of killed runs."""
    try:
        for sub in SUBDIRS:
            if videos_only and sub in ("cropped_faces", "restored_faces", "cmp", "restored_imgs"):
                continue
            if sub == "maps" and not settings.save_maps:
                continue
            if settings.aligned and sub in ("cropped_faces", "restored_imgs"):
                continue
            if sub == "restored_videos":  # made by the first video (dynface.jobs._process_video)
                continue
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {out}: {e}") from None
    clean_stale_temp_files(out)
    clean_interrupted_outputs(out)


def start_job(items: list[InputItem], out: Path, settings: RestoreSettings, ignored: list[Path] | None = None,
              manifest: Manifest | None = None,
              complete: tuple[list[FileResult], list[FileResult]] | None = None) -> tuple[JobSummary, Manifest, list[InputItem]]:
    """What every engine does before restoring: check the settings, create ``out``, and (with ``skip_existing``)
    find the complete inputs, adding the manifest lines a killed run did not write (to ``manifest``, default
    ``OUT/manifest.jsonl``). ``complete``: ``complete_results(items, out, Manifest(OUT/manifest.jsonl))`` when the
    caller computed it already (the skip check then runs once per run). Returns (summary, manifest, the items left
    to restore)."""
    out = Path(out)
    check_settings(settings)
    if not settings.aligned:
        load_bg_upsampler(settings.bg_upsampler)  # a bad hook is a usage error before anything is written
    prepare_output(out, settings, videos_only=bool(items) and all(_is_video(it.path) for it in items))
    manifest = manifest or Manifest(out / MANIFEST_NAME)
    summary = JobSummary(out=out, total=len(items), ignored=list(ignored or []))
    todo = list(items)
    if settings.skip_existing:
        skipped, missing = complete if complete is not None else complete_results(items, out, Manifest(out / MANIFEST_NAME),
                                                                                  settings)
        for r in missing:
            append_line(manifest, summary, as_done(r))
        summary.skipped = skipped
        done_stems = {r.stem for r in skipped}
        todo = [it for it in items if it.stem not in done_stems]
    if manifest.path.name == MANIFEST_NAME:  # the job's own manifest (a torchrun rank's part is not: rank 0 says it)
        begin_job(manifest, summary, len(todo))
    return summary, manifest, todo


JOBS_NAME = "jobs.jsonl"  # beside the manifest: one line per job start and end


def _job_line(out: Path, event: str, job: dict, **info) -> None:
    """A line of ``OUT/jobs.jsonl`` (``{"job": "start" | "end", "id": ..., ...}``), appended as manifest lines are. A
    job (one ``dynface restore``, one engine run, one web request) writes ``start`` before its inputs' manifest lines
    and ``end`` after them, so that ``dynface report`` can tell a finished job from one that was killed (a start
    without an end, its process gone). The manifest keeps one line per input."""
    Manifest(Path(out) / JOBS_NAME).append_lines([{"job": event, **job, "time": round(time.time(), 3), **info}])


def read_job_lines(out: Path) -> list[dict]:
    """The readable lines of ``OUT/jobs.jsonl``, in order (none when there is no such file)."""
    try:
        raw = (Path(out) / JOBS_NAME).read_bytes().splitlines()
    except OSError:
        return []
    found = []
    for ln in raw:
        try:
            d = json.loads(ln)
        except ValueError:
            continue
        if _job_line_ok(d):
            found.append(d)
    return found


def _job_line_ok(d: Any) -> bool:
    """Whether ``d`` is a job line of the right types (a line edited or written by something else is skipped)."""
    if not isinstance(d, dict) or d.get("job") not in ("start", "end") or not isinstance(d.get("id"), str):
        return False
    t = d.get("time")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < 1e11:
        return False
    ints = ("pid", "inputs", "todo", "skipped", "restored", "failed")
    return (all(d.get(k) is None or (isinstance(d[k], int) and not isinstance(d[k], bool)) for k in ints)
            and all(d.get(k) is None or isinstance(d[k], str) for k in ("host", "error"))
            and (d.get("stopped") is None or isinstance(d["stopped"], bool)))


def begin_job(manifest: Manifest, summary: JobSummary, todo: int) -> None:
    """The job's ``start`` line in ``jobs.jsonl`` beside ``manifest`` (:func:`_job_line`): its id, process, host, and
    how many inputs it has and will restore; :func:`end_job` writes its ``end``."""
    summary.job = {"id": f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}", "pid": os.getpid(),
                   "host": socket.gethostname()}
    try:
        _job_line(manifest.path.parent, "start", summary.job, inputs=summary.total, todo=todo,
                  skipped=len(summary.skipped))
    except OSError as e:
        summary.manifest_errors.append(f"job start line: {one_line(e)}")


def end_job(manifest: Manifest, summary: JobSummary, error: BaseException | None = None) -> None:
    """The job's ``end`` line: how many inputs were restored, failed, whether it was stopped (Ctrl-C, SIGTERM, a
    web request's time limit) before all were processed, and the ``error`` that ended it early, if one did (a
    ``KeyboardInterrupt``, e.g. while the model loads, is a stop, not an error)."""
    if summary.job is None:
        return
    if isinstance(error, KeyboardInterrupt):
        summary.interrupted, error = True, None
    why = {"error": one_line(error)} if error is not None else {}
    try:
        _job_line(manifest.path.parent, "end", summary.job, restored=len(summary.done), failed=len(summary.failed),
                  stopped=bool(summary.interrupted), **why)
    except OSError as e:
        summary.manifest_errors.append(f"job end line: {one_line(e)}")


def as_done(r: FileResult) -> FileResult:
    """A complete input found on disk (a ``skipped`` result built from its record) as a ``done`` manifest line."""
    rec = r.record or {}
    secs = float((rec.get("timing") or {}).get("total_s", 0.0) or 0.0)
    return FileResult(r.path, r.stem, "done", None, list(rec.get("notes", [])), r.outputs, rec, secs, r.faces, r.source)


def append_line(manifest: Manifest, summary: JobSummary, r: FileResult) -> None:
    """One manifest line; a failed append (e.g. a full disk) is noted in the summary: the outputs and the record
    stand, and the next run adds the line."""
    try:
        manifest.append(r)
    except OSError as e:
        summary.manifest_errors.append(f"{r.path}: {one_line(e)}")


def check_given_restorer(restorer, settings: RestoreSettings) -> None:
    """A restorer handed to :func:`run_job` is used as it was built: its mode, steps, colour fix and gradient are its
    own (the records say them). A :class:`UsageError` when ``settings`` ask for another one explicitly (a mode other
    than the default ``full``, or a ``steps``/``color_fix``/``guidance`` given), instead of silently ignoring it."""
    cfg = getattr(restorer, "cfg", None)
    sampler = getattr(cfg, "sampler", None)
    if cfg is None or sampler is None:  # not a DynFaceRestorer (a test fake, a wrapper): nothing to compare
        return
    have = {"mode": cfg.mode, "steps": str(sampler.steps), "color_fix": cfg.color_fix, "guidance": sampler.guidance}
    asked = {"mode": settings.mode if settings.mode != "full" else None, "steps": settings.steps,
             "color_fix": settings.color_fix, "guidance": settings.guidance}
    wrong = [f"{k}={asked[k]!r} (the restorer's: {have[k]!r})" for k in have
             if asked[k] is not None and str(asked[k]) != str(have[k])]
    if wrong:
        raise UsageError(f"run_job: the restorer passed was built otherwise than the settings ask: {', '.join(wrong)}; "
                         "pass restorer.with_config(...) with them, or no restorer (run_job then builds it)")


def run_job(inputs: Sequence[str | Path], out: Path, settings: RestoreSettings, restorer=None,
            progress: Callable[[Progress], None] | None = None, *,
            on_result: Callable[[FileResult], None] | None = None, items: list[InputItem] | None = None,
            ignored: list[Path] | None = None,
            complete: tuple[list[FileResult], list[FileResult]] | None = None) -> JobSummary:
    """Plan, skip complete inputs (``skip_existing``), load the restorer (unless given: then used as built,
    :func:`check_given_restorer`), restore and append one manifest line per input. ``items``/``ignored`` may come from an earlier :func:`plan_inputs`, ``complete`` from
    an earlier :func:`complete_results` of those items (see :func:`start_job`). Raises
    :class:`UsageError` for whole-job problems; a ``KeyboardInterrupt`` ends the job with ``interrupted=True``."""
    out = Path(out).expanduser()
    if isinstance(inputs, (str, Path)):  # one path, not a sequence of its characters
        inputs = [inputs]
    if items is None:
        items, ignored = plan_inputs(inputs, out, settings)
    if restorer is None:
        check_model(settings)  # before start_job makes the output folder
    else:
        check_given_restorer(restorer, settings)
    summary, manifest, todo = start_job(items, out, settings, ignored, complete=complete)
    if not todo:
        end_job(manifest, summary)
        return summary
    import torch

    threads_before = torch.get_num_threads()
    summary.threads = apply_threads(settings)
    try:
        if restorer is None:
            restorer = load_restorer(settings)
        restore_logged(todo, out, settings, restorer, progress, summary, manifest, on_result)
    except BaseException as e:
        end_job(manifest, summary, e)
        raise
    finally:
        if torch.get_num_threads() != threads_before:  # a library call leaves torch as it found it
            torch.set_num_threads(threads_before)
    end_job(manifest, summary)
    order = {it.stem: it.index for it in items}
    summary.results.sort(key=lambda r: order.get(r.stem, 0))
    return summary


def restore_logged(todo: list[InputItem], out: Path, settings: RestoreSettings, restorer,
                   progress: Callable[[Progress], None] | None, summary: JobSummary, manifest: Manifest,
                   on_result: Callable[[FileResult], None] | None) -> None:
    """:func:`restore_items`, each result going into ``summary`` and one ``manifest`` line as it is final; a
    ``KeyboardInterrupt`` marks the summary interrupted."""
    def record(r: FileResult) -> None:
        summary.results.append(r)
        append_line(manifest, summary, r)
        if on_result is not None:
            on_result(r)

    try:
        restore_items(todo, out, settings, restorer, progress, on_result=record, stop_when_full=True)
    except KeyboardInterrupt:
        summary.interrupted = True
    except OutputFull as e:
        summary.stopped = str(e)
