"""``dynface degrade``: make a paired HQ/LQ test or training set from a folder of faces.

Writes ``OUT/hq/<name>.png`` (centre square crop, Lanczos resize to ``--size``), ``OUT/lq/<name>.png``
(the degraded image, see :mod:`dynface.degrade`) and ``OUT/manifest.json`` (the preset, seed, size,
ref_size and every image's parameters, plus the files that failed). ``<name>`` is the input's path
relative to the input folder, without its suffix (sub-folders are kept).

Image ``i`` of the sorted file list is degraded with parameters drawn from ``(seed, i)`` alone, so a
run is reproducible byte for byte and does not depend on which other files fail to decode.
Exit codes: 0 all written, 1 some inputs failed (the rest are written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynface.degrade import DegradationParams

PRESET_NAMES = ("gfpgan", "diffbir", "difface", "difface-grid")  # dynface.degrade.PRESETS (kept lazy)


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    return v


def _seed(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {v}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "degrade",
        help="degrade a folder of HQ faces into a paired HQ/LQ set",
        description="Make a paired HQ/LQ set from a folder of faces: OUT/hq, OUT/lq and OUT/manifest.json.",
    )
    p.add_argument(
        "-i", "--input", required=True, type=Path, metavar="HQ_DIR", help="folder of HQ faces (searched recursively)"
    )
    p.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT", help="output folder (hq/, lq/, manifest.json)"
    )
    p.add_argument("--preset", choices=PRESET_NAMES, default="gfpgan", help="degradation preset (default: gfpgan)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=_positive_int, default=512, help="output resolution N (default: 512)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="K", help="only the first K files (sorted)")
    p.set_defaults(func=run)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _degrade_one(path: Path, out_dir: Path, name: str, params: DegradationParams, size: int) -> str | None:
    """Write ``hq/<name>.png`` and ``lq/<name>.png`` for one input; the error message, or None."""
    import torch

    from dynface.degrade import apply_degradation
    from dynface.imaging import atomic_save_image, tensor_to_uint8
    from dynface.training.data import load_square

    try:
        hq = load_square(path, size)
    except Exception as e:  # any decoder failure (PIL raises several types) is bad input, not a crash
        return f"cannot read image ({type(e).__name__}: {e})"
    x = torch.tensor(hq).permute(2, 0, 1)[None].float() / 255
    lq = tensor_to_uint8(apply_degradation(x, [params]), (0.0, 1.0))[0]
    try:
        atomic_save_image(hq, out_dir / "hq" / f"{name}.png")
        atomic_save_image(lq, out_dir / "lq" / f"{name}.png")
    except OSError as e:
        return f"cannot write output ({e})"
    return None


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dynface.degrade import PRESETS, sample_params
    from dynface.imaging import atomic_write_text
    from dynface.training.data import list_images

    in_dir, out_dir = args.input.resolve(), args.output.resolve()
    if out_dir == in_dir:
        print(f"error: the output folder must differ from the input folder ({in_dir})", file=sys.stderr)
        return 2
    if any(_is_within(in_dir, out_dir / sub) for sub in ("hq", "lq")):
        print(f"error: the input folder {in_dir} lies in the output's hq/ or lq/ folder", file=sys.stderr)
        return 2
    try:
        files = [f for f in list_images(in_dir) if not _is_within(f.resolve(), out_dir)]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"error: no input images in {in_dir} outside {out_dir}", file=sys.stderr)
        return 2

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"error: cannot create the output folder ({e})", file=sys.stderr)
        return 2

    spec = PRESETS[args.preset]
    params = sample_params(spec, len(files), args.seed, args.size)
    images: list[dict] = []
    failed: list[dict] = []
    used: dict[str, str] = {}  # output name -> the input that took it
    for path, p in zip(files, params, strict=True):
        rel = path.relative_to(in_dir).as_posix()
        name = path.relative_to(in_dir).with_suffix("").as_posix()
        if name in used:
            error = f"{used[name]} already maps to {name}.png"
        else:
            used[name] = rel
            error = _degrade_one(path, out_dir, name, p, args.size)
        if error is not None:
            print(f"{rel}: {error}", file=sys.stderr)
            failed.append({"file": rel, "error": error})
        else:
            images.append({"file": rel, "hq": f"hq/{name}.png", "lq": f"lq/{name}.png", **p.to_dict()})

    manifest = {
        "preset": args.preset,
        "seed": args.seed,
        "size": args.size,
        "ref_size": spec.ref_size,
        "config": asdict(spec),
        "input": str(in_dir),
        "images": images,
        "failed": failed,
    }
    try:
        atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_dir / "manifest.json")
    except OSError as e:
        print(f"error: cannot write the manifest ({e})", file=sys.stderr)
        return 1
    print(f"{len(images)}/{len(files)} images degraded ({args.preset}, seed {args.seed}, {args.size}px) -> {out_dir}")
    return 1 if failed else 0
