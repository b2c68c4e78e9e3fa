"""``dynface degrade``: make a paired HQ/LQ test or training set from a folder of faces.

Writes ``OUT/hq/<name>.png`` (centre square crop, Lanczos resize to ``--size``), ``OUT/lq/<name>.png``
(the degraded image, see :mod:`dynface.degrade`) and ``OUT/manifest.json`` (the preset, seed, size,
ref_size and every image's parameters, plus the files that failed). ``<name>`` is the input's path
relative to the input folder, without its suffix (sub-folders are kept).

Image ``i`` of the sorted file list is degraded with parameters drawn from ``(seed, i)`` alone, so a
run is reproducible byte for byte and does not depend on which other files fail to decode. Hidden files
and folders are skipped.

Limits, as for ``restore``: an input may have at most ``dynface.imageio.MAX_PIXELS`` pixels (checked from
its header before decoding) and ``--size`` at most :data:`MAX_SIZE`: the degradation works on float32
copies of the whole image, ≈ 165 bytes per output pixel on top of ≈ 0.35 GB for the process (measured peak
RSS, one image: 0.53 GB at 1024 px, 1.04 GB at 2048 px; ``/usr/bin/time -f %M dynface degrade ... --size N
--limit 1``), the same order as ``restore`` at its 160 MP output cap; ``--size 20000`` would need ≈ 65 GB.
Messages use the one wording of ``dynface.imageio.too_large``.
The output folder may not be the input folder, hold the input in its ``hq/`` or ``lq/``, or lie inside
the input folder (``--allow-input-dir`` allows the last; the output folder is then left out of the inputs).
Earlier ``degrade`` outputs found inside the input folder (a ``manifest.json`` of this command) are
always left out. Every output path goes through
``dynface.outputs.output_path``.
Exit codes: 0 all written, 1 some inputs failed (the rest are written), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dynface.commands.argtypes import number

if TYPE_CHECKING:
    from dynface.degrade import DegradationParams

PRESET_NAMES = ("gfpgan", "diffbir", "difface", "difface-grid")  # dynface.degrade.PRESETS (kept lazy)
MAX_SIZE = 2048  # --size limit (see the module docstring)


def _size(s: str) -> int:
    from dynface.imageio import too_large

    v = number(int, 1)(s)
    if v > MAX_SIZE:
        raise argparse.ArgumentTypeError(too_large(v, v, MAX_SIZE * MAX_SIZE, what="output") + f", at most {MAX_SIZE}")
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
    p.add_argument("--seed", type=number(int, 0), default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=_size, default=512, help=f"output resolution N, at most {MAX_SIZE} (default: 512)")
    p.add_argument("--limit", type=number(int, 1), default=None, metavar="K", help="only the first K files (sorted)")
    p.add_argument(
        "--allow-input-dir",
        action="store_true",
        help="allow -o inside the input folder (it and earlier degrade outputs there are not read as inputs)",
    )
    p.set_defaults(func=run)


def _earlier_outputs(in_dir: Path) -> list[Path]:
    """Folders under ``in_dir`` holding a ``dynface degrade`` manifest (their hq/ and lq/ are outputs, not faces)."""
    found = []
    for mf in in_dir.rglob("manifest.json"):
        try:
            d = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and {"preset", "images", "failed"} <= d.keys():
            found.append(mf.parent.resolve())
    return found


def _out_paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    """``OUT/hq/<name>.png`` and ``OUT/lq/<name>.png`` via :func:`dynface.outputs.output_path` (``name`` may hold
    sub-folders: each part must be a plain name)."""
    from dynface.outputs import output_path

    *dirs, stem = name.split("/")
    return tuple(output_path(out_dir, sub, *dirs, f"{stem}.png") for sub in ("hq", "lq"))  # type: ignore[return-value]


def _degrade_one(path: Path, out_dir: Path, name: str, params: DegradationParams, size: int) -> str | None:
    """Write ``hq/<name>.png`` and ``lq/<name>.png`` for one input; the error message, or None."""
    import torch

    from dynface.degrade import apply_degradation
    from dynface.imageio import ImageReadError, image_size
    from dynface.imaging import atomic_save_image, tensor_to_uint8
    from dynface.outputs import UnsafePathError
    from dynface.training.data import load_square

    try:
        hq_path, lq_path = _out_paths(out_dir, name)
    except UnsafePathError as e:
        return f"cannot use this name for an output ({e})"
    try:
        w, h = image_size(path, name=path.name)  # the pixel budget, from the header, before decoding
        if min(w, h) < MIN_SIDE:
            return f"too small for a face ({w}x{h}; at least {MIN_SIDE} px a side, as restore's crops)"
        hq = load_square(path, size)
    except ImageReadError as e:
        return str(e).removeprefix(f"{path.name}: ")
    except Exception as e:  # any decoder failure (PIL raises several types) is bad input, not a crash
        return f"cannot read image ({type(e).__name__}: {e})"
    x = torch.tensor(hq).permute(2, 0, 1)[None].float() / 255
    lq = tensor_to_uint8(apply_degradation(x, [params]), (0.0, 1.0))[0]
    try:
        atomic_save_image(hq, hq_path)
        atomic_save_image(lq, lq_path)
    except OSError as e:
        return f"cannot write output ({e})"
    return None


MIN_SIDE = 16  # smaller HQ images are refused: restore refuses aligned crops under 16 px too


def _output_names(files: list[Path], in_dir: Path) -> list[str]:
    """Each input's output name (its path below ``in_dir`` without the suffix, as ``hq/NAME.png`` / ``lq/NAME.png``);
    files sharing one (``a.jpg``, ``a.png``) are told apart by their extension, as ``dynface restore`` names them
    (``a_jpg``, ``a_png``)."""
    from collections import Counter

    base = [f.relative_to(in_dir).with_suffix("").as_posix() for f in files]
    count = Counter(base)
    return [b + (f"_{f.suffix.lstrip('.').lower()}" if count[b] > 1 else "") for f, b in zip(files, base, strict=True)]


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from dynface.atomicfile import atomic_write_text
    from dynface.degrade import PRESETS, sample_params
    from dynface.outputs import OutputFolderError, check_output_folder, is_inside, output_path
    from dynface.training.data import list_images

    try:  # also for callers that build the namespace themselves (benchmarks/quality.py)
        _size(str(args.size))
    except (argparse.ArgumentTypeError, ValueError) as e:
        print(f"error: --size {args.size}: {e}", file=sys.stderr)
        return 2
    in_dir, out_dir = args.input.resolve(), args.output.resolve()
    allow_inside = getattr(args, "allow_input_dir", False)
    try:
        check_output_folder(out_dir, folders=[in_dir], subdirs=("hq", "lq"), allow_inside=allow_inside)
    except OutputFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if in_dir.is_file():
        print(f"error: -i {args.input}: is a file; degrade reads a folder of HQ faces", file=sys.stderr)
        return 2
    try:
        found = list_images(in_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skip = ([out_dir] if is_inside(out_dir, in_dir) else []) + _earlier_outputs(in_dir)
    files = [
        f for f in found
        if not any(part.startswith(".") for part in f.relative_to(in_dir).parts)
        and not any(is_inside(f, d) for d in skip)
    ]  # fmt: skip
    if len(files) < len(found):
        print(f"note: {len(found) - len(files)} file(s) left out (hidden, or in this or an earlier output folder)", file=sys.stderr)
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
    names = _output_names(files, in_dir)
    for path, p, name in zip(files, params, names, strict=True):
        rel = path.relative_to(in_dir).as_posix()
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
        atomic_write_text(json.dumps(manifest, indent=2) + "\n", output_path(out_dir, "manifest.json"))
    except OSError as e:
        print(f"error: cannot write the manifest ({e})", file=sys.stderr)
        return 1
    print(f"{len(images)}/{len(files)} images degraded ({args.preset}, seed {args.seed}, {args.size}px) -> {out_dir}")
    return 1 if failed else 0
