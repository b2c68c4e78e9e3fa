"""The local web app behind ``dynface serve``: a Gradio page over the same job layer as ``dynface restore``.

Everything here is presentation and safety; the restoring itself is :mod:`dynface.jobs` (``plan_inputs``,
``load_restorer``, ``restore_items``), exactly as the CLI calls it, so a request's output folder (offered as
a zip) has the CLI's layout: ``restored_imgs/``, ``restored_faces/``, ``cropped_faces/``, ``cmp/``,
``maps/`` (always saved here: they are the explanation), ``records/`` and ``manifest.jsonl``.

**Offline.** Gradio's analytics, its version check and Hugging Face telemetry are switched off before Gradio is
imported (:func:`quiet_environment`), the theme uses system fonts only (no web fonts), and the page needs no
CDN: the browser test checks that the page sends no request beyond the server.

**No way in** (:class:`WebApp`):

* inputs are only files the client uploaded: every path a request names must lie in the server's upload folder
  (Gradio's cache, ``GRADIO_TEMP_DIR``), else the whole request is refused; the files are then copied into a
  per-request folder and read from there;
* the model is a *name* from the server's allow list (the embedded models, plus the model folders found in the
  ``--models`` directories when the server started); anything else (a path, an uploaded ``.pth``) is refused,
  and an uploaded weights file is only ever treated as a (non-)image;
* uploads are capped in bytes (also by Gradio at the HTTP level), in number, and in decoded pixels: the job
  layer reads every file with ``RestoreSettings.max_pixels`` set to the server's cap (the same check as
  ``dynface restore``, whichever decoder reads the file; from the header, before decoding, for everything Pillow
  opens, against decompression bombs);
* a request has a time limit (checked per sampling step through the job layer's progress callback);
* per-request folders live under one work folder and are removed after ``keep_s`` seconds (and all of it when
  the server stops); Gradio's own cache of uploads and results ages out the same way.

A bad file (empty, corrupt, not an image, too large, no face) gets one line in the page, and the other files of
the same request are still restored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynface.atomicfile import atomic_path
from dynface.jobs import StopRequested

__all__ = [
    "ServerConfig",
    "WebApp",
    "WebRequestError",
    "WebResult",
    "build_app",
    "find_models",
    "quiet_environment",
]

EXAMPLES_DIR = Path(__file__).parent / "examples"
MAP_KEYS = (("restorer", "RM(y)"), ("guide0", "ý0"), ("guide1", "ý1"), ("guide2", "ý2"), ("dgsa", "DGSA"),
            ("dust", "dust filled"))
TABLE_HEADERS = ["file", "face", "std*", "start steps", "NFE", "eta", "s/face"]
_SAFE_CHARS = re.compile(r"[^\w.-]+")  # letters and digits of any script ("Grand-mère été 1962"), '.', '-', '_'


def quiet_environment() -> None:
    """No analytics, version checks or telemetry: set before ``gradio`` (or ``huggingface_hub``) is imported."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")


class WebRequestError(Exception):
    """A request that is refused as a whole (shown as an error in the page, an error in the API)."""


# ------------------------------------------------------------------------------------------ configuration
# Gradio refuses an upload over its max_file_size before the app sees it, and with it every other file of the
# selection (a toast that fades; the good photos were gone too). Its cap is this many times the per-file limit, so
# a file somewhat over the limit reaches WebApp._precheck and gets its own line while the others are restored
# (a video: twice its own limit).
UPLOAD_HTTP_FACTOR = 8
@dataclass(frozen=True)
class ServerConfig:
    """What the server allows. Sizes are per file; ``keep_s``: how long a request's files are kept."""

    models_dirs: tuple[Path, ...] = ()
    device: str = "cpu"
    max_upload_bytes: int = 25 * 2**20
    max_video_bytes: int = 200 * 2**20  # a video's upload (phone video: ~2 MB a second)
    max_video_s: float = 10.0  # seconds of a video restored per request (about 1.4 s per face and frame on 2 cores)
    max_pixels: int = 40_000_000
    max_files: int = 16
    time_limit_s: float = 900.0
    keep_s: float = 3600.0
    concurrency: int = 1
    max_queue: int = 32
    max_upscale: float = 4.0
    work_dir: Path | None = None  # default: a new temporary folder
    upload_root: Path | None = None  # default: Gradio's upload folder (GRADIO_TEMP_DIR)


def find_models(models_dirs: Sequence[Path]) -> dict[str, str]:
    """The allow list: label -> what ``--model`` gets. Embedded models that have weights, then every folder in a
    ``--models`` directory that holds a prior (``prior.safetensors`` or a ``.pth``); the directory itself too."""
    from dynface.registry import EMBEDDED, WEIGHTS_DIR

    found: dict[str, str] = {}
    for name in EMBEDDED:
        if (WEIGHTS_DIR / name / "prior.safetensors").exists():
            found[name] = name
    for d in models_dirs:
        d = Path(d).expanduser().resolve()
        cands = [d] + (sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else [])
        for c in cands:
            if (c / "prior.safetensors").is_file() or any(c.glob("*.pth")):
                label = c.name
                k = 2
                while label in found:
                    label, k = f"{c.name} ({k})", k + 1
                found[label] = str(c)
    return found


