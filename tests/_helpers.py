"""Helpers shared by the engine tests (Ray, torchrun) and importable from their worker processes, which get
``tests/`` on PYTHONPATH: aligned astronaut crops, the tiny restorer that logs who restored which face, the log."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "scripts") -> ModuleType:
    """``FOLDER/NAME.py`` (``FOLDER`` relative to the repository root: ``scripts``, ``benchmarks``, ``tests/data``)
    imported as module ``NAME`` (registered in ``sys.modules``: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def astronaut_crops(d: Path, n: int) -> list[str]:
    """``n`` aligned 64-px crops of the astronaut's face (shifted windows) written to ``d``; returns their stems."""
    from skimage.data import astronaut

    d.mkdir(parents=True, exist_ok=True)
    a = astronaut()
    for k in range(n):
        y, x = 20 + 3 * (k % 5), 110 + 4 * (k // 5)
        Image.fromarray(np.ascontiguousarray(a[y : y + 200, x : x + 200])).resize((64, 64), Image.LANCZOS).save(d / f"f{k:02d}.png")
    return [f"f{k:02d}" for k in range(n)]


def file_seed(path: Path, seed: int = 0, face: int = 0) -> int:
    """The noise seed ``dynface restore`` gives face ``face`` of the file ``path``: by the SHA-256 of its bytes
    (:func:`dynface.jobs.seed_key`)."""
    import hashlib

    from dynface.jobs import face_seed

    return face_seed(seed, hashlib.sha256(Path(path).read_bytes()).hexdigest(), face)


def seed_to_stem(d: Path, stems: list[str], ext: str = ".png") -> dict[int, str]:
    """{seed of face 0: stem} of the files ``d/STEM.png``: which input a logged seed belongs to."""
    return {file_seed(d / f"{s}{ext}"): s for s in stems}


class LoggedRestorer:
    """A restorer that appends ``pid seed`` per restored face to ``$DYNFACE_TEST_LOG`` (when set)."""

    def __init__(self, r):
        self._r = r

    def __getattr__(self, name):
        return getattr(self._r, name)

    def restore(self, faces, **kw):
        out = self._r.restore(faces, **kw)
        if os.environ.get("DYNFACE_TEST_LOG"):
            with open(os.environ["DYNFACE_TEST_LOG"], "a") as fh:
                fh.write("".join(f"{os.getpid()} {s}\n" for s in kw.get("seeds") or []))
        return out


def tiny_restorer(mode: str = "full", steps: str | None = None):
    """The random ``tiny`` preset, 4 steps unless ``steps``: what the engine tests' factories restore with."""
    from dynface.pipeline import DynFaceRestorer

    return DynFaceRestorer.from_preset("tiny", mode=mode).with_config(steps=steps or "ddim4")


def read_face_log(path: Path, calls: bool = False) -> list[tuple[int, int]]:
    """(pid, seed) per restored face from a ``$DYNFACE_TEST_LOG`` file; with ``calls`` also the (pid, -1) lines
    a restorer writes when it starts a call."""
    rows = [tuple(map(int, ln.split())) for ln in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if calls or r[1] != -1]


def start_restore_cli(factory: str, args, env_extra: dict, **kw):
    """``python -m dynface.cli restore -q ARGS`` in a subprocess, with ``tests/`` and ``src/`` on PYTHONPATH and the
    testing hook ``DYNFACE_RESTORER_FACTORY=factory``; returns the Popen (stdout/stderr piped, text)."""
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "src")]), "DYNFACE_RESTORER_FACTORY": factory,
                **env_extra})
    cmd = [sys.executable, "-m", "dynface.cli", "restore", "-q", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def kill_after_records(proc, out: Path, n: int, timeout: float, sig: int | None = None) -> None:
    """Send ``sig`` (SIGKILL by default) to ``proc`` once ``out/records`` holds ``n`` records (asserting it is still
    running then); waits for it."""
    import signal
    import time

    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "records").is_dir() and len(list((out / "records").glob("*.json"))) >= n:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed: " + proc.communicate()[1][-800:]
        os.kill(proc.pid, signal.SIGKILL if sig is None else sig)
    finally:
        proc.wait(timeout=30)


def astronaut_dsst(size: int):
    """A DSST table for ``size``-px models, built analytically from the astronaut face."""
    import torch
    from skimage.data import astronaut

    from dynface.diffusion import GaussianDiffusion
    from dynface.dsst import DSSTConfig, build_dsst

    face = np.asarray(Image.fromarray(astronaut()[20:220, 110:310]).resize((size, size), Image.LANCZOS))
    x = torch.from_numpy(face.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return build_dsst(x, GaussianDiffusion.from_config().alphas_cumprod, DSSTConfig(image_size=size))
