"""What produced an output: the software, the weight files and the input, each identified exactly.

People who must be able to say how a picture was made (forensics, photo archives, papers comparing methods) get it
in every record ``dynface restore`` writes:

* ``image.sha256``: the SHA-256 of the input file's bytes as they were decoded (:mod:`dynface.imageio`);
* ``settings.software``: the versions of dynfacerestore, torch and Python;
* ``settings.weights``: per role (``prior``, ``dblm``, ``dgsa``, ``dsst``, ``restorer``) the file name and its SHA-256,
  the same digests the embedded models' ``MODEL_CARD.md`` lists. Each file is hashed once per process (cached by
  path, size and modification time).
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "software", "weight_files", "weights"]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def software() -> dict[str, str | None]:
    """The versions that made an output (torch's when it is loaded: a restorer built in memory may not need it)."""
    import sys

    from dynface import __version__

    torch = sys.modules.get("torch")
    out = {"dynfacerestore": __version__, "torch": getattr(torch, "__version__", None),
           "python": platform.python_version()}
    out.update(_versions())
    return out


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    """What else shapes the bytes: the decoders and resamplers (Pillow, numpy, OpenCV, dlib) and, for a package
    run from a git checkout (the editable install), its commit, "+dirty" when files differ from it: 0.1.0 alone did
    not tell which of many commits made an output. Asked once per process."""
    import subprocess

    out = package_versions(pillow="Pillow", numpy="numpy", opencv="opencv-python-headless", dlib="dlib-bin")
    root = Path(__file__).resolve().parents[2]  # src/dynface/provenance.py -> the checkout
    out["git_commit"] = None
    if (root / ".git").exists():
        try:
            git = ["git", "-C", str(root)]
            head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
            if head.returncode == 0:
                dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                       text=True, timeout=10)
                out["git_commit"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def package_versions(**dists: str) -> dict[str, str | None]:
    """``{key: version of distribution}`` for the installed ones (None for one not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for key, dist in dists.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


def weights(restorer: Any) -> dict[str, dict[str, str]]:
    """``{role: {"file": name, "sha256": digest}}`` for the files ``restorer`` was loaded from (its ``weight_files``,
    set by :meth:`dynface.pipeline.DynFaceRestorer.from_pretrained`); empty for networks built in memory."""
    return weight_files(getattr(restorer, "weight_files", None) or {})


def weight_files(paths: dict[str, str | Path]) -> dict[str, dict[str, str]]:
    """``{role: {"file": name, "sha256": digest}}`` of the files ``paths`` names per role."""
    out = {}
    for role, path in paths.items():
        p = Path(path)
        try:
            st = p.stat()
            digest = _cached_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)
        except OSError as e:  # moved away since loading: say so rather than fail the record
            digest = f"unreadable ({e.strerror or e})"
        out[role] = {"file": p.name, "sha256": digest}
    return out
