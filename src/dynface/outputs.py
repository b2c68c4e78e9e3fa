"""Every output path is built and checked here: the one place all writers (``restore``, ``degrade``, the web
app, the cluster engines) go through.

A name that comes from a user (a ``--suffix``, an ``--ext``, a stem derived from an input file name) must be a
*plain name*: one path component, no separators, no ``..``, no control characters, not hidden. The joined path
must then resolve inside the output folder, symlinks included.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["UnsafePathError", "OutputFolderError", "plain_name", "output_path", "is_inside", "check_output_folder"]

_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


class UnsafePathError(ValueError):
    """A name or path that would leave the output folder (or is not a usable file name)."""


def plain_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a usable single file-name component, else raise :class:`UnsafePathError`."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} must be a non-empty plain name, got {name!r}")
    if _BAD.search(name) or name in (".", "..") or name.startswith(".") or (os.altsep and os.altsep in name):
        raise UnsafePathError(f"{what} must be a plain name (no path separators, '..', control characters or leading '.'), got {name!r}")
    if len(name.encode("utf-8", "surrogateescape")) > 240:
        raise UnsafePathError(f"{what} is too long ({len(name.encode('utf-8', 'surrogateescape'))} bytes; at most 240): {name[:40]!r}...")
    return name


def safe_resolve(p: str | Path) -> Path:
    """``p`` resolved; for a symlink loop (which cannot be resolved), the link's own absolute path."""
    try:
        return Path(p).resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` (resolved) is ``folder`` (resolved) or lies below it."""
    p, f = safe_resolve(path), safe_resolve(folder)
    return p == f or f in p.parents


def output_path(out: str | Path, *parts: str) -> Path:
    """``out/part/part/...`` after checking each part with :func:`plain_name` and the result (resolved, following
    symlinks) against ``out``. Raises :class:`UnsafePathError` for anything that would escape ``out``."""
    out = Path(out)
    if not parts:
        raise UnsafePathError("an output path needs at least one name below the output folder")
    for part in parts:
        plain_name(part, "output name")
    path = out.joinpath(*parts)
    if not is_inside(path, out) or path.resolve() == out.resolve():
        raise UnsafePathError(f"output path {path} resolves outside the output folder {out}")
    return path


class OutputFolderError(ValueError):
    """The output folder overlaps the inputs so that a run would overwrite them or re-read its own outputs."""


def check_output_folder(
    out: str | Path,
    files: list[Path] | tuple[Path, ...] = (),
    folders: list[Path] | tuple[Path, ...] = (),
    subdirs: tuple[str, ...] = (),
    allow_inside: bool = False,
) -> None:
    """Refuse (:class:`OutputFolderError`, one line) an output folder ``out`` that is an input folder or an input
    file's folder, that lies inside an input folder (unless ``allow_inside``: the caller then leaves ``out`` out of
    its inputs), or whose ``subdirs`` (the folders the command writes into) hold an input file or folder.
    ``files``: input files (``-i photo.jpg -o out`` beside it is fine: only that file is read); ``folders``: input
    folders given as such (searched, so an output folder inside one needs ``allow_inside``). Symlinks are resolved."""
    out = Path(out)
    out_r = safe_resolve(out)
    files_r = [safe_resolve(f) for f in files]
    folders_r = [safe_resolve(d) for d in folders]
    for d in sorted({f.parent for f in files_r} | set(folders_r)):
        if out_r == d:
            raise OutputFolderError(f"the output folder {out} is the input folder {d}; choose another -o")
    for d in sorted(set(folders_r)):
        if d in out_r.parents and not allow_inside:
            raise OutputFolderError(
                f"the output folder {out} lies inside the input folder {d}; choose another -o or pass --allow-input-dir"
            )
    subs_r = [(sub, safe_resolve(out_r / sub)) for sub in subdirs]  # once: a sub-folder may be a symlink
    for f, fr in zip((*files, *folders), (*files_r, *folders_r), strict=True):
        for sub, sr in subs_r:
            if fr == sr or sr in fr.parents:
                raise OutputFolderError(f"input {f} lies in the output folder's {sub}/; it would be overwritten")