@dataclass
class WebResult:
    """One request's results, ready for the page (and the API)."""

    request_dir: Path
    out_dir: Path
    results: list  # list[jobs.FileResult], in upload order, including files refused before the job
    messages: list[str]
    comparisons: dict[str, list[str]]  # label -> [before, after] image paths (same size)
    videos: dict[str, str]  # comparison label of a video's frame -> its restored video
    gallery: list[tuple[str, str]]  # (restored face, caption)
    explanation: list[tuple[str, str]]  # (map image, caption)
    table: list[list[Any]]
    zip_path: Path | None
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ the service
class WebApp:
    """The request handlers, free of Gradio so they can be tested and reused (the page wires :meth:`ui_restore`)."""

    def __init__(self, config: ServerConfig | None = None):
        self.config = cfg = config or ServerConfig()
        self.models = find_models(cfg.models_dirs)
        if cfg.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="dynface-web-"))
        else:
            self.work_dir = Path(cfg.work_dir)
            self.work_dir.mkdir(parents=True, exist_ok=True)
        if cfg.upload_root is not None:
            self.upload_root = Path(cfg.upload_root)
        else:
            from gradio.utils import get_upload_folder

            self.upload_root = Path(get_upload_folder())
        self.upload_root.mkdir(parents=True, exist_ok=True)
        self._restorer_key: tuple | None = None
        self._restorer: Any = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stop_asked: set[str] = set()  # pages (Gradio session hashes) whose Stop button was pressed

    def request_stop(self, session: str | None) -> None:
        """The Stop button of page ``session``: its running request stops at its next sampling step."""
        if session:
            self._stop_asked.add(session)

    def stop_asked(self, session: str | None, clear: bool = False) -> bool:
        """Whether page ``session`` pressed Stop (``clear``: and forget it, when its next request starts)."""
        asked = session in self._stop_asked
        if clear:
            self._stop_asked.discard(session)
        return asked

    # ---------------------------------------------------------------- housekeeping
    def sweep(self, now: float | None = None) -> int:
        """Remove request folders older than ``keep_s``; returns how many."""
        now = time.time() if now is None else now
        n = 0
        for d in self.work_dir.glob("req-*"):
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.config.keep_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
            except OSError:
                pass
        return n

    def close(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def shutdown(self, wait_s: float = 60.0) -> bool:
        """Stop for good: a running request stops at its next sampling step (its files not yet done are reported
        "not restored: the server is stopping"), later ones are refused, and this waits up to ``wait_s`` seconds
        for the running one to end. True when none is running any more. Called by ``dynface serve`` on Ctrl-C or
        SIGTERM before it removes its folders, so that no request is left computing in a folder being deleted or
        inside torch while the interpreter exits (which aborts the process)."""
        self._stopping.set()
        if not self._lock.acquire(timeout=max(0.0, wait_s)):
            return False
        self._lock.release()
        return True

    def example_files(self) -> list[str]:
        """The bundled samples, copied into the upload folder (so they pass the same checks as uploads)."""
        dst = self.upload_root / "dynface-examples"
        dst.mkdir(parents=True, exist_ok=True)
        out = []
        for p in sorted(EXAMPLES_DIR.glob("*.png")):
            q = dst / p.name
            if not q.exists():
                shutil.copyfile(p, q)
            out.append(str(q))
        return out

    # ---------------------------------------------------------------- validation
    def settings(self, *, model: str, mode: str = "full", aligned: bool = False, fidelity: float | None = 0.5,
                 steps: str | None = None, seed: int | float = 0, precision: str = "auto", upscale: float = 2.0,
                 color_fix: str | None = None, turned: bool = False, strip_metadata: bool = False,
                 grain: bool = False, clip: str | None = None, dust: bool = False, descreen: bool = False):
        """A :class:`dynface.jobs.RestoreSettings` from the page's controls, or :class:`WebRequestError`."""
        from dynface import jobs

        if not isinstance(model, str) or model not in self.models:
            known = ", ".join(self.models) or "none"
            raise WebRequestError(f"refused: model {str(model)[:80]!r} is not one this server offers ({known})")
        # the page's values as numbers; their ranges (and the mode) are jobs.check_settings' business below
        try:
            seed_i = int(seed)
            if seed_i != float(seed):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise WebRequestError(f"seed must be a whole number >= 0, got {seed!r}") from None
        if fidelity is not None:
            try:
                fidelity = float(fidelity)
            except (TypeError, ValueError):
                raise WebRequestError(f"fidelity must be a number in [0, 1], got {fidelity!r}") from None
        steps = str(steps or "").strip() or None
        try:
            upscale = float(upscale)
        except (TypeError, ValueError):
            raise WebRequestError(f"upscale must be a number, got {upscale!r}") from None
        if not 1.0 <= upscale <= self.config.max_upscale:
            raise WebRequestError(f"upscale must be between 1 and {self.config.max_upscale:g}, got {upscale:g}")
        if color_fix in ("", "default", "model default"):
            color_fix = None
        if clip is not None and not isinstance(clip, str):
            raise WebRequestError(f"the part of the videos must be text such as 0:05-0:12, got {clip!r}")
        clip = (clip or "").strip() or None
        settings = jobs.RestoreSettings(
            model=self.models[model], mode=mode, steps=steps, seed=seed_i, fidelity=fidelity, upscale=upscale,
            aligned=bool(aligned), device=self.config.device, precision=precision, save_maps=True, color_fix=color_fix,
            max_pixels=self.config.max_pixels, detect_turned=bool(turned), strip_metadata=bool(strip_metadata),
            grain="match" if grain else "none", clip=clip, dust=bool(dust), descreen=bool(descreen),
        )
        try:
            jobs.check_settings(settings)
        except jobs.UsageError as e:
            raise WebRequestError(str(e).replace("--clip", "the part of the videos").replace("--", "")) from None
        return settings

    def _uploaded(self, paths: Sequence[Any]) -> list[tuple[Path, str]]:
        """(server path, original name) of each upload; refuses any path outside the upload folder."""
        root = self.upload_root.resolve()
        files = []
        for p in paths:
            if p is None:
                continue
            if isinstance(p, dict):  # a FileData payload
                p = p.get("path")
            if not isinstance(p, str | os.PathLike) or not str(p):
                raise WebRequestError(f"refused: not an uploaded file: {str(p)[:80]!r}")
            q = Path(p)
            try:
                r = q.resolve()
            except (OSError, RuntimeError):
                raise WebRequestError(f"refused: not an uploaded file: {q.name[:80]!r}") from None
            if root not in r.parents:
                raise WebRequestError(f"refused: {q.name[:80]!r} is not a file uploaded to this server "
                                      "(the server reads uploads only, never a path a client names)")
            if not r.is_file():
                raise WebRequestError(f"refused: upload {q.name[:80]!r} is missing (expired?); upload it again")
            files.append((r, q.name))
        return files

    def _precheck(self, path: Path, name: str) -> str | None:
        """A reason to reject a file before it is copied (bytes: a video's cap is ``max_video_bytes``, judged by
        ``name``'s extension), else None. The pixel cap is the job layer's (``settings.max_pixels``): it applies to
        every decoder the job layer falls back to."""
        from dynface.video import is_video_name

        size = path.stat().st_size
        if size == 0:
            return "empty file"
        kind = "video" if is_video_name(name) else "file"
        cap = self.config.max_video_bytes if kind == "video" else self.config.max_upload_bytes
        if size > cap:
            return f"{kind} too large ({_mb(size)}; this server accepts up to {cap / 2**20:.3g} MB)"
        return None

    def _video_check(self, path: Path, settings) -> str | None:
        """A reason not to restore video ``path`` in this request: the part of it asked for (``settings.clip``, else
        all of it) is longer than ``max_video_s``; None when it is not a video or is short enough (the job layer
        reports a video it cannot read)."""
        from dynface import video

        if not video.is_video_name(path):
            return None
        clip = video.parse_clip(settings.clip)
        try:
            with video.VideoReader(path, 1) as r:
                dur = r.info.duration_s
        except video.VideoError:
            return None
        if dur is None:
            return None
        end = dur if clip.end is None else min(clip.end, dur)
        cap = self.config.max_video_s
        if end - clip.start > cap + 0.05:
            return (f"{end - clip.start:.1f} s of video: this server restores up to {cap:g} s of a video per request "
                    f"(about 1.4 s per face and frame on 2 CPU cores); give a part under “part of the videos”, "
                    f"e.g. {_clock(clip.start)}-{_clock(clip.start + cap)}")
        return None

    # ---------------------------------------------------------------- restorer
    def restorer_for(self, settings):
        """The job layer's restorer for these settings, kept between requests while the model settings match."""
        from dynface import jobs

        key = jobs.restorer_key(settings)
        if key != self._restorer_key:
            self._restorer, self._restorer_key = None, None
            self._restorer = jobs.load_restorer(settings)
            self._restorer_key = key
        return self._restorer

    # ---------------------------------------------------------------- the request
    def restore(self, files: Sequence[Any], *, progress: Callable[[float, str], None] | None = None,
                gone: Callable[[], bool | str] | None = None, **form) -> WebResult:
        """Restore the uploaded ``files`` with the page's settings (``form``: see :meth:`settings`).

        Raises :class:`WebRequestError` for a refused request (a path that is not an upload, a model not on the
        allow list, bad settings, no files); a bad file only gets a message and a ``failed`` result. ``gone``: says
        whether the page that asked has closed or reloaded; checked at every sampling step like the time limit, so
        that an abandoned request stops instead of keeping the worker (and the queue behind it) busy."""
        from dynface import jobs

        t0 = time.monotonic()
        cfg = self.config
        if self._stopping.is_set():
            raise WebRequestError("the server is stopping")
        settings = self.settings(**form)
        uploads = self._uploaded(list(files or []))
        if not uploads:
            raise WebRequestError("no files: upload one or more photos or videos (or aligned face crops)")
        if len(uploads) > cfg.max_files:
            raise WebRequestError(f"too many files ({len(uploads)}); this server takes up to {cfg.max_files} per request")
        self.sweep()
        req = self.work_dir / f"req-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        in_dir, out, view = req / "in", req / "out", req / "view"
        for d in (in_dir, out, view):
            d.mkdir(parents=True)

        # copy the uploads (under plain names) into the request's own folder; refuse bad ones here already
        early: dict[int, Any] = {}
        staged: list[tuple[int, Path, str]] = []
        used: set[str] = set()
        for k, (path, name) in enumerate(uploads):
            base = _safe_name(name)
            dst_name, j = base, 2
            while dst_name.lower() in used:
                stem, dot, ext = base.rpartition(".")
                dst_name = f"{stem}_{j}.{ext}" if dot else f"{base}_{j}"
                j += 1
            used.add(dst_name.lower())
            why = self._precheck(path, name)
            if why:
                early[k] = _failed(name, why)
                continue
            dst = in_dir / dst_name
            shutil.copyfile(path, dst)
            why = self._video_check(dst, settings)
            if why:
                early[k] = _failed(name, why)
                dst.unlink()
                continue
            staged.append((k, dst, name))

        results: list[Any] = [None] * len(uploads)
        logged: set[int] = set()  # the results the job layer wrote to the manifest
        for k, r in early.items():
            results[k] = r
        if staged:
            try:
                items, ignored = jobs.plan_inputs([p for _, p, _ in staged], out, settings)
                summary, manifest, _ = jobs.start_job(items, out, settings, ignored)
            except jobs.UsageError as e:
                raise WebRequestError(_for_the_page(str(e))) from None
            by_path = {p.resolve(): (k, name) for k, p, name in staged}
            for p in ignored:
                k, name = by_path[Path(p).resolve()]
                results[k] = _failed(name, "not an image file")
            key_of = {it.stem: by_path[Path(it.path).resolve()] for it in items}

            def collect(r) -> None:  # a failed manifest append (full disk) is noted, as in the CLI's job layer
                jobs.append_line(manifest, summary, r)
                summary.results.append(r)
                results[key_of[r.stem][0]] = r
                logged.add(key_of[r.stem][0])

            try:
                with self._lock:
                    restorer = self.restorer_for(settings)
                    jobs.apply_threads(settings)
                    stopped = self._run(items, out, settings, restorer, progress, t0 + cfg.time_limit_s, collect, gone)
            except BaseException as e:
                jobs.end_job(manifest, summary, e)  # the request's jobs.jsonl says how it ended, as a CLI job's does
                raise
            summary.interrupted = stopped is not None
            jobs.end_job(manifest, summary)
            for it in items:  # what the time limit or a closed page cut off
                k, name = key_of[it.stem]
                if results[k] is None:
                    why = f"not restored: {stopped or 'the request stopped'}"
                    if "time limit" in why and jobs._is_video(it.path):
                        why += " (a video: restore a shorter part of it)"
                    results[k] = _failed(name, why)
        for k, (_, name) in enumerate(uploads):
            if results[k] is None:
                results[k] = _failed(name, "not restored")
        for k, r in enumerate(results):  # the files the job layer did not log (refused before it, cut off by the
            if k not in logged:  # time limit): the manifest has a line per upload, as the page has
                try:
                    st = uploads[k][0].stat()  # the upload's, never a file of the server's own folder of that name
                    r.source = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
                    jobs.Manifest(out / jobs.MANIFEST_NAME).append(r)
                except OSError:
                    pass
        _without_server_paths(out, in_dir)
        return self._present(req, out, view, uploads, staged, results, time.monotonic() - t0, settings)

    def _run(self, items, out, settings, restorer, progress, deadline: float, collect, gone=None) -> str | None:
        """``jobs.restore_items`` in chunks of ``batch_size`` files (aligned crops, or photos whose faces the job layer
        batches across photos: :func:`dynface.jobs.cross_photo_batches`), the deadline and ``gone`` checked between
        chunks and, through the progress callback, at every sampling step. Returns why it stopped early, or None."""
        from dynface import jobs

        bs = settings.batch_size or 8
        bridge = _ProgressBridge(progress, deadline, self.config.time_limit_s, len(items), gone, self._stopping)
        for i in range(0, len(items), bs):
            try:
                bridge.check()
                bridge.next_chunk(i)
                jobs.restore_items(items[i : i + bs], out, settings, restorer, progress=bridge, on_result=collect)
            except RequestTimeLimit as e:
                return str(e)
        return None

    def _present(self, req, out, view, uploads, staged, results, seconds, settings=None) -> WebResult:
        from dynface import jobs
        from dynface.video import is_video_name

        input_of = {k: p for k, p, _ in staged}
        messages, comparisons, gallery, explanation, table = [], {}, [], [], []
        videos: dict[str, str] = {}
        if settings is not None:
            messages += [f"note: {_for_the_page(w)}" for w in jobs.settings_warnings(settings)]
            if settings.clip and not any(is_video_name(n) for _, n in uploads):
                messages.append(f"note: the part of the videos ({settings.clip}) is for videos, and none was "
                                "uploaded")
        counts = {"done": 0, "failed": 0, "no_face": 0, "skipped": 0}
        names = [n for _, n in uploads]
        for k, ((_, name), r) in enumerate(zip(uploads, results, strict=True)):
            counts[r.status] = counts.get(r.status, 0) + 1
            if names.count(name) > 1:  # two uploads of the same name: say which is which (as in the zip)
                name = f"{name} (as {r.stem})"
            if r.status != "done":
                why = r.error or ("no face found" if r.status == "no_face" else r.status)
                notes = f" ({'; '.join(map(_for_the_page, r.notes))})" if r.notes else ""  # why, what to try
                messages.append(f"✗ {name}: {_for_the_page(why)}{notes}")
                continue
            rec = r.record or {}
            faces = rec.get("faces") or []
            note = f" ({'; '.join(map(_for_the_page, r.notes))})" if r.notes else ""
            if rec.get("restored_video"):
                counts_ = rec.get("faces_per_frame") or []
                messages.append(f"✓ {name}: video restored, {len(counts_)} frame(s), {sum(counts_)} face(s) in "
                                f"{sum(1 for c in counts_ if c)} of them{note}")
                label = _video_frame(input_of.get(k), out / rec["restored_video"], rec, view, r.stem, comparisons)
                if label:
                    videos[label] = str(out / rec["restored_video"])
                continue
            messages.append(f"✓ {name}: {len(faces)} face(s) restored{note}")
            photo = rec.get("restored_img")
            if photo and k in input_of:
                comparisons[f"{r.stem}: whole photo"] = _pair(input_of[k], out / photo, view, f"{r.stem}_photo")
            for i, f in enumerate(faces):
                files = f.get("files", {})
                label = f"{r.stem}_{i:02d}" if photo or len(faces) > 1 else r.stem
                after = files.get("restored_face")
                before = files.get("cropped_face")
                before_path = out / before if before else input_of.get(k)
                if after and before_path is not None:
                    comparisons[f"{label}: face"] = _pair(before_path, out / after, view, f"{label}_face")
                if after:
                    gallery.append((str(out / after), label))
                for key, caption in MAP_KEYS:
                    m = files.get(f"map_{key}")
                    if m and (out / m).is_file():
                        explanation.append((_enlarged(out / m, view / f"{label}_{key}.png"), f"{caption} · {label}"))
                rr = f.get("restorer") or {}
                table.append([
                    name, i, _num(rr.get("std_star"), 3), _steps_txt(rr.get("start_steps", rr.get("start_step"))),
                    rr.get("nfe"), _num(rr.get("eta"), 3), _num(rr.get("seconds"), 2),
                ])
        if videos and not table:  # a request of videos only: the tabs below would be empty without a word
            messages.append("note: the explanation and the per-face table are for photos and face crops; a video's "
                            "faces are in its restored video")
        stamp = time.strftime("%Y%m%d-%H%M%S")  # repeated downloads do not pile up as "(1)", "(2)"
        zip_path = _zip_folder(out, req / f"dynface_results_{stamp}.zip") if counts["done"] else None
        return WebResult(req, out, results, messages, comparisons, videos, gallery, explanation, table, zip_path,
                         round(seconds, 2), counts)

    # ---------------------------------------------------------------- the page's handler
    def ui_restore(self, files, pasted, model, mode, aligned, fidelity, steps, seed, precision, upscale,
                   color_fix, turned=False, strip_metadata=False, grain=False, clip="", dust=False,
                   descreen=False, progress=None, gone=None, video=False):
        """The Restore button (and the ``/restore`` API endpoint): the page's outputs, in order. ``video``: and the
        video player's (the page's own handler; the API's outputs stay as they were: a restored video is in the
        zip)."""
        import gradio as gr

        from dynface import jobs

        paths = list(files or [])
        if pasted:
            paths.append(pasted)
        bar = None
        if progress is not None:
            def bar(frac: float, desc: str) -> None:
                progress(frac, desc=desc)
        try:
            res = self.restore(paths, progress=bar, gone=gone, model=model, mode=mode, aligned=aligned,
                               fidelity=fidelity, steps=steps, seed=seed, precision=precision, upscale=upscale,
                               color_fix=color_fix, turned=turned, strip_metadata=strip_metadata, grain=grain,
                               clip=clip, dust=dust, descreen=descreen)
        except WebRequestError as e:  # one line in the server's log, no traceback; the reason to the client
            _log(f"refused a request: {str(e).removeprefix('refused: ')}")
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # jobs.UsageError (e.g. a model that cannot be loaded) and the unexpected
            _log(f"a request failed: {type(e).__name__}: {jobs.first_line(e)}")
            raise gr.Error(jobs.first_line(e), print_exception=False) from None
        c = res.counts
        head = (f"**{c.get('done', 0)} of {len(res.results)} file(s) restored** in {res.seconds:.1f} s"
                + (f" — {len(res.results) - c.get('done', 0)} with a problem" if c.get("done", 0) < len(res.results) else ""))
        status = head + "\n\n" + "\n".join(f"- {m}" for m in res.messages)
        labels = list(res.comparisons)
        first = res.comparisons[labels[0]] if labels else None
        outputs = (
            status,
            gr.Dropdown(choices=labels, value=labels[0] if labels else None, interactive=bool(labels)),
            tuple(first) if first else None,
            res.gallery,
            res.explanation,
            res.table,
            str(res.zip_path) if res.zip_path else None,
            {"pairs": res.comparisons, "videos": res.videos},
        )
        return (*outputs, _player(next(iter(res.videos.values()), None))) if video else outputs

    def ui_page(self, *args, progress=None, gone=None):
        """The Restore button on the page: :meth:`ui_restore`, but a refused request clears the previous request's
        results and says why in the status (and in a toast), instead of leaving them on show as if they were its."""
        import gradio as gr

        try:
            return self.ui_restore(*args, progress=progress, gone=gone, video=True)
        except gr.Error as e:
            gr.Warning(e.message)
            return (f"**Not restored:** {e.message}", gr.Dropdown(choices=[], value=None, interactive=False), None, [],
                    [], None, None, {}, _player(None))


class RequestTimeLimit(StopRequested):
    """Raised from the progress callback at a sampling step once a request is past its time limit or its page is
    gone (the message says which). The job layer's :class:`~dynface.jobs.StopRequested` (a BaseException): the
    per-file ``except Exception`` lets it through, the request stops, and a video being restored keeps the frames
    done."""


class _ProgressBridge:
    """The job layer's progress callback for one chunk: forwards to the page's bar, enforces the time limit and stops
    the request when its page is ``gone`` or the server is ``stopping``."""

    def __init__(self, bar: Callable[[float, str], None] | None, deadline: float, limit: float, total: int = 1,
                 gone: Callable[[], bool | str] | None = None, stopping: threading.Event | None = None):
        self.bar, self.deadline, self.limit, self.gone, self.stopping = bar, deadline, limit, gone, stopping
        self.offset, self.total = 0, max(1, total)
        self.faces_base = self.faces_chunk = 0
        self.shown = 0.0

    def next_chunk(self, offset: int) -> None:
        self.offset = offset
        self.faces_base += self.faces_chunk
        self.faces_chunk = 0

    def check(self) -> None:
        """:class:`RequestTimeLimit` when the request is past its time limit, its page is gone or the server stops."""
        if self.stopping is not None and self.stopping.is_set():
            raise RequestTimeLimit("the server is stopping")
        if time.monotonic() > self.deadline:
            raise RequestTimeLimit(f"the request's time limit ({self.limit:g} s) was reached")
        why = self.gone() if self.gone is not None else False
        if why:
            raise RequestTimeLimit(why if isinstance(why, str) else "the page that asked was closed or reloaded")

    def __call__(self, p) -> None:
        if p.step is not None:
            self.check()
        if self.bar is None:
            return
        done = self.offset + p.files_done
        frac = min(1.0, (self.offset + float(getattr(p, "fraction", p.files_done))) / self.total)
        frac = self.shown = max(self.shown, frac)  # never backwards
        desc = f"file {min(done + 1, self.total)}/{self.total}"
        if p.message:
            desc += f" ({p.message[-40:]})"
        self.faces_chunk = p.faces_done
        if self.faces_base + p.faces_done:
            desc += f" · {self.faces_base + p.faces_done} face(s) done"
        if p.step is not None and p.steps_total:
            desc += f" · step {p.step}/{p.steps_total}"
        self.bar(frac, desc)


# ------------------------------------------------------------------------------------------ helpers
def _without_server_paths(out: Path, in_dir: Path) -> None:
    """The records and the manifest name each input by its upload's name (``01.jpg``), not by the server's copy
    (``/tmp/dynface-web-…/requests/req-…/in/01.jpg``): the zip goes to clients, who need not see the server's folders."""
    from dynface.atomicfile import atomic_write_text

    prefix = json.dumps(str(in_dir) + os.sep)[1:-1]  # as it appears inside the JSON strings
    for f in [out / "manifest.jsonl", *sorted((out / "records").glob("*.json"))]:
        try:
            text = f.read_text(encoding="utf-8")
            if prefix in text:
                atomic_write_text(text.replace(prefix, ""), f)
        except OSError:
            pass


# the job layer's flags that the page has as controls: how the page names them
PAGE_CONTROLS = (("leave out --aligned", "untick “inputs are aligned face crops”"),
                 ("--aligned", "“inputs are aligned face crops”"), ("--precision ", "precision "),
                 ("--fidelity ", "fidelity "), ("--steps ", "steps "), ("--seed ", "seed "), ("--mode ", "mode "),
                 ("--color-fix ", "colour fix "), ("--clip", "the part of the videos"),
                 ("--detect-turned for faces lying sideways", "“also look for faces lying sideways” for faces on their "
                  "side"), ("--detect-turned", "“also look for faces lying sideways”"),
                 ("--strip-metadata", "“remove the metadata”"), ("--grain match", "“give restored faces the "
                 "photo's grain”"), ("--dust", "“remove white dust and scratches from faces”"),
                 ("--descreen", "“smooth away a printed photo's dots”"))
_CLI_FLAG = re.compile(r"(?<![\w’'-])(--[a-z][a-z0-9-]*)")


def _for_the_page(why: str) -> str:
    """A job-layer message with the CLI's flags named as the page's controls (:data:`PAGE_CONTROLS`), and the
    others as the command line's (the page has no such control)."""
    from dynface.jobs import FFHQ_ADVICE

    why = why.replace(FFHQ_ADVICE, FFHQ_ADVICE.replace("--input-template", "the command line's --input-template")
                      + " (this page has no framing control: it tells a crop's framing from the face it finds)")
    for flag, control in PAGE_CONTROLS:
        why = why.replace(flag, control)
    said = "the command line's "
    return _CLI_FLAG.sub(lambda m: m.group(1) if why[: m.start()].endswith(said) else said + m.group(1), why)


def _failed(name: str, why: str):
    from dynface import jobs

    return jobs.FileResult(path=name, stem=Path(name).stem, status="failed", error=why, notes=[], outputs=[],
                           record=None, seconds=0.0)


def _safe_name(name: str) -> str:
    name = unicodedata.normalize("NFC", Path(str(name)).name)
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _SAFE_CHARS.sub("_", stem).strip("._-")[:80] or "upload"
    ext = _SAFE_CHARS.sub("", ext)[:10]
    return f"{stem}.{ext}" if ext else stem


def _num(v, nd: int):
    return None if v is None else round(float(v), nd)


def _steps_txt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return ", ".join(str(int(x)) for x in v)
    return str(v)


def _pair(before: Path, after: Path, view: Path, name: str) -> list[str]:
    """[before, after] for the slider: the before image resized to the after image's size (both RGB PNG)."""
    from PIL import Image

    from dynface.imageio import read_image

    with Image.open(after) as im:
        a = _on_checkerboard(im.convert("RGBA")) if "A" in im.getbands() else im.convert("RGB")
    try:
        src = read_image(before)
        b = Image.fromarray(src.rgb)
        if src.alpha is not None:
            b.putalpha(Image.fromarray(src.alpha))
            b = _on_checkerboard(b)
    except Exception:
        b = Image.new("RGB", a.size, (128, 128, 128))
    if b.size != a.size:
        b = b.resize(a.size, Image.BICUBIC)
    bp, ap = view / f"{name}_before.png", view / f"{name}_after.png"
    b.save(bp)
    a.save(ap)
    return [str(bp), str(ap)]


def _mb(n: int) -> str:
    """Bytes in MB as the page says them: ``26.0 MB``, ``0.024 MB`` (a size under 0.1 MB would read 0.0 MB)."""
    mb = n / 2**20
    return f"{mb:.1f} MB" if mb >= 0.1 else f"{mb:.2g} MB"


def _clock(s: float) -> str:
    """Seconds as the page writes a time, to a tenth: ``M:SS`` (``75`` -> ``1:15``; ``2.5`` -> ``0:02.5``)."""
    m, sec = divmod(round(max(0.0, s), 1), 60)
    return f"{int(m)}:{int(sec):02d}" if sec == int(sec) else f"{int(m)}:{sec:04.1f}"


def _video_frame(before: Path | None, after: Path, rec: dict, view: Path, stem: str,
                 comparisons: dict[str, list[str]]) -> str | None:
    """Put a restored video's frame with the most faces (the first such) beside the same input frame into
    ``comparisons`` (the slider's pair, as for photos); returns its label, None when a frame cannot be read."""
    from PIL import Image

    from dynface import video

    counts = rec.get("faces_per_frame") or []
    if before is None or not counts:
        return None
    k = max(range(len(counts)), key=lambda i: (counts[i], -i))
    c = rec.get("clip") or {}
    clip = video.Clip(c.get("start_s") or 0.0, c.get("end_s"))
    paths, when = [], 0.0
    try:
        for src, part, side in ((before, clip, "in"), (after, video.Clip(), "out")):
            with video.VideoReader(src, 1) as r:
                found = next(((t, rgb) for i, t, _, rgb in r.frames(part) if i == k), None)
            if found is None:
                return None
            when = found[0] if side == "in" else when  # in the input's time (a part starts later)
            paths.append(view / f"{stem}_frame_{side}.png")
            Image.fromarray(found[1]).save(paths[-1])
    except video.VideoError:
        return None
    label = f"{stem}: frame {k + 1} of {len(counts)}, at {_clock(when)} ({counts[k]} face(s))"
    comparisons[label] = _pair(paths[0], paths[1], view, f"{stem}_frame")
    return label


def _on_checkerboard(im):
    """An RGBA picture shown as image viewers show transparency: over a light checkerboard (its RGB under
    transparent pixels, which the slider showed, is not what the file looks like)."""
    import numpy as np
    from PIL import Image

    w, h = im.size
    y, x = np.mgrid[0:h, 0:w]
    board = np.where(((x // 12) + (y // 12)) % 2 == 0, 235, 200).astype(np.uint8)
    bg = Image.fromarray(np.repeat(board[..., None], 3, axis=-1), "RGB")
    bg.paste(im, mask=im.getchannel("A"))
    return bg


def _enlarged(src: Path, dst: Path, side: int = 192) -> str:
    """Small maps (the model's size, 64–128 px) shown crisp: enlarged with nearest neighbour for the page."""
    from PIL import Image

    im = Image.open(src).convert("RGB")
    if max(im.size) < side:
        f = max(1, side // max(im.size))
        im = im.resize((im.width * f, im.height * f), Image.NEAREST)
    im.save(dst)
    return str(dst)


def _zip_folder(folder: Path, dst: Path) -> Path:
    """``folder`` as a zip, without hidden files and ``jobs.jsonl`` (the server's host name and process ids)."""
    from dynface.jobs import JOBS_NAME

    with atomic_path(dst) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != JOBS_NAME:
                z.write(p, p.relative_to(folder).as_posix())
    return dst


# ------------------------------------------------------------------------------------------ the page
INTRO = """# DynFaceRestore — restore faces, on this machine
Upload photos or videos (or aligned face crops), pick the settings, press **Restore**. Nothing leaves this computer.
Each face shows *why* the method did what it did: the restorer's output, the three guides ý0…ý2 picked by the
estimated degradation std\\*, and the DGSA map of where guidance was strong.
A restored face is a generative model's estimate, not a record of the person: the smaller and worse the input,
the more of its detail is the model's (glasses, expression, marks can differ). Do not use it to identify anyone."""

EXPLAIN = """**How to read it.** The restorer RM(y) removes most degradation; the guides ý0, ý1, ý2 are its outputs
at the estimated blur level std\\* and one and two levels below. DSST turns the guides' noise levels into the
*start steps* of the diffusion (a clean face starts late: few network evaluations, *NFE*), *eta* = std\\*/10 sets
the sampler's randomness, and the DGSA map shows where the guidance pulled hardest (bright)."""

API_DESCRIPTION = ("Restore the faces in photos and videos (or aligned face crops): only files (or pasted, one image) "
                   "is needed, the other parameters default to the page's settings; a restored video is in the zip "
                   "(restored_videos/). A refused request (a model not offered, a value out of range) is an error "
                   "that says why.")

CSS = """
.gradio-container {max-width: 1400px !important}
/* Gradio 6 gives a gallery of fewer images than its columns fewer, wider columns: one restored face filled the
   whole width and its square thumbnail was cut to the gallery's height (the eyes and forehead only) */
#gallery .grid-container, #explain .grid-container {grid-template-columns: repeat(5, minmax(0, 1fr)) !important}
/* thumbnail captions ("RM(y) · Grand-mere_1962_00") use the thumbnail's whole width, one line at its foot (80 % of
   it cut them to "RM(y) · Gran…"); a longer one still ends in "…" rather than cover the face */
#gallery .caption-label, #explain .caption-label {max-width: 100% !important; left: 0; font-size: 0.75em}
/* the per-face table wraps its cells at word boundaries only: Gradio's wrapping cells break anywhere
   (word-break: break-word), so at phone width its columns shrank until headers read "fa|ce", "NF|E", "s/fac|e";
   now no column is narrower than its longest word and the table scrolls sideways instead */
#table th span, #table td span {word-break: normal !important; overflow-wrap: normal !important; hyphens: manual}
/* a keyboard user sees where the focus is on the sliders and the table too (accessibility audit: no change at all) */
input[type=range]:focus-visible, #table :focus-visible, #slider [data-testid=slider]:focus-visible {
  outline: 2px solid #2563eb !important; outline-offset: 2px}
/* the status's live copy (PAGE_JS): read, not shown */
.sr-only {position: absolute !important; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
          white-space: nowrap; border: 0; padding: 0; margin: -1px}
"""


def _hand_over_undecoded(image):
    """Make a ``gr.Image`` hand the app the uploaded or pasted file as it is, undecoded, so that the job layer reads
    and checks it like the files of the upload box (size caps, a one-line message per file). ``gr.Image`` decoded it
    first, and a file too large or not an image failed the whole request with Gradio's own error text. (An instance
    attribute, not a subclass: Gradio writes a ``.pyi`` file beside the module of every component subclass.)"""
    import types

    import gradio as gr

    decode = image.preprocess

    def preprocess(self, payload):
        if payload is None or payload.path:
            return None if payload is None else str(payload.path)
        try:  # a data: URL (the API with base64)
            return decode(payload)
        except Exception as e:  # noqa: BLE001
            raise gr.Error(f"the pasted image cannot be read ({type(e).__name__})", print_exception=False) from None

    image.preprocess = types.MethodType(preprocess, image)
    return image


def _checked_by_the_app(component: Any) -> Any:
    """Make a ``gr.Slider``, ``gr.Number`` or ``gr.Dropdown`` hand the app the client's value as it is, for
    :meth:`WebApp.settings` to check (range, choices, type) and refuse with a reason that names the setting.
    Gradio's own checks raised ``gr.Error`` with its traceback printed in the server log for every API call with an
    out-of-range value (fidelity 5, seed -1, an unknown mode), and told the client "Value 5 is greater than maximum
    value 1.0." without saying which value. The page only ever sends values its controls allow, so it is unchanged:
    these components have no precision (nothing to round) and Dropdowns pass values, not indices."""
    import types

    def preprocess(self: Any, payload: Any) -> Any:
        return payload

    component.preprocess = types.MethodType(preprocess, component)
    return component


def _log(line: str) -> None:
    """One line in the server's log (stderr), control characters (a client's newlines) made visible."""
    print("dynface serve: " + re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", "?", line), file=sys.stderr, flush=True)


def build_app(app: WebApp):
    """The Gradio Blocks page (call ``.queue(...).launch(...)`` on it; :func:`launch` does both)."""
    import gradio as gr

    from dynface.jobs import COLOR_FIXES, MODES, PRECISIONS

    models = list(app.models)

    default_model = models[0] if models else None

    def restore_handler(files=None, pasted=None, model=default_model, mode="full", aligned=False, fidelity=0.5,
                        steps="", seed=0, precision="auto", upscale=2.0, color_fix="model default",
                        turned=False, strip_metadata=False, grain=False, clip="", dust=False, descreen=False,
                        request: gr.Request = None,
                        progress=gr.Progress()):  # noqa: B008  (Gradio finds its progress tracker by this default)
        """Restore the faces of the uploaded photos and videos (or aligned crops). API: only ``files`` is required."""
        return app.ui_restore(files, pasted, model, mode, aligned, fidelity, steps, seed, precision, upscale,
                              color_fix, turned, strip_metadata, grain, clip, dust, descreen, progress=progress,
                              gone=_client_gone(demo, request))

    def page_handler(files, pasted, model, mode, aligned, fidelity, steps, seed, precision, upscale, color_fix,
                     turned, strip_metadata, grain, clip, dust, descreen, request: gr.Request = None,
                     progress=gr.Progress()):  # noqa: B008
        app.stop_asked(getattr(request, "session_hash", None), clear=True)  # a Stop pressed as the last one ended
        return app.ui_page(files, pasted, model, mode, aligned, fidelity, steps, seed, precision, upscale, color_fix,
                           turned, strip_metadata, grain, clip, dust, descreen,
                           progress=progress, gone=_client_gone(demo, request, app))

    def stop_handler(request: gr.Request = None):
        """The Stop button: the request of this page stops at its next sampling step; what is done is kept."""
        app.request_stop(getattr(request, "session_hash", None))
        return gr.update(interactive=False)

    for fn in (restore_handler, page_handler, stop_handler):  # Gradio finds its Request by the annotation: the class itself,
        fn.__annotations__["request"] = gr.Request  # not this module's postponed string (gr is local here)

    sample_names = {Path(p).name for p in app.example_files()}

    def drop_sample(pasted, aligned):
        """Files dropped after a sample was clicked: the sample leaves the paste box and "aligned", which the sample
        ticked, is unticked (else the photos would be restored as aligned crops, with the sample again)."""
        if pasted and Path(pasted).name in sample_names:
            return None, False
        return gr.skip(), gr.skip()

    with gr.Blocks(title="DynFaceRestore", analytics_enabled=False,
                   delete_cache=(max(60, int(min(app.config.keep_s, 3600))), max(60, int(app.config.keep_s)))) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                files = gr.File(label=f"Photos, videos or aligned face crops — drop up to {app.config.max_files} here",
                                file_count="multiple",
                                elem_id="files", height=150)
                pasted = _hand_over_undecoded(gr.Image(label="…or paste / drop one image", sources=["upload", "clipboard"],
                                                       type="filepath", format="png", elem_id="pasted", height=180))
                with gr.Accordion("Settings", open=True):
                    model = gr.Dropdown(models, value=models[0] if models else None, label="model", elem_id="model",
                                        info="embedded-128: the default, the better faces; embedded-64: faster, smaller")
                    _checked_by_the_app(model)
                    aligned = gr.Checkbox(False, label="inputs are aligned face crops", elem_id="aligned",
                                          info="tick for face crops cut out already (e.g. by GFPGAN or CodeFormer; "
                                               "their framing is told from each face); leave it for ordinary photos")
                    fidelity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="fidelity (higher: closer to the input)",
                                         info="0.5: the model's default; 0 ignores the input, so the face may become "
                                              "someone else's")
                    upscale = gr.Slider(1.0, app.config.max_upscale, value=2.0, step=0.5,
                                        label="upscale (photos and videos)",
                                        info="how many times larger the restored photo or video is")
                    for c in (fidelity, upscale):
                        _checked_by_the_app(c)
                    turned = gr.Checkbox(False, label="also look for faces lying sideways", elem_id="turned",
                                         info="a scan stored turned, someone lying down; finding faces takes about "
                                              "three times as long")
                    strip_metadata = gr.Checkbox(False, label="remove the metadata (location, camera, date)",
                                                 elem_id="strip", info="for photos and videos you will share; "
                                                                       "the colours stay as they are")
                    grain = gr.Checkbox(False, label="give restored faces the photo's grain", elem_id="grain",
                                        info="old prints, film, noisy scans: a restored face is clean, and otherwise "
                                             "shows as a smooth patch in a grainy photo")
                    dust = gr.Checkbox(False, label="remove white dust and scratches from faces", elem_id="dust",
                                       info="old prints: white specks and thin white lines on the faces' skin are "
                                            "filled in before restoring; eyes, brows, nose, mouth, the hairline and "
                                            "the rest of the photo keep theirs (faint or small ones may stay)")
                    descreen = gr.Checkbox(False, label="smooth away a printed photo's dots", elem_id="descreen",
                                           info="newspaper, magazine and yearbook photos: the halftone screen's dots "
                                                "are found in the scan and smoothed away over the whole photo before "
                                                "faces are looked for")
                    clip = gr.Textbox("", label="part of the videos (start-end; empty: all of it)", elem_id="clip",
                                      placeholder="e.g. 0:05-0:12", max_lines=1,
                                      info=f"up to {app.config.max_video_s:g} s of a video per request; about 1.4 s "
                                           "per face and frame on 2 CPU cores")
                with gr.Accordion("Advanced (for comparisons and research)", open=False, elem_id="advanced"):
                    mode = gr.Dropdown(list(MODES), value="full", label="mode (full or an ablation)", elem_id="mode",
                                       info="full is the method; the others leave out one of its parts, as the "
                                            "paper's ablations do")
                    with gr.Row():
                        steps = gr.Textbox("", label="steps (empty: the model's)", placeholder="e.g. ddim25, ddim250",
                                           max_lines=1, info="fewer: faster")
                        seed = gr.Number(0, label="seed", minimum=0, step=1,  # no rounding: 1.5 is refused
                                         info="the same seed gives the same result")
                    precision = gr.Dropdown(list(PRECISIONS), value="auto", label="precision",
                                            info="auto: the fastest exact choice for this machine (bf16/fp16 are many "
                                                 "times slower on processors without native support)")
                    color_fix = gr.Dropdown(["model default", *COLOR_FIXES], value="model default", label="colour fix",
                                            visible=bool(COLOR_FIXES),
                                            info="take the face's colours from the first, plain restoration")
                    for c in (mode, seed, precision, color_fix):
                        _checked_by_the_app(c)
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="restore", scale=3)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, interactive=False)
                samples = app.example_files()
                gr.Examples([[p, True] for p in samples], inputs=[pasted, aligned], visible_columns=[0],
                            examples_per_page=8, label="Samples (aligned crops at the default model's size): click one, then Restore",
                            elem_id="samples")
            with gr.Column(scale=3, min_width=420):
                status = gr.Markdown("", label="status", show_label=False, elem_id="status")  # named in the API page
                compare = gr.Dropdown([], label="compare", interactive=False, elem_id="compare")
                slider = gr.ImageSlider(label="before / after", type="filepath", format="png", elem_id="slider",
                                        max_height=520)
                player = gr.Video(label="restored video", visible=False, interactive=False, elem_id="video",
                                  height=520)
                with gr.Tabs():
                    with gr.Tab("Explanation"):
                        explain = gr.Gallery(label="per face: restorer output RM(y), guides ý0…ý2, DGSA map", columns=5,
                                             height=230, object_fit="contain", elem_id="explain")
                        gr.Markdown(EXPLAIN)
                    with gr.Tab("Restored faces"):
                        gallery = gr.Gallery(label="restored faces", columns=5, height=230, object_fit="contain",
                                             elem_id="gallery")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="per face", interactive=False, elem_id="table",
                                     wrap=True)
                zipped = gr.File(label="download everything (zip, the CLI's folder layout)", elem_id="zip")
        state = gr.State({})

        inputs = [files, pasted, model, mode, aligned, fidelity, steps, seed, precision, upscale, color_fix, turned,
                  strip_metadata, grain, clip, dust, descreen]
        outputs = [status, compare, slider, gallery, explain, table, zipped, state]
        # while a request runs: Restore is off (a second click was silently dropped) and Stop on
        busy = run.click(_buttons(running=True), outputs=[run, stop], api_visibility="private", queue=False)
        busy.then(page_handler, inputs=inputs, outputs=[*outputs, player], api_visibility="private", concurrency_id="restore",
                  concurrency_limit=app.config.concurrency, show_progress="full", show_progress_on=[status]).then(
            _buttons(running=False), outputs=[run, stop], api_visibility="private", queue=False).then(
            None, js=_focus_if_lost("restore"), api_visibility="private", queue=False)
        # a keyboard user's focus, lost when Restore turned off, goes to Stop (and back to Restore at the end)
        busy.then(None, js=_focus_if_lost("stop"), api_visibility="private", queue=False)
        stop.click(stop_handler, outputs=[stop], api_visibility="private", queue=False)
        api = gr.Button(visible=False)  # the /restore endpoint: refused requests are errors there
        api.click(restore_handler, inputs=inputs, outputs=outputs, api_name="restore", concurrency_id="restore",
                  concurrency_limit=app.config.concurrency, api_description=API_DESCRIPTION)
        files.upload(drop_sample, inputs=[pasted, aligned], outputs=[pasted, aligned], api_visibility="private",
                     queue=False)
        compare.change(_pick, inputs=[compare, state], outputs=[slider, player], api_visibility="private",
                       queue=False)
    _read_api_calls_kindly(demo, "restore")
    return demo


def _read_api_calls_kindly(demo: Any, api_name: str) -> None:
    """Make the ``api_name`` endpoint take what a plain HTTP client sends as the API page says: the parameters left
    out at the end get the page's settings (Gradio refused a ``curl`` call with only ``files``, printing its
    traceback and telling the client the Python reprs of the 16 components), and a parameter Gradio cannot read (a
    string for ``files``, a file without a path) is refused with one line that names it, nothing printed but a
    line in the log. Other endpoints (the page's own) are as Gradio makes them."""
    import inspect
    import types

    import gradio as gr

    validate, preprocess = demo.validate_inputs, demo.preprocess_data

    def validate_inputs(self: Any, block_fn: Any, inputs: list[Any]) -> None:
        if getattr(block_fn, "api_name", None) == api_name and isinstance(inputs, list):
            inputs.extend(getattr(b, "value", None) for b in block_fn.inputs[len(inputs):])
        return validate(block_fn, inputs)

    async def preprocess_data(self: Any, block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await preprocess(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001  (a malformed call: Gradio's own error, not the app's)
            if getattr(block_fn, "api_name", None) != api_name:
                raise
            names = list(inspect.signature(block_fn.fn).parameters)  # the API page's names: the handler's
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "not uploaded" in first:  # a path on the server, not an upload: Gradio refuses to read it
                which = next((n for n, v in zip(names, inputs, strict=False) if "'path'" in repr(v)), None)
                why = f"refused: a file in '{which or 'files'}' was not uploaded to this server (upload it first)"
            else:
                which = _unreadable_parameter(block_fn.inputs, inputs, names)
                why = f"refused: the parameter '{which}' cannot be read" if which else "refused: the request cannot be read"
            _log(f"{why} ({first[:200]})")
            raise gr.Error(f"{why}; see the API page for what each parameter takes", print_exception=False) from None

    demo.validate_inputs = types.MethodType(validate_inputs, demo)
    demo.preprocess_data = types.MethodType(preprocess_data, demo)


def _unreadable_parameter(blocks: Sequence[Any], inputs: Sequence[Any], names: Sequence[str]) -> str | None:
    """The name of the first input its component's data model refuses (``None`` when each one is accepted)."""
    for block, value, name in zip(blocks, inputs, names, strict=False):
        model = getattr(block, "data_model", None)
        if model is None or value is None:
            continue
        try:
            model.model_validate(value)
        except Exception:  # noqa: BLE001
            return name
    return None


# Run once when the page loads (accessibility audit, a keyboard and screen-reader user):
# - a live region that a screen reader says when a request ends: a hidden copy of the status's text only (the whole
#   #status block, live before, also holds Gradio's progress tracker, whose timer "processing | 0.1s" changed 80 times
#   in a 6-s request);
# - each control's info text linked to it (aria-describedby: none was, so it was never read with the control), also
#   for controls mounted later (the Advanced accordion mounts its own as it opens);
# - names for what had none: the sample buttons (four empty buttons) and the slider's two pictures (alt ""); the
#   galleries' thumbnails by their pictures' captions ("RM(y) · astronaut_00", not "Thumbnail 1 of 5"); the
#   accordions' open state (aria-expanded), their "▼" hidden from screen readers;
# - the before / after divider, which only a mouse could move: focusable, a slider to screen readers (its place, in %
#   of the picture's width: the input left of it, the restoration right of it), moved by the arrow keys (5 %), Page
#   Up / Down (25 %), Home and End, through the mouse events Gradio's own drag handler (d3-drag) listens to, so the
#   page's state follows.
# - the focus kept in its box when Gradio drops it to the page: after a choice in a dropdown (it blurs its input)
#   and after an upload (the box is drawn anew), a keyboard user was sent back to the page's top; the focus goes back
#   into the box it was in, unless a mouse press or touch just moved it (a click on the page is the user's choice).
PAGE_JS = """() => {
  const s = document.getElementById('status');
  if (s && !document.getElementById('status-live')) {
    const live = document.createElement('div');
    live.id = 'status-live'; live.className = 'sr-only';
    live.setAttribute('role', 'status'); live.setAttribute('aria-live', 'polite');
    document.body.appendChild(live);
    let last = '';
    const copy = () => {
      const md = s.querySelector('.prose');
      const t = md ? md.innerText.trim() : '';
      if (t && t !== last) { last = t; live.textContent = t; }
    };
    new MutationObserver(copy).observe(s, {subtree: true, childList: true, characterData: true});
  }
  let n = 0, queued = false;
  const name = () => {
    queued = false;
    document.querySelectorAll('.info-text').forEach((info) => {
      if (!info.id) info.id = 'info-text-' + (++n);
      const block = info.closest('.block');
      if (!block) return;
      block.querySelectorAll('input:not([type=hidden]):not([type=file]), textarea, [role=combobox]').forEach((c) => {
        const ids = (c.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        if (!ids.includes(info.id)) c.setAttribute('aria-describedby', [...ids, info.id].join(' '));
      });
    });
    document.querySelectorAll('#samples button').forEach((b, i) => {
      if (!b.getAttribute('aria-label')) b.setAttribute('aria-label', 'sample face ' + (i + 1) + ': put it in the paste box');
    });
    const pics = document.querySelectorAll('#slider img');
    if (pics.length >= 2) { pics[0].alt = 'before: the input'; pics[1].alt = 'after: the restoration'; }
    document.querySelectorAll('.label-wrap').forEach((h) => {  // accordions say whether they are open; "▼" is not read
      h.setAttribute('aria-expanded', h.classList.contains('open'));
      h.querySelector('.icon')?.setAttribute('aria-hidden', 'true');
    });
    const handle = document.querySelector('#slider [data-testid=slider]');
    if (handle && !handle.dataset.keys) divider(handle);
    document.querySelectorAll('#explain button, #gallery button').forEach((b) => {  // "Thumbnail 1 of 5": its picture's
      const img = b.querySelector('img');                                           // caption says which map it is
      if (img && img.alt && b.getAttribute('aria-label') !== img.alt) b.setAttribute('aria-label', img.alt);
    });
  };
  const picture = (handle) => {  // where the picture shows: its img box less the bands of its fitting (object-fit:
    const img = document.querySelectorAll('#slider img')[1];  // contain; a square photo in a wide box), which the
    const b = (img || handle.parentElement).getBoundingClientRect();  // divider stops at
    if (!img || !img.naturalWidth || !img.naturalHeight) return {left: b.left, width: b.width};
    const width = Math.min(b.width, b.height * img.naturalWidth / img.naturalHeight);
    return {left: b.left + (b.width - width) / 2, width};
  };
  const place = (handle) => {  // where the divider is, in % of the picture's width from its left (the input is
    const box = picture(handle), h = handle.getBoundingClientRect();  // left of it)
    return box.width ? Math.min(Math.max(100 * ((h.left + h.right) / 2 - box.left) / box.width, 0), 100) : 50;
  };
  const divider = (handle) => {
    handle.dataset.keys = '1';
    handle.tabIndex = 0;
    handle.setAttribute('role', 'slider');
    handle.setAttribute('aria-label', 'before / after divider: the input left of it, the restoration right of it');
    handle.setAttribute('aria-valuemin', '0');
    handle.setAttribute('aria-valuemax', '100');
    const say = () => { const v = Math.round(place(handle)); handle.setAttribute('aria-valuenow', v);
                        handle.setAttribute('aria-valuetext', v + ' % input, ' + (100 - v) + ' % restoration'); };
    say();
    handle.addEventListener('keydown', (e) => {
      const now = place(handle);
      const want = {ArrowRight: now + 5, ArrowUp: now + 5, ArrowLeft: now - 5, ArrowDown: now - 5,
                    PageUp: now + 25, PageDown: now - 25, Home: 0, End: 100}[e.key];
      if (want === undefined) return;
      e.preventDefault();
      const box = picture(handle), h = handle.getBoundingClientRect();
      const from = (h.left + h.right) / 2, y = (h.top + h.bottom) / 2;
      const to = box.left + Math.min(Math.max(want, 0), 100) / 100 * box.width;
      const mouse = (type, x, target) => target.dispatchEvent(new MouseEvent(type, {
        clientX: x, clientY: y, bubbles: true, cancelable: true, view: window, button: 0}));
      mouse('mousedown', from, handle);  // Gradio's drag handler (d3-drag) moves it, so its state follows
      mouse('mousemove', to, window);
      mouse('mouseup', to, window);
      requestAnimationFrame(say);
    });
    new MutationObserver(say).observe(handle, {attributes: true, attributeFilter: ['style']});
  };
  let pressed = 0, lastBox = null, lost = 0;
  document.addEventListener('pointerdown', () => { pressed = performance.now(); }, true);
  document.addEventListener('focusin', (e) => {
    const box = e.target.closest && e.target.closest('[id]');
    if (box && box.id && box !== document.body) lastBox = box.id;
  });
  document.addEventListener('focusout', () => { lost = performance.now(); setTimeout(refocus, 120); });
  const refocus = () => {  // also after the page changed (an element removed with the focus fires no focusout)
    const a = document.activeElement;
    if ((a && a !== document.body) || !lastBox || pressed >= lost - 300) return;
    const el = document.getElementById(lastBox);
    const focusable = 'input:not([type=hidden]):not([type=file]):not([disabled]), textarea:not([disabled]), ' +
      'button:not([disabled]), a[href], [tabindex="0"]';
    const to = el && (el.matches(focusable) ? el : el.querySelector(focusable));
    if (to) to.focus({preventScroll: true});
  };
  new MutationObserver(() => {
    const a = document.activeElement;
    if (!a || a === document.body) setTimeout(refocus, 120);
    if (!queued) { queued = true; requestAnimationFrame(name); }
  })
    .observe(document.body, {subtree: true, childList: true});
  document.addEventListener('click', (e) => {  // an accordion opened or closed (a class change, not a new node)
    const h = e.target.closest && e.target.closest('.label-wrap');
    if (h) setTimeout(() => h.setAttribute('aria-expanded', h.classList.contains('open')), 0);
  }, true);
  name();
}"""


def _focus_if_lost(elem_id: str) -> str:
    """Client-side: focus the element ``elem_id`` when the focus was lost to the page (a disabled button drops it;
    accessibility audit), not when it is somewhere else (a user typing in a box keeps it)."""
    return ("() => { setTimeout(() => { const a = document.activeElement; "
            f"if (!a || a === document.body) document.getElementById({elem_id!r})?.focus(); }}, 50); }}")


def _buttons(running: bool):
    """The handler that turns Restore off and Stop on while a request runs (and back)."""
    import gradio as gr

    def set_buttons():
        return gr.update(interactive=not running), gr.update(interactive=running)

    return set_buttons


def _client_gone(demo, request, app: WebApp | None = None) -> Callable[[], bool | str] | None:
    """Whether the client of ``request`` has left: Gradio marks a running event of a session not alive when that
    session's stream closes (a closed or reloaded page, a killed API client), but cannot stop a running function.
    Gradio's own queue is asked (``_queue.active_jobs``; gradio is pinned to major 6): None when it cannot be.
    With ``app``, the page's Stop button too: then the reason (a str)."""
    session = getattr(request, "session_hash", None)
    queue = getattr(demo, "_queue", None)
    if session is None:
        return None
    has_queue = hasattr(queue, "active_jobs")

    def gone() -> bool | str:
        if app is not None and app.stop_asked(session):
            return "stopped with the Stop button"
        return has_queue and any(getattr(evt, "session_hash", None) == session and not getattr(evt, "alive", True)
                                 for job in list(queue.active_jobs) if job for evt in list(job))

    return gone


def _pick(label, state):
    """The compare box: the slider's pair for ``label``, and the player's video when it is a video's frame."""
    state = state or {}
    pair = state.get("pairs", {}).get(label)
    videos = state.get("videos", {})
    return tuple(pair) if pair else None, _player(videos[label]) if label in videos else _player(None, keep=True)


def _player(path: str | None, keep: bool = False):
    """The page's video player: shown with ``path``, hidden without (``keep``: left as it is)."""
    import gradio as gr

    if keep:
        return gr.skip()
    return gr.update(value=path, visible=path is not None, label=f"restored video: {Path(path).name}" if path else None)


def theme():
    """Gradio's default look with system fonts only (no web fonts to fetch: works offline), its faint texts darker."""
    import gradio as gr

    sans = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    # the info texts under the controls, the placeholders and the footer were #bbbbc2 on white: 1.91:1, where WCAG AA
    # asks 4.5:1 for small text (accessibility audit); neutral-500 is 4.8:1
    return gr.themes.Default(font=sans, font_mono=mono).set(body_text_color_subdued="*neutral_500",
                                                            block_info_text_color="*neutral_500",
                                                            input_placeholder_color="*neutral_500")


def launch(app: WebApp, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False, block: bool = True):
    """Build the page, start the queue (one job at a time by default) and serve it."""
    demo = build_app(app)
    demo.queue(default_concurrency_limit=app.config.concurrency, max_size=app.config.max_queue)
    demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, quiet=quiet,
        max_file_size=max(app.config.max_upload_bytes * UPLOAD_HTTP_FACTOR, app.config.max_video_bytes * 2), ssr_mode=False, theme=theme(), css=CSS, js=PAGE_JS,
        prevent_thread_lock=not block, allowed_paths=[], mcp_server=False, pwa=False, enable_monitoring=False,
    )
    return demo

