"""Quality benchmark: every method/ablation on one paired HQ/LQ set, one table and a PSNR-vs-FD plot.

    python benchmarks/quality.py --pairs PAIRS_DIR [--model embedded-64] [--steps ddim250]
    python benchmarks/quality.py --hq HQ_DIR --preset gfpgan --seed 0 [--size N] [--limit K]
    python benchmarks/quality.py --quick          # tiny self-contained run (``make bench``)

Input: a folder written by ``dynface degrade`` (``--pairs``: DIR/hq, DIR/lq, DIR/manifest.json), or a
folder of clean faces (``--hq``) that is degraded first with the degrade command's own code into
``<work>/pairs`` (never into the repository). ``--quick`` makes 6 HQ faces from ``skimage.data.astronaut()``
(crops, flips, colour shifts), degrades them the same way and uses ``ddim25`` steps.

Methods (``--methods``): ``bicubic`` is the LQ image as is (``dynface degrade`` already resizes it back
to N; it is resized to the model size only when N differs), the others are the pipeline's modes
(``restorer_only``, ``fixed_start``, ``no_dsst``, ``no_dgsa``, ``single_guide``, ``full``). All modes use
the SAME networks (the restorer is built once and switched with ``with_config(mode=...)``), the same
sampler steps and the same seeds (face i of the sorted set gets seed ``--seed + i`` in every mode);
nothing is tuned per method.

Metrics: each method's restored folder is scored against the HQ folder by ``dynface evaluate``'s own
code (same pairing, conventions and failure counting); FD compares the restored set with the HQ set.
Metrics whose packages are missing are skipped with the reason stated. NFE/face and s/face are the
means of the pipeline's per-face records (``bicubic``: 0 and 0).

Writes ``<out>/<name>.md`` (table + header naming data, model/weights, steps, commit, machine, date,
conventions), ``<out>/<name>.json`` (all numbers, per face too) and ``<out>/<name>_psnr_fd.png``
(x = PSNR, y = FD, one labelled point per method, as in the paper's Fig. 1). Restored images are kept
under ``<work>/restored/<method>/`` (``--work``; default: a temporary folder removed at the end unless
``--keep-work``).

Exit codes: 0 done, every face scored; 1 a method or its evaluation failed, or some faces (or a set
metric) could not be scored: each is printed by evaluate, each method with failures gets an ``error:`` line,
and the tables are still written with ``(k/n)`` counts (``--allow-missing``: exit 0 for the latter);
2 bad usage or input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("restorer_only", "fixed_start", "no_dsst", "no_dgsa", "single_guide", "full")  # dynface.pipeline.MODES
DEFAULT_METHODS = ("bicubic",) + MODES
DEFAULT_METRICS = ("psnr", "ssim", "psnr_y", "ssim_y", "ida", "lmd", "niqe", "brisque", "fd")  # evaluate.DEFAULT_WITH_HQ
SHORT = {"psnr": "PSNR", "ssim": "SSIM", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "lpips": "LPIPS", "ida": "IDA",
         "lmd": "LMD", "niqe": "NIQE", "brisque": "BRISQUE", "fd": "FD", "fid": "FID"}


class UsageError(Exception):
    """Bad input: reported on stderr, exit code 2."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- argument parsing


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="benchmarks/quality.py",
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the conventions.",
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--pairs", type=Path, metavar="DIR", help="paired set written by `dynface degrade` (DIR/hq, DIR/lq)")
    src.add_argument("--hq", type=Path, metavar="DIR", help="clean faces; degraded first into <work>/pairs")
    src.add_argument("--quick", action="store_true", help="tiny self-contained run (6 astronaut faces, ddim25)")
    src.add_argument("--render", type=Path, metavar="JSON",
                     help="only rewrite the markdown of an earlier run from its JSON (after a change to the report)")
    ap.add_argument("--preset", default="gfpgan", help="degradation preset for --hq/--quick (default: gfpgan)")
    ap.add_argument("--size", type=int, default=None, metavar="N",
                    help="resolution of the set made from --hq/--quick (default: the model's size)")
    ap.add_argument("--limit", type=int, default=None, metavar="K", help="only K faces (see --subset)")
    ap.add_argument("--subset", choices=("random", "first"), default="random",
                    help="with --hq and --limit: a random K (seeded by --seed; default) or the first K in sorted order "
                         "(UTKFace names start with the age, so the first K are not a fair sample)")
    ap.add_argument("--seed", type=int, default=0,
                    help="degradation seed, restoration seed (face i gets seed+i) and init seed of preset:* weights")
    ap.add_argument("--model", default="embedded-64",
                    help="embedded name, model folder or prior file; preset:tiny / preset:embedded-64 = random weights")
    ap.add_argument("--dblm", type=Path, metavar="PATH", help="DBLM weights when --model is a bare prior file")
    ap.add_argument("--dgsa", type=Path, metavar="PATH", help="DGSA weights (overrides the model folder's)")
    ap.add_argument("--dsst", type=Path, metavar="PATH", help="DSST table (overrides the model folder's)")
    ap.add_argument("--steps", default=None, help="sampler steps (default: ddim250; ddim25 with --quick)")
    ap.add_argument("--fidelity", type=float, default=None, metavar="W",
                    help="-w/--fidelity of `dynface restore` for every guided mode (default: the model's sampler.zeta); "
                         "a diagnostic knob, the same for all methods")
    ap.add_argument("--batch-size", type=int, default=8, metavar="B", help="faces per restore call (default: 8)")
    ap.add_argument("--score-size", type=int, default=None, metavar="N",
                    help="resize every method's output to N px (bicubic) before scoring, e.g. a 64-px model's rows on "
                         "a 128-px set as a reference for a 128-px model (default: the model's size)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="LIST",
                    help=f"comma-separated subset of {','.join(DEFAULT_METHODS)} (default: all)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                    help="metrics of `dynface evaluate` (default: %(default)s); unavailable ones are skipped with the reason")
    ap.add_argument("--lpips-weights", type=Path, metavar="PATH", help="passed to `dynface evaluate` (enables lpips)")
    ap.add_argument("--fid-weights", type=Path, metavar="PATH", help="passed to `dynface evaluate` (enables fid)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="exit 0 even when some faces could not be scored (they are still printed and counted)")
    ap.add_argument("--face-fallback", choices=("none", "reference", "whole"), default="none",
                    help="IDA/LMD when dlib finds no face (default: none = counted as a failure)")
    ap.add_argument("--frechet-method", choices=("eigh", "sqrtm"), default="eigh",
                    help="matrix square root for FD/FID (passed to `dynface evaluate`): eigh (default here; the same "
                    "value up to round-off, several times faster on 1280-D features) or sqrtm (evaluate's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--guidance", default=None, choices=("unet", "x0"),
                    help="gradient of the guided modes: through the UNet to x_t (the paper's, default) or on x̂0 only")
    ap.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    ap.add_argument("--work", type=Path, default=None, metavar="DIR",
                    help="work folder (pairs, restored images, per-method evaluations); default: a temporary folder")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results", metavar="DIR")
    ap.add_argument("--name", default=None, help="file stem of the outputs (default: quality, or quality_quick)")
    return ap


def _split(s: str) -> list[str]:
    return list(dict.fromkeys(x.strip().lower() for x in s.split(",") if x.strip()))


# --------------------------------------------------------------------------- provenance


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    try:
        s += f", load average at start {os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    if torch.cuda.is_available():
        s += f"; GPU {torch.cuda.get_device_name(0)}"
    return s


def _commit() -> str:
    def git(*a):
        return subprocess.run(["git", "--no-optional-locks", *a], cwd=ROOT, capture_output=True, text=True, timeout=20)

    try:
        r = git("rev-parse", "--short", "HEAD")
        if r.returncode != 0:
            return "unknown"
        c = r.stdout.strip()
        d = git("status", "--porcelain", "--untracked-files=no")
        return c + (" (+ uncommitted changes)" if d.returncode == 0 and d.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- model


def load_model(spec: str, steps: str, seed: int, device: str, precision: str, fallback_random: bool = False,
               parts: dict | None = None):
    """(restorer, info): info names the model and its weights (sha256 of each file, or "random weights")."""
    from dynface.models.io import ModelLoadError
    from dynface.pipeline import DEFAULT_DSST, DynFaceRestorer
    from dynface.registry import resolve

    if not spec.startswith("preset:"):
        try:
            parts = {k: v for k, v in (parts or {}).items() if v is not None}
            files = resolve(spec)
            r = DynFaceRestorer.from_pretrained(spec, device=device, steps=steps, precision=precision, **parts)
        except ModelLoadError as e:
            if not fallback_random:
                raise UsageError(f"--model {spec}: {e}") from e
            _log(f"note: {e}\nnote: falling back to preset:{spec} with RANDOM weights")
            spec = f"preset:{spec}"
        else:
            weights = {"prior": files.prior, "dblm": files.dblm, "dgsa": files.dgsa, "dsst": files.dsst or DEFAULT_DSST}
            weights.update({k: Path(v) for k, v in parts.items()})
            return r, {
                "model": spec,
                "name": r.name,
                "random_weights": False,
                "weights": {k: {"file": str(p), "sha256": _sha256(p)} for k, p in weights.items() if p is not None},
                "dgsa": r.dgsa is not None,
            }
    preset = spec.split(":", 1)[1]
    from dynface.models.unet import PRESETS

    if preset not in PRESETS:
        raise UsageError(f"--model {spec}: unknown preset; choose from {', '.join('preset:' + p for p in PRESETS)}")
    r = DynFaceRestorer.from_preset(preset, seed=seed, device=device).with_config(steps=steps, precision=precision)
    return r, {
        "model": spec,
        "name": r.name,
        "random_weights": True,
        "weights": f"random weights (preset {preset}, init seed {seed}); DSST table {DEFAULT_DSST.name}",
        "dgsa": True,
    }


def _model_line(info: dict) -> str:
    if info["random_weights"]:
        return f"`{info['model']}` — **{info['weights']}**; the numbers say nothing about the method's quality"
    parts = [f"{k} `{Path(v['file']).name}` sha256 `{v['sha256'][:16]}…`" for k, v in info["weights"].items()]
    return f"`{info['model']}` ({info['name']}): " + ", ".join(parts) + ("" if info["dgsa"] else "; no DGSA weights (full then uses the global scale, as no_dgsa)")


# --------------------------------------------------------------------------- data


def quick_faces(size: int) -> dict:
    """6 HQ faces of ``size`` px made from skimage's astronaut (public domain): crops, a flip, colour shifts."""
    import numpy as np
    from PIL import Image, ImageEnhance
    from skimage.data import astronaut

    a = astronaut()

    def sq(y0, x0, s):
        return Image.fromarray(np.ascontiguousarray(a[y0 : y0 + s, x0 : x0 + s]))

    base = sq(20, 110, 200)
    faces = {
        "astro_0": base,
        "astro_1_flip": base.transpose(Image.FLIP_LEFT_RIGHT),
        "astro_2_tight": sq(45, 135, 160),
        "astro_3_wide": sq(5, 95, 230),
        "astro_4_warm": Image.fromarray(np.clip(np.asarray(base).astype(np.float32) * (1.12, 1.0, 0.85), 0, 255).astype(np.uint8)),
        "astro_5_dull_flip": ImageEnhance.Contrast(ImageEnhance.Color(sq(30, 120, 190)).enhance(0.6)).enhance(0.85)
        .transpose(Image.FLIP_LEFT_RIGHT),
    }
    return {k: np.asarray(v.convert("RGB").resize((size, size), Image.LANCZOS)) for k, v in faces.items()}


def random_subset(src: Path, dst: Path, k: int, seed: int) -> Path:
    """A folder of links to a seeded random ``k`` of the images in ``src`` (the originals are not copied)."""
    import random

    from dynface.training.data import list_images

    files = list_images(src)
    random.Random(seed).shuffle(files)
    dst.mkdir(parents=True, exist_ok=True)
    for f in files[:k]:
        link = dst / f.relative_to(src).as_posix().replace("/", "__")
        if not link.exists():
            link.symlink_to(f.resolve())
    return dst


def make_pairs(hq_dir: Path, out_dir: Path, preset: str, seed: int, size: int, limit: int | None) -> dict:
    """Degrade ``hq_dir`` into ``out_dir`` with the ``dynface degrade`` command's code; returns its manifest."""
    from dynface.commands import degrade

    if preset not in degrade.PRESET_NAMES:
        raise UsageError(f"--preset {preset}: choose from {', '.join(degrade.PRESET_NAMES)}")
    ns = argparse.Namespace(input=hq_dir, output=out_dir, preset=preset, seed=seed, size=size, limit=limit)
    rc = degrade.run(ns)
    if rc == 2:
        raise UsageError(f"degrading {hq_dir} failed (see above)")
    return json.loads((out_dir / "manifest.json").read_text())


def load_pairs(pairs: Path, limit: int | None) -> tuple[list[str], dict, dict, dict]:
    """Keys present in both DIR/lq and DIR/hq (sorted), the LQ and HQ images, and the manifest (or {})."""
    from dynface.commands.evaluate import _index
    from dynface.metrics._util import load_rgb

    lq_dir, hq_dir = pairs / "lq", pairs / "hq"
    for d in (lq_dir, hq_dir):
        if not d.is_dir():
            raise UsageError(f"{d} is not a folder (--pairs expects a folder written by `dynface degrade`)")
    lq_idx, _ = _index(lq_dir)
    hq_idx, _ = _index(hq_dir)
    keys = sorted(set(lq_idx) & set(hq_idx))
    if limit:
        keys = keys[:limit]
    if not keys:
        raise UsageError(f"no LQ image in {lq_dir} has an HQ image of the same name in {hq_dir}")
    unpaired = len(set(lq_idx) ^ set(hq_idx))
    if unpaired:
        _log(f"note: {unpaired} images of {pairs} have no partner and are left out")
    lq = {k: load_rgb(lq_idx[k]) for k in keys}
    hq = {k: load_rgb(hq_idx[k]) for k in keys}
    mf = pairs / "manifest.json"
    manifest = json.loads(mf.read_text()) if mf.is_file() else {}
    return keys, lq, hq, manifest


# --------------------------------------------------------------------------- restoration and scoring


def _save(img, path: Path, size: int | None = None) -> None:
    """Write ``img`` as PNG, first resized to ``size`` px (bicubic) when given and different."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if size and im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    im.save(path)


def restore_all(restorer, method: str, keys: list[str], lq: dict, size: int, batch: int, seed: int, out_dir: Path,
                fidelity: float | None = None, score_size: int | None = None) -> list[dict]:
    """Restore (or, for bicubic, copy) every face into ``out_dir/<key>.png`` (at ``score_size`` when given);
    per-face records."""
    import numpy as np
    from PIL import Image

    recs: list[dict] = []
    if method == "bicubic":
        for k in keys:
            img = lq[k]
            if img.shape[:2] != (size, size):
                img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
            _save(img, out_dir / f"{k}.png", score_size)
            recs.append({"key": k, "nfe": 0, "seconds": 0.0})
        return recs
    r = restorer.with_config(mode=method)
    for i in range(0, len(keys), batch):
        ks = keys[i : i + batch]
        out = r.restore([lq[k] for k in ks], seed=seed + i, fidelity=fidelity)
        for k, img, rec in zip(ks, out.images, out.records, strict=True):
            _save(img, out_dir / f"{k}.png", score_size)
            keep = {f: rec.get(f) for f in ("seed", "nfe", "seconds", "std_star", "start_step", "start_steps", "eta")}
            recs.append({"key": k, **{f: v for f, v in keep.items() if v is not None}})
        _log(f"  {method}: {min(i + batch, len(keys))}/{len(keys)}")
    return recs


def _evaluate_args(restored: Path, hq: Path, out: Path, metrics: list[str] | None, args) -> argparse.Namespace:
    """A namespace exactly as `dynface evaluate` would parse it (all its defaults)."""
    from dynface.commands import evaluate

    p = argparse.ArgumentParser()
    evaluate.register(p.add_subparsers())
    argv = ["evaluate", "--restored", str(restored), "--hq", str(hq), "--out", str(out), "--resize-restored", "-q",
            "--allow-missing",  # _main judges the failures itself (HQ faces outside --limit are not failures)
            "--face-fallback", args.face_fallback, "--frechet-method", args.frechet_method]
    if metrics:
        argv += ["--metrics", ",".join(metrics)]
    if args.lpips_weights:
        argv += ["--lpips-weights", str(args.lpips_weights)]
    if args.fid_weights:
        argv += ["--fid-weights", str(args.fid_weights)]
    return p.parse_args(argv)


def available_metrics(requested: list[str], hq: Path, args) -> tuple[list[str], dict[str, str]]:
    from dynface.commands import evaluate

    bad = [m for m in requested if m not in evaluate.ALL]
    if bad:
        raise UsageError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(evaluate.ALL)}")
    ns = _evaluate_args(hq, hq, hq / "unused.json", None, args)
    metrics, skipped = evaluate._check_available(requested, False, ns)
    why = evaluate.niqe_unusable(list(evaluate._index(hq)[0].values()), "HQ") if "niqe" in metrics else None
    if why:  # the faces are scored at the HQ's size: skipped as evaluate skips a default NIQE (it refused an asked-for one)
        metrics.remove("niqe")
        skipped["niqe"] = why
    return metrics, skipped


def score(restored: Path, hq: Path, out: Path, metrics: list[str], args) -> dict:
    """Run `dynface evaluate` on one method's folder; its JSON, read back (null → NaN, "inf" → inf)."""
    from dynface.commands import evaluate

    rc = evaluate.run(_evaluate_args(restored, hq, out, metrics, args))
    if rc != 0:  # with --allow-missing, only an unexpected error or bad input
        raise RuntimeError(f"dynface evaluate exited with {rc} on {restored} (see its message above)")

    def back(v):
        if v is None:
            return float("nan")
        if isinstance(v, str) and v in ("inf", "-inf"):
            return float(v)
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return v

    return back(json.loads(out.read_text()))


# --------------------------------------------------------------------------- reporting


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def table(rows: list[dict], metrics: list[str]) -> str:
    from dynface.metrics import METRICS

    digits = {"psnr": 2, "psnr_y": 2, "niqe": 3, "brisque": 2, "fd": 2, "fid": 2, "lmd": 2}
    best: dict[str, float] = {}
    for m in metrics:
        vals = [r["mean"].get(m, float("nan")) for r in rows if "error" not in r]
        vals = [v for v in vals if not math.isnan(v)]
        if len(vals) > 1:
            best[m] = max(vals) if METRICS[m].higher_is_better else min(vals)
    head = ["method"] + [f"{SHORT.get(m, m)} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in metrics]
    head += ["NFE/face", "s/face"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [r["method"]]
        for m in metrics:
            v = r["mean"].get(m, float("nan"))
            c = _fmt(v, digits.get(m, 4))
            if m in best and not math.isnan(v) and v == best[m]:
                c = f"**{c}**"
            n_ok = r["valid"].get(m)
            if n_ok is not None and n_ok < r["n"]:
                c += f" ({n_ok}/{r['n']})"
            cells.append(c)
        cells += [f"{r['nfe']:.1f}", f"{r['s_per_face']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> str | None:
    """PSNR (x) vs FD (y) scatter, one labelled point per method; the reason when it cannot be drawn."""
    pts = [(r["method"], r["mean"].get("psnr", float("nan")), r["mean"].get("fd", float("nan")))
           for r in rows if "error" not in r]
    pts = [(m, x, y) for m, x, y in pts if math.isfinite(x) and math.isfinite(y)]
    if not pts:
        return "no method has both a finite PSNR and a finite FD"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # methods at the same point (to the table's precision) share one label: "a = b"
    groups: dict[tuple[float, float], list[str]] = {}
    for m, x, y in pts:
        groups.setdefault((round(x, 2), round(y, 2)), []).append(m)
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for m, x, y in pts:
        ours = m == "full"
        ax.scatter([x], [y], s=140 if ours else 60, marker="*" if ours else "o",
                   color="tab:red" if ours else ("tab:gray" if m == "bicubic" else "tab:blue"), zorder=3)
    # greedy label placement: labels stacked at free heights (in points) so that close points stay readable
    placed: list[tuple[float, float]] = []  # label anchors in axes-fraction units
    for (x, y), ms in sorted(groups.items(), key=lambda kv: -kv[0][1]):
        fx, fy = (x - min(xs)) / dx * 0.714 + 0.071, (y - min(ys)) / dy * 0.77 + 0.115  # matches the limits below
        for off in (0, -14, 14, -28, 28, -42, 42, -56, 56, -70, 70):
            ay = fy + off / 275
            if all(abs(ay - py) > 0.045 or abs(fx - px) > 0.3 for px, py in placed):
                break
        placed.append((fx, fy + off / 275))
        ax.annotate(" = ".join(ms), (x, y), textcoords="offset points", xytext=(8, off - 3), fontsize=8.5,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if off else None)
    ax.set_xlabel("PSNR (RGB, dB) ↑")
    ax.set_ylabel("FD-MobileNetV2 ↓ (stand-in for FID)")
    ax.set_title(f"{title}\n(better: lower right; ★ = full)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.set_xlim(min(xs) - 0.1 * dx, max(xs) + 0.3 * dx)
    ax.set_ylim(min(ys) - 0.15 * dy, max(ys) + 0.15 * dy)
    fig.tight_layout()
    from dynface.atomicfile import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return None


def _fidelity_text(res: dict) -> str:
    if res.get("fidelity") is not None:
        return str(res["fidelity"])
    z = res.get("zeta_default")
    return "model default (0.5: the model's ζ" + (f" = {z}" if z is not None else "") + ")"


def markdown(res: dict, tbl: str) -> str:
    from dynface.metrics import METRICS

    d, m = res["data"], res["model"]
    lines = [
        f"# Quality benchmark: {res['name']}",
        "",
        f"- data: {d['description']}; {d['n_faces']} faces, evaluated at {d['eval_size']} px",
        f"- degradation preset: {d.get('preset') or 'unknown'}, degradation seed: {d.get('seed', 'unknown')}, "
        f"set size N: {d.get('size') or 'unknown'}",
        f"- model: {_model_line(m)}",
        f"- sampler steps: `{res['steps']}`; guidance gradient: `{res.get('guidance', 'unet')}`; "
        f"fidelity w: {_fidelity_text(res)}; restoration seed: face i gets {res['seed']} + i in every mode; "
        f"batch size {res['batch_size']}; device {res['device']} ({res['precision']})",
        f"- commit at the start: {res['commit']}; machine: {res['machine']}; started {res['date']}"
        + (f", finished {res['finished']}" if res.get('finished') else ""),
        f"- command: `{res['command']}`",
        "",
        tbl,
        "",
        "Columns: mean over faces; **bold** = best of this table; `(k/n)` = the metric could be computed on only "
        "k of the n faces (e.g. dlib found no face) and the mean is over those k. FD compares each method's "
        "restored set with the HQ set. NFE/face and s/face are means of the pipeline's per-face records "
        "(s/face = batch time / batch size; `bicubic` = the LQ input itself, 0 and 0).",
    ]
    if m["random_weights"]:
        lines.append("**Random weights**: the networks' output layers are zero-initialised, so the DBLM restorer is the "
                     "identity (restorer_only = bicubic) and the DGSA map is 0.5 everywhere (= no_dgsa's global scale); "
                     "rows that coincide do so by construction. Only the plumbing, NFE and timings mean anything here.")
    if d["n_faces"] < 200 and "fd" in res["metrics"]:
        lines.append(f"FD on {d['n_faces']} faces per set is strongly biased upwards and noisy: compare methods within "
                     "this table only.")
    if res.get("plot_note"):
        lines.append(f"No PSNR-vs-FD plot: {res['plot_note']}.")
    if res["skipped"]:
        lines += ["", "Skipped metrics: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items())]
    fails = [(r["method"], mm, r["n"] - r["valid"][mm]) for r in res["rows"] if "error" not in r
             for mm in res["metrics"] if r["valid"].get(mm) is not None and r["valid"][mm] < r["n"]]
    if fails:
        lines += ["", "Per-face failures (not in the means): "
                  + "; ".join(f"{meth}/{mm}: {k} of {res['data']['n_faces']}" for meth, mm, k in fails)]
    lines += ["", "## Metrics", ""]
    for mm in res["metrics"]:
        c, label = res["conventions"].get(mm, ""), METRICS[mm].label
        lines.append(f"- **{SHORT.get(mm, mm)}**: " + (c if c.startswith(label) else f"{label}: {c}"))
    for k, v in res["conventions"].items():
        if k not in res["metrics"]:
            lines.append(f"- {k}: {v}")
    lines += ["", "## Methods", "",
              "- `bicubic`: the LQ image as `dynface degrade` wrote it (already resized back to N; resized "
              "bicubically to the model size only if N differs)",
              "- the others: `DynFaceRestorer.with_config(mode=...)` on the same networks, same steps, same seeds "
              "(see `dynface.pipeline` for what each mode does)"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args, argv)
    except UsageError as e:
        _log(f"quality.py: error: {e}")
        return 2


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    import torch

    from dynface.metrics import METRICS

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be ≥ 1")
        torch.set_num_threads(args.threads)
    if args.render:
        try:
            res = json.loads(args.render.read_text())
            tbl = table(res["rows"], res["metrics"])
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--render {args.render}: not a quality.py result ({type(e).__name__}: {e})") from e
        from dynface.atomicfile import atomic_write_text

        atomic_write_text(markdown(res, tbl), args.render.with_suffix(".md"))
        _log(f"wrote {args.render.with_suffix('.md')}")
        return 0
    if not (args.pairs or args.hq or args.quick):
        raise UsageError("give --pairs DIR, --hq DIR or --quick, or --render JSON")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1) or (args.size is not None and args.size < 8):
        raise UsageError("--batch-size and --limit must be ≥ 1, --size ≥ 8")
    methods = _split(args.methods)
    bad = [m for m in methods if m not in DEFAULT_METHODS]
    if bad or not methods:
        raise UsageError(f"unknown or no method(s) {', '.join(bad)}; choose from {', '.join(DEFAULT_METHODS)}")
    steps = args.steps or ("ddim25" if args.quick else "ddim250")
    name = args.name or ("quality_quick" if args.quick else "quality")
    cmd = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    # the code and machine the run starts with: a long run's tree may change before it ends (a run started at one
    # commit said the next one's, taken at its end)
    started = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "commit": _commit()}

    parts = {"dblm": args.dblm, "dgsa": args.dgsa, "dsst": args.dsst}
    if args.model.startswith("preset:") and any(parts.values()):
        raise UsageError("--dblm/--dgsa/--dsst need a trained --model, not preset:*")
    restorer, info = load_model(args.model, steps, args.seed, args.device, args.precision,
                                fallback_random=args.quick, parts=parts)
    machine = _machine()  # after load_model has set the threads it runs with
    if args.guidance:
        restorer = restorer.with_config(guidance=args.guidance)
    size = restorer.size
    temp = args.work is None
    work = Path(tempfile.mkdtemp(prefix="dynface-quality-")) if temp else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        # ---- the paired set
        if args.pairs:
            pairs = args.pairs.resolve()
            desc = f"`{pairs}`"
        else:
            pairs = work / "pairs"
            if pairs.exists():
                shutil.rmtree(pairs)
            n = args.size or size
            if args.quick:
                from dynface.imaging import atomic_save_image

                src = work / "quick_hq"
                for k, img in quick_faces(n).items():
                    atomic_save_image(img, src / f"{k}.png")
                desc = "faces made from skimage.data.astronaut() (crops, flips, colour shifts), degraded"
            else:
                src = args.hq.resolve()
                if not src.is_dir():
                    raise UsageError(f"--hq is not a folder: {src}")
                desc = f"`{src}` degraded into the work folder"
                if args.limit and args.subset == "random":
                    src = random_subset(src, work / "subset_hq", args.limit, args.seed)
                    desc = f"a random {args.limit} (seed {args.seed}) of " + desc
            make_pairs(src, pairs, args.preset, args.seed, n, args.limit)
        keys, lq, hq, manifest = load_pairs(pairs, args.limit)
        data = {
            "description": desc,
            "pairs_dir": str(pairs),
            "hq_input": manifest.get("input"),
            "preset": manifest.get("preset"),
            "seed": manifest.get("seed"),
            "size": manifest.get("size") or next(iter(hq.values())).shape[0],
            "n_faces": len(keys),
            "eval_size": args.score_size or size,
            "keys": keys,
        }
        if any(img.shape[:2] != (data["eval_size"],) * 2 for img in hq.values()):
            _log(f"note: HQ faces are not {data['eval_size']} px: restorations are scored at {data['eval_size']} px "
                 "against HQ resized (bicubic)")
        if args.score_size and args.score_size != size:
            _log(f"note: the {size}-px model's outputs are resized to {args.score_size} px (bicubic) before scoring")

        metrics, skipped = available_metrics(_split(args.metrics), pairs / "hq", args)
        for k, v in skipped.items():
            _log(f"note: metric {k} skipped: {v}")
        if not metrics:
            raise UsageError("no metric can run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        _log(f"{len(keys)} faces, {size} px, model {info['model']}{' (RANDOM weights)' if info['random_weights'] else ''}, "
             f"steps {steps}, methods {', '.join(methods)}, metrics {', '.join(metrics)}; work folder {work}")

        if any(m != "bicubic" for m in methods):  # warm-up so that the first mode's timing has no one-off costs
            restorer.with_config(mode="restorer_only").restore([lq[keys[0]]], seed=args.seed)

        rows: list[dict] = []
        per_face: dict[str, dict] = {}
        conv: dict[str, str] = {}
        status = 0
        unscored_methods: list[str] = []
        for method in methods:
            t0 = time.perf_counter()
            row: dict = {"method": method, "n": len(keys)}
            try:
                recs = restore_all(restorer, method, keys, lq, size, args.batch_size, args.seed,
                                   work / "restored" / method, fidelity=args.fidelity, score_size=args.score_size)
                wall = time.perf_counter() - t0
                ev = score(work / "restored" / method, pairs / "hq", work / "eval" / f"{method}.json", metrics, args)
            except Exception as e:  # noqa: BLE001 - one broken method must not hide the others' numbers
                _log(f"error: {method}: {type(e).__name__}: {e}")
                row["error"] = f"{type(e).__name__}: {e}"
                rows.append(row)
                status = 1
                continue
            conv.update(ev["conventions"])
            outside = set(ev["unpaired"]["hq"]) - set(keys)  # HQ faces beyond --limit in a --pairs folder
            unscored = {k: v for k, v in ev.get("failures", {}).items() if k not in outside}
            if unscored:
                shown = "; ".join(f"{k}: {v}" for k, v in list(unscored.items())[:3])
                _log(f"error: {method}: {len(unscored)} of {len(keys)} faces (or sets) could not be scored: {shown}"
                     + (" …" if len(unscored) > 3 else ""))
                unscored_methods.append(method)
            valid = dict(ev["counts"]["valid"])
            for mm, s in ev["set"].items():
                valid[mm] = s.get("n_restored") if math.isfinite(s.get("value", float("nan"))) else 0
            row.update(
                mean={mm: ev["mean"].get(mm, float("nan")) for mm in metrics},
                valid=valid,
                failed=ev["counts"]["failed"],
                set={mm: s for mm, s in ev["set"].items()},
                errors=ev["errors"],
                unscored=unscored,
                nfe=sum(r["nfe"] for r in recs) / len(recs),
                s_per_face=sum(r["seconds"] for r in recs) / len(recs),
                wall_seconds=wall,
            )
            rows.append(row)
            per_face[method] = {
                r["key"]: {**{f: v for f, v in r.items() if f != "key"},
                           **{mm: ev["per_image"].get(r["key"], {}).get(mm) for mm in metrics if mm not in ("fd", "fid")}}
                for r in recs
            }
            _log(f"{method}: " + ", ".join(f"{mm} {_fmt(row['mean'][mm])}" for mm in metrics)
                 + f", NFE {row['nfe']:.1f}, {row['s_per_face']:.3f} s/face")

        out = args.out.resolve()
        title = f"{name}: {len(keys)} faces, {info['model']}{' (random weights)' if info['random_weights'] else ''}, {steps}"
        png = out / f"{name}_psnr_fd.png"
        plot_note = plot(rows, png, title) if ("psnr" in metrics and "fd" in metrics) else "PSNR or FD not computed"
        res = {
            "tool": "benchmarks/quality.py",
            "name": name,
            "command": cmd,
            "date": started["date"],
            "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "commit": started["commit"],
            "machine": machine,
            "data": data,
            "model": info,
            "steps": steps,
            "guidance": restorer.cfg.sampler.guidance,
            "fidelity": args.fidelity,
            "zeta_default": restorer.cfg.sampler.zeta,  # the guidance strength that w = 0.5 stands for
            "seed": args.seed,
            "batch_size": args.batch_size,
            "device": args.device,
            "precision": args.precision,
            "methods": methods,
            "metrics": metrics,
            "labels": {mm: METRICS[mm].label for mm in metrics},
            "skipped": skipped,
            "conventions": conv,
            "plot": None if plot_note else str(png),
            "plot_note": plot_note,
            "work": None if temp and not args.keep_work else str(work),
            "rows": rows,
            "per_face": per_face,
        }
        tbl = table(rows, metrics)
        from dynface.atomicfile import atomic_write_text
        from dynface.commands.evaluate import _jsonable

        atomic_write_text(json.dumps(_jsonable(res), indent=1, allow_nan=False) + "\n", out / f"{name}.json")
        atomic_write_text(markdown(res, tbl), out / f"{name}.md")
        print(tbl)
        _log(f"wrote {out / (name + '.md')}, {name}.json" + ("" if plot_note else f", {png.name}"))
        if unscored_methods and not args.allow_missing:
            _log(f"error: faces could not be scored for {', '.join(unscored_methods)} (listed above; the tables "
                 "show (k/n) counts and the means leave them out); pass --allow-missing to accept this")
            status = 1
        return status
    finally:
        if temp and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            _log(f"restored images under {work / 'restored'}")


if __name__ == "__main__":
    sys.exit(main())
